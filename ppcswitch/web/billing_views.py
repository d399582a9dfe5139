"""Billing from the panel (what `ppcswitch report statement|invoice`, `ledger close`, `rerate` and
`rule set|show` do): statements and invoices to download, closing a period, re-rating a period with
today's rules (a dry run first, then applied as ledger corrections), and the conversion rules
(duration tiers, percent payout, unique-caller window, quality threshold...). The same functions as
the CLI do the work, so the checks and the money are the same.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select

from ppcswitch import keys
from ppcswitch import timezones
from ppcswitch.billing import ledger, reports
from ppcswitch.billing.rerate import rerate
from ppcswitch.money import MoneyError, format_cents, parse_cents
from ppcswitch.storage import models_billing as mb
from ppcswitch.storage import repo
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import base
from ppcswitch.web import store, zones
from ppcswitch.web.base import need

RULE_FIELDS = [
    ("min_duration", "Minimum connected seconds", "e.g. 90"),
    ("unique_days", "Unique-caller window (days)", "the same caller within N days is not billable again; 0: off"),
    ("unique_counts_unbillable", "A non-billable earlier call starts the window", "yes / no"),
    ("require_geo", "Caller must be in the buyer's area", "yes / no"),
    ("quality_threshold", "Quality threshold (fraud score 0-100)", "a score at or above it flags the call"),
    ("mode", "Price", "flat, tiers (by duration) or percent (payout side: of the revenue)"),
    ("amount", "Flat amount per call", "e.g. 40.00"),
    ("tiers", "Duration tiers", "seconds:amount, e.g. 0:10.00,90:25.00"),
    ("percent", "Percent of revenue (payout side)", "e.g. 25 or 12.5"),
    ("only_when_buyer_pays", "Pay the publisher only when the buyer pays", "yes / no"),
    ("min_ai_score", "Minimum AI score (transcript, 0-100)", "a transcribed call scoring below it is not billable"),
    ("deny_dispositions", "Dispositions that are not billable", "e.g. wrong_number,stop_calling"),
]
YES_NO = ("unique_counts_unbillable", "require_geo", "only_when_buyer_pays")


def _period_values(q, zone: str) -> dict:
    today = zones.today(zone)
    tz = timezones.canonical(q.get("tz", "")) or zone
    return {"from": q.get("from", today.replace(day=1).isoformat())[:10], "to": q.get("to", today.isoformat())[:10],
            "tz": tz if q.get("tz") is None or timezones.canonical(q.get("tz", "")) else q.get("tz", "")[:64]}


async def billing_page(request: web.Request, errors=None, rule_values=None, status=200, rerated=None,
                       values=None) -> web.Response:
    need(request, "reports")
    q = request.query
    values = values or _period_values(q, request["zone"])
    async with request.app[keys.SESSIONS]() as s:
        names = {k: sorted((await store.names(s, k)).items(), key=lambda x: x[1].lower())
                 for k in ("buyer", "publisher", "campaign")}
        closed = list(await s.scalars(select(mb.ClosedPeriod).order_by(mb.ClosedPeriod.start_at.desc()).limit(20)))
        scope = {"side": q.get("side", "revenue"), "campaign": q.get("campaign", ""), "party": q.get("party", "")}
        shown = await _rules_shown(s, scope)
        from ppcswitch.web import portal_store  # buyers' disputes waiting on /disputes

        pending = await portal_store.pending_disputes(s)
    return base.render(request, "billing.html", status=status, values=values, names=names, closed=closed,
                        pending_disputes=pending,
                        errors=errors or {}, rule_fields=RULE_FIELDS, yes_no=YES_NO, rule_values=rule_values or {},
                        scope=scope, shown=shown, rerated=rerated, zone_names=timezones.names(),
                        message=q.get("done", "")[:200])


async def _rules_shown(s, scope: dict) -> list | None:
    """The revenue and payout rules that apply to the chosen scope (as `ppcswitch rule show`)."""
    try:
        campaign = (await repo.get_campaign(s, int(scope["campaign"]))).id if scope["campaign"] else 0
        party = int(scope["party"]) if scope["party"] else 0
    except (ValidationError, ValueError):
        return None
    buyer, publisher = (party, 0) if scope["side"] == "revenue" else (0, party)
    revenue, payout = await ledger.rules_for(s, campaign, buyer, publisher)
    return [(k, rv, pv) for (k, rv), (_, pv) in zip(_rule_text(revenue), _rule_text(payout))]


def _rule_text(rule) -> list[tuple[str, str]]:
    out = []
    for key, value in rule.__dict__.items():
        if key == "flat_cents":
            value = format_cents(value)
        elif key == "percent_bp":
            value = f"{value / 100:g}%"
        elif key == "tiers":
            value = ", ".join(f"{t.min_seconds}s: {format_cents(t.cents)}" for t in value) if value else "—"
        elif key == "deny_dispositions":
            value = ", ".join(value) if value else "—"
        out.append((key, "—" if value is None else str(value)))
    return out


def _period(values: dict) -> reports.Period:
    return reports.period(values["from"], values["to"], values["tz"])


async def statement_download(request: web.Request) -> web.Response:
    need(request, "reports")
    q = request.query
    values = _period_values(q, request["zone"])
    party = q.get("party", "")
    try:
        if party not in ("publisher", "buyer"):
            raise ValidationError("party", "choose a publisher (statement) or a buyer (invoice)")
        ident = base._int_arg(q.get(party, "") or "0", party)
        p = _period(values)
        async with request.app[keys.SESSIONS]() as s:
            row = await (repo.get_publisher if party == "publisher" else repo.get_buyer)(s, ident)
            st = await reports.statement(s, party, row.id, p, request.app[keys.SETTINGS].billing.currency)
    except ValidationError as exc:
        return await billing_page(request, {"statement": str(exc)}, status=400, values=values)
    kind = "statement" if party == "publisher" else "invoice"
    name = f"{kind}-{row.name}-{values['from']}-{values['to']}".replace(" ", "_").replace('"', "")
    if q.get("format") == "csv":
        return web.Response(text=reports.statement_csv(st), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return web.Response(text=reports.statement_html(st), content_type="text/html",
                        headers={"Content-Disposition": f'attachment; filename="{name}.html"'})


async def close_confirm(request: web.Request) -> web.Response:
    need(request, "reports")
    values = _period_values(request.query, request["zone"])
    try:
        p = _period(values)
    except ValidationError as exc:
        return await billing_page(request, {"close": str(exc)}, status=400, values=values)
    return base.render(request, "confirm.html", title="Close a period", question=f"Close {p.label}?",
                        consequence="No ledger entry can be booked in it any more: late calls, disputes and "
                                    "adjustments of those days are refused (book them in an open period). "
                                    "A closed period cannot be reopened from the panel.",
                        action="/billing/close", button="Close the period", back="/billing?" + urlencode(values),
                        fields=values)


async def _posted_period(request: web.Request) -> tuple[dict[str, str], str]:
    """The period a form posted (from, to, tz as typed) and who posted it."""
    need(request, "reports")
    form = await request.post()
    return {k: str(form.get(k, "")).strip() for k in ("from", "to", "tz")}, request["user"].username


async def close_submit(request: web.Request) -> web.Response:
    values, user = await _posted_period(request)
    try:
        p = _period(values)
        await base._write(request, "ledger.close", p.label, values,
                           lambda s: ledger.close_period(s, p.start, p.end, user=user))
    except ValidationError as exc:
        return await billing_page(request, {"close": str(exc).replace(" (--user)", "")}, status=400, values=values)
    raise web.HTTPFound("/billing?" + urlencode({**values, "done": f"Period {p.label} closed."}))


async def rerate_page(request: web.Request) -> web.Response:
    """The dry run: what today's rules would change in the period, nothing booked."""
    need(request, "reports")
    values = _period_values(request.query, request["zone"])
    try:
        p = _period(values)
        async with request.app[keys.SESSIONS]() as s:
            res = await rerate(s, p)
    except ValidationError as exc:
        return await billing_page(request, {"rerate": str(exc)}, status=400, values=values)
    return await billing_page(request, rerated=res, values=values)


