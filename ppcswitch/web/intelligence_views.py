"""Panel views of call intelligence: transcript search and the QC view (per publisher and sub-ID).
The call page's transcript section is web/templates/transcript_call.html. Registered by app.py
after the panel itself."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from aiohttp import web

from ppcswitch import keys
from ppcswitch.intelligence import rules as pr
from ppcswitch.intelligence import store
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import store as web_store
from ppcswitch.web.base import _write, need, render

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
    async with request.app[keys.SESSIONS]() as s:
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
    low = request.app[keys.SETTINGS].intelligence.low_score
    async with request.app[keys.SESSIONS]() as s:
        rows = await store.qc(s, datetime.now(timezone.utc) - timedelta(days=days), low)
        names = {"publisher": await web_store.names(s, "publisher")}
    for r in rows:
        base = {"publisher": r["publisher_id"] if r["publisher_id"] is not None else "", "sub_id": r["sub_id"]}
        r["calls_url"] = "/transcripts?" + urlencode(base)
        r["low_url"] = "/transcripts?" + urlencode({**base, "max_score": max(0, low - 1)})
        r["disposition_urls"] = {d: "/transcripts?" + urlencode({**base, "disposition": d}) for d in r["dispositions"]}
    return render(request, "qc.html", rows=rows, days=days, low=low, names=names, bands=store.BANDS)


async def rules_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    need(request, "read")
    campaign = _int(request.query.get("campaign") or (values or {}).get("campaign"), 1, 2**31 - 1)
    async with request.app[keys.SESSIONS]() as s:
        rows = await store.phrase_rows(s)
        campaigns = sorted((await web_store.names(s, "campaign")).items(), key=lambda x: x[1].lower())
    defaults = {(r.disposition, r.phrase, r.side) for r in pr.defaults()}
    layer = {(r.disposition, r.phrase, r.side, r.campaign_id): r for r in rows}
    shown = []
    for r in pr.effective(rows, campaign):
        key = (r.disposition, r.phrase, r.side)
        origin = "campaign" if (*key, campaign) in layer and campaign is not None else \
            "network" if (*key, None) in layer else "default"
        shown.append({"rule": r, "origin": origin, "points": pr.POINTS.get(r.disposition, 0)})
    off = [r for r in rows if not r.enabled and (r.campaign_id is None or r.campaign_id == campaign)]
    return render(request, "phrase_rules.html", status=status, shown=shown, off=off, campaign=campaign,
                  campaigns=campaigns, names=dict(campaigns), sides=pr.SIDES, errors=errors or {},
                  values=values or {})


async def rules_submit(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("action", "disposition", "phrase", "side", "campaign")}
    values["side"] = values["side"] or pr.ANY
    try:
        campaign = int(values["campaign"]) if values["campaign"] else None
    except ValueError:
        campaign = None
    action = values["action"]
    try:
        if action not in ("add", "off", "remove"):
            raise ValidationError("action", "add, off or remove")
        if action == "remove":
            fn = lambda s: store.remove_phrase(s, values["disposition"], values["phrase"], values["side"], campaign)  # noqa: E731
        else:
            fn = lambda s: store.set_phrase(s, values["disposition"], values["phrase"], values["side"], campaign,  # noqa: E731
                                            enabled=action == "add")
        done = await _write(request, f"phrase.{action}", f"{values['disposition']}:{values['phrase'][:60]}", values, fn)
        if action == "remove" and not done:
            raise ValidationError("phrase", "no such phrase rule (a shipped default is switched off instead)")
    except ValidationError as exc:
        return await rules_page(request, {"phrase": str(exc)}, values, status=400)
    raise web.HTTPFound("/transcripts/rules?" + urlencode({"campaign": values["campaign"], "saved": "1"}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/transcripts", transcripts_page)
    app.router.add_get("/qc", qc_page)
    app.router.add_get("/transcripts/rules", rules_page)
    app.router.add_post("/transcripts/rules", rules_submit)
