"""Reports for any period and time zone, as plain dataclasses (CLI, web panel, API).

All amounts are integer cents in the network's one currency. Periods are
half-open [start, end) in UTC, built from local dates by `period()`; they must
fall on 15-minute boundaries (every local midnight does), because reports sum
the 15-minute rollups kept in step with the ledger, which keeps them fast
(10 million calls: see bench/report.py).

    async with sessionmaker() as session:
        rep = await period_report(session, period("2026-11-01", "2026-11-30", "America/New_York"))
        for line in rep.by_publisher: print(line.name, line.payable_cents)
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ppcswitch import timezones
from ppcswitch.billing.ledger import BUCKET, PAYABLE, RECEIVABLE, BillingError
from ppcswitch.money import format_cents
from ppcswitch.storage import models as t
from ppcswitch.storage import models_billing as b


@dataclass(frozen=True)
class Period:
    start: datetime  # aware UTC, included
    end: datetime  # aware UTC, excluded
    tz: str = "UTC"  # how times are shown
    label: str = ""


def _zone(tz: str) -> ZoneInfo:
    name = timezones.canonical(tz)  # any case: "america/new_york" is America/New_York
    try:
        return ZoneInfo(name or tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise BillingError("tz", f"unknown time zone {tz!r} (use a name such as UTC or America/New_York)") from None


def _date(value: date | str, what: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise BillingError(what, f"expected a date such as 2026-11-01, got {value!r}") from None


def period(first_day: date | str, last_day: date | str | None = None, tz: str = "UTC") -> Period:
    """Local days `first_day`..`last_day` (both included) in time zone `tz`, e.g. a month."""
    zone = _zone(tz)
    tz = zone.key
    first = _date(first_day, "from")
    last = _date(last_day, "to") if last_day is not None else first
    if last < first:
        raise BillingError("to", f"the period ends ({last}) before it starts ({first})")
    try:
        start = datetime.combine(first, time(), zone).astimezone(timezone.utc)
        end = datetime.combine(last + timedelta(days=1), time(), zone).astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31, or 0001-01-01 east of UTC
        raise BillingError("to", f"{first}..{last} in {tz} is outside the calendar ppcswitch can count in") from None
    return Period(start, end, tz, f"{first}..{last} {tz}")


def _check(p: Period) -> None:
    for when in (p.start, p.end):
        if when.tzinfo is None or when.utcoffset():
            raise BillingError("period", "period times must be aware UTC datetimes (see period())")
        if (when - datetime(2000, 1, 1, tzinfo=timezone.utc)) % BUCKET:
            raise BillingError("period", f"{when.isoformat()} is not on a 15-minute boundary")
    if p.end <= p.start:
        raise BillingError("period", "the period ends before it starts")


class MarginAndRate:
    """What follows from a row of totals (calls, billable, receivable_cents, payable_cents): the
    margin and the billable rate. For report lines here and the panel's chart slots."""

    @property
    def margin_cents(self) -> int:
        return self.receivable_cents - self.payable_cents

    @property
    def billable_rate(self) -> float:
        """Billable calls / calls (0.0 without calls); a ratio for display, never money."""
        return self.billable / self.calls if self.calls else 0.0


@dataclass
class Line(MarginAndRate):
    """Totals of one campaign, buyer or publisher (or everything) over a period."""

    id: int  # 0: none (e.g. calls no buyer answered) or the grand total
    name: str
    calls: int = 0
    connected: int = 0  # a buyer answered
    billable: int = 0  # the buyer pays
    paid: int = 0  # the publisher is paid
    connected_ms: int = 0
    receivable_cents: int = 0  # buyers owe us
    payable_cents: int = 0  # we owe publishers


    @property
    def average_duration_s(self) -> float:
        """Mean connected seconds of connected calls."""
        return self.connected_ms / self.connected / 1000 if self.connected else 0.0

    def add(self, row) -> None:
        for f in ("calls", "connected", "billable", "paid", "connected_ms", "receivable_cents", "payable_cents"):
            setattr(self, f, getattr(self, f) + int(getattr(row, f) or 0))


