"""The Reports page: a period (presets or custom days, in a time zone), its totals next to the
period before, charts over time and by buyer, publisher, campaign, caller's state, hour of day and
sub-ID, every figure a link to the calls behind it, and a CSV of each view.

Figures come from the billing rollups (ppcswitch.billing.reports and the 15-minute rollups for the
charts), so they agree with the ledger and stay fast over months of calls; the views by state and
sub-ID from the daily totals kept when calls settle (ppcswitch.storage.breakdowns): calls that
started in the period, with the money they were billed (less what disputes took back).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import func, literal, select, union_all

from ppcswitch import keys
from ppcswitch.billing import ledger, reports
from ppcswitch.billing.reports import MarginAndRate
from ppcswitch.storage import breakdowns
from ppcswitch.storage import models_billing as b
from ppcswitch.storage.validate import ValidationError
from ppcswitch.storage.validate import money as v_money
from ppcswitch.web import base
from ppcswitch.web import charts, panel, store, zones
from ppcswitch.web.base import need

SUB_ID_INLINE_DAYS = 31  # periods up to this long show the sub-ID table at once

PRESETS = [("today", "Today"), ("yesterday", "Yesterday"), ("7d", "Last 7 days"), ("30d", "Last 30 days"),
           ("mtd", "Month to date"), ("last_month", "Last month")]


def preset_range(key: str, today: date) -> tuple[date, date] | None:
    if key == "today":
        return today, today
    if key == "yesterday":
        return today - timedelta(days=1), today - timedelta(days=1)
    if key == "7d":
        return today - timedelta(days=6), today
    if key == "30d":
        return today - timedelta(days=29), today
    if key == "mtd":
        return today.replace(day=1), today
    if key == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    return None


def previous(first: date, last: date) -> tuple[date, date]:
    """The period of the same length just before."""
    days = (last - first).days + 1
    return first - timedelta(days=days), first - timedelta(days=1)


@dataclass
class Slot(MarginAndRate):
    label: str
    day: date
    hour: int | None  # a local hour for hourly slots
    calls: int = 0
    billable: int = 0
    receivable_cents: int = 0
    payable_cents: int = 0



async def bucket_rows(session, start: datetime, end: datetime) -> list:
    """Totals per 15-minute bucket over [start, end) (one grouped read of the rollups)."""
    r = b.BillingRollup
    return list((await session.execute(
        select(r.bucket_start, func.sum(r.calls), func.sum(r.billable), func.sum(r.receivable_cents),
               func.sum(r.payable_cents)).where(r.bucket_start >= start, r.bucket_start < end)
        .group_by(r.bucket_start))).all())


def _utc_day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


async def local_days(session, first: date, last: date, zone: str) -> list[list[int]]:
    """[calls, billable, receivable, payable] of each local day, exactly, reading few rows: the daily
    (UTC) rollups, corrected at each local midnight by the 15-minute rows of the shorter side of that
    midnight's UTC day (a New York day reads 5 hours of 15-minute rows, not 24)."""
    bounds = [zones.day_bounds(first + timedelta(days=i), zone)[0] for i in range((last - first).days + 2)]
    daily = {at: [int(v or 0) for v in rest] for at, *rest in await daily_rows(session, bounds[0], bounds[-1])}
    before: dict[datetime, list[int]] = {}  # per boundary: totals of [its UTC midnight, boundary)
    ranges = []
    for bound in bounds:
        day = _utc_day(bound)
        if bound == day:
            before[bound] = [0, 0, 0, 0]
        elif bound - day <= timedelta(hours=12):
            ranges.append((bound, day, bound, True))
        else:
            ranges.append((bound, bound, day + timedelta(days=1), False))
    r = b.BillingRollup
    sums = (func.sum(r.calls), func.sum(r.billable), func.sum(r.receivable_cents), func.sum(r.payable_cents))
    # One statement of small range reads (UNION ALL: each uses the index; an OR of the ranges would
    # scan far more), in chunks to stay within SQLite's compound-select limit.
    pieces: dict[int, list[int]] = {}
    for at in range(0, len(ranges), 100):
        chunk = list(enumerate(ranges))[at:at + 100]
        parts = [select(literal(i).label("i"), *sums).where(r.bucket_start >= lo, r.bucket_start < hi)
                 for i, (_, lo, hi, _) in chunk]
        for i, *vals in (await session.execute(union_all(*parts) if len(parts) > 1 else parts[0])).all():
            pieces[int(i)] = [int(v or 0) for v in vals]
    for i, (bound, _lo, _hi, is_before) in enumerate(ranges):
        piece = pieces.get(i, [0, 0, 0, 0])
        whole = daily.get(_utc_day(bound), [0, 0, 0, 0])
        before[bound] = piece if is_before else [w - x for w, x in zip(whole, piece)]
    out = []
    for i in range(len(bounds) - 1):
        s, e = bounds[i], bounds[i + 1]
        total = [0, 0, 0, 0]
        day = _utc_day(s)
        while day < _utc_day(e):
            total = [x + y for x, y in zip(total, daily.get(day, [0, 0, 0, 0]))]
            day += timedelta(days=1)
        total = [t - x + y for t, x, y in zip(total, before[s], before[e])]
        out.append(total)
    return out


