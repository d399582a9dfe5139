"""Attribution in the panel and the API: a call's postback/webhook delivery log with re-send, the
call page's dispute form, number pools with their shortages, and payout/conversion per sub-ID.

The data comes from ppcswitch.attribution.store and ppcswitch.billing.ledger; writes are one writer
job each, together with their audit entry (as every other panel form).
"""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

from aiohttp import web

from ppcswitch import keys
from ppcswitch.attribution import store as attribution_store
from ppcswitch.billing import ledger, reports
from ppcswitch.money import format_cents
from ppcswitch.storage import repo
from ppcswitch.storage.validate import ValidationError, int_range
from ppcswitch.web import call_views, store
from ppcswitch.web.base import call_log, need


def _attribution(app: web.Application):
    """The controller's in-memory pools and leases (absent when the panel runs without the controller)."""

    return app.get(keys.ATTRIBUTION)


def _ident(raw: str, field: str = "id") -> int:
    try:
        return int_range(raw, field, 1, 2 ** 63 - 1)
    except ValidationError:
        raise web.HTTPNotFound() from None


# --- data shared by the panel and the API --------------------------------------------------


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def notification_json(row: dict) -> dict:
    return {"id": row["id"], "event": row["event"], "kind": row["kind"], "owner_id": row["owner_id"],
            "owner": row["owner"], "url": row["url"], "status": row["status"],
            "created_at": _iso(row["created_at"]), "delivered_at": _iso(row["delivered_at"]),
            "next_attempt_at": _iso(row["next_attempt_at"]), "last_error": row["last_error"],
            "attempts": [{"at": _iso(a["at"]), "status_code": a["status_code"], "error": a["error"], "ms": a["ms"]}
                         for a in row["attempts"]]}


async def pools_overview(app: web.Application) -> list[dict]:
    """Every pool with its campaign, publisher, numbers, live leases and shortages."""
    async with app[keys.SESSIONS]() as s:
        pools = await attribution_store.list_pools(s)
        names = {k: await store.names(s, k) for k in ("campaign", "publisher")}
    live, now = _attribution(app), time.time()
    for p in pools:
        p["campaign"] = names["campaign"].get(p["campaign_id"], "")
        p["publisher"] = names["publisher"].get(p["publisher_id"], "")
        # Shortages counted by this controller but not yet written (they are stored every reload interval).
        p["shortages"] += live.new_shortages.get(p["id"], 0) if live is not None else 0
        p["leased_now"] = live.pools.leased_now(p["id"], now) if live is not None else None
    return pools


async def sub_id_lines(session, period: reports.Period, publisher_id: int | None) -> list[dict]:
    rows = await attribution_store.sub_id_report(session, publisher_id, period.start, period.end)
    names = await store.names(session, "publisher")
    for r in rows:
        r["publisher"] = names.get(r["publisher_id"], "") if r["publisher_id"] else ""
        r["payout"] = format_cents(r["payout_cents"])
    return rows


def _period(query) -> reports.Period:
    today = datetime.now(timezone.utc).date()
    try:
        return reports.period(query.get("from", today.replace(day=1).isoformat())[:10],
                              query.get("to", today.isoformat())[:10], query.get("tz", "UTC")[:64])
    except OverflowError:  # a day beyond the calendar in UTC
        raise ValidationError("to", "the period must lie within the years 1 to 9999") from None


def _publisher_filter(query, key: str) -> int | None:
    raw = query.get(key, "").strip()
    return int_range(raw, key, 1, 2 ** 31 - 1) if raw else None


SUB_ID_CSV = ("publisher", "sub_id", "calls", "billable", "conversion_rate", "payout", "disputed")


def sub_id_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(SUB_ID_CSV)
    for r in rows:
        # A sub-ID is typed by strangers (landing page URLs): keep spreadsheets from running it.
        sub = r["sub_id"]
        sub = "'" + sub if sub[:1] in ("=", "+", "-", "@") else sub
        out.writerow([r["publisher"], sub, r["calls"], r["billable"], f"{r['conversion_rate']:.4f}", r["payout"],
                      r["disputed"]])
    return buf.getvalue()


# --- panel ---------------------------------------------------------------------------------

async def _call(request: web.Request):
    call_id = _ident(request.match_info["id"])
    async with request.app[keys.SESSIONS]() as s:
        call = await store.call_with_attempts(s, call_id)
    if call is None:
        raise web.HTTPNotFound()
    return call


