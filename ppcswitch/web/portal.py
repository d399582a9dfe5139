"""Publisher and buyer portals: each partner sees its own calls and money, and nothing else.

Deny by default: a partner user (role `publisher` or `buyer`) reaches only the routes of
PARTNER_ROUTES (panel.guard and api.guard ask `partner_allowed`), and every portal read
filters on the user's own party in SQL (portal_store). Operators invite partner users
with a one-time link, set what each partner sees (caller in full, masked or hidden;
the buyer's name to publishers; a buyer pausing itself) and decide buyers' disputes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import date, timedelta
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import func, select

from ppcswitch import keys
from ppcswitch import timezones
from ppcswitch.money import format_cents
from ppcswitch.storage import models as t
from ppcswitch.storage import models_portal as mp
from ppcswitch.storage.validate import ValidationError, int_range
from ppcswitch.web import base
from ppcswitch.web import explain, security, store, zones
from ppcswitch.web.base import Forbidden, need
from ppcswitch.web import portal_store as ps

INVITE_CSRF_COOKIE = "ppc_invite_csrf"
NAV = {
    "publisher": [("/portal", "Numbers"), ("/portal/calls", "Calls"), ("/portal/report", "Report"),
                  ("/portal/statements", "Statements"), ("/portal/postback", "Postback"),
                  ("/portal/account", "Account")],
    "buyer": [("/portal", "Availability"), ("/portal/schedule", "Hours and caps"), ("/portal/calls", "Calls"),
              ("/portal/disputes", "Disputes"), ("/portal/report", "Report"), ("/portal/statements", "Invoices"),
              ("/portal/account", "Account")],
}
FLASH = {"1": "Saved.", "paused": "Paused: no calls are sent to you until you resume.",
         "resumed": "Resumed: calls are sent to you again.", "disputed": "Dispute sent: the operator will decide.",
         "zone": "Time zone saved.", "password": "Password changed.", "revoked": "Token revoked.",
         "requested": "Request sent: the operator will give you the numbers.",
         "filled": "Done: your new numbers are in the list.", "deleted": "Postback removed: nothing is sent now.",
         "rules": "Saved: calls are sent to you by these hours and caps from now on."}

# Every route a partner may reach (method, route pattern). Anything else answers 403.
PARTNER_ROUTES = frozenset({
    ("POST", "/logout"),
    ("GET", "/"),  # sends the partner to /portal
    ("GET", "/portal"), ("GET", "/portal/calls"), ("GET", "/portal/calls.csv"), ("GET", "/portal/calls/{id}"),
    ("POST", "/portal/calls/{id}/dispute"), ("GET", "/portal/disputes"), ("POST", "/portal/availability"),
    ("GET", "/portal/report"), ("GET", "/portal/report.csv"), ("GET", "/portal/statements"),
    ("GET", "/portal/statements/{id}"), ("GET", "/portal/account"), ("POST", "/portal/account/timezone"),
    ("POST", "/portal/account/password"), ("POST", "/portal/tokens"), ("POST", "/portal/tokens/{id}/revoke"),
    ("GET", "/portal/calls/{id}/recording"), ("POST", "/portal/number-requests"), ("GET", "/portal/postback"),
    ("POST", "/portal/postback"), ("POST", "/portal/postback/delete"), ("GET", "/portal/schedule"),
    ("POST", "/portal/schedule"),
    # The API (portal_api): the same, with a partner's own token.
    ("GET", "/api/v1/portal/me"), ("GET", "/api/v1/portal/calls"), ("GET", "/api/v1/portal/calls/{id}"),
    ("POST", "/api/v1/portal/calls/{id}/dispute"), ("GET", "/api/v1/portal/disputes"),
    ("GET", "/api/v1/portal/numbers"), ("GET", "/api/v1/portal/report"), ("GET", "/api/v1/portal/statements"),
    ("GET", "/api/v1/portal/statements/{id}"), ("GET", "/api/v1/portal/statements/current"), ("PUT", "/api/v1/portal/availability"),
    ("GET", "/api/v1/portal/calls/{id}/recording"), ("GET", "/api/v1/portal/number-requests"),
    ("POST", "/api/v1/portal/number-requests"), ("GET", "/api/v1/portal/postback"), ("PUT", "/api/v1/portal/postback"),
    ("DELETE", "/api/v1/portal/postback"), ("GET", "/api/v1/portal/schedule"), ("PATCH", "/api/v1/portal/schedule"),
})


def route_key(request: web.Request) -> tuple[str, str]:
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    method = "GET" if request.method == "HEAD" else request.method
    return method, (getattr(resource, "canonical", "") if resource is not None else "")


def partner_allowed(request: web.Request) -> bool:
    """Whether this request's route is one a partner may reach (only asked for partner users)."""
    return route_key(request) in PARTNER_ROUTES


def partner_gate(request: web.Request) -> str | None:
    """For a partner user: None when the route is theirs, else why not (the guards answer 403).
    The panel's home page sends a partner to the portal's."""
    if not security.is_partner(request.get("role")):
        return None
    if request.path == "/" and request.method in ("GET", "HEAD"):
        raise web.HTTPFound("/portal")
    if partner_allowed(request):
        return None
    return "this page is for the operator's staff; your pages are under /portal"


# --- plumbing ---------------------------------------------------------------------------------

async def party(request: web.Request) -> ps.Party:
    """The logged-in partner's party; operators (and partners whose party is gone) are refused."""
    found = request.get("party")
    if found is not None:
        return found
    user = request.get("user")
    if user is None or not security.is_partner(user.role):
        raise Forbidden("the portal is for publisher and buyer users; operators use the panel")
    async with request.app[keys.SESSIONS]() as s:
        found = await ps.party_of(s, user)
    if found is None:
        raise Forbidden("your account is no longer attached to a publisher or buyer; ask the operator")
    request["party"] = found
    return found


