"""agi://.../code: the caller keyed in a publisher code; decide again as that publisher's call.

Arguments: linkedid, the digits (FILTERed to 0-9 by the dialplan). A wrong or
missing code is asked for once more (status CODE again); after that the call
stays with the number's own publisher. What was keyed, and what came of it,
goes on the call's record (attribution `ivr_code`, `ivr_code_status`).
"""

from __future__ import annotations

from ppcswitch.agi.server import AgiRequest
from ppcswitch.routing.service import Router
from ppcswitch.routing.shared import confirm  # the cluster's shared reservations admit the buyer


def make_handler(router: Router, attribution=None):
    async def code(request: AgiRequest) -> None:
        linkedid = (request.args[0] if request.args else "") or request.headers.get("agi_uniqueid", "")
        digits = request.args[1] if len(request.args) > 1 else ""
        variables, outcome = await router.with_code_async(linkedid, digits)
        if attribution is not None and outcome is not None and outcome.status != "retry":
            attribution.on_code(linkedid, outcome)
        for name, value in (await confirm(router, linkedid, variables)).items():
            await request.set_variable(name, value)

    return code