async def period_totals(session, p: reports.Period) -> reports.Line:
    """The grand total of a period without the per-campaign/buyer/publisher split (the period before,
    for the comparison): whole UTC days from the daily rollups, the edges from the 15-minute ones."""
    cols = ("calls", "connected", "billable", "paid", "connected_ms", "receivable_cents", "payable_cents")

    async def add(model, column, start, end):
        if start >= end:
            return
        when = getattr(model, column)
        row = (await session.execute(select(*(func.sum(getattr(model, c)) for c in cols))
                                     .where(when >= start, when < end))).one()
        for c, v in zip(cols, row):
            setattr(total, c, getattr(total, c) + int(v or 0))

    total = reports.Line(0, "total")
    first_day = p.start.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_day < p.start:
        first_day += timedelta(days=1)
    last_day = p.end.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_day >= last_day:
        await add(b.BillingRollup, "bucket_start", p.start, p.end)
    else:
        await add(b.BillingRollup, "bucket_start", p.start, first_day)
        await add(b.BillingDaily, "day_start", first_day, last_day)
        await add(b.BillingRollup, "bucket_start", last_day, p.end)
    return total


async def daily_rows(session, start: datetime, end: datetime) -> list:
    """Totals per UTC day from the daily rollups (the UTC days that [start, end) touches)."""
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    r = b.BillingDaily
    q = (select(r.day_start, func.sum(r.calls), func.sum(r.billable), func.sum(r.receivable_cents),
                func.sum(r.payable_cents)).where(r.day_start >= start, r.day_start < end).group_by(r.day_start))
    return list((await session.execute(q)).all())


def slots(rows: list, first: date, last: date, zone: str) -> tuple[list[Slot], list[Slot]]:
    """(over time: per local day, or per local hour for a period of one day; by local hour of day)."""
    z = ZoneInfo(zone)
    hourly = first == last
    if hourly:
        over = [Slot(f"{h:02d}", first, h) for h in range(24)]
    else:
        n = (last - first).days + 1
        over = [Slot((first + timedelta(days=i)).strftime("%m-%d"), first + timedelta(days=i), None) for i in range(n)]
    by_hour = [Slot(f"{h:02d}", first, h) for h in range(24)]
    for at, calls, billable, rec, pay in rows:
        loc = at.astimezone(z)
        idx = loc.hour if hourly else (loc.date() - first).days
        for slot in ((over[idx] if 0 <= idx < len(over) else None), by_hour[loc.hour]):
            if slot is None:
                continue
            slot.calls += int(calls or 0)
            slot.billable += int(billable or 0)
            slot.receivable_cents += int(rec or 0)
            slot.payable_cents += int(pay or 0)
    return over, by_hour


