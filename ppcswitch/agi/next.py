"""agi://.../next: the buyer did not answer; set the next buyer, or none left."""

from __future__ import annotations

from ppcswitch import channel_vars as cv
from ppcswitch.agi.inbound import send_variables
from ppcswitch.agi.server import AgiRequest
from ppcswitch.routing.service import Router
from ppcswitch.routing.shared import confirm  # the cluster's shared reservations admit the buyer


def make_handler(router: Router):
    async def next_buyer(request: AgiRequest) -> None:
        linkedid = (request.args[0] if request.args else "") or request.headers.get("agi_uniqueid", "")
        last_status = request.args[1] if len(request.args) > 1 else ""
        answer = await confirm(router, linkedid, router.next(linkedid, last_status))
        status = answer.pop(cv.ROUTE_STATUS, None)
        await send_variables(request, answer, (cv.ROUTE_STATUS, status) if status is not None else None)

    return next_buyer