async def access(request: web.Request, who: ps.Party) -> ps.Access:
    async with request.app[keys.SESSIONS]() as s:
        return await ps.access_of(s, who.kind, who.id)


async def columns(request: web.Request, who: ps.Party) -> ps.Access:
    """The partner's access for a list's columns: a caller column unless every campaign hides callers
    from it, a buyer column if any campaign shows buyers' names to it."""
    import dataclasses

    async with request.app[keys.SESSIONS]() as s:
        acc = await ps.access_of(s, who.kind, who.id)
        overs = list((await ps.campaign_access(s)).values())
    every = [acc] + [ps.effective(acc, o) for o in overs]
    return dataclasses.replace(acc, caller_display="hidden" if all(x.caller_display == "hidden" for x in every)
                               else "full", show_buyer_name=any(x.show_buyer_name for x in every))


def render(request: web.Request, template: str, status: int = 200, **ctx) -> web.Response:

    role = request.get("role")
    ctx.setdefault("flash", FLASH.get(request.query.get("saved", ""), ""))
    ctx.setdefault("party", request.get("party"))
    return base.render(request, template, status=status, portal_nav=NAV.get(role, []), **ctx)


async def write(request: web.Request, action: str, target: str, detail: dict, fn, via: str = "portal"):
    """A partner's change and its audit entry (via `portal` or `portal-api`) in one transaction."""
    return await base.audited_write(request, via, action, target, detail, fn)


def _ident(request: web.Request) -> int:
    try:
        return int_range(request.match_info["id"], "id", 1, 2 ** 62)
    except ValidationError:
        raise web.HTTPNotFound() from None


def _day(value: str, field: str) -> date | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, "expected a date such as 2026-11-01") from None


def call_query(query, zone: str) -> ps.CallQuery:
    billable = {"yes": True, "no": False, "": None}.get(query.get("billable", ""))
    if billable is None and query.get("billable", "") not in ("",):
        raise ValidationError("billable", "must be yes or no")
    number = re.sub(r"\D", "", query.get("number", ""))[:20]
    sub_id = query.get("sub_id")
    return ps.CallQuery(_day(query.get("date_from", ""), "date_from"), _day(query.get("date_to", ""), "date_to"),
                        sub_id.strip()[:64] if sub_id is not None and sub_id.strip() else None, number, billable,
                        zone)


def call_view(call: t.Call, who: ps.Party, acc: ps.Access, amount_cents: int, buyer_names: dict[int, str],
              dispute=None, recorded: bool = False, reversed_: bool = False) -> dict:
    """What a partner sees of one of its calls: never revenue to a publisher, never payout to a buyer.
    `acc` is the partner's access on the call's campaign (ps.access_by_campaign)."""
    out = {"id": call.id, "started_at": call.started_at, "tracking_number": call.tracking_number,
           "caller": ps.show_caller(call.caller, acc.caller_display), "duration_s": (call.connected_ms or 0) // 1000,
           "billable": bool(call.billable), "reasons": [explain.billing(r) for r in ps.reasons_of(call)],
           "reason_codes": ps.reasons_of(call), "reversed": reversed_}
    if who.kind == "publisher":
        out.update(sub_id=call.sub_id, payout_cents=amount_cents,
                   buyer=buyer_names.get(call.buyer_id or 0, "") if acc.show_buyer_name else None)
    else:
        out.update(state=call.outcome, revenue_cents=amount_cents, recording=recorded,
                   dispute=None if dispute is None else {"id": dispute.id, "state": dispute.state,
                                                         "reason_code": dispute.reason_code,
                                                         "decision_note": dispute.decision_note})
    return out


async def calls_for(request: web.Request, who: ps.Party, q: ps.CallQuery, limit: int, cursor: str):
    async with request.app[keys.SESSIONS]() as s:
        rows, nxt = await ps.list_calls(s, who, q, limit, cursor)
    return await call_views(request, who, rows), nxt


async def call_views(request: web.Request, who: ps.Party, rows: list) -> list[dict]:
    async with request.app[keys.SESSIONS]() as s:
        ids = [c.id for c in rows]
        amounts = await ps.ledger_amounts(s, who, ids)
        disputes = await ps.disputes_of_calls(s, who, ids)
        acc, per = await ps.access_by_campaign(s, who, [c.campaign_id for c in rows])
        shown = who.kind == "publisher" and any(x.show_buyer_name for x in [acc, *per.values()])
        names = await store.names(s, "buyer") if shown else {}
        recorded = await ps.recorded_calls(s, who, rows)
        undone = await ps.reversed_calls(s, who, ids)
    return [call_view(c, who, per.get(c.campaign_id, acc), amounts.get(c.id, 0), names, disputes.get(c.id),
                      c.id in recorded, c.id in undone) for c in rows]


# --- pages -------------------------------------------------------------------------------------