async def rerate_apply(request: web.Request) -> web.Response:
    values, user = await _posted_period(request)
    try:
        p = _period(values)
        res = await base._write(request, "billing.rerate", p.label, values,
                                 lambda s: rerate(s, p, apply=True, user=user))
    except ValidationError as exc:
        return await billing_page(request, {"rerate": str(exc)}, status=400, values=values)
    done = (f"Re-rated {p.label}: {len(res.changes)} of {res.calls_checked} calls changed, revenue "
            f"{format_cents(res.revenue_delta_cents)}, payout {format_cents(res.payout_delta_cents)} booked as "
            f"corrections.")
    raise web.HTTPFound("/billing?" + urlencode({**values, "done": done}))


def rule_changes(side: str, form: dict) -> dict:
    """Form text to ledger.set_rule's values, as `ppcswitch rule set` converts its options."""
    out: dict = {}
    for key, _, _ in RULE_FIELDS:
        raw = form.get(key, "").strip()
        if not raw:
            continue
        if key in YES_NO:
            if raw.lower() not in ("yes", "no"):
                raise ValidationError(key, "answer yes or no")
            out[key] = raw.lower() == "yes"
        elif key == "amount":
            try:
                out["flat_cents"] = parse_cents(raw)
            except MoneyError as exc:
                raise ValidationError("amount", str(exc)) from None
        elif key == "percent":
            try:
                out["percent_bp"] = int(parse_cents(raw))  # "25.5" % -> 2550 basis points, exactly
            except MoneyError as exc:
                raise ValidationError("percent", str(exc)) from None
        else:
            out[key] = raw
    if not out:
        raise ValidationError("rule", "nothing to set: fill in at least one field")
    return out


