"""agi://.../attribution: a new call's attribution (pool lease of the dialled number, SIP headers).

Asked by the dialplan before .../route. Header values are read with
GET FULL VARIABLE through FILTER() and a length cut, so they are cleaned in
Asterisk and never become dialplan variables; they are cleaned again here.
"""

from __future__ import annotations

from ppcswitch.agi.server import AgiRequest, quote_arg
from ppcswitch.attribution.clean import ASTERISK_FILTER
from ppcswitch.attribution.service import Attribution

READ_CHARS = 256  # characters of a header Asterisk hands over (cut again to 64 / 128)


def header_expression(header: str) -> str:
    return "${FILTER(%s,${PJSIP_HEADER(read,%s):0:%d})}" % (ASTERISK_FILTER, header, READ_CHARS)


def header_expressions(attribution: Attribution) -> list[str]:
    return [header_expression(header) for header, _ in attribution.sip_headers]


def make_handler(attribution: Attribution):
    async def attribution_handler(request: AgiRequest) -> None:
        h = request.headers
        linkedid = (request.args[0] if request.args else "") or h.get("agi_uniqueid", "")
        values = {}
        if h.get("agi_type", "PJSIP") == "PJSIP":
            for header, name in attribution.sip_headers:
                _, result, text = await request.command(f"GET FULL VARIABLE {quote_arg(header_expression(header))}")
                if result == 1 and text.startswith("(") and text.endswith(")"):
                    values[name] = text[1:-1]
        attribution.on_call(linkedid, h.get("agi_extension", ""), values)

    return attribution_handler