async def home(request: web.Request, errors=None, values=None, status: int = 200) -> web.Response:
    who = await party(request)
    if who.kind == "publisher":
        more = await publisher_requests(request, who)
        async with request.app[keys.SESSIONS]() as s:
            numbers, pools = await ps.numbers_of(s, who), await ps.pools_of(s, who)
        return render(request, "portal/publisher_home.html", status=status, numbers=numbers, pools=pools,
                      base_url=_base_url(request), errors=errors or {}, values=values or {}, **more)
    async with request.app[keys.SESSIONS]() as s:
        buyer = await s.get(t.Buyer, who.id)
        acc = await ps.access_of(s, "buyer", who.id)
        pending = await ps.list_disputes(s, who.id, "pending")
        rules = await ps.own_rules(s, who)
    return render(request, "portal/buyer_home.html", buyer=buyer, acc=acc, pending=len(pending), rules=rules,
                  window=request.app[keys.SETTINGS].billing.dispute_window_days)


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def availability(request: web.Request) -> web.Response:
    who = await party(request)
    paused = (await request.post()).get("paused") == "1"
    try:
        await write(request, "portal.pause" if paused else "portal.resume", f"buyer {who.id}", {"paused": paused},
                    lambda s: ps.set_paused(s, who, paused))
    except ValidationError as exc:
        return await _error(request, 403, exc.message)
    raise web.HTTPFound(f"/portal?saved={'paused' if paused else 'resumed'}")


async def _error(request: web.Request, status: int, message: str) -> web.Response:

    return base._error_page(request, status, message)


async def calls_page(request: web.Request) -> web.Response:
    who = await party(request)
    zone = request["zone"]
    try:
        q = call_query(request.query, zone)
        rows, nxt = await calls_for(request, who, q, 50, request.query.get("cursor", ""))
        errors = {}
    except ValidationError as exc:
        rows, nxt, errors = [], "", {exc.field: exc.message}
    keep = {k: v for k, v in request.query.items() if k in ("date_from", "date_to", "sub_id", "number", "billable")}
    return render(request, "portal/calls.html", status=400 if errors else 200, rows=rows, q=keep, errors=errors,
                  next_url=("/portal/calls?" + urlencode({**keep, "cursor": nxt})) if nxt else "",
                  csv_url="/portal/calls.csv?" + urlencode(keep), acc=await columns(request, who))


def csv_columns(kind: str, show_buyer: bool) -> list[str]:
    cols = ["started_at", "tracking_number", "caller", "duration_s", "billable", "reason"]
    if kind == "publisher":
        return cols[:3] + ["sub_id"] + cols[3:] + (["buyer"] if show_buyer else []) + ["payout"]
    return cols[:3] + ["state"] + cols[3:] + ["revenue", "dispute"]


def _csv_safe(value) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(r"[+-]?\d+(\.\d+)?", text) else text


async def calls_csv(request: web.Request) -> web.StreamResponse:
    """Every call matching the filter, streamed page by page (the partner's zone, its own money only)."""
    from zoneinfo import ZoneInfo

    who = await party(request)
    zone = request["zone"]
    try:
        q = call_query(request.query, zone)
    except ValidationError as exc:
        return await _error(request, 400, str(exc))
    acc = await columns(request, who)
    cols = csv_columns(who.kind, acc.show_buyer_name)
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": f'attachment; filename="calls-{who.kind}.csv"'})
    await resp.prepare(request)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(cols)
    cursor, z = "", ZoneInfo(zone)
    while True:
        rows, cursor = await calls_for(request, who, q, 1000, cursor)
        for c in rows:
            line = {"started_at": c["started_at"].astimezone(z).isoformat(), "tracking_number": c["tracking_number"],
                    "caller": c["caller"], "duration_s": c["duration_s"], "billable": "yes" if c["billable"] else "no",
                    "reason": "; ".join(c["reasons"]), "sub_id": c.get("sub_id", ""), "buyer": c.get("buyer") or "",
                    "payout": format_cents(c.get("payout_cents", 0)), "state": c.get("state", ""),
                    "revenue": format_cents(c.get("revenue_cents", 0)),
                    "dispute": (c.get("dispute") or {}).get("state", "")}
            w.writerow([_csv_safe(line[k]) for k in cols])
        await resp.write(out.getvalue().encode())
        out.seek(0)
        out.truncate()
        if not cursor:
            break
    await resp.write_eof()
    return resp


async def call_page(request: web.Request, status: int = 200, **more) -> web.Response:
    who = await party(request)
    ident = _ident(request)
    async with request.app[keys.SESSIONS]() as s:
        call = await ps.get_call(s, who, ident)
        if call is None:
            raise web.HTTPNotFound()
    [view] = await call_views(request, who, [call])
    window = request.app[keys.SETTINGS].billing.dispute_window_days
    closes = call.started_at + timedelta(days=window)
    return render(request, "portal/call.html", status=status, c=view, reasons=mp.DISPUTE_REASONS, window=window,
                  closes=closes, form=more.get("form", {}), error=more.get("error", ""))


async def dispute_submit(request: web.Request) -> web.Response:
    who = await party(request)
    ident = _ident(request)
    form = await request.post()
    code, note = str(form.get("reason_code", "")), str(form.get("note", ""))
    window = request.app[keys.SETTINGS].billing.dispute_window_days
    user = request["user"].username
    if who.kind != "buyer":
        raise Forbidden("only buyers dispute calls")
    try:
        await write(request, "portal.dispute", f"call {ident}", {"reason_code": code, "note": note},
                    lambda s: ps.open_dispute(s, who, ident, reason_code=code, note=note, user=user,
                                              window_days=window))
    except ValidationError as exc:
        if exc.message.startswith("no call"):
            raise web.HTTPNotFound() from None
        return await call_page(request, status=400, form={"reason_code": code, "note": note}, error=exc.message)
    raise web.HTTPFound(f"/portal/calls/{ident}?saved=disputed")


async def disputes_page(request: web.Request) -> web.Response:
    who = await party(request)
    if who.kind != "buyer":
        raise Forbidden("disputes are for buyers")
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_disputes(s, who.id)
    return render(request, "portal/disputes.html", rows=rows, reasons=mp.DISPUTE_REASONS)


