"""agi://.../route: a new call. Asks the router and sets the result variables."""

from __future__ import annotations

from ppcswitch.agi.server import AgiRequest
from ppcswitch.routing.service import Router


def make_handler(router: Router):
    async def route(request: AgiRequest) -> None:
        h = request.headers
        linkedid = (request.args[0] if request.args else "") or h.get("agi_uniqueid", "")
        facts = router.facts(h.get("agi_extension", ""), h.get("agi_callerid", ""))
        variables = await router.first_async(linkedid, facts)
        for name, value in variables.items():
            await request.set_variable(name, value)

    return route