def _delta(now: float, before: float, kind: str = "pct") -> dict:
    if kind == "pp":  # rates: percentage points
        diff = (now - before) * 100
        return {"text": f"{diff:+.1f} pp", "up": diff > 0, "down": diff < 0}
    if not before:
        return {"text": "new" if now else "±0", "up": now > 0, "down": False}
    change = (now - before) / abs(before) * 100
    return {"text": f"{change:+.0f}%", "up": change > 0, "down": change < 0}


def _money_axis(currency: str):
    def fmt(cents: float) -> str:
        whole = abs(cents) / 100
        sign = "-" if cents < 0 else ""
        symbol = base.CURRENCY_SYMBOLS.get(currency, "")
        if whole >= 10_000:
            return f"{sign}{symbol}{whole / 1000:,.0f}k"
        return f"{sign}{symbol}{whole:,.0f}" if whole >= 100 else f"{sign}{symbol}{whole:,.2f}".rstrip("0").rstrip(".")
    return fmt


async def reports_page(request: web.Request, adjust=None, adjust_errors=None, status=200,
                       query=None) -> web.StreamResponse:
    need(request, "reports")
    q = request.query if query is None else query
    zone = request["zone"]
    preset = q.get("preset", "")[:16]
    tz_typed = q.get("tz", zone)[:64]
    tz = zones.timezones.canonical(tz_typed) or tz_typed
    today = zones.today(tz) if zones.timezones.canonical(tz) else zones.today(zone)
    picked = preset_range(preset, today)
    if picked and not q.get("from"):
        first_text, last_text = picked[0].isoformat(), picked[1].isoformat()
    else:
        preset = "" if q.get("from") else (preset or "mtd")
        first_text = q.get("from", today.replace(day=1).isoformat())[:10]
        last_text = q.get("to", today.isoformat())[:10]
    values = {"from": first_text, "to": last_text, "tz": tz}
    compare = q.get("compare", "1") != "0"
    currency = request.app[keys.SETTINGS].billing.currency
    ctx: dict = {"rep": None, "prev": None, "error": "", "values": values, "preset": preset, "presets": [],
                 "zone_names": zones.timezones.names(),
                 "compare": compare, "adjust": adjust or {}, "adjust_errors": adjust_errors or {},
                 "adjusted": q.get("adjusted", "")[:100]}
    try:
        p = reports.period(first_text, last_text, tz)
        first, last = date.fromisoformat(first_text), date.fromisoformat(last_text)
        if (last - first).days > 366:
            raise ValidationError("to", "a report covers at most 366 days; pick a shorter period")
    except ValidationError as exc:
        ctx["error"] = f"{exc.field}: {exc.message}" if exc.field in ("from", "to", "tz") else str(exc)
        ctx["presets"] = _preset_links(values, compare)
        ctx["sub_ids"] = await panel._sub_ids(request, None, values, q.get("publisher", ""))
        return base.render(request, "reports.html", status=400, **ctx)
    pf, pl = previous(first, last)
    pp = reports.period(pf, pl, tz)
    days = (last - first).days + 1
    # Charts of up to a week (and the hour-of-day chart) read the 15-minute rollups; longer periods
    # are charted per local day from the daily rollups corrected at each midnight (local_days), so a
    # month or a year reads few rows. The grey bars of the period before are drawn up to a week
    # (its totals are always compared).
    short = days <= 7
    async with request.app[keys.SESSIONS]() as s:
        rep = await reports.period_report(s, p, currency)
        prev_total = await period_totals(s, pp) if compare else None
        rows = await bucket_rows(s, p.start, p.end) if short else []
        prev_rows = await bucket_rows(s, pp.start, pp.end) if compare and short else None
        per_day = None if short else await local_days(s, first, last, tz)
        states = await state_lines(s, p)
    # The sub-ID table reads the daily sub-ID totals (hundreds of rows a day): inline for up to a month
    # (SUB_ID_INLINE_DAYS), beyond that when asked for (the CSV and the API always answer).
    show_sub_ids = q.get("format") != "csv" and (days <= SUB_ID_INLINE_DAYS or q.get("sub_ids") in ("1", "all")
                                                 or bool(q.get("publisher")))
    sub_ids = await panel._sub_ids(request, p if show_sub_ids else None, values,
                                   q.get("publisher", ""), q.get("sub_ids") == "all")
    over, by_hour = slots(rows, first, last, tz)
    if per_day is not None:
        for slot, (calls, billable, rec, pay) in zip(over, per_day):
            slot.calls, slot.billable, slot.receivable_cents, slot.payable_cents = calls, billable, rec, pay
    prev_over = slots(prev_rows, pf, pl, tz)[0] if prev_rows is not None else None
    view = q.get("view", "summary")
    if q.get("format") == "csv" and view == "hours" and not short:  # asked for: read the 15-minute rows
        async with request.app[keys.SESSIONS]() as s:
            by_hour = slots(await bucket_rows(s, p.start, p.end), first, last, tz)[1]
    if q.get("format") == "csv" and view == "states":
        return _states_csv(states, values)
    if q.get("format") == "csv":
        return _csv(rep, over, by_hour, view, values)
    calls_base = {"date_from": first_text, "date_to": last_text, "tz": tz}
    prev = {"total": prev_total} if prev_total is not None else None
    ctx.update(rep=rep, prev=prev, over=over, by_hour=by_hour, values=values, period_prev=(pf, pl),
               presets=_preset_links(values, compare),
               sub_ids=sub_ids, states=states,
               sub_ids_url="/reports?" + urlencode({**values, "sub_ids": "1"}) + "#sub-ids",
               calls_url=lambda **kw: "/calls?" + urlencode({**calls_base, **{k: v for k, v in kw.items() if v}}),
               csv_url=lambda v: "/reports?" + urlencode({**values, "format": "csv", "view": v}),
               compare_url="/reports?" + urlencode({**values, "compare": "0" if compare else "1"}),
               prev_url="/reports?" + urlencode({"from": pf.isoformat(), "to": pl.isoformat(), "tz": tz}),
               deltas=_deltas(rep.total, prev_total) if prev_total is not None else {}, long_period=not short,
               grey_bars=prev_over is not None,
               charts=_charts(rep, over, by_hour, prev_over, first, last, tz, currency, calls_base))
    ctx["charts"].update(_breakdown_charts(states, ctx["sub_ids"]["rows"] or [], currency, calls_base))
    if ctx["sub_ids"]["error"]:
        return base.render(request, "reports.html", status=400, **ctx)
    return base.render(request, "reports.html", status=status, **ctx)