def _report_days(request: web.Request) -> tuple[date, date]:
    today = zones.today(request["zone"])
    first = _day(request.query.get("from", ""), "from") or today.replace(day=1)
    last = _day(request.query.get("to", ""), "to") or today
    return first, last


REPORT_BY = {"day": "Day", "number": "Tracking number", "campaign": "Campaign", "sub_id": "Sub-ID"}


def _report_by(request: web.Request, who: ps.Party) -> str:
    by = request.query.get("by", "day")
    if by not in REPORT_BY or (by == "sub_id" and who.kind != "publisher"):
        raise ValidationError("by", "must be " + ", ".join(k for k in REPORT_BY if k != "sub_id" or who.kind == "publisher"))
    return by


async def report_rows(request: web.Request, who: ps.Party) -> tuple[date, date, list[dict]]:
    first, last = _report_days(request)
    by = _report_by(request, who)
    async with request.app[keys.SESSIONS]() as s:
        if by == "day":
            rows = await ps.report_by_day(s, who, first, last, request["zone"])
            for r in rows:
                r["key"] = r["day"].isoformat()
        else:
            rows = await ps.report_by(s, who, first, last, request["zone"], by)
    return first, last, rows


async def report_page(request: web.Request) -> web.Response:
    who = await party(request)
    by = request.query.get("by", "day")
    try:
        first, last, rows = await report_rows(request, who)
        errors = {}
    except ValidationError as exc:
        first, last, rows, errors = request.query.get("from", ""), request.query.get("to", ""), [], {exc.field: exc.message}
    total = {k: sum(r[k] for r in rows) for k in ("calls", "billable", "seconds", "amount_cents")}
    top = max([r["calls"] for r in rows] + [1])
    choices = [(k, v) for k, v in REPORT_BY.items() if k != "sub_id" or who.kind == "publisher"]
    return render(request, "portal/report.html", status=400 if errors else 200, rows=rows, total=total, top=top,
                  first=str(first), last=str(last), errors=errors, by=by if by in REPORT_BY else "day",
                  choices=choices, by_label=REPORT_BY.get(by, "Day"),
                  csv_url="/portal/report.csv?" + urlencode({"from": str(first), "to": str(last), "by": by}))


