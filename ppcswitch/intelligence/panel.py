"""Panel views of call intelligence: transcript search and the QC view (per publisher and sub-ID).
The call page's transcript section is web/templates/transcript_call.html. Registered by app.py
after the panel itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from aiohttp import web

from ppcswitch import app as core
from ppcswitch.intelligence import store
from ppcswitch.web import store as web_store
from ppcswitch.web.panel import need, render

PAGE = 50


def _int(value: str | None, lo: int, hi: int) -> int | None:
    try:
        return max(lo, min(hi, int(value))) if value not in (None, "") else None
    except ValueError:
        return None


def _filters(query) -> dict:
    return {"q": query.get("q", "")[:200], "disposition": query.get("disposition", "")[:40].strip().lower(),
            "max_score": _int(query.get("max_score"), 0, 100), "publisher_id": _int(query.get("publisher"), 0, 2**31),
            "sub_id": query.get("sub_id") if "sub_id" in query else None}


async def transcripts_page(request: web.Request) -> web.Response:
    need(request, "read")
    f = _filters(request.query)
    page = _int(request.query.get("page"), 1, 10_000) or 1
    async with request.app[core.SESSIONS]() as s:
        rows, total = await store.search(s, f["q"], disposition=f["disposition"], max_score=f["max_score"],
                                         publisher_id=f["publisher_id"], sub_id=f["sub_id"], limit=PAGE,
                                         offset=(page - 1) * PAGE)
        names = {k: await web_store.names(s, k) for k in ("campaign", "publisher")}
    keep = {k: v for k, v in request.query.items() if k != "page" and v != ""}
    pages = max(1, -(-total // PAGE))
    link = lambda n: "?" + urlencode({**keep, "page": n})  # noqa: E731
    return render(request, "transcripts.html", rows=rows, total=total, f=f, names=names, page=page, pages=pages,
                  prev_url=link(page - 1) if page > 1 else "", next_url=link(page + 1) if page < pages else "")


async def qc_page(request: web.Request) -> web.Response:
    need(request, "read")
    days = _int(request.query.get("days"), 1, 90) or 7
    low = request.app[core.SETTINGS].intelligence.low_score
    async with request.app[core.SESSIONS]() as s:
        rows = await store.qc(s, datetime.now(timezone.utc) - timedelta(days=days), low)
        names = {"publisher": await web_store.names(s, "publisher")}
    for r in rows:
        base = {"publisher": r["publisher_id"] if r["publisher_id"] is not None else "", "sub_id": r["sub_id"]}
        r["calls_url"] = "/transcripts?" + urlencode(base)
        r["low_url"] = "/transcripts?" + urlencode({**base, "max_score": max(0, low - 1)})
        r["disposition_urls"] = {d: "/transcripts?" + urlencode({**base, "disposition": d}) for d in r["dispositions"]}
    return render(request, "qc.html", rows=rows, days=days, low=low, names=names, bands=store.BANDS)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/transcripts", transcripts_page)
    app.router.add_get("/qc", qc_page)