def _preset_links(values: dict, compare: bool) -> list[tuple[str, str, str]]:
    extra = {} if compare else {"compare": "0"}
    return [(key, label, "/reports?" + urlencode({"preset": key, "tz": values["tz"], **extra})) for key, label in PRESETS]


def _deltas(now, before) -> dict:
    return {"calls": _delta(now.calls, before.calls), "billable_rate": _delta(now.billable_rate, before.billable_rate, "pp"),
            "receivable": _delta(now.receivable_cents, before.receivable_cents),
            "payable": _delta(now.payable_cents, before.payable_cents),
            "margin": _delta(now.margin_cents, before.margin_cents)}


def _charts(rep, over, by_hour, prev_over, first, last, tz, currency, calls_base) -> dict:
    money = _money_axis(currency)
    count = lambda v: f"{v:,.0f}"  # noqa: E731
    pct = lambda v: f"{v * 100:.0f}%"  # noqa: E731
    hourly = first == last

    def link(slot: Slot) -> str:
        day = slot.day.isoformat()
        args = {**calls_base, "date_from": day, "date_to": day}
        if hourly:
            args["hour"] = slot.hour
        return "/calls?" + urlencode(args)

    labels = [s.label for s in over]
    links = [link(s) for s in over]
    cmp = prev_over is not None and len(prev_over) == len(over)
    what = "hour" if hourly else "day"
    out = {
        "calls": charts.bars(f"Calls per {what} ({tz})", labels, [s.calls for s in over], count, links, "chart-calls",
                             compare=[s.calls for s in prev_over] if cmp else None, compare_label="period before",
                             integer=True),
        "rate": charts.bars(f"Billable rate per {what}", labels, [s.billable_rate for s in over], pct, links,
                            "chart-rate", compare=[s.billable_rate for s in prev_over] if cmp else None,
                            compare_label="period before"),
        "revenue": charts.bars(f"Revenue per {what}", labels, [s.receivable_cents for s in over], money, links,
                               "chart-revenue", compare=[s.receivable_cents for s in prev_over] if cmp else None,
                               compare_label="period before"),
        "payout": charts.bars(f"Payout per {what}", labels, [s.payable_cents for s in over], money, links,
                              "chart-payout"),
        "margin": charts.bars(f"Margin per {what}", labels, [s.margin_cents for s in over], money, links,
                              "chart-margin"),
        "hours": charts.bars(f"Calls by hour of day ({tz})", [s.label for s in by_hour], [s.calls for s in by_hour],
                             count, None, "chart-hours", integer=True),
    }

    def named(lines, kind, value, fmt, chart_id, title):
        top = sorted((x for x in lines if x.id), key=value, reverse=True)[:12]
        return charts.hbars(title, [x.name for x in top], [value(x) for x in top], fmt,
                            ["/calls?" + urlencode({**calls_base, kind: x.id}) for x in top], chart_id)

    value = _money_value(currency)
    out["by_buyer"] = named(rep.by_buyer, "buyer", lambda x: x.receivable_cents, value, "chart-buyers",
                            "Revenue by buyer")
    out["by_publisher"] = named(rep.by_publisher, "publisher", lambda x: x.payable_cents, value, "chart-publishers",
                                "Payout by publisher")
    out["by_campaign"] = named(rep.by_campaign, "campaign", lambda x: x.calls, count, "chart-campaigns",
                               "Calls by campaign")
    return out


