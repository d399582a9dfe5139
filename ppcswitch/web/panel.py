"""Server-rendered admin panel. Every task works without JavaScript.

Writes run as one Writer job each (the change and its audit entry in one
transaction): a form either saves completely or not at all, and a refused
value is shown next to its field with what was typed kept.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web
from sqlalchemy import select

from ppcswitch import keys
from ppcswitch.money import format_cents
from ppcswitch.billing import ledger
from ppcswitch.fraud import store as fraud_store
from ppcswitch.intelligence import store as intelligence_store
from ppcswitch.storage import models_billing, models_routing, repo, repo_routing
from ppcswitch.storage.validate import ValidationError, int_range
from ppcswitch.web import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Forbidden, need, security, store
from ppcswitch.web import charts, explain, numbers_import, zones
from ppcswitch import timezones

PAGE = 50

FIELDS = {
    "buyer": [
        ("name", "Name", ""),
        ("destination", "Destination", "sip:user@host[:port] or pjsip:ENDPOINT"),
        ("revenue", "Revenue per billable call", "decimal, e.g. 40.00"),
        ("ring_timeout", "Ring timeout (seconds)", "1-300"),
        ("concurrency_cap", "Concurrency cap", "live calls at once; empty: no cap"),
        ("min_duration", "Minimum duration to bill (seconds)", "0-86400"),
    ],
    "publisher": [("name", "Name", ""), ("payout", "Payout per billable call", "decimal, e.g. 12.50")],
    "campaign": [("name", "Name", "")],
}
# A buyer's routing rules (ppcswitch.routing.rules), saved in the same transaction as the buyer.
RULE_FIELDS = [
    ("timezone", "Time zone", "the buyer's own zone for hours and caps, e.g. America/New_York"),
    ("hours", "Open hours (weekly schedule)", "e.g. mon-fri 09:00-17:00; sat 10:00-14:00 (empty: always open)"),
    ("closed_dates", "Closed dates", "YYYY-MM-DD, comma separated"),
    ("cap_hourly", "Cap per hour", "connected calls per local hour"),
    ("cap_daily", "Cap per day", "connected calls per local day"),
    ("cap_monthly", "Cap per month", ""),
    ("cap_total", "Cap in total", ""),
    ("budget_daily", "Daily budget", "revenue per local day, e.g. 500.00"),
    ("budget_monthly", "Monthly budget", ""),
    ("states_allowed", "States accepted", "e.g. CA, TX (empty: all)"),
    ("states_denied", "States refused", ""),
    ("area_codes_allowed", "Area codes accepted", "e.g. 212, 646"),
    ("area_codes_denied", "Area codes refused", ""),
    ("duplicate_days", "Refuse repeat callers for (days)", "0: off"),
    ("min_gap_seconds", "Least seconds between calls", ""),
    ("weight", "Weight in its priority tier", "share of calls among buyers of equal priority"),
]
RULE_KEYS = tuple(f for f, _, _ in RULE_FIELDS)
# Real-time bidding (buyer) and call-flow options (campaign), also saved with their object.
RTB_FIELDS = [
    ("ping_url", "RTB ping URL", "http(s) URL asked for a bid on each call; empty: no bidding"),
    ("post_url", "RTB post URL", "told the outcome (optional)"),
    ("timeout_ms", "RTB timeout (ms)", "10-10000"),
    ("floor", "RTB floor", "lowest bid accepted, e.g. 20.00"),
    ("share_caller", "Share the caller's number in the ping", "checkbox"),
]
CAMPAIGN_FIELDS = [
    ("zip_prompt", "Ask the caller for a ZIP code", "checkbox"),
    ("repeat_caller", "Send repeat callers to the buyer they reached before", "checkbox"),
    ("whisper", "Whisper to the buyer", "an Asterisk sound name such as custom/hvac-whisper"),
    ("rtb_budget_ms", "RTB budget (ms)", "time all bids together may take, 50-10000"),
]
CHECKBOXES = ("share_caller", "zip_prompt", "repeat_caller")
EXTRA_FIELDS = {"buyer": RULE_FIELDS + RTB_FIELDS, "campaign": CAMPAIGN_FIELDS}
PLURAL = {"buyer": "buyers", "publisher": "publishers", "campaign": "campaigns"}
CREATE = {"buyer": repo.create_buyer, "publisher": repo.create_publisher, "campaign": repo.create_campaign}
UPDATE = {"buyer": repo.update_buyer, "publisher": repo.update_publisher, "campaign": repo.update_campaign}


def form_values(kind: str, row) -> dict[str, str]:
    """What the edit form shows for a stored object."""
    if row is None:
        return {"buyer": {"ring_timeout": "30", "min_duration": "60", "revenue": "0.00", "timeout_ms": "300"},
                "publisher": {"payout": "0.00"}, "campaign": {"rtb_budget_ms": "1000"}}.get(kind, {})
    out = {"name": row.name}
    if kind == "buyer":
        out.update(destination=row.destination, revenue=format_cents(row.revenue_cents),
                   ring_timeout=str(row.ring_timeout), min_duration=str(row.min_duration),
                   concurrency_cap="" if row.concurrency_cap is None else str(row.concurrency_cap))
    elif kind == "publisher":
        out["payout"] = format_cents(row.payout_cents)
    return out


def rule_values(rules: dict) -> dict[str, str]:
    return {k: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            for k, v in rules.items() if k in RULE_KEYS}


@jinja2.pass_context
def _ts(ctx, value) -> str:
    """A stored (UTC) time in the viewer's zone; the page names the zone (zone_name)."""
    if value is None:
        return ""
    zone = ctx.get("zone")
    return (value.astimezone(zone) if zone is not None else value).strftime("%Y-%m-%d %H:%M:%S")


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


