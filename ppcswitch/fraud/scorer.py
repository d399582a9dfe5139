"""The external transcript/AI scorer interface. Off by default; nothing is downloaded or bundled.

An operator plugs one in by setting `fraud.scorer_url`: for every finished
call the controller POSTs the call's facts as JSON (no audio; the recording's
file name when there is one) and expects `{"points": 0-100, "detail": "..."}`
within `fraud.scorer_timeout` seconds. Its points join the call's score as the
signal "external_scorer". Any failure or timeout leaves the score as it was.
A Python scorer can also be given directly (anything with `async score(call) -> (points, detail)`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import aiohttp

log = logging.getLogger(__name__)


class ExternalScorer(Protocol):
    async def score(self, call: dict) -> tuple[int, str]:
        """Points (0-100, added to the score) and a short reason for one finished call."""


class HttpScorer:
    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url, self.timeout = url, timeout

    async def score(self, call: dict) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as http:
            async with http.post(self.url, json=call) as resp:
                resp.raise_for_status()
                body = await resp.json()
        return clamp(body.get("points", 0)), str(body.get("detail", ""))[:200]


def clamp(points) -> int:
    """A scorer's answer as 0-100 points; anything that is no number counts 0."""
    try:
        return max(0, min(100, int(points)))
    except (TypeError, ValueError):
        return 0


async def ask(scorer: ExternalScorer | None, call: dict, timeout: float) -> tuple[int, str]:
    """(points, detail), or (0, '') when there is no scorer or it fails."""
    if scorer is None:
        return 0, ""
    try:
        return await asyncio.wait_for(scorer.score(call), timeout)
    except Exception as exc:  # the scorer is optional: never lose or delay a call record for it
        log.warning("external scorer failed for %s: %s", call.get("linkedid"), exc)
        return 0, ""