@dataclass
class PeriodReport:
    period: Period
    currency: str
    total: Line
    by_campaign: list[Line] = field(default_factory=list)
    by_buyer: list[Line] = field(default_factory=list)  # receivable: what each buyer owes
    by_publisher: list[Line] = field(default_factory=list)  # payable: what each publisher is owed


async def _names(session: AsyncSession, model) -> dict[int, str]:
    return {i: n for i, n in (await session.execute(select(model.id, model.name))).all()}


_SUMS = ("calls", "connected", "billable", "paid", "connected_ms", "receivable_cents", "payable_cents")


async def _sum(session: AsyncSession, model, time_column: str, start: datetime, end: datetime) -> list:
    when = getattr(model, time_column)
    cols = [func.sum(getattr(model, c)).label(c) for c in _SUMS]
    return list((await session.execute(select(model.campaign_id, model.buyer_id, model.publisher_id, *cols).where(
        when >= start, when < end).group_by(model.campaign_id, model.buyer_id, model.publisher_id))).all())


async def _rollup_rows(session: AsyncSession, start: datetime, end: datetime) -> list:
    """Totals per (campaign, buyer, publisher) over [start, end): whole UTC days from the daily
    rollups, the partial days at either edge from the 15-minute ones."""
    first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_day < start:
        first_day += timedelta(days=1)
    last_day = end.replace(hour=0, minute=0, second=0, microsecond=0)
    if first_day >= last_day:
        return await _sum(session, b.BillingRollup, "bucket_start", start, end)
    return (await _sum(session, b.BillingRollup, "bucket_start", start, first_day)
            + await _sum(session, b.BillingDaily, "day_start", first_day, last_day)
            + await _sum(session, b.BillingRollup, "bucket_start", last_day, end))


async def period_report(session: AsyncSession, p: Period, currency: str = "USD") -> PeriodReport:
    """Owed per publisher, receivable per buyer, margin, billable rate and average duration per
    campaign / buyer / publisher, for the period `p`."""
    _check(p)
    rows = await _rollup_rows(session, p.start, p.end)
    names = {"campaign": await _names(session, t.Campaign), "buyer": await _names(session, t.Buyer),
             "publisher": await _names(session, t.Publisher)}
    total = Line(0, "total")
    groups: dict[str, dict[int, Line]] = {"campaign": {}, "buyer": {}, "publisher": {}}
    for row in rows:
        total.add(row)
        for kind, lines in groups.items():
            key = int(getattr(row, f"{kind}_id") or 0)
            line = lines.get(key)
            if line is None:
                line = lines[key] = Line(key, names[kind].get(key, f"({kind} {key})" if key else "(none)"))
            line.add(row)

    def ordered(lines: dict[int, Line]) -> list[Line]:
        return sorted(lines.values(), key=lambda x: (x.id == 0, x.name.lower(), x.id))

    return PeriodReport(p, currency, total, ordered(groups["campaign"]), ordered(groups["buyer"]),
                        ordered(groups["publisher"]))


# --- statements and invoices ---------------------------------------------

@dataclass(frozen=True)
class StatementLine:
    booked_at: datetime  # in the period's time zone
    kind: str  # call | dispute | adjustment | rerate
    linkedid: str  # "" for adjustments
    caller: str
    connected_s: int
    amount_cents: int
    reason: str
    user: str


@dataclass
class Statement:
    """A publisher statement (what we owe it) or a buyer invoice (what it owes us)."""

    party: str  # "publisher" | "buyer"
    party_id: int
    name: str
    period: Period
    currency: str
    lines: list[StatementLine]

    @property
    def total_cents(self) -> int:
        return sum(x.amount_cents for x in self.lines)

    @property
    def title(self) -> str:
        return ("Statement" if self.party == "publisher" else "Invoice") + f" for {self.name}, {self.period.label}"