CURRENCY_SYMBOLS = {"USD": "$", "CAD": "CA$", "AUD": "A$", "EUR": "€", "GBP": "£", "NZD": "NZ$", "MXN": "MX$"}


def money_text(cents: int | None, currency: str = "USD") -> str:
    """-1234567 -> "-$12,345.67": the currency's symbol (or its code) and thousands separators."""
    cents = int(cents or 0)
    whole, part = divmod(abs(cents), 100)
    symbol = CURRENCY_SYMBOLS.get(currency, currency + " ")
    return f"{'-' if cents < 0 else ''}{symbol}{whole:,}.{part:02d}"


@jinja2.pass_context
def _money(ctx, cents) -> str:
    return money_text(cents, ctx.get("currency", "USD"))


FILTERS = {"money": _money, "ts": _ts, "pct": _pct, "plain_money": lambda c: format_cents(c or 0)}


# --- plumbing ---------------------------------------------------------------------

NAV = [("/", "Dashboard"), ("/live", "Live calls"), ("/calls", "Call log"), ("/campaigns", "Campaigns"),
       ("/buyers", "Buyers"), ("/publishers", "Publishers"), ("/numbers", "Numbers"), ("/pools", "Pools"),
       ("/quality", "Quality"), ("/transcripts", "Transcripts")]
FLASH = {"1": "Saved.", "added": "Buyer added to the campaign.", "removed": "Buyer removed from the campaign.",
         "priority": "Priority saved.", "paused": "Paused: calls no longer go to it.", "resumed": "Resumed.",
         "released": "Number released: calls to it are no longer routed.", "zone": "Time zone saved.",
         "password": "Password changed.", "revoked": "Token revoked.", "disabled": "User disabled.",
         "enabled": "User enabled.", "role": "Role changed."}


def render(request: web.Request, template: str, status: int = 200, **ctx) -> web.Response:
    return web.Response(text=render_text(request, template, **ctx), status=status, content_type="text/html")


def render_text(request: web.Request, template: str, **ctx) -> str:
    user = request.get("user")
    zone_name = request.get("zone") or "UTC"
    if security.is_partner(request.get("role")):  # the portal's menu, never the operator's
        template = {"error.html": "portal/error.html"}.get(template, template)
    ctx.setdefault("flash", FLASH.get(request.query.get("saved", ""), ""))
    html = request.app[keys.JINJA].get_template(template).render(
        user=user, role=request.get("role"), csrf=request.get("csrf", ""), path=request.path,
        zone=ZoneInfo(zone_name), zone_name=zone_name, nav=NAV, explain=explain, section=_section(request.path),
        currency=request.app[keys.SETTINGS].billing.currency,
        can=lambda perm: user is not None and security.role_allows(request["role"], perm), **ctx)
    return html


def _section(path: str) -> str:
    """The navigation entry of a page (for aria-current)."""
    first = "/" + path.strip("/").split("/")[0] if path.strip("/") else "/"
    return first


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


async def guard(request: web.Request, handler):
    sid = request.cookies.get(SESSION_COOKIE, "")
    found = None
    if sid:
        async with request.app[keys.SESSIONS]() as s:
            found = await store.session_user(s, sid)
    if found is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))
        return _error_page(request, 401, "Your session has ended. Log in again.")
    user, csrf = found
    request["user"], request["role"], request["csrf"], request["sid"] = user, user.role, csrf, sid
    request["zone"] = await zones.request_zone(request)
    from ppcswitch.web import portal

    refused = portal.partner_gate(request)  # partners: their own routes only (deny by default)
    if refused:
        return _error_page(request, 403, refused)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        form = await request.post()
        sent = form.get("csrf") or request.headers.get("X-CSRF-Token") or ""
        if not isinstance(sent, str) or not sent or not security.same(sent, csrf):
            return _error_page(request, 403, "The form's security token is missing or out of date. "
                                             "Go back, reload the page and try again.")
    try:
        return await handler(request)
    except Forbidden as exc:
        return _error_page(request, 403, str(exc))


async def _read(request: web.Request, fn, *args, **kw):
    async with request.app[keys.SESSIONS]() as s:
        return await fn(s, *args, **kw)


async def _write(request: web.Request, action: str, target: str, detail: dict, fn):
    """Run `fn(session)` as one writer job together with its audit entry."""
    user = request["user"].username

    async def job(s):
        result = await fn(s)
        store.audit(s, user, "panel", action, target, detail)
        return result

    return await request.app[keys.WRITER].run(job)


def _int_arg(value, field: str, lo: int = 1, hi: int = 2 ** 31 - 1) -> int:
    return int_range(value, field, lo, hi)


def _opt_int(query, key: str) -> int | None:
    raw = query.get(key, "").strip()
    if not raw:
        return None
    try:
        return _int_arg(raw, key)
    except ValidationError:
        return None


def _page(request: web.Request) -> int:
    return _opt_int(request.query, "page") or 1


# --- login / logout ------------------------------------------------------------------

def _safe_next(value: str) -> str:
    # Only paths on this site: "//evil.example" or "https://..." would make the login an open redirect.
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"


async def login_page(request: web.Request) -> web.Response:
    # Keep an existing token: a second tab (or a stray redirect to here) must not expire the first form.
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}", token):
        token = security.new_secret()
    resp = render(request, "login.html", login_csrf=token, next=_safe_next(request.query.get("next", "/")),
                  error="", username="")
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                    secure=request.app[keys.SETTINGS].http.secure_cookies)
    return resp