async def rule_submit(request: web.Request) -> web.Response:
    need(request, "reports")
    form = {k: str(v) for k, v in (await request.post()).items() if k != "csrf"}
    side = form.get("side", "")
    scope = {"side": side, "campaign": form.get("campaign", ""), "party": form.get("party", "")}
    try:
        if side not in ("revenue", "payout"):
            raise ValidationError("side", "choose revenue (buyer side) or payout (publisher side)")
        if not scope["campaign"] and not scope["party"]:
            # ledger.rules_for layers a campaign's, a party's and a campaign+party's override on the
            # buyer's / publisher's own price: an override for neither would never apply.
            raise ValidationError("rule", "choose a campaign, a " + ("buyer" if side == "revenue" else "publisher")
                                  + ", or both (the defaults are the buyer's revenue and the publisher's payout)")
        values = rule_changes(side, form)

        async def job(s):
            campaign_id = (await repo.get_campaign(s, base._int_arg(scope["campaign"], "campaign"))).id \
                if scope["campaign"] else 0
            party_id = 0
            if scope["party"]:
                getter = repo.get_buyer if side == "revenue" else repo.get_publisher
                party_id = (await getter(s, base._int_arg(scope["party"], "party"))).id
            return await ledger.set_rule(s, side, campaign_id=campaign_id, party_id=party_id, **values)

        await base._write(request, "billing.rule", f"{side} {scope['campaign'] or '*'}/{scope['party'] or '*'}",
                           {**scope, **{k: str(v) for k, v in values.items()}}, job)
    except ValidationError as exc:
        field = exc.field if exc.field in dict((f, 1) for f, _, _ in RULE_FIELDS) else "rule"
        message = exc.message if field != "rule" else str(exc).removeprefix("rule: ")
        return await billing_page(request, {field: message}, rule_values=form, status=400)
    raise web.HTTPFound("/billing?" + urlencode({**scope, "done": "Rule saved."}) + "#rules")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/billing", billing_page)
    r.add_get("/billing/statement", statement_download)
    r.add_get("/billing/close", close_confirm)
    r.add_post("/billing/close", close_submit)
    r.add_get("/billing/rerate", rerate_page)
    r.add_post("/billing/rerate", rerate_apply)
    r.add_post("/billing/rules", rule_submit)