async def report_csv(request: web.Request) -> web.Response:
    who = await party(request)
    try:
        first, last, rows = await report_rows(request, who)
    except ValidationError as exc:
        return await _error(request, 400, str(exc))
    by = request.query.get("by", "day")
    money = "payout" if who.kind == "publisher" else "revenue"
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([by, "calls", "billable", "connected_s", money])
    for r in rows:
        w.writerow([_csv_safe(r["key"]), r["calls"], r["billable"], r["seconds"], format_cents(r["amount_cents"])])
    w.writerow(["total", sum(r["calls"] for r in rows), sum(r["billable"] for r in rows),
                sum(r["seconds"] for r in rows), format_cents(sum(r["amount_cents"] for r in rows))])
    return web.Response(text=out.getvalue(), content_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="report-{by}-{first}-{last}.csv"'})


async def statements_page(request: web.Request) -> web.Response:
    who = await party(request)
    async with request.app[keys.SESSIONS]() as s:
        periods = await ps.closed_periods(s)
    return render(request, "portal/statements.html", periods=periods)


async def caller_displays(session, who: ps.Party, st) -> dict[str, str]:
    """How the caller of each call on a statement is shown to this partner (its campaign's setting
    where it has one, else the partner's)."""
    linkedids = sorted({x.linkedid for x in st.lines if x.linkedid})
    acc, _ = await ps.access_by_campaign(session, who, [])
    if not linkedids:
        return {}
    pairs = (await session.execute(select(t.Call.linkedid, t.Call.campaign_id).where(
        t.Call.linkedid.in_(linkedids), who.column == who.id))).all()
    _acc, per = await ps.access_by_campaign(session, who, [c for _, c in pairs])
    return {lid: per.get(c, acc).caller_display for lid, c in pairs}


def statement_lines(st, acc: ps.Access, displays: dict[str, str] | None = None) -> list[dict]:
    """A statement's lines as a partner sees them (the caller as the operator shows it to this partner)."""
    displays = displays or {}
    return [{"booked_at": x.booked_at, "kind": x.kind, "linkedid": x.linkedid,
             "caller": ps.show_caller(x.caller, displays.get(x.linkedid, acc.caller_display)),
             "connected_s": x.connected_s,
             "amount_cents": x.amount_cents, "reason": x.reason if x.kind != "call" else ""} for x in st.lines]


async def statement_for(request: web.Request, who: ps.Party, ident: int):
    """The partner's statement (0: the open period so far) and its lines as the partner sees them; 404
    for a period that does not exist (the page's and the API's)."""
    currency = request.app[keys.SETTINGS].billing.currency
    async with request.app[keys.SESSIONS]() as s:
        try:
            st = await ps.statement(s, who, ident, request["zone"], currency)
        except ValidationError:
            raise web.HTTPNotFound() from None
        acc = await ps.access_of(s, who.kind, who.id)
        displays = await caller_displays(s, who, st)
    return st, statement_lines(st, acc, displays)


async def statement_page(request: web.Request) -> web.Response:
    who = await party(request)
    ident = 0 if request.match_info["id"] == "current" else _ident(request)
    currency = request.app[keys.SETTINGS].billing.currency
    st, lines = await statement_for(request, who, ident)
    if request.query.get("format") == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["booked_at", "kind", "call", "caller", "connected_s", f"amount_{currency}", "note"])
        for x in lines:
            w.writerow([x["booked_at"].isoformat(), x["kind"], x["linkedid"], x["caller"], x["connected_s"],
                        format_cents(x["amount_cents"]), _csv_safe(x["reason"])])
        w.writerow(["total", "", "", "", "", format_cents(st.total_cents), ""])
        return web.Response(text=out.getvalue(), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{"statement" if who.kind == "publisher" else "invoice"}-{ident}.csv"'})
    return render(request, "portal/statement.html", st=st, lines=lines, period_id=ident)


# --- the partner's own account ------------------------------------------------------------------

async def account_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    from ppcswitch.web import account_views

    await party(request)
    user = request["user"]
    async with request.app[keys.SESSIONS]() as s:
        tokens = await account_views.own_tokens(s, user.id)
    new_token = request.cookies.get(account_views.NEW_TOKEN_COOKIE, "")
    new_token = new_token if new_token.startswith(security.TOKEN_PREFIX) else ""
    resp = render(request, "portal/account.html", status=status, errors=errors or {},
                  values=values or {"timezone": user.timezone or ""}, tokens=tokens, token=new_token,
                  account_zone=(await zones.account_zone(request.app))[0], zone_names=timezones.names())
    if new_token:
        resp.del_cookie(account_views.NEW_TOKEN_COOKIE, path="/")
    return resp


async def account_zone_save(request: web.Request) -> web.Response:
    await party(request)
    values = {"timezone": str((await request.post()).get("timezone", "")).strip()}
    user_id = request["user"].id
    try:
        await write(request, "portal.timezone", request["user"].username, values,
                    lambda s: zones.set_user_zone(s, user_id, values["timezone"]))
    except ValidationError as exc:
        return await account_page(request, {exc.field: exc.message}, values, status=400)
    raise web.HTTPFound("/portal/account?saved=zone")


async def account_password_save(request: web.Request) -> web.Response:
    from ppcswitch.web import account_views

    await party(request)
    form = await request.post()
    current, new, again = (str(form.get(k, "")) for k in ("current", "password", "password_again"))
    try:
        if new != again:
            raise ValidationError("password_again", "does not match the new password")
        user_id, sid = request["user"].id, request["sid"]
        await write(request, "portal.password", request["user"].username, {},
                    lambda s: account_views.change_own_password(s, user_id, current, new, sid))
    except ValidationError as exc:
        return await account_page(request, {exc.field: exc.message}, status=400)
    raise web.HTTPFound("/portal/account?saved=password")


async def token_add(request: web.Request) -> web.Response:
    from ppcswitch.web import account_views

    await party(request)
    name = str((await request.post()).get("name", "")).strip()
    user = request["user"]
    try:
        _row, secret = await write(request, "portal.token.create", user.username, {"name": name},
                                   lambda s: store.create_token(s, user, name or "portal", user.role))
    except ValidationError as exc:
        return await account_page(request, {exc.field: exc.message}, status=400)
    resp = web.HTTPFound("/portal/account#tokens")
    account_views.remember_new_token(resp, request, secret)
    raise resp


async def token_revoke(request: web.Request) -> web.Response:
    from ppcswitch.storage import models_web as w

    await party(request)
    ident, user = _ident(request), request["user"]

    async def job(s):
        row = await s.get(w.ApiToken, ident)
        if row is None or row.user_id != user.id:  # only one's own tokens
            raise ValidationError("token", f"no token with id {ident}")
        row.revoked = True
        await s.flush()

    try:
        await write(request, "portal.token.revoke", f"token {ident}", {}, job)
    except ValidationError:
        raise web.HTTPNotFound() from None
    raise web.HTTPFound("/portal/account?saved=revoked")


# --- invitations (public: the link is the credential) ----------------------------------------

def _invite_token(request: web.Request) -> str:
    token = request.match_info["token"]
    return token if re.fullmatch(r"inv_[A-Za-z0-9_-]{43}", token) else ""


async def invite_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:

    token = _invite_token(request)
    found = None
    if token:
        async with request.app[keys.SESSIONS]() as s:
            found = await ps.invite_user(s, token)
    if found is None:
        return base.render(request, "portal/invite.html", status=410, user_name="", expired=True,
                            login_csrf="", error="", path_token="")
    csrf = request.cookies.get(INVITE_CSRF_COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}", csrf):
        csrf = security.new_secret()
    resp = base.render(request, "portal/invite.html", status=status, user_name=found[1].username, expired=False,
                        login_csrf=csrf, error=error, path_token=token, expires_at=found[0].expires_at)
    resp.set_cookie(INVITE_CSRF_COOKIE, csrf, httponly=True, samesite="Strict", path="/invite/",
                    secure=request.app[keys.SETTINGS].http.secure_cookies)
    resp.headers["Referrer-Policy"] = "no-referrer"  # the link is a secret
    return resp


async def invite_submit(request: web.Request) -> web.Response:
    token = _invite_token(request)
    form = await request.post()
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(INVITE_CSRF_COOKIE, "")
    if not sent or not cookie or not security.same(sent, cookie):
        return await invite_page(request, "The form expired. Please try again.", 403)
    password, again = str(form.get("password", "")), str(form.get("password_again", ""))
    if password != again:
        return await invite_page(request, "The two passwords differ.", 400)
    address = request.remote or "?"
    throttle = request.app[keys.LOGIN_THROTTLE]
    wait = throttle.retry_after("invite:" + address, address)
    if wait > 0:
        return await invite_page(request, f"Too many attempts. Try again in {int(wait) + 1} seconds.", 429)

    async def job(s):
        user = await ps.accept_invite(s, token, password)
        store.audit(s, user.username, "portal", "portal.invite.accept", user.username, {})
        return user

    try:
        await request.app[keys.WRITER].run(job)
    except ValidationError as exc:
        if exc.field == "invite":
            throttle.failed("invite:" + address, address)
        return await invite_page(request, exc.message, 400)
    resp = web.HTTPFound("/login?" + urlencode({"next": "/portal"}))
    resp.del_cookie(INVITE_CSRF_COOKIE, path="/invite/")
    raise resp


# --- operator pages: partner users, what partners see, disputes ----------------------------------

async def partners_page(request: web.Request, errors=None, values=None, link: str = "", status: int = 200
                        ) -> web.Response:
    need(request, "users")
    async with request.app[keys.SESSIONS]() as s:
        users = await ps.partner_users(s)
        names = {"publisher": await store.names(s, "publisher"), "buyer": await store.names(s, "buyer"),
                 "campaign": await store.names(s, "campaign")}
        acc = await ps.all_access(s)
        campaigns = await ps.campaign_access(s)
        pending = len(await ps.list_number_requests(s, None, "pending"))
    return render(request, "portal/partners.html", status=status, users=users, names=names, acc=acc,
                  campaigns=campaigns, pending_requests=pending,
                  default=ps.Access(), errors=errors or {}, values=values or {}, link=link,
                  hours=request.app[keys.SETTINGS].http.invite_hours, now=_now(),
                  displays=mp.CALLER_DISPLAY)


def _now():
    from ppcswitch.storage.models import utcnow

    return utcnow()


def _party_field(value: str) -> tuple[str, int]:
    kind, _, ident = value.partition(":")
    if kind not in ("publisher", "buyer") or not ident.isdigit():
        raise ValidationError("party", "choose a publisher or a buyer")
    return kind, int(ident)


async def partner_invite(request: web.Request) -> web.Response:
    need(request, "users")
    form = await request.post()
    values = {"username": str(form.get("username", "")).strip(), "party": str(form.get("party", ""))}
    by, hours = request["user"].username, request.app[keys.SETTINGS].http.invite_hours
    try:
        kind, ident = _party_field(values["party"])

        async def job(s):
            user, token = await ps.invite(s, username=values["username"], kind=kind, party_id=ident, by=by,
                                          hours=hours)
            store.audit(s, by, "panel", "partner.invite", user.username, {"role": kind, "party_id": ident})
            return token

        token = await request.app[keys.WRITER].run(job)
    except ValidationError as exc:
        return await partners_page(request, {exc.field: exc.message}, values, status=400)
    return await partners_page(request, link=f"{_base_url(request)}/invite/{token}")


async def partner_reinvite(request: web.Request) -> web.Response:
    need(request, "users")
    ident = _ident(request)
    by, hours = request["user"].username, request.app[keys.SETTINGS].http.invite_hours

    async def job(s):
        user, token = await ps.reinvite(s, ident, by=by, hours=hours)
        store.audit(s, by, "panel", "partner.reinvite", user.username, {})
        return token

    try:
        token = await request.app[keys.WRITER].run(job)
    except ValidationError:
        raise web.HTTPNotFound() from None
    return await partners_page(request, link=f"{_base_url(request)}/invite/{token}")


async def partner_access_save(request: web.Request) -> web.Response:
    need(request, "users")
    form = await request.post()
    by = request["user"].username
    try:
        kind, ident = _party_field(str(form.get("party", "")))
        values = {"caller_display": str(form.get("caller_display", ""))}
        if kind == "publisher":
            values.update(show_buyer_name=form.get("show_buyer_name") == "1",
                          number_limit=str(form.get("number_limit", "0")),
                          auto_fill_numbers=form.get("auto_fill_numbers") == "1")
        else:
            values.update(allow_pause=form.get("allow_pause") == "1", recordings=form.get("recordings") == "1",
                          edit_rules=form.get("edit_rules") == "1", hours_bound=str(form.get("hours_bound", "")),
                          **{k: str(form.get(k, "")) for k in ps.BOUNDS})

        async def job(s):
            result = await ps.set_access(s, kind, ident, **values)
            store.audit(s, by, "panel", "partner.access", f"{kind} {ident}", dataclasses.asdict(result))
            return result

        await request.app[keys.WRITER].run(job)
    except ValidationError as exc:
        return await partners_page(request, {exc.field: exc.message}, status=400)
    raise web.HTTPFound("/partners?saved=1#access")


async def disputes_admin(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    need(request, "read")
    state = request.query.get("state", "pending")
    state = state if state in mp.DISPUTE_STATES or state == "all" else "pending"
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_disputes(s, None, "" if state == "all" else state)
        buyers = await store.names(s, "buyer")
        calls = {c.id: c for c in await s.scalars(select(t.Call).where(t.Call.id.in_([d.call_id for d in rows])))}
    return render(request, "portal/disputes_admin.html", status=status, rows=rows, buyers=buyers, calls=calls,
                  state=state, reasons=mp.DISPUTE_REASONS, error=error, states=mp.DISPUTE_STATES)


async def decide(request: web.Request, kind: str, permission: str, yes: str, note: str, via: str):
    """An operator's decision on one pending dispute or number request (the panel's and the API's):
    `yes` ends the path of the accepting action; 404 for an unknown row."""
    need(request, permission)
    ident = _ident(request)
    accept, by = request.path.endswith("/" + yes), request["user"].username
    try:
        return await request.app[keys.WRITER].run(
            lambda s: ps.decide(s, kind, ident, yes=accept, note=note, user=by, via=via))
    except LookupError:
        raise web.HTTPNotFound() from None


async def dispute_decide(request: web.Request) -> web.Response:
    note = str((await request.post()).get("note", ""))
    try:  # "reports": moves money, as the billing page's corrections do
        await decide(request, "dispute", "reports", "accept", note, "panel")
    except ValidationError as exc:
        return await disputes_admin(request, exc.message, 400)
    raise web.HTTPFound("/disputes?saved=1")


# --- the partners' own tasks: recordings, number requests, postback, hours and caps -----------------

async def recording(request: web.Request) -> web.StreamResponse:
    """A buyer hears (or downloads) one of its own calls' recordings, where the campaign recorded it and
    the operator lets it; anything else is 404. A play from the start or a download is audited."""
    from ppcswitch.web.fraud_views import recording_file

    who = await party(request)
    ident = _ident(request)
    async with request.app[keys.SESSIONS]() as s:
        name = await ps.recording_name(s, who, ident)
    path = recording_file(request.app[keys.SETTINGS], name)
    if path is None:
        raise web.HTTPNotFound(text="no recording of this call for you")
    download = bool(request.query.get("download"))
    if request.headers.get("Range", "bytes=0-").startswith("bytes=0-"):
        via = "portal-api" if request.path.startswith("/api/") else "portal"
        await write(request, "portal.recording", f"call {ident}", {"download": download}, _nothing, via=via)
    return web.FileResponse(path, headers={
        "Content-Type": "audio/wav", "Cache-Control": "private, no-store",
        "Content-Disposition": f'{"attachment" if download else "inline"}; filename="call-{ident}.wav"'})


async def _nothing(_s):
    return None


async def publisher_requests(request: web.Request, who: ps.Party) -> dict:
    async with request.app[keys.SESSIONS]() as s:
        acc = await ps.access_of(s, "publisher", who.id)
        return {"requests": await ps.list_number_requests(s, who.id), "campaigns": await ps.campaigns_of(s, who),
                "held": await ps.numbers_held(s, who), "asked": await ps.numbers_asked(s, who), "acc": acc,
                "numbers_of": ps.request_numbers_of}


async def number_request_submit(request: web.Request) -> web.Response:
    who = await party(request)
    if who.kind != "publisher":
        raise Forbidden("number requests are for publishers")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("campaign", "area_code", "quantity", "note")}
    user = request["user"].username
    try:
        campaign_id = int(values["campaign"]) if values["campaign"].isdigit() else 0
        row = await write(request, "portal.numbers.request", f"publisher {who.id}", values,
                          lambda s: ps.request_numbers(s, who, campaign_id=campaign_id, area_code=values["area_code"],
                                                       quantity=values["quantity"], note=values["note"], user=user))
    except ValidationError as exc:
        return await home(request, errors={exc.field: exc.message}, values=values, status=400)
    raise web.HTTPFound(f"/portal?saved={'filled' if row.state == 'filled' else 'requested'}#requests")


def _private_ok(request: web.Request) -> bool:
    return bool(request.app[keys.SETTINGS].http.partner_private_urls)


async def postback_page(request: web.Request, errors=None, values=None, secret: str = "", status: int = 200
                        ) -> web.Response:
    who = await party(request)
    if who.kind != "publisher":
        raise Forbidden("postback URLs are for publishers; buyers' webhooks are set by the operator")
    async with request.app[keys.SESSIONS]() as s:
        target = await ps.own_target(s, who)
        deliveries = await ps.own_deliveries(s, who)
    return render(request, "portal/postback.html", status=status, target=target, deliveries=deliveries,
                  errors=errors or {}, values=values or {"url": target.url if target else ""}, secret=secret)


async def postback_save(request: web.Request) -> web.Response:
    who = await party(request)
    if who.kind != "publisher":
        raise Forbidden("postback URLs are for publishers")
    form = await request.post()
    url, renew = str(form.get("url", "")).strip(), form.get("new_secret") == "1"
    private_ok = _private_ok(request)
    try:
        _row, secret = await write(request, "portal.postback.set", f"publisher {who.id}",
                                   {"url": url, "new_secret": renew},
                                   lambda s: ps.set_own_target(s, who, url, new_secret=renew, private_ok=private_ok))
    except ValidationError as exc:
        return await postback_page(request, {exc.field: exc.message}, {"url": url}, status=400)
    return await postback_page(request, secret=secret, values={"url": url})


async def postback_delete(request: web.Request) -> web.Response:
    who = await party(request)
    if who.kind != "publisher":
        raise Forbidden("postback URLs are for publishers")
    await write(request, "portal.postback.delete", f"publisher {who.id}", {}, lambda s: ps.delete_own_target(s, who))
    raise web.HTTPFound("/portal/postback?saved=deleted")


async def schedule_page(request: web.Request, errors=None, values=None, status: int = 200) -> web.Response:
    who = await party(request)
    if who.kind != "buyer":
        raise Forbidden("hours and caps are a buyer's")
    async with request.app[keys.SESSIONS]() as s:
        rules = await ps.own_rules(s, who)
        acc = await ps.access_of(s, "buyer", who.id)
    shown = values or {k: "" if rules[k] is None else str(rules[k]) for k in ps.RULE_FIELDS}
    return render(request, "portal/schedule.html", status=status, rules=rules, acc=acc, values=shown,
                  errors=errors or {}, bounds=ps.BOUND_OF)


CAP_LABELS = {"concurrency": "Calls at once", "cap_hourly": "Calls per hour", "cap_daily": "Calls per day",
              "cap_monthly": "Calls per month"}


async def schedule_save(request: web.Request) -> web.Response:
    who = await party(request)
    if who.kind != "buyer":
        raise Forbidden("hours and caps are a buyer's")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ps.RULE_FIELDS}
    try:
        await write(request, "portal.rules", f"buyer {who.id}", values, lambda s: ps.set_own_rules(s, who, values))
    except ps.RulesRefused as exc:
        raise Forbidden(exc.message) from None
    except ValidationError as exc:
        return await schedule_page(request, {exc.field: exc.message}, values, status=400)
    raise web.HTTPFound("/portal/schedule?saved=rules")


