"""Live calls that update themselves: server-sent events carrying the rendered table.

GET /live/stream sends an event `live` ({"html", "count"}) at once and then whenever the table changes
(checked every second), with a comment line as a keep-alive. A stream ends after STREAM_SECONDS; the
browser's EventSource reconnects through the login check again, so a logged-out or disabled user
stops receiving calls. The page itself is complete without JavaScript (it then reloads every 5 s).
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from ppcswitch.web import base
from ppcswitch.web.base import need

STREAM_SECONDS = 300
TICK = 1.0
KEEPALIVE = 15.0


def table_html(request: web.Request) -> tuple[str, int]:
    calls = base._live_calls(request)
    return base.render_text(request, "live_table.html", calls=calls, caps=base.cap_use(request)), len(calls)


async def live_stream(request: web.Request) -> web.StreamResponse:
    need(request, "read")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    last, last_sent = "", 0.0
    ends = time.monotonic() + STREAM_SECONDS
    try:
        await resp.write(b"retry: 2000\n\n")
        while time.monotonic() < ends:
            html, count = table_html(request)
            now = time.monotonic()
            # The elapsed times tick in the browser: a change of the rest is what is worth sending.
            key = _without_elapsed(html)
            if key != last:
                payload = json.dumps({"html": html, "count": count})
                await resp.write(f"event: live\ndata: {payload}\n\n".encode())
                last, last_sent = key, now
            elif now - last_sent > KEEPALIVE:
                await resp.write(b": keep-alive\n\n")
                last_sent = now
            await asyncio.sleep(TICK)
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


def _without_elapsed(html: str) -> str:
    import re

    return re.sub(r'(data-since="\d+">)[^<]*', r"\1", html)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/live/stream", live_stream)

