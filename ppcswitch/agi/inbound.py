"""agi://.../inbound: everything a new call needs from the controller, in one request.

The dialplan asks once per call: attribution (ppcswitch.agi.attribution), the
fraud screen (ppcswitch.agi.screen) and, unless the screen refused the call or
the campaign plays the press-1 challenge first, the route (ppcswitch.agi.route).
One FastAGI connection instead of three saves Asterisk a TCP connection and a
header block per step, and each answer variable is set once, the route status
last, so a status the dialplan sees always comes with the values it goes with.
The three handlers stay as they are (and reachable on their own): they set their
variables on a collecting request, which this handler then sends.
"""

from __future__ import annotations

import logging

from ppcswitch import channel_vars as cv
from ppcswitch.agi.server import AgiHangup, AgiRequest, Handler

log = logging.getLogger(__name__)

# Cleared by the dialplan before this AGI: an empty answer need not be sent.
CLEARED_BEFORE = frozenset((*cv.RESULT_VARS, cv.CHALLENGE, cv.RECORD))


class CollectingRequest:
    """An AgiRequest whose SET VARIABLEs are kept, not sent; other commands pass through."""

    def __init__(self, request: AgiRequest) -> None:
        self.request = request
        self.headers, self.args = request.headers, request.args
        self.variables: dict[str, str] = {}

    async def command(self, line: str):
        return await self.request.command(line)

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value


def make_handler(attribution: Handler, screen: Handler, route: Handler) -> Handler:
    async def inbound(request: AgiRequest) -> None:
        collected = CollectingRequest(request)
        # Attribution and the screen only add to the call: when one fails, the call is still routed.
        for step in (attribution, screen):
            try:
                await step(collected)  # type: ignore[arg-type]
            except AgiHangup:
                raise
            except Exception:
                log.exception("agi inbound: %s failed for %s; routing the call anyway", step.__name__,
                              request.headers.get("agi_uniqueid", "?"))
        answer = collected.variables
        if answer.get(cv.ROUTE_STATUS) != cv.RouteStatus.REJECT and answer.get(cv.CHALLENGE) != "1":
            await route(collected)  # type: ignore[arg-type]
        status = answer.pop(cv.ROUTE_STATUS, None)
        for name, value in answer.items():
            if value or name not in CLEARED_BEFORE:
                await request.set_variable(name, value)
        if status is not None:
            await request.set_variable(cv.ROUTE_STATUS, status)

    return inbound