# --- operator pages: publishers' number requests and the spare numbers -------------------------------

async def number_requests_admin(request: web.Request, errors=None, values=None, status: int = 200,
                                added: list | None = None) -> web.Response:
    need(request, "read")
    state = request.query.get("state", "pending")
    state = state if state in mp.NUMBER_REQUEST_STATES or state == "all" else "pending"
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_number_requests(s, None, "" if state == "all" else state)
        names = {"publisher": await store.names(s, "publisher"), "campaign": await store.names(s, "campaign")}
        spare = await ps.spare_counts(s)
        acc = await ps.all_access(s)
        held = dict((await s.execute(select(t.TrackingNumber.publisher_id, func.count())
                                     .group_by(t.TrackingNumber.publisher_id))).all())
    return render(request, "portal/number_requests.html", held=held, status=status, rows=rows, names=names, spare=spare,
                  state=state, states=mp.NUMBER_REQUEST_STATES, errors=errors or {}, values=values or {},
                  added=added, acc=acc, default=ps.Access(), numbers_of=ps.request_numbers_of)


async def spare_add(request: web.Request) -> web.Response:
    need(request, "write")
    text = str((await request.post()).get("numbers", ""))
    by = request["user"].username

    async def job(s):
        added = await ps.add_spare(s, text, by)
        store.audit(s, by, "panel", "numbers.spare", f"{len(added)} numbers", {"numbers": added})
        return added

    try:
        added = await request.app[keys.WRITER].run(job)
    except ValidationError as exc:
        return await number_requests_admin(request, {exc.field: exc.message}, {"numbers": text}, status=400)
    return await number_requests_admin(request, added=added)