async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username, password = str(form.get("username", "")).strip()[:64], str(form.get("password", ""))
    nxt = _safe_next(str(form.get("next", "/")))
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    settings = request.app[keys.SETTINGS].http

    def again(message: str, status: int):
        token = security.new_secret()
        resp = render(request, "login.html", status=status, login_csrf=token, next=nxt, error=message,
                      username=username)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=settings.secure_cookies)
        return resp

    if not sent or not cookie or not security.same(sent, cookie):
        return again("The login form expired. Please try again.", 403)
    throttle, address = request.app[keys.LOGIN_THROTTLE], request.remote or "?"
    wait = throttle.retry_after(username, address)
    if wait > 0:
        return again(f"Too many failed logins. Try again in {int(wait) + 1} seconds.", 429)
    user = await _read(request, store.user_by_name, username) if username else None
    ok = security.verify_password(password, user.password_hash if user else security.DUMMY_HASH)
    if not ok or user is None or user.disabled:
        throttle.failed(username, address)
        return again("Wrong username or password.", 401)
    throttle.succeeded(username)
    seconds = settings.session_hours * 3600

    async def job(s):
        store.audit(s, user.username, "panel", "login", user.username)
        return await store.create_session(s, user.id, seconds)

    sid, _csrf = await request.app[keys.WRITER].run(job)
    resp = web.HTTPFound(nxt)
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax", path="/", max_age=int(seconds),
                    secure=settings.secure_cookies)
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise resp


