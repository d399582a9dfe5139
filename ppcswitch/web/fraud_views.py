"""Panel views for fraud and call quality: the per-publisher quality view with open alerts, and a
call's recording (playback inline, or download). Registered by app.py after the panel itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiohttp import web

from ppcswitch import keys
from ppcswitch.fraud import store
from ppcswitch.fraud.runtime import recordings_dir
from ppcswitch.web import store as web_store
from ppcswitch.web.base import need, render


async def quality_page(request: web.Request) -> web.Response:
    need(request, "read")
    try:
        days = max(1, min(90, int(request.query.get("days", "7"))))
    except ValueError:
        days = 7
    since = datetime.now(timezone.utc) - timedelta(days=days)
    async with request.app[keys.SESSIONS]() as s:
        rows = await store.publisher_quality(s, since)
        alerts = await store.open_alerts(s)
        names = {k: await web_store.names(s, k) for k in ("publisher", "buyer")}
    return render(request, "quality.html", rows=rows, alerts=alerts, names=names, days=days)


def recording_file(settings, name: str) -> Path | None:
    """The recording's path in the local directory, or None (only plain .wav names are served)."""
    if not name or Path(name).name != name or not name.endswith(".wav"):
        return None
    path = recordings_dir(settings) / name
    return path if path.is_file() else None


async def recording(request: web.Request) -> web.StreamResponse:
    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        try:
            call = await web_store.call_with_attempts(s, int(request.match_info["id"]))
        except ValueError:
            raise web.HTTPNotFound() from None
        signals = await store.get_signals(s, call.linkedid) if call is not None else None
    path = recording_file(request.app[keys.SETTINGS], (signals or {}).get("recording", ""))
    if path is None:
        raise web.HTTPNotFound(text="no recording for this call (not recorded, or deleted after its retention)")
    disposition = "attachment" if request.query.get("download") else "inline"
    return web.FileResponse(path, headers={"Content-Type": "audio/wav",
                                           "Content-Disposition": f'{disposition}; filename="{path.name}"'})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/quality", quality_page)
    app.router.add_get("/calls/{id:[0-9]+}/recording", recording)
