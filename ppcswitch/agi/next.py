"""agi://.../next: the buyer did not answer; set the next buyer, or none left."""

from __future__ import annotations

from ppcswitch.agi.server import AgiRequest
from ppcswitch.routing.service import Router


def make_handler(router: Router):
    async def next_buyer(request: AgiRequest) -> None:
        linkedid = (request.args[0] if request.args else "") or request.headers.get("agi_uniqueid", "")
        last_status = request.args[1] if len(request.args) > 1 else ""
        for name, value in router.next(linkedid, last_status).items():
            await request.set_variable(name, value)

    return next_buyer