@dataclass
class StateLine:
    state: str  # two letters, "" unknown
    calls: int
    connected: int
    billable: int
    revenue_cents: int
    payout_cents: int

    @property
    def name(self) -> str:
        return self.state or "unknown"

    @property
    def margin_cents(self) -> int:
        return self.revenue_cents - self.payout_cents

    @property
    def billable_rate(self) -> float:
        return self.billable / self.calls if self.calls else 0.0


async def state_lines(session, p: reports.Period) -> list[StateLine]:
    """Calls of the period by the caller's state, most calls first (unknown last)."""
    rows = await breakdowns.totals(session, breakdowns.STATE, p.start, p.end)
    lines = [StateLine(state, x["calls"], x["connected"], x["billable"], x["revenue_cents"], x["payout_cents"])
             for (_, state), x in rows.items() if x["calls"] or x["revenue_cents"] or x["payout_cents"]]
    return sorted(lines, key=lambda x: (not x.state, -x.calls, x.state))


def _money_value(currency: str):
    """A horizontal bar's value, to the cent ($1,560.00): those bars have no axis to round for."""
    return lambda cents: base.money_text(int(cents), currency)


def _breakdown_charts(states: list[StateLine], sub_rows: list[dict], currency: str, calls_base: dict) -> dict:
    money = _money_value(currency)
    known = [x for x in states if x.state][:15]
    # Sub-IDs that earned a payout (a bar of $0.00 says nothing), the largest first.
    top = sorted((r for r in sub_rows if r["payout_cents"]), key=lambda r: (-r["payout_cents"], -r["calls"]))[:12]

    def sub_label(r) -> str:
        sub = r["sub_id"] or "(none)"
        return f"{r['publisher']} · {sub}" if r["publisher"] else sub

    def sub_link(r) -> str:
        args = {**calls_base, "sub_id": r["sub_id"] or store.NO_SUB_ID}
        if r["publisher_id"]:
            args["publisher"] = r["publisher_id"]
        return "/calls?" + urlencode(args)

    return {
        "by_state": charts.hbars("Calls by caller's state", [x.state for x in known], [x.calls for x in known],
                                 lambda v: f"{v:,.0f}",
                                 ["/calls?" + urlencode({**calls_base, "state": x.state}) for x in known],
                                 "chart-states"),
        "by_state_revenue": charts.hbars("Revenue by caller's state", [x.state for x in known],
                                         [x.revenue_cents for x in known], money,
                                         ["/calls?" + urlencode({**calls_base, "state": x.state, "billable": "yes"})
                                          for x in known], "chart-states-revenue"),
        "by_sub_id": charts.hbars("Payout by sub-ID", [sub_label(r) for r in top], [r["payout_cents"] for r in top],
                                  money, [sub_link(r) for r in top], "chart-sub-ids", empty="No payout."),
    }