async def logout(request: web.Request) -> web.Response:
    sid = request["sid"]
    await request.app[keys.WRITER].run(lambda s: store.end_session(s, sid))
    resp = web.HTTPFound("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


# --- dashboard ------------------------------------------------------------------------

def _live_calls(request: web.Request) -> list[dict]:
    tracker = request.app.get(keys.TRACKER)
    if tracker is None:
        return []
    router = request.app.get(keys.ROUTER)
    network = router.network if router else None
    now = datetime.now(timezone.utc)
    out = []
    for call in sorted(tracker.calls.values(), key=lambda c: c.started_at):
        route = router.routes.get(call.linkedid) if router else None  # what routing decided for it
        number = network.numbers.get(route.facts.tracking_number or "") if route and network else None
        attempts = sorted(call.attempts.values(), key=lambda a: a.seq)
        answered = next((a for a in attempts if a.answered_at), None)
        current = answered or (attempts[-1] if attempts else None)
        buyer = network.buyers.get(current.buyer_id) if network and current and current.buyer_id else None
        publisher_id = route.decision.publisher_id if route else None
        publisher = network.publishers.get(publisher_id) if network and publisher_id else None
        out.append({"linkedid": call.linkedid, "started_at": call.started_at, "dialled": call.dialled,
                    "caller": call.caller_raw, "attempts": len(call.attempts),
                    "answered": answered is not None,
                    "campaign": network.campaigns[number.campaign_id].name
                    if number and number.campaign_id in network.campaigns else "",
                    "publisher": publisher.name if publisher else "", "buyer": buyer.name if buyer else "",
                    "state": route.facts.state if route else "",
                    "elapsed_s": max(0, int((now - call.started_at).total_seconds())),
                    "talking_s": max(0, int((now - answered.answered_at).total_seconds())) if answered else 0})
    return out


def cap_use(request: web.Request) -> list[dict]:
    if keys.ROUTER not in request.app:
        return []
    router = request.app[keys.ROUTER]
    live = router.live.snapshot()
    return [{"name": b.name, "live": live.get(b.id, 0), "cap": b.concurrency_cap, "paused": b.paused}
            for b in sorted(router.network.buyers.values(), key=lambda b: b.name)]


async def dashboard(request: web.Request) -> web.Response:
    need(request, "read")
    zone = request["zone"]
    today = zones.today(zone)
    summary = await _read(request, store.day_summary, today, zone)
    peak = max(summary["per_hour"] or [0]) or 1
    chosen = (await zones.account_zone(request.app))[1]
    day = today.isoformat()
    calls_url = "/calls?" + urlencode({"date_from": day, "date_to": day})
    links = [f"{calls_url}&hour={int(label)}" for label in summary["hour_labels"]]
    chart = charts.bars(f"Calls per hour, {day} ({zone})", summary["hour_labels"], summary["per_hour"],
                        fmt=lambda v: f"{v:,.0f}", links=links, chart_id="calls-per-hour", integer=True)
    return render(request, "dashboard.html", day=today, s=summary, peak=peak, live=len(_live_calls(request)),
                  caps=cap_use(request), zone_unset=not chosen, server_zone=timezones.server_zone(),
                  chart=chart, calls_url=calls_url)


# --- buyers, publishers, campaigns -----------------------------------------------------

KIND_OF = {plural: kind for kind, plural in PLURAL.items()}


def _kind(request: web.Request) -> str:
    kind = KIND_OF.get(request.path.split("/")[1])
    if kind is None:
        raise web.HTTPNotFound()
    return kind


async def _object(request: web.Request, kind: str):
    try:
        ident = _int_arg(request.match_info["id"], "id")
        return await _read(request, {"buyer": repo.get_buyer, "publisher": repo.get_publisher,
                                     "campaign": repo.get_campaign}[kind], ident)
    except ValidationError:
        raise web.HTTPNotFound() from None


async def object_list(request: web.Request) -> web.Response:
    need(request, "read")
    kind = _kind(request)
    q, page = request.query.get("q", "").strip()[:100], _page(request)
    rows, total = await _read(request, store.list_objects, kind, q, PAGE, (page - 1) * PAGE)
    return render(request, "objects.html", kind=kind, plural=PLURAL[kind], rows=rows, total=total, q=q,
                  page=page, pages=max(1, -(-total // PAGE)))


async def object_form(request: web.Request) -> web.Response:
    need(request, "read")
    kind = _kind(request)
    row = await _object(request, kind) if "id" in request.match_info else None
    if row is None:
        need(request, "write")
    values = form_values(kind, row)
    if row is not None:
        async with request.app[keys.SESSIONS]() as s:
            values.update(await _extra_values(s, kind, row.id))
    return await _form(request, kind, row, values, {})


async def _extra_values(s, kind: str, ident: int) -> dict[str, str]:
    """Form values of a buyer's rules and RTB settings, or a campaign's call-flow options."""
    if kind == "campaign":
        opts = await repo_routing.get_campaign_routing(s, ident)
        return {k: ("1" if v is True else "" if v is False else str(v)) for k, v in opts.items()}
    if kind != "buyer":
        return {}
    out = rule_values(await repo_routing.get_buyer_rules(s, ident))
    rtb = await s.get(models_routing.BuyerRtb, ident)
    if rtb is not None:
        out.update(ping_url=rtb.ping_url, post_url=rtb.post_url, timeout_ms=str(rtb.timeout_ms),
                   floor=format_cents(rtb.floor_cents), share_caller="1" if rtb.share_caller else "")
    return out


async def _form(request, kind, row, values, errors, status=200, link=None) -> web.Response:
    extra = {"link": link or {}, "zone_names": timezones.names() if kind == "buyer" else ()}
    if kind == "campaign" and row is not None:
        extra["links"] = await _read(request, store.campaign_buyers, row.id)
        extra["all_buyers"] = sorted((await _read(request, store.names, "buyer")).items(), key=lambda x: x[1])
    return render(request, "object_form.html", status=status, kind=kind, plural=PLURAL[kind], row=row,
                  fields=FIELDS[kind], rule_fields=EXTRA_FIELDS.get(kind, []), checkboxes=CHECKBOXES,
                  values=values, errors=errors, **extra)


async def object_save(request: web.Request) -> web.Response:
    need(request, "write")
    kind = _kind(request)
    row = await _object(request, kind) if "id" in request.match_info else None
    form = await request.post()
    fields = {f: str(form.get(f, "")) for f, _, _ in FIELDS[kind]}
    rules = {f: str(form.get(f, "")).strip() for f in RULE_KEYS} if kind == "buyer" else {}
    extra = {f: ("1" if f in form else "") if f in CHECKBOXES else str(form.get(f, "")).strip()
             for f, _, _ in EXTRA_FIELDS.get(kind, []) if f not in RULE_KEYS}
    values = {**fields, **rules, **extra}

    async def save(s):
        if row is None:
            args = dict(fields)
            name = args.pop("name")
            if kind == "buyer":
                obj = await CREATE[kind](s, name, args.pop("destination"), **args)
            else:
                obj = await CREATE[kind](s, name, **args)
        else:
            obj = await UPDATE[kind](s, row.id, **fields)
        # Same transaction: a refused rule or option leaves the object unsaved too.
        if kind == "buyer":
            await repo_routing.set_buyer_rules(s, obj.id, _rule_input(rules), replace=True)
            if extra["ping_url"]:
                await repo_routing.set_buyer_rtb(s, obj.id, extra["ping_url"], post_url=extra["post_url"],
                                                 timeout_ms=extra["timeout_ms"] or "300", floor=extra["floor"] or "0",
                                                 share_caller=extra["share_caller"] == "1")
            else:
                await repo_routing.remove_buyer_rtb(s, obj.id)
        elif kind == "campaign":
            await repo_routing.set_campaign_routing(
                s, obj.id, zip_prompt=extra["zip_prompt"] == "1", repeat_caller=extra["repeat_caller"] == "1",
                whisper=extra["whisper"], rtb_budget_ms=extra["rtb_budget_ms"] or "1000")
        return obj

    try:
        saved = await _write(request, f"{kind}.{'create' if row is None else 'update'}",
                             fields["name"] if row is None else f"{kind} {row.id}", values, save)
    except ValidationError as exc:
        errors = {exc.field: exc.message} if exc.field in values else {"_": str(exc)}
        return await _form(request, kind, row, values, errors, status=400)
    raise web.HTTPFound(f"/{PLURAL[kind]}/{saved.id}?saved=1")


_LIST_RULES = ("closed_dates", "states_allowed", "states_denied", "area_codes_allowed", "area_codes_denied")


def _rule_input(rules: dict[str, str]) -> dict:
    """Form text to the values the rules module takes ('' removes a rule)."""
    out: dict = {}
    for k, v in rules.items():
        if k in _LIST_RULES:
            out[k] = [x.strip() for x in v.replace(";", ",").split(",") if x.strip()]
        else:
            out[k] = v
    return zones.canonical_rules(out)


async def object_pause(request: web.Request) -> web.Response:
    need(request, "write")
    kind = _kind(request)
    row = await _object(request, kind)
    paused = (await request.post()).get("paused") == "1"
    await _write(request, f"{kind}.{'pause' if paused else 'resume'}", f"{kind} {row.id}", {"paused": paused},
                 lambda s: UPDATE[kind](s, row.id, paused=paused))
    raise web.HTTPFound(f"/{PLURAL[kind]}?saved={'paused' if paused else 'resumed'}")


# --- campaign routing: which buyers, in which order --------------------------------------

async def campaign_buyer_save(request: web.Request) -> web.Response:
    need(request, "write")
    row = await _object(request, "campaign")
    form = await request.post()
    op = form.get("op", "")
    try:
        buyer_id = _int_arg(str(form.get("buyer_id", "")), "buyer")
        if op == "remove":
            await _write(request, "campaign.remove_buyer", f"campaign {row.id}", {"buyer_id": buyer_id},
                         lambda s: repo.remove_campaign_buyer(s, row.id, buyer_id))
        else:
            priority = str(form.get("priority", "1"))
            fn = repo.add_campaign_buyer if op == "add" else repo.set_campaign_buyer_priority
            await _write(request, f"campaign.{'add_buyer' if op == 'add' else 'set_priority'}",
                         f"campaign {row.id}", {"buyer_id": buyer_id, "priority": priority},
                         lambda s: fn(s, row.id, buyer_id, priority))
    except ValidationError as exc:
        # Shown on the campaign's page with its settings as stored and the refused link's values kept;
        # every form there posts to its own address, so the next save goes where it should.
        values = form_values("campaign", row)
        async with request.app[keys.SESSIONS]() as s:
            values.update(await _extra_values(s, "campaign", row.id))
        link = {"op": str(op), "buyer_id": str(form.get("buyer_id", "")), "priority": str(form.get("priority", "")),
                "error": exc.message if exc.field != "_" else str(exc), "field": exc.field}
        return await _form(request, "campaign", row, values, {"link": str(exc)}, status=400, link=link)
    raise web.HTTPFound(f"/campaigns/{row.id}?saved={ {'remove': 'removed', 'add': '1'}.get(op, 'priority')}")


async def campaign_buyers_get(request: web.Request) -> web.Response:
    """A reload (or bookmark) of a refused link form: the campaign's page."""
    row = await _object(request, "campaign")
    raise web.HTTPFound(f"/campaigns/{row.id}")


# --- tracking numbers -------------------------------------------------------------------

async def numbers_list(request: web.Request) -> web.Response:
    need(request, "read")
    q, page = request.query.get("q", "").strip()[:32], _page(request)
    campaign_id, publisher_id = _opt_int(request.query, "campaign"), _opt_int(request.query, "publisher")
    rows, total = await _read(request, store.list_numbers, number_digits(q), campaign_id, publisher_id, PAGE,
                              (page - 1) * PAGE)
    return render(request, "numbers.html", rows=rows, total=total, q=q, page=page,
                  message=request.query.get("done", "")[:200],
                  pages=max(1, -(-total // PAGE)), campaign_id=campaign_id, publisher_id=publisher_id,
                  **await _choices(request))


async def _choices(request: web.Request) -> dict:
    async with request.app[keys.SESSIONS]() as s:
        return {"campaigns": await store.names(s, "campaign"), "publishers": await store.names(s, "publisher")}


async def number_form(request: web.Request, values=None, errors=None, status=200) -> web.Response:
    need(request, "read")
    number = request.match_info.get("number")
    row = None
    if number:
        try:
            row = await _read(request, store.get_number, number)
        except ValidationError:
            raise web.HTTPNotFound() from None
        values = values or {"number": row.number, "campaign": str(row.campaign_id),
                            "publisher": str(row.publisher_id),
                            "ask_publisher_code": "on" if row.ask_publisher_code else ""}
    else:
        need(request, "write")
    return render(request, "number_form.html", status=status, row=row, values=values or {}, errors=errors or {},
                  **await _choices(request))


async def number_save(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    values = {k: str(form.get(k, "")) for k in ("number", "campaign", "publisher")}
    values["ask_publisher_code"] = "on" if form.get("ask_publisher_code") else ""  # an IVR code prompt
    number = request.match_info.get("number")
    region = request.app[keys.SETTINGS].routing.default_region

    async def save(s):
        if number:
            row = await store.update_number(s, number, campaign, publisher)
        else:
            row = await repo.add_tracking_number(s, values["number"], campaign, publisher, region=region)
        row.ask_publisher_code = bool(values["ask_publisher_code"])
        await s.flush()
        return row

    try:
        campaign, publisher = (_int_arg(values[k] or "0", k) for k in ("campaign", "publisher"))
        row = await _write(request, "number.update" if number else "number.create", number or values["number"],
                           values, save)
    except ValidationError as exc:
        errors = {exc.field: exc.message} if exc.field in values else {"_": str(exc)}
        return await number_form(request, values, errors, status=400)
    raise web.HTTPFound(f"/numbers?q={quote(row.number)}")


async def number_release(request: web.Request) -> web.Response:
    need(request, "write")
    number = request.match_info["number"]
    region = request.app[keys.SETTINGS].routing.default_region
    try:
        await _write(request, "number.release", number, {},
                     lambda s: repo.remove_tracking_number(s, number, region=region))
    except ValidationError as exc:
        return _error_page(request, 404, str(exc))
    raise web.HTTPFound("/numbers?saved=released")


async def numbers_import_page(request: web.Request) -> web.Response:
    need(request, "write")
    return render(request, "numbers_import.html", text="", checked=None, imported=None, error="")


async def numbers_import_submit(request: web.Request) -> web.Response:
    need(request, "write")
    form = await request.post()
    upload = form.get("file")
    text = str(form.get("text", ""))
    if upload is not None and hasattr(upload, "file"):
        raw = upload.file.read(numbers_import.MAX_BYTES + 1)
        if raw:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return render(request, "numbers_import.html", status=400, text="", checked=None, imported=None,
                              error="The file is not UTF-8 text.")
    region = request.app[keys.SETTINGS].routing.default_region
    if form.get("action") != "import":
        checked = await _read(request, store.check_numbers_csv, text, region)
        return render(request, "numbers_import.html", status=200 if not checked.errors else 400, text=text,
                      checked=checked, imported=None, error="")
    try:
        checked = await _write(request, "number.import", "", {"rows": text.count("\n")},
                               lambda s: store.import_numbers_csv(s, text, region))
    except numbers_import.ImportRejected as exc:
        return render(request, "numbers_import.html", status=400, text=text, checked=exc.checked, imported=None,
                      error=str(exc.message))
    return render(request, "numbers_import.html", text="", checked=None, imported=len(checked.rows), error="")


# --- calls ------------------------------------------------------------------------------

def _days_zone(request: web.Request) -> str:
    """The zone of the call log's days: `tz` when a report links here, else the viewer's."""
    return timezones.canonical(request.query.get("tz", "")) or request["zone"]


_PHONE_TYPED = re.compile(r"[\d\s().+-]+")


def number_digits(text: str) -> str:
    """A number as typed ("(415) 555-0199", "800-555-0801", "+1 415") as the digits to look for;
    anything that is not a phone number is returned as it was."""
    text = text.strip()
    if text and _PHONE_TYPED.fullmatch(text) and any(ch.isdigit() for ch in text):
        return "".join(ch for ch in text if ch.isdigit())
    return text


def caller_prefix(text: str, region: str = "US") -> str:
    """The start of an E.164 caller from what was typed: "415" and "(415) 555-0199" are +1415...,
    "1 415" is +1415, "+44 20" is +4420 (callers are stored in E.164)."""
    digits = number_digits(text)
    if not digits or not digits.isdigit():
        return text.strip()
    if text.strip().startswith("+"):
        return "+" + digits
    if region in ("US", "CA") and len(digits) <= 10 and digits[0] not in "01":
        return "+1" + digits
    if region in ("US", "CA") and digits.startswith("1") and len(digits) <= 11:
        return "+" + digits
    return "+" + digits


def call_filter(query, zone: str = "UTC") -> tuple[store.CallFilter, dict[str, str]]:
    """The call-log filter from query parameters (days are local days of `zone`); unreadable values
    are reported, not guessed."""
    flt, errors = store.CallFilter(), {}
    for key in ("date_from", "date_to"):
        raw = query.get(key, "").strip()
        if raw:
            try:
                setattr(flt, key, date.fromisoformat(raw))
            except ValueError:
                errors[key] = "use YYYY-MM-DD"
    for key in ("campaign", "publisher", "buyer"):
        raw = query.get(key, "").strip()
        if raw:
            try:
                setattr(flt, f"{key}_id", _int_arg(raw, key))
            except ValidationError as exc:
                errors[key] = exc.message
    raw = query.get("hour", "").strip()
    if raw:
        try:
            flt.hour = int_range(raw, "hour", 0, 23)
            if flt.date_from is None:
                raise ValidationError("hour", "goes with a day (date_from)")
        except ValidationError as exc:
            errors["hour"] = exc.message
    billable = query.get("billable", "")
    if billable in ("yes", "true", "1"):
        flt.billable = True
    elif billable in ("no", "false", "0"):
        flt.billable = False
    elif billable:
        errors["billable"] = "use yes or no"
    flt.zone = zone
    flt.caller = caller_prefix(query.get("caller", "").strip()[:64])
    flt.outcome = query.get("outcome", "").strip()[:32]
    return flt, errors


async def calls_page(request: web.Request) -> web.Response:
    need(request, "read")
    flt, errors = call_filter(request.query, _days_zone(request))
    cursor = request.query.get("cursor", "")
    try:
        rows, next_cursor = await _read(request, store.list_calls, flt, PAGE, cursor)
    except ValidationError as exc:
        errors[exc.field] = exc.message
        rows, next_cursor = await _read(request, store.list_calls, flt, PAGE, "")
    kept = {k: v for k, v in request.query.items() if k != "cursor" and v}
    async with request.app[keys.SESSIONS]() as s:
        names = {k: await store.names(s, k) for k in ("campaign", "publisher", "buyer")}
    return render(request, "calls.html", rows=rows, errors=errors, q=kept, names=names,
                  whole_day_url="/calls?" + urlencode({k: v for k, v in kept.items() if k != "hour"}),
                  next_url=("/calls?" + urlencode({**kept, "cursor": next_cursor})) if next_cursor else "",
                  csv_url="/calls.csv?" + urlencode(kept), first_url="/calls?" + urlencode(kept) if cursor else "")


CSV_COLUMNS = ("linkedid", "started_at", "ended_at", "tracking_number", "caller", "outcome", "campaign", "publisher",
               "buyer", "connected_seconds", "billable", "billing_reasons", "revenue", "payout", "hangup_cause")


async def calls_csv(request: web.Request) -> web.StreamResponse:
    need(request, "read")
    flt, errors = call_filter(request.query, _days_zone(request))
    if errors:
        return _error_page(request, 400, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    async with request.app[keys.SESSIONS]() as s:
        names = {k: await store.names(s, k) for k in ("campaign", "publisher", "buyer")}
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": 'attachment; filename="calls.csv"'})
    await resp.prepare(request)
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(CSV_COLUMNS)
    cursor = ""
    while True:  # in keyset pages: memory stays flat however many calls match
        rows, cursor = await _read(request, store.list_calls, flt, 2000, cursor)
        for c in rows:
            out.writerow([c.linkedid, c.started_at.isoformat(), c.ended_at.isoformat(), c.tracking_number,
                          _csv_safe(c.caller), c.outcome, names["campaign"].get(c.campaign_id, ""),
                          names["publisher"].get(c.publisher_id, ""), names["buyer"].get(c.buyer_id, ""),
                          c.connected_ms // 1000, "yes" if c.billable else "no",
                          " ".join(json.loads(c.billing_reasons or "[]")), format_cents(c.revenue_cents),
                          format_cents(c.payout_cents), "" if c.hangup_cause is None else c.hangup_cause])
        await resp.write(buf.getvalue().encode())
        buf.seek(0)
        buf.truncate()
        if not cursor:
            break
    await resp.write_eof()
    return resp


def _csv_safe(value: str) -> str:
    # A caller ID is typed by strangers: keep spreadsheets from running it as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@") and not value[1:].isdigit() else value


async def call_page(request: web.Request, status: int = 200, **more) -> web.Response:
    """The call; `more` comes from a refused form posted on it (the dispute: its error and reason)."""
    need(request, "read")
    try:
        call_id = _int_arg(request.match_info["id"], "id")
    except ValidationError:
        raise web.HTTPNotFound() from None
    call = await _read(request, store.call_with_attempts, call_id)
    if call is None:
        raise web.HTTPNotFound()
    async with request.app[keys.SESSIONS]() as s:
        names = {k: await store.names(s, k) for k in ("campaign", "publisher", "buyer")}
        extras = await _call_extras(s, call)
    return render(request, "call.html", status=status, c=call, names=names,
                  reasons=json.loads(call.billing_reasons or "[]"), message=request.query.get("msg", "")[:300],
                  routing_rows=explain.routing_table(extras["trace"], call.attempts, names["buyer"]),
                  **extras, **more)


async def _call_extras(session, call) -> dict:
    """The call's routing trace (candidates, skip reasons, bids) and its ledger entries."""
    trace = await repo_routing.get_trace(session, call.linkedid)
    ledger = list(await session.scalars(select(models_billing.LedgerEntry)
                                        .where(models_billing.LedgerEntry.call_id == call.id)
                                        .order_by(models_billing.LedgerEntry.id)))
    from ppcswitch.web import attribution_views

    return {"trace": trace, "trace_text": json.dumps(trace, indent=2, sort_keys=True) if trace else "",
            "ledger": ledger, "fraud": await fraud_store.get_signals(session, call.linkedid),
            "transcript": await intelligence_store.get_transcript(session, call.linkedid),
            "postbacks": await attribution_views.call_log(session, call.linkedid),
            "disputed": next((e for e in ledger if e.kind == "dispute"), None)}


# --- live calls -------------------------------------------------------------------------

async def live_page(request: web.Request) -> web.Response:
    need(request, "read")
    return render(request, "live.html", calls=_live_calls(request), caps=cap_use(request),
                  ami=request.app.get(keys.AMI) is not None and request.app[keys.AMI].connected,
                  message=request.query.get("msg", "")[:200])


async def hang_up(app: web.Application, linkedid: str) -> str:
    """Ask Asterisk to hang up a live call (its caller channel); returns what happened, for the user."""
    tracker, ami = app.get(keys.TRACKER), app.get(keys.AMI)
    call = tracker.calls.get(linkedid) if tracker else None
    if call is None:
        raise ValidationError("linkedid", "no such live call (it may just have ended)")
    channel = getattr(call, "channel", "")
    if not channel:
        raise ValidationError("linkedid", "the call's channel is not known yet")
    if ami is None or not ami.connected:
        raise ValidationError("ami", "not connected to Asterisk")
    resp = await ami.action({"Action": "Hangup", "Channel": channel, "Cause": "16"})
    if not resp.success:
        raise ValidationError("ami", f"Asterisk refused: {resp.get('Message')}")
    return f"hung up {channel}"


async def live_hangup(request: web.Request) -> web.Response:
    need(request, "hangup")
    linkedid = request.match_info["linkedid"]
    try:
        msg = await hang_up(request.app, linkedid)
        await _write(request, "call.hangup", linkedid, {}, lambda s: _noop(s))
    except ValidationError as exc:
        msg = exc.message
    raise web.HTTPFound("/live?" + urlencode({"msg": msg}))


async def _noop(_session) -> None:
    return None


# --- users, tokens, audit -----------------------------------------------------------------

async def users_page(request: web.Request, errors=None, values=None, new_token="", status=200) -> web.Response:
    need(request, "users")
    from ppcswitch.web import account_views

    async with request.app[keys.SESSIONS]() as s:
        users, tokens = await store.list_users(s), await store.list_tokens(s)
    cookie = request.cookies.get(account_views.NEW_TOKEN_COOKIE, "")
    new_token = new_token or (cookie if cookie.startswith(security.TOKEN_PREFIX) else "")
    resp = render(request, "users.html", status=status, users=users, tokens=tokens, errors=errors or {},
                  values=values or {}, new_token=new_token, roles=security.PERMISSIONS)
    if cookie:
        resp.del_cookie(account_views.NEW_TOKEN_COOKIE, path="/")
    return resp


async def user_add(request: web.Request) -> web.Response:
    need(request, "users")
    form = await request.post()
    values = {k: str(form.get(k, "")) for k in ("username", "role")}
    password = str(form.get("password", ""))
    try:
        await _write(request, "user.create", values["username"], values,
                     lambda s: store.create_user(s, values["username"], password, values["role"]))
    except ValidationError as exc:
        return await users_page(request, {exc.field: exc.message}, values, status=400)
    raise web.HTTPFound("/users?saved=1")


async def user_disable(request: web.Request) -> web.Response:
    need(request, "users")
    disabled = (await request.post()).get("disabled") == "1"
    try:
        user_id = _int_arg(request.match_info["id"], "id")
        if disabled and user_id == request["user"].id:
            raise ValidationError("user", "you cannot disable yourself")
        await _write(request, f"user.{'disable' if disabled else 'enable'}", f"user {user_id}", {},
                     lambda s: store.set_user_disabled(s, user_id, disabled))
    except ValidationError as exc:
        return await users_page(request, {"user": exc.message}, status=400)
    raise web.HTTPFound("/users?saved=" + ("disabled" if disabled else "enabled"))


async def token_add(request: web.Request) -> web.Response:
    need(request, "read")  # everyone may make tokens for themselves, never above their own role
    form = await request.post()
    name, role = str(form.get("name", "")), str(form.get("role", "")) or request["role"]
    user = request["user"]
    try:
        _row, secret = await _write(request, "token.create", name, {"role": role},
                                    lambda s: store.create_token(s, user, name, role))
    except ValidationError as exc:
        if request["role"] != "admin":
            return _error_page(request, 400, str(exc))
        return await users_page(request, {"token_" + exc.field: exc.message}, status=400)
    # Post-redirect-get: reloading the page that shows the token does not make another one.
    from ppcswitch.web import account_views

    resp = web.HTTPFound("/users#new-token" if request["role"] == "admin" else "/account#new-token")
    account_views.remember_new_token(resp, request, secret)
    raise resp


async def token_revoke(request: web.Request) -> web.Response:
    """An admin revokes any token; everyone else their own."""
    need(request, "read")
    admin = security.role_allows(request["role"], "users")
    user_id = request["user"].id

    async def job(s):
        row = await s.get(store.w.ApiToken, token_id)
        if row is None or (not admin and row.user_id != user_id):
            raise ValidationError("token", f"no token with id {token_id}")
        return await store.revoke_token(s, token_id)

    try:
        token_id = _int_arg(request.match_info["id"], "id")
        await _write(request, "token.revoke", f"token {token_id}", {}, job)
    except ValidationError as exc:
        return _error_page(request, 404, str(exc))
    raise web.HTTPFound("/users?saved=revoked" if admin else "/account?saved=revoked")


async def audit_page(request: web.Request) -> web.Response:
    need(request, "users")
    before = _opt_int(request.query, "before")
    rows = await _read(request, store.list_audit, 100, before)
    return render(request, "audit.html", rows=rows, next_before=rows[-1].id if len(rows) == 100 else None)


async def _sub_ids(request: web.Request, period, values: dict, publisher: str) -> dict:
    """Payout and conversion rate per publisher and sub-ID (ppcswitch.web.attribution_views)."""
    from ppcswitch.web import attribution_views

    out = {"rows": None, "error": "", "publisher": publisher.strip()[:12], "publishers": [], "csv_url": ""}
    async with request.app[keys.SESSIONS]() as s:
        out["publishers"] = sorted((await store.names(s, "publisher")).items(), key=lambda x: x[1])
        if period is None:
            return out
        try:
            publisher_id = _int_arg(out["publisher"], "publisher") if out["publisher"] else None
        except ValidationError as exc:
            out["error"] = exc.message
            return out
        out["rows"] = await attribution_views.sub_id_lines(s, period, publisher_id)
    out["csv_url"] = "/reports/sub-ids.csv?" + urlencode({**values, "publisher": out["publisher"]})
    return out


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login_submit)
    r.add_post("/logout", logout)
    r.add_get("/", dashboard)
    r.add_get("/calls", calls_page)
    r.add_get("/calls.csv", calls_csv)
    r.add_get("/calls/{id}", call_page)
    r.add_get("/live", live_page)
    r.add_post("/live/{linkedid}/hangup", live_hangup)
    r.add_get("/numbers", numbers_list)
    r.add_get("/numbers/new", number_form)
    r.add_post("/numbers/new", number_save)
    r.add_get("/numbers/import", numbers_import_page)
    r.add_post("/numbers/import", numbers_import_submit)
    from ppcswitch.web import bulk_views

    r.add_post("/numbers/bulk", bulk_views.bulk_numbers)  # before /numbers/{number}
    r.add_get("/numbers/{number}", number_form)
    r.add_post("/numbers/{number}", number_save)
    r.add_post("/numbers/{number}/release", number_release)
    r.add_get("/users", users_page)
    r.add_post("/users", user_add)
    r.add_post("/users/{id}/disable", user_disable)
    r.add_post("/tokens", token_add)
    r.add_post("/tokens/{id}/revoke", token_revoke)
    r.add_get("/audit", audit_page)
    for kind, plural in PLURAL.items():
        r.add_get(f"/{plural}", object_list, name=f"{plural}")
        r.add_get(f"/{plural}/new", object_form)
        r.add_post(f"/{plural}/new", object_save)
        r.add_get(f"/{plural}/{{id}}", object_form)
        r.add_post(f"/{plural}/{{id}}", object_save)
        r.add_post(f"/{plural}/{{id}}/pause", object_pause)
    r.add_post("/campaigns/{id}/buyers", campaign_buyer_save)
    r.add_get("/campaigns/{id}/buyers", campaign_buyers_get)
    from ppcswitch.web import account_views

    account_views.add_routes(app)
    from ppcswitch.web import live_views

    live_views.add_routes(app)
    from ppcswitch.web import link_views

    link_views.add_routes(app)
    from ppcswitch.web import report_views

    report_views.add_routes(app)
    from ppcswitch.web import billing_views

    billing_views.add_routes(app)
    from ppcswitch.web import network_views

    network_views.add_routes(app)

    r.add_get("/account", account_views.account_page)
