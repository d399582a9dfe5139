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
from urllib.parse import quote, urlencode

from aiohttp import web

from ppcswitch import keys
from ppcswitch.money import format_cents
from ppcswitch.storage import models_routing, repo, repo_routing
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import security, store
from ppcswitch.web import charts, numbers_import, zones
from ppcswitch.web.base import (_days_zone, _error_page, _int_arg, _kind, _live_calls, _noop, _object, _opt_int, _page, _read, _rule_input, _safe_next, _write, call_filter, cap_use, CHECKBOXES, CREATE, EXTRA_FIELDS, FIELDS, Forbidden, form_values, hang_up, LOGIN_CSRF_COOKIE, need, number_digits, PAGE, PLURAL, render, RULE_KEYS, rule_values, SESSION_COOKIE, UPDATE)
from ppcswitch import timezones


# --- plumbing ---------------------------------------------------------------------


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


# --- login / logout ------------------------------------------------------------------


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
    status = request.query.get("status", "")
    status = status if status in ("active", "paused") else ""
    rows, total = await _read(request, store.list_numbers, number_digits(q), campaign_id, publisher_id, PAGE,
                              (page - 1) * PAGE, {"active": False, "paused": True}.get(status))
    return render(request, "numbers.html", rows=rows, total=total, q=q, page=page, number_status=status,
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


# --- live calls -------------------------------------------------------------------------

async def live_page(request: web.Request) -> web.Response:
    need(request, "read")
    return render(request, "live.html", calls=_live_calls(request), caps=cap_use(request),
                  ami=request.app.get(keys.AMI) is not None and request.app[keys.AMI].connected,
                  message=request.query.get("msg", "")[:200])


async def live_hangup(request: web.Request) -> web.Response:
    need(request, "hangup")
    linkedid = request.match_info["linkedid"]
    try:
        msg = await hang_up(request.app, linkedid)
        await _write(request, "call.hangup", linkedid, {}, lambda s: _noop(s))
    except ValidationError as exc:
        msg = exc.message
    raise web.HTTPFound("/live?" + urlencode({"msg": msg}))


# --- users, tokens, audit -----------------------------------------------------------------


async def audit_page(request: web.Request) -> web.Response:
    need(request, "users")
    before = _opt_int(request.query, "before")
    rows = await _read(request, store.list_audit, 100, before)
    return render(request, "audit.html", rows=rows, next_before=rows[-1].id if len(rows) == 100 else None)


SUB_ID_ROWS = 100  # rows of the sub-ID table on the Reports page (the most calls); the CSV has all


async def _sub_ids(request: web.Request, period, values: dict, publisher: str, show_all: bool = False) -> dict:
    """Payout and conversion rate per publisher and sub-ID (ppcswitch.web.attribution_views); the page
    shows the SUB_ID_ROWS sub-IDs with the most calls unless `show_all`, each with a link to its calls."""
    from ppcswitch.web import attribution_views

    out = {"rows": None, "error": "", "publisher": publisher.strip()[:12], "publishers": [], "csv_url": "",
           "total": 0, "all_url": ""}
    if "from" in values:
        out["csv_url"] = "/reports/sub-ids.csv?" + urlencode({**values, "publisher": out["publisher"]})
    async with request.app[keys.SESSIONS]() as s:
        out["publishers"] = sorted((await store.names(s, "publisher")).items(), key=lambda x: x[1])
        if period is None:
            return out
        try:
            publisher_id = _int_arg(out["publisher"], "publisher") if out["publisher"] else None
        except ValidationError as exc:
            out["error"] = exc.message
            return out
        rows = await attribution_views.sub_id_lines(s, period, publisher_id)
    out["total"] = len(rows)
    if not show_all and len(rows) > SUB_ID_ROWS:
        keep = {id(r) for r in sorted(rows, key=lambda r: -r["calls"])[:SUB_ID_ROWS]}
        rows = [r for r in rows if id(r) in keep]
        out["all_url"] = "/reports?" + urlencode({**values, "publisher": out["publisher"], "sub_ids": "all"}) + "#sub-ids"
    # The link to each row's calls, built here: a template call per row cost more than the rest of the page.
    calls_base = "/calls?" + urlencode({"date_from": values["from"], "date_to": values["to"], "tz": values["tz"]})
    for r in rows:
        r["calls_url"] = calls_base + "&" + urlencode({"sub_id": r["sub_id"] or store.NO_SUB_ID,
                                                 **({"publisher": r["publisher_id"]} if r["publisher_id"] else {})})
    out["rows"] = rows
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
    r.add_get("/live", live_page)
    r.add_post("/live/{linkedid}/hangup", live_hangup)
    r.add_get("/numbers", numbers_list)
    r.add_get("/numbers/new", number_form)
    r.add_post("/numbers/new", number_save)
    r.add_get("/numbers/import", numbers_import_page)
    r.add_post("/numbers/import", numbers_import_submit)
    r.add_get("/numbers/{number}", number_form)
    r.add_post("/numbers/{number}", number_save)
    r.add_post("/numbers/{number}/release", number_release)
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
