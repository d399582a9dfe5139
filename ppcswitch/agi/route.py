"""agi://.../route: a new call. Asks the router and sets the result variables."""

from __future__ import annotations

from ppcswitch.agi.server import AgiRequest
from ppcswitch.routing.service import Router
from ppcswitch.routing.shared import confirm  # the cluster's shared reservations admit the buyer


def make_handler(router: Router, attribution=None):
    """attribution: the attribution service; the call's sub-ID and click ID (asked for by the dialplan
    before this) go into its facts, so RTB buyers can price by source."""

    async def route(request: AgiRequest) -> None:
        h = request.headers
        linkedid = (request.args[0] if request.args else "") or h.get("agi_uniqueid", "")
        known = attribution.values_of(linkedid) if attribution is not None else {}
        facts = router.facts(h.get("agi_extension", ""), h.get("agi_callerid", ""),
                             known.get("sub_id", ""), known.get("click_id", ""))
        variables = await confirm(router, linkedid, await router.first_async(linkedid, facts))
        for name, value in variables.items():
            await request.set_variable(name, value)

    return route
