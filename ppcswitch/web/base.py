"""What every page of the panel and the portals shares: permissions (`need`, `Forbidden`), cookies and
headers, rendering with the menu and the viewer's time zone, reads and audited writes, form and query
parsing, and the live-call view of the tracker and router.

The bottom of ppcswitch/web: every view module imports it; it imports no view module, so views never
import each other in a circle (ppcswitch/web/__init__.py mounts them all).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from ppcswitch import keys
from ppcswitch import timezones
from ppcswitch.money import format_cents
from ppcswitch.storage import repo
from ppcswitch.attribution import store as attribution_store
from ppcswitch.attribution.postback import shown_url
from ppcswitch.storage.validate import ValidationError, int_range
from ppcswitch.web import explain, security, store, zones


SESSION_COOKIE = "ppc_session"


LOGIN_CSRF_COOKIE = "ppc_login_csrf"


# Largest request body: a CSV of 100,000 tracking numbers (numbers_import.MAX_BYTES) and form overhead.
MAX_REQUEST_BYTES = 12 * 1024 * 1024


PUBLIC_PATHS = ("/login", "/healthz", "/metrics", "/api/v1/openapi.json", "/favicon.ico")


SECURITY_HEADERS = {
    # No inline script or style anywhere in the panel, so a strict policy costs nothing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def need(request: web.Request, permission: str) -> None:
    """Refuse the request unless the logged-in user's (or token's) role allows `permission`."""
    if not security.role_allows(request["role"], permission):
        raise Forbidden(f"your role ({request['role']}) does not allow this ({permission})")


class Forbidden(Exception):
    pass


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


async def _read(request: web.Request, fn, *args, **kw):
    async with request.app[keys.SESSIONS]() as s:
        return await fn(s, *args, **kw)


async def audited_write(request: web.Request, source: str, action: str, target: str, detail: dict, fn):
    """Run `fn(session)` as one writer job together with its audit entry (source: panel, api, portal)."""
    user = request["user"].username

    async def job(s):
        result = await fn(s)
        store.audit(s, user, source, action, target, detail)
        return result

    return await request.app[keys.WRITER].run(job)


async def _write(request: web.Request, action: str, target: str, detail: dict, fn):
    """A panel page's write and its audit entry, in one transaction."""
    return await audited_write(request, "panel", action, target, detail, fn)


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


def _safe_next(value: str) -> str:
    # Only paths on this site: "//evil.example" or "https://..." would make the login an open redirect.
    return value if value.startswith("/") and not value.startswith("//") and "\\" not in value else "/"


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
    state = query.get("state", "").strip()
    if state.lower() == store.UNKNOWN_STATE:
        flt.state = store.UNKNOWN_STATE
    elif state:
        if len(state) == 2 and state.isalpha():
            flt.state = state.upper()
        else:
            errors["state"] = "two letters, e.g. TX (or unknown)"
    sub_id = query.get("sub_id", "").strip()
    if sub_id:
        flt.sub_id = "" if sub_id == store.NO_SUB_ID else sub_id[:64]
    flt.zone = zone
    flt.caller = caller_prefix(query.get("caller", "").strip()[:64])
    flt.outcome = query.get("outcome", "").strip()[:32]
    return flt, errors


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


async def _noop(_session) -> None:
    return None


# --- a call's notifications (call page) -------------------------------------------------------

KIND_NAMES = {"publisher": "publisher postback", "buyer": "buyer webhook"}


async def call_log(session, linkedid: str) -> list[dict]:
    """The call's notifications for display: owner names, URLs without their query values."""
    rows = await attribution_store.delivery_log(session, linkedid)
    names = {k: await store.names(session, k) for k in ("publisher", "buyer")} if rows else {}
    for row in rows:
        row["owner"] = names[row["kind"]].get(row["owner_id"], f"#{row['owner_id']}")
        row["target"] = KIND_NAMES.get(row["kind"], row["kind"])
        row["url"] = shown_url(row["url"])
    return rows