async def number_request_decide(request: web.Request) -> web.Response:
    note = str((await request.post()).get("note", ""))
    try:
        await decide(request, "numbers", "write", "approve", note, "panel")
    except ValidationError as exc:
        return await number_requests_admin(request, {f"request-{_ident(request)}": exc.message}, status=400)
    raise web.HTTPFound("/number-requests?saved=1")


async def campaign_access_save(request: web.Request) -> web.Response:
    need(request, "users")
    form = await request.post()
    tri = {"": None, "1": True, "0": False}
    by = request["user"].username
    try:
        campaign_id = int(str(form.get("campaign", "")))
        values = {"caller_display": str(form.get("caller_display", "")) or None,
                  "show_buyer_name": tri.get(str(form.get("show_buyer_name", "")), None),
                  "recordings": tri.get(str(form.get("recordings", "")), None)}

        async def job(s):
            result = await ps.set_campaign_access(s, campaign_id, **values)
            store.audit(s, by, "panel", "partner.campaign_access", f"campaign {campaign_id}", values)
            return result

        await request.app[keys.WRITER].run(job)
    except ValueError:
        return await partners_page(request, {"campaign": "choose a campaign"}, status=400)
    except ValidationError as exc:
        return await partners_page(request, {exc.field: exc.message}, status=400)
    raise web.HTTPFound("/partners?saved=1#campaigns")


