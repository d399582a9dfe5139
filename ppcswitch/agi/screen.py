"""agi://.../screen: before routing, block/allow lists and the pre-routing fraud check.

Argument: linkedid. The STIR/SHAKEN Identity header and a carrier's
X-Attestation header are read with GET FULL VARIABLE through FILTER() (only
base64url characters and dots reach us) and a length cut. Sets PPC_CHALLENGE
and PPC_RECORD, or refuses the call (PPC_ROUTE_STATUS=REJECT) so a blocked
caller never rings a buyer.
"""

from __future__ import annotations

import os

from ppcswitch import channel_vars as cv
from ppcswitch.agi.server import AgiRequest, quote_arg
from ppcswitch.fraud import signals
from ppcswitch.fraud.service import FraudService
from ppcswitch.routing.engine import CAUSE_REJECTED, Decision, DecisionStatus
from ppcswitch.routing.live import CallRoute
from ppcswitch.routing.service import Router


# Headers read, with the characters let through and the length kept.
IDENTITY = ("Identity", "-A-Za-z0-9._", 4096)  # STIR/SHAKEN PASSporT: base64url and dots
ATTESTATION = ("X-Attestation", "ABCabc", 8)  # a carrier's own A / B / C


def header_expression(name: str, chars: str, length: int) -> str:
    return "${FILTER(%s,${PJSIP_HEADER(read,%s):0:%d})}" % (chars, name, length)


HEADER_EXPRESSIONS = (header_expression(*IDENTITY), header_expression(*ATTESTATION))


def make_handler(router: Router, fraud: FraudService, recording_directory: str):
    async def screen(request: AgiRequest) -> None:
        h, args = request.headers, request.args
        linkedid = (args[0] if args else "") or h.get("agi_uniqueid", "")
        identity = header = ""
        if h.get("agi_type", "PJSIP") == "PJSIP":
            identity = await _header(request, *IDENTITY)
            header = await _header(request, *ATTESTATION)
        level = signals.attestation(identity, header)
        facts = router.facts(h.get("agi_extension", ""), h.get("agi_callerid", ""))
        number = router.network.numbers.get(facts.tracking_number) if facts.tracking_number else None
        if number is None:
            return  # not our number: routing refuses it with its own reason
        result = fraud.screen(linkedid, facts, number.campaign_id, number.publisher_id, level)
        variables = dict(result.variables)
        if result.reject_reason:
            router.routes.add(CallRoute(linkedid, facts, Decision(
                DecisionStatus.REJECT, number.campaign_id, number.publisher_id, reject_reason=result.reject_reason,
                hangup_cause=CAUSE_REJECTED)))
            variables.update({cv.ROUTE_STATUS: cv.RouteStatus.REJECT, cv.HANGUP_CAUSE: str(CAUSE_REJECTED)})
        elif variables.get(cv.RECORD):
            variables[cv.RECORD] = os.path.join(recording_directory, variables[cv.RECORD])
        for name, value in variables.items():
            await request.set_variable(name, value)

    return screen


async def _header(request: AgiRequest, name: str, chars: str, length: int) -> str:
    _, result, text = await request.command(f"GET FULL VARIABLE {quote_arg(header_expression(name, chars, length))}")
    return text[1:-1] if result == 1 and text.startswith("(") and text.endswith(")") else ""