async def statement(session: AsyncSession, party: str, party_id: int, p: Period, currency: str = "USD") -> Statement:
    """Every ledger entry of one publisher (payable) or buyer (receivable) booked in `p`."""
    _check(p)
    if party not in ("publisher", "buyer"):
        raise BillingError("party", f"must be publisher or buyer, got {party!r}")
    model, account, column = ((t.Publisher, PAYABLE, b.LedgerEntry.publisher_id) if party == "publisher"
                              else (t.Buyer, RECEIVABLE, b.LedgerEntry.buyer_id))
    row = await session.get(model, party_id)
    if row is None:
        raise BillingError(party, f"no {party} id {party_id}")
    e, c = b.LedgerEntry, t.Call
    q = (select(e.booked_at, e.kind, c.linkedid, c.caller, c.connected_ms, e.amount_cents, e.reason, e.user)
         .outerjoin(c, c.id == e.call_id)
         .where(e.account == account, column == party_id, e.booked_at >= p.start, e.booked_at < p.end)
         .order_by(e.booked_at, e.id))
    zone = _zone(p.tz)
    lines = [StatementLine(x.booked_at.astimezone(zone), x.kind, x.linkedid or "", x.caller or "",
                           (x.connected_ms or 0) // 1000, x.amount_cents, x.reason, x.user)
             for x in (await session.execute(q)).all()]
    return Statement(party, party_id, row.name, p, currency, lines)


def statement_csv(s: Statement) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["booked_at", "kind", "call", "caller", "connected_s", f"amount_{s.currency}", "reason", "user"])
    for x in s.lines:
        w.writerow([x.booked_at.isoformat(), x.kind, x.linkedid, x.caller, x.connected_s,
                    format_cents(x.amount_cents), x.reason, x.user])
    w.writerow(["total", "", "", "", "", format_cents(s.total_cents), "", ""])
    return out.getvalue()


def statement_html(s: Statement) -> str:
    """A self-contained printable page (no scripts, no external resources)."""
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{esc(x.booked_at.strftime('%Y-%m-%d %H:%M:%S'))}</td><td>{esc(x.kind)}</td>"
        f"<td>{esc(x.linkedid)}</td><td>{esc(x.caller)}</td><td class=n>{x.connected_s}</td>"
        f"<td class=n>{format_cents(x.amount_cents)}</td><td>{esc(x.reason)} {esc(x.user)}</td></tr>"
        for x in s.lines)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(s.title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ccc;padding:4px;text-align:left}}.n{{text-align:right}}
@media print{{body{{margin:0}}}}</style></head><body>
<h1>{esc(s.title)}</h1>
<p>Period: {esc(s.period.start.astimezone(_zone(s.period.tz)).isoformat())} to
{esc(s.period.end.astimezone(_zone(s.period.tz)).isoformat())} ({esc(s.period.tz)}). Amounts in {esc(s.currency)}.</p>
<table><thead><tr><th>Booked</th><th>Kind</th><th>Call</th><th>Caller</th><th class=n>Seconds</th>
<th class=n>Amount</th><th>Note</th></tr></thead>
<tbody>
{rows}
</tbody>
<tfoot><tr><th colspan=5>Total</th><th class=n>{format_cents(s.total_cents)} {esc(s.currency)}</th><th></th></tr></tfoot>
</table></body></html>
"""


# --- report rendering (CLI) ----------------------------------------------

REPORT_COLUMNS = ("group", "id", "name", "calls", "connected", "billable", "paid", "billable_rate",
                  "avg_duration_s", "receivable", "payable", "margin")


def report_rows(rep: PeriodReport) -> list[list[str]]:
    rows = []
    for group, lines in (("campaign", rep.by_campaign), ("buyer", rep.by_buyer), ("publisher", rep.by_publisher),
                         ("total", [rep.total])):
        for x in lines:
            rows.append([group, str(x.id), x.name, str(x.calls), str(x.connected), str(x.billable), str(x.paid),
                         f"{x.billable_rate:.4f}", f"{x.average_duration_s:.1f}", format_cents(x.receivable_cents),
                         format_cents(x.payable_cents), format_cents(x.margin_cents)])
    return rows


def report_csv(rep: PeriodReport) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(REPORT_COLUMNS)
    w.writerows(report_rows(rep))
    return out.getvalue()


def report_table(rep: PeriodReport) -> str:
    rows = [list(REPORT_COLUMNS)] + report_rows(rep)
    widths = [max(len(r[i]) for r in rows) for i in range(len(REPORT_COLUMNS))]
    right = set(range(3, len(REPORT_COLUMNS)))
    lines = [f"{rep.period.label} ({rep.currency})"]
    for r in rows:
        lines.append("  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines) + "\n"