async def postback_resend(request: web.Request) -> web.Response:
    """Queue one of the call's notifications again (admin, finance)."""
    need(request, "reports")
    call = await _call(request)
    outbox_id = _ident(request.match_info["pid"], "postback")
    user = request["user"].username

    async def job(s):
        row = await attribution_store.get_notification(s, outbox_id)
        if row is None or row.linkedid != call.linkedid:
            raise ValidationError("postback", f"call {call.linkedid} has no postback {outbox_id}")
        await attribution_store.resend(s, outbox_id)
        store.audit(s, user, "panel", "postback.resend", f"postback {outbox_id}",
                    {"call": call.linkedid, "kind": row.kind, "event": row.event})

    try:
        await request.app[keys.WRITER].run(job)
        msg = f"Postback #{outbox_id} is queued to be sent again."
    except ValidationError as exc:
        msg = exc.message
    raise web.HTTPFound(f"/calls/{call.id}?" + urlencode({"msg": msg}) + "#postbacks")


async def call_dispute(request: web.Request) -> web.Response:
    """The buyer disputes this call: ledger.dispute (revenue, and payout in revshare, reversed)."""

    need(request, "reports")
    call = await _call(request)
    reason = str((await request.post()).get("reason", "")).strip()
    user = request["user"].username
    window = request.app[keys.SETTINGS].billing.dispute_window_days

    async def job(s):
        if not reason:
            raise ValidationError("reason", "give the reason for the dispute")
        booked = await ledger.dispute(s, call.linkedid, user=user, reason=reason, window_days=window)
        store.audit(s, user, "panel", "call.dispute", call.linkedid, {"reason": reason})
        return booked

    try:
        booked = await request.app[keys.WRITER].run(job)
    except ValidationError as exc:
        return await call_views.call_page(request, status=400, dispute_reason=reason,
                                     dispute_error=exc.message)
    msg = "Dispute booked: " + ", ".join(f"{e.account} {format_cents(e.amount_cents)}" for e in booked)
    raise web.HTTPFound(f"/calls/{call.id}?" + urlencode({"msg": msg}))


async def sub_ids_csv(request: web.Request) -> web.Response:
    from ppcswitch.web.base import _error_page

    need(request, "reports")
    try:
        period, publisher_id = _period(request.query), _publisher_filter(request.query, "publisher")
        async with request.app[keys.SESSIONS]() as s:
            rows = await sub_id_lines(s, period, publisher_id)
    except ValidationError as exc:
        return _error_page(request, 400, str(exc))
    first, last = request.query.get("from", "")[:10], request.query.get("to", "")[:10]
    name = "-".join(x for x in ("sub-ids", first, last) if x.replace("-", "").isdigit())
    return web.Response(text=sub_id_csv(rows), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


# --- API -----------------------------------------------------------------------------------

async def api_call_postbacks(request: web.Request) -> web.Response:
    need(request, "read")
    linkedid = request.match_info["linkedid"]
    async with request.app[keys.SESSIONS]() as s:
        if await store.call_by_linkedid(s, linkedid) is None:
            raise web.HTTPNotFound()
        rows = await call_log(s, linkedid)
    return web.json_response({"items": [notification_json(r) for r in rows]})


async def api_postback_resend(request: web.Request) -> web.Response:
    from ppcswitch.web.json_api import _write

    need(request, "reports")
    outbox_id = _ident(request.match_info["id"])

    async def fn(s):
        row = await attribution_store.resend(s, outbox_id)
        return row.linkedid

    linkedid = await _write(request, "postback.resend", f"postback {outbox_id}", {}, fn)
    async with request.app[keys.SESSIONS]() as s:
        [row] = [r for r in await call_log(s, linkedid) if r["id"] == outbox_id]
    return web.json_response(notification_json(row))


async def api_pools(request: web.Request) -> web.Response:
    need(request, "read")
    return web.json_response({"items": await pools_overview(request.app)})


async def api_sub_ids(request: web.Request) -> web.Response:
    need(request, "reports")
    period = _period(request.query)
    publisher_id = _publisher_filter(request.query, "publisher_id")
    async with request.app[keys.SESSIONS]() as s:
        if publisher_id is not None:
            await repo.get_publisher(s, publisher_id)  # unknown: 404
        rows = await sub_id_lines(s, period, publisher_id)
    return web.json_response({"period": period.label, "start": period.start.isoformat(),
                              "end": period.end.isoformat(), "items": rows})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/calls/{id}/postbacks/{pid}/resend", postback_resend)
    r.add_post("/calls/{id}/dispute", call_dispute)
    r.add_get("/reports/sub-ids.csv", sub_ids_csv)
    r.add_get("/api/v1/calls/{linkedid}/postbacks", api_call_postbacks)
    r.add_post("/api/v1/postbacks/{id}/resend", api_postback_resend)
    r.add_get("/api/v1/pools", api_pools)
    r.add_get("/api/v1/reports/sub-ids", api_sub_ids)