async def root_for_partner(request: web.Request) -> web.Response:
    raise web.HTTPFound("/portal")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/portal", home)
    r.add_get("/portal/calls", calls_page)
    r.add_get("/portal/calls.csv", calls_csv)
    r.add_get("/portal/calls/{id}", call_page)
    r.add_post("/portal/calls/{id}/dispute", dispute_submit)
    r.add_get("/portal/disputes", disputes_page)
    r.add_post("/portal/availability", availability)
    r.add_get("/portal/report", report_page)
    r.add_get("/portal/report.csv", report_csv)
    r.add_get("/portal/statements", statements_page)
    r.add_get("/portal/statements/{id}", statement_page)
    r.add_get("/portal/account", account_page)
    r.add_post("/portal/account/timezone", account_zone_save)
    r.add_post("/portal/account/password", account_password_save)
    r.add_post("/portal/tokens", token_add)
    r.add_post("/portal/tokens/{id}/revoke", token_revoke)
    r.add_get("/invite/{token}", invite_page)
    r.add_post("/invite/{token}", invite_submit)
    r.add_get("/partners", partners_page)
    r.add_post("/partners/invite", partner_invite)
    r.add_post("/partners/{id}/reinvite", partner_reinvite)
    r.add_post("/partners/access", partner_access_save)
    r.add_get("/portal/calls/{id}/recording", recording)
    r.add_post("/portal/number-requests", number_request_submit)
    r.add_get("/portal/postback", postback_page)
    r.add_post("/portal/postback", postback_save)
    r.add_post("/portal/postback/delete", postback_delete)
    r.add_get("/portal/schedule", schedule_page)
    r.add_post("/portal/schedule", schedule_save)
    r.add_get("/number-requests", number_requests_admin)
    r.add_post("/number-requests/spare", spare_add)
    r.add_post("/number-requests/{id}/approve", number_request_decide)
    r.add_post("/number-requests/{id}/reject", number_request_decide)
    r.add_post("/partners/campaign-access", campaign_access_save)
    r.add_get("/disputes", disputes_admin)
    r.add_post("/disputes/{id}/accept", dispute_decide)
    r.add_post("/disputes/{id}/reject", dispute_decide)