def _states_csv(states: list[StateLine], values: dict) -> web.Response:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["state", "calls", "connected", "billable", "billable_rate", "revenue", "payout", "margin"])
    for x in states:
        w.writerow([x.name, x.calls, x.connected, x.billable, f"{x.billable_rate:.4f}",
                    base.format_cents(x.revenue_cents), base.format_cents(x.payout_cents),
                    base.format_cents(x.margin_cents)])
    name = f"report-{values['from']}-{values['to']}-states"
    return web.Response(text=buf.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _csv(rep, over, by_hour, view: str, values: dict) -> web.Response:
    name = f"report-{values['from']}-{values['to']}"
    if view in ("days", "hours"):
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["slot", "calls", "billable", "billable_rate", "revenue", "payout", "margin"])
        for s in (over if view == "days" else by_hour):
            label = s.day.isoformat() + (f" {s.hour:02d}:00" if s.hour is not None else "") if view == "days" \
                else f"{s.hour:02d}:00"
            w.writerow([label, s.calls, s.billable, f"{s.billable_rate:.4f}", base.format_cents(s.receivable_cents),
                        base.format_cents(s.payable_cents), base.format_cents(s.margin_cents)])
        text, name = buf.getvalue(), f"{name}-{view}"
    else:
        text = reports.report_csv(rep)
    return web.Response(text=text, content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def signed_cents(text: str) -> int:
    """Cents of a signed decimal such as -12.50 (an adjustment may take money back); the error
    quotes what was typed, minus sign and all."""
    text = text.strip()
    negative = text.startswith("-")
    body = text[1:] if negative else text
    try:
        cents = v_money(body, "amount")
    except ValidationError as exc:
        message = exc.message
        if negative:
            message = message.replace(repr(body), repr(text))
            if text not in message:
                message += f" (typed: {text})"
        raise ValidationError("amount", message) from None
    return -cents if negative else cents


async def adjust_submit(request: web.Request) -> web.Response:
    """A manual ledger correction for a buyer (receivable) or publisher (payable); a refused one
    shows the report again with the period and everything typed kept."""
    need(request, "reports")
    form = await request.post()
    values = {k: str(form.get(k, "")).strip() for k in ("account", "party", "amount", "reason")}
    user = request["user"].username

    async def job(s):
        entry = await ledger.adjust(s, account=values["account"], party_id=values["party"],
                                    amount_cents=signed_cents(values["amount"]), reason=values["reason"], user=user)
        store.audit(s, user, "panel", "ledger.adjust", f"{values['account']} {values['party']}", values)
        return entry

    try:
        entry = await request.app[keys.WRITER].run(job)
    except ValidationError as exc:
        message = exc.message.replace(" (--user)", "").replace("--", "")
        field = exc.field if exc.field in ("account", "amount", "reason", "buyer", "publisher", "user") else "amount"
        period = {k: str(form.get(k, "")) for k in ("from", "to", "tz", "compare") if form.get(k)}
        return await reports_page(request, adjust=values, adjust_errors={field: message}, status=400, query=period)
    period = {k: str(form.get(k, "")) for k in ("from", "to", "tz") if form.get(k)}
    raise web.HTTPFound("/reports?" + urlencode({**period, "adjusted": f"{base.format_cents(entry.amount_cents)} booked"}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/reports", reports_page)
    app.router.add_post("/reports/adjust", adjust_submit)
