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
import re
from collections.abc import Sequence

from ppcswitch import channel_vars as cv
from ppcswitch.agi.server import AgiHangup, AgiRequest, Handler, quote_arg

log = logging.getLogger(__name__)

# Cleared by the dialplan before this AGI: an empty answer need not be sent.
CLEARED_BEFORE = frozenset((*cv.RESULT_VARS, cv.CHALLENGE, cv.RECORD))
# Values that mean nothing to MSet()'s argument parsing nor to AGI quoting (no "," "=" quotes,
# backslashes, spaces, brackets or "$"): these are sent together in one EXEC MSet; any other
# value goes alone with SET VARIABLE.
_PLAIN = re.compile(r"[A-Za-z0-9_/:@.+;~-]*\Z")
# Joins the header values read in one GET: no FILTER() set used for headers lets it through.
SEPARATOR = "|"


class CollectingRequest:
    """An AgiRequest whose SET VARIABLEs are kept, not sent; other commands pass through."""

    def __init__(self, request: AgiRequest) -> None:
        self.request = request
        self.headers, self.args = request.headers, request.args
        self.variables: dict[str, str] = {}
        self.answers: dict[str, tuple[int, int | None, str]] = {}

    async def prefetch(self, expressions: Sequence[str]) -> None:
        """Evaluate the expressions the steps will GET in one round trip; their GETs are then
        answered from here (Asterisk evaluates the same expressions either way)."""
        if not expressions:
            return
        joined = SEPARATOR.join(expressions)
        code, result, text = await self.request.command(f"GET FULL VARIABLE {quote_arg(joined)}")
        if result != 1 or not (text.startswith("(") and text.endswith(")")):
            return  # the steps then ask one by one
        values = text[1:-1].split(SEPARATOR)
        if len(values) != len(expressions):
            return
        for expression, value in zip(expressions, values):
            self.answers[f"GET FULL VARIABLE {quote_arg(expression)}"] = (code, result, f"({value})")

    async def command(self, line: str):
        if line in self.answers:
            return self.answers.pop(line)
        return await self.request.command(line)

    async def set_variable(self, name: str, value: str) -> None:
        self.variables[name] = value


async def send_variables(request: AgiRequest, variables: dict[str, str], last: tuple[str, str] | None = None) -> None:
    """Set the variables in order, `last` after all of them: the plain ones in one EXEC MSet
    (which sets them in order), any other one alone with SET VARIABLE."""
    items = list(variables.items())
    plain = [kv for kv in items if _PLAIN.match(kv[1]) and _PLAIN.match(kv[0])]
    others = [kv for kv in items if kv not in plain]
    if last is not None:
        (plain if not others and _PLAIN.match(last[1]) else others).append(last)
    if len(plain) > 1:
        _, result, _ = await request.command(f"EXEC MSet {quote_arg(','.join(f'{k}={v}' for k, v in plain))}")
        if result != 0:  # no MSet here: one by one, in the same order
            others = plain + others
    else:
        others = plain + others
    for name, value in others:
        await request.set_variable(name, value)


def make_handler(attribution: Handler, screen: Handler, route: Handler,
                 header_expressions: Sequence[str] = ()) -> Handler:
    async def inbound(request: AgiRequest) -> None:
        collected = CollectingRequest(request)
        if request.headers.get("agi_type", "PJSIP") == "PJSIP":
            await collected.prefetch(header_expressions)
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
        variables = {k: v for k, v in answer.items() if v or k not in CLEARED_BEFORE}
        await send_variables(request, variables, (cv.ROUTE_STATUS, status) if status is not None else None)

    return inbound
