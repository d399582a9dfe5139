"""Reports for any period and time zone, statements and invoices, re-rating, and their CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from billing_helpers import network, record
from ppcswitch.billing import ledger, reports
from ppcswitch.billing.ledger import BillingError
from ppcswitch.billing.rerate import rerate
from ppcswitch.storage.db import make_engine, make_sessionmaker
from ppcswitch.storage.writer import Writer

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 15, tzinfo=UTC)


def z(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("tz, day, start, end", [
    ("UTC", "2026-11-01", "2026-11-01T00:00", "2026-11-02T00:00"),
    # New York leaves daylight time on 2026-11-01: that local day lasts 25 hours.
    ("America/New_York", "2026-11-01", "2026-11-01T04:00", "2026-11-02T05:00"),
    ("Asia/Kolkata", "2026-11-01", "2026-10-31T18:30", "2026-11-01T18:30"),  # +05:30
    ("Asia/Kathmandu", "2026-11-01", "2026-10-31T18:15", "2026-11-01T18:15"),  # +05:45
])
def test_period_of_a_local_day(tz, day, start, end):
    p = reports.period(day, day, tz)
    assert (p.start, p.end) == (z(start), z(end))


@pytest.mark.parametrize("args, message", [(("2026-11-02", "2026-11-01"), "before it starts"),
                                           (("2026-13-01",), "expected a date"),
                                           (("2026-11-01", None, "Mars/Base"), "unknown time zone"),
                                           (("2026-11-01", "9999-12-31"), "outside the calendar"),
                                           (("0001-01-01", None, "Asia/Tokyo"), "outside the calendar")])
def test_bad_periods_are_refused(args, message):
    with pytest.raises(BillingError, match=message):
        reports.period(*args)


# Calls on each side of New York's 2026-11-01 local day (04:00Z to 05:00Z next day).
EDGES = [("2026-11-01T03:59:59", False), ("2026-11-01T04:00:00", True), ("2026-11-02T04:59:59", True),
         ("2026-11-02T05:00:00", False)]


async def test_report_time_zone_edges_and_totals(writer, sessionmaker):
    ids = await writer.run(network)
    for when, _inside in EDGES:
        await writer.run(lambda s: ledger.settle(s, record(ids, z(when), 70, caller=f"+1415555{when[-2:]}{when[12]}1"),
                                                 now=NOW))
    await writer.run(lambda s: ledger.settle(s, record(ids, z("2026-11-01T12:00"), 30, buyer="b",
                                                       publisher="pub2"), now=NOW))
    async with sessionmaker() as s:
        rep = await reports.period_report(s, reports.period("2026-11-01", None, "America/New_York"))
        utc = await reports.period_report(s, reports.period("2026-11-01", None, "UTC"))
    inside = sum(1 for _, i in EDGES if i)
    t = rep.total
    assert (t.calls, t.connected, t.billable, t.paid) == (inside + 1, inside + 1, inside + 1, inside + 1)
    assert t.receivable_cents == inside * 4000 + 3000 and t.payable_cents == inside * 1000 + 500
    assert t.margin_cents == inside * 3000 + 2500
    assert [(x.name, x.receivable_cents) for x in rep.by_buyer] == [("Buyer A", inside * 4000), ("Buyer B", 3000)]
    assert [(x.name, x.payable_cents) for x in rep.by_publisher] == [("Pub", inside * 1000), ("Pub2", 500)]
    assert rep.by_campaign[0].name == "HVAC" and rep.by_campaign[0].margin_cents == t.margin_cents
    assert t.billable_rate == 1.0 and t.average_duration_s == pytest.approx((70 * inside + 30) / (inside + 1))
    assert utc.total.calls == 3  # 03:59:59Z, 04:00:00Z and 12:00Z fall on the UTC day 2026-11-01


async def test_billable_rate_and_average_duration(writer, sessionmaker):
    ids = await writer.run(network)
    for i, secs in enumerate((70, 30, 0, 90)):
        await writer.run(lambda s: ledger.settle(s, record(ids, z("2026-11-05T10:00") + timedelta(minutes=i), secs,
                                                           caller=f"+1415555000{i}"), now=NOW))
    async with sessionmaker() as s:
        t = (await reports.period_report(s, reports.period("2026-11-05"))).total
    assert (t.calls, t.connected, t.billable) == (4, 3, 2)
    assert t.billable_rate == 0.5 and t.average_duration_s == pytest.approx((70 + 30 + 90) / 3)


async def test_unaligned_period_is_refused(session):
    with pytest.raises(BillingError, match="15-minute boundary"):
        await reports.period_report(session, reports.Period(z("2026-11-01T00:05"), z("2026-11-02T00:00")))


async def test_statement_and_invoice_html_and_csv(writer, sessionmaker):
    ids = await writer.run(network)
    rec = record(ids, z("2026-11-03T15:00"), 70)
    await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    await writer.run(lambda s: ledger.adjust(s, account="payable", party_id=ids["pub"], amount_cents=-250,
                                             reason="<late> fee", user="bob", now=z("2026-11-04T00:00")))
    p = reports.period("2026-11-01", "2026-11-30", "America/New_York")
    async with sessionmaker() as s:
        st = await reports.statement(s, "publisher", ids["pub"], p)
        inv = await reports.statement(s, "buyer", ids["a"], p)
    assert st.total_cents == 750 and [x.kind for x in st.lines] == ["call", "adjustment"]
    assert st.lines[0].linkedid == rec.linkedid and st.lines[0].connected_s == 70
    assert st.lines[0].booked_at.isoformat() == "2026-11-03T10:00:00-05:00"
    html = reports.statement_html(st)
    assert "Statement for Pub" in html and "7.50 USD" in html and "&lt;late&gt; fee" in html and "<script" not in html
    rows = list(csv.reader(io.StringIO(reports.statement_csv(inv))))
    assert rows[0][5] == "amount_USD" and rows[1][5] == "40.00" and rows[-1] == ["total", "", "", "", "", "40.00", "", ""]


async def test_rerate_dry_run_then_apply(writer, sessionmaker):
    ids = await writer.run(network)
    recs = [record(ids, z("2026-11-10T10:00") + timedelta(hours=i), s, caller=f"+1415555010{i}")
            for i, s in enumerate((45, 70, 100))]
    for rec in recs:
        await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    p = reports.period("2026-11-10")
    # The buyer agrees to a 40 s minimum and a new price from 90 s.
    await writer.run(lambda s: ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], min_duration=40,
                                               mode="tiers", tiers="0:40.00,90:55.00"))
    async with sessionmaker() as s:
        dry = await rerate(s, p)
        assert await ledger.ledger_totals(s, p.start, p.end) == (8000, 2000)  # a dry run books nothing
    assert dry.calls_checked == 3 and [c.linkedid for c in dry.changes] == [recs[0].linkedid, recs[2].linkedid]
    assert (dry.revenue_delta_cents, dry.payout_delta_cents) == (4000 + 1500, 1000)
    assert dry.changes[0].old_reasons == ["duration_below_minimum:45<60", "payout:buyer_not_billable"]
    assert dry.changes[0].new_reasons == []
    with pytest.raises(BillingError, match="--user"):
        await writer.run(lambda s: rerate(s, p, apply=True))
    done = await writer.run(lambda s: rerate(s, p, apply=True, user="dana", now=NOW))
    assert done.applied and done.revenue_delta_cents == dry.revenue_delta_cents
    async with sessionmaker() as s:
        assert await ledger.ledger_totals(s, p.start, p.end) == (8000 + 5500, 3000)
        rep = await reports.period_report(s, p)
        assert (rep.total.receivable_cents, rep.total.payable_cents, rep.total.billable) == (13500, 3000, 3)
        again = await rerate(s, p)
    assert again.changes == []  # applied: nothing left to change


@pytest.fixture
def cli(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/ppcswitch.db"

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPCSWITCH_")}
        env.update(PPCSWITCH_DATABASE_URL=url, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "ppcswitch", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        return proc

    run.url = url
    return run


def _settle(url, calls):
    async def main():
        engine = make_engine(url)
        w = Writer(make_sessionmaker(engine))
        await w.start()
        try:
            ids = await w.run(network)
            for when, secs, caller in calls:
                await w.run(lambda s: ledger.settle(s, record(ids, z(when), secs, caller=caller), now=NOW))
        finally:
            await w.stop()
            await engine.dispose()
    asyncio.run(main())


def test_cli_reports_ledger_rules_and_rerate(cli, tmp_path):
    cli("db", "upgrade")
    _settle(cli.url, [("2026-10-03T15:00", 70, "+14155550001"), ("2026-10-03T16:00", 30, "+14155550002")])
    out = cli("report", "period", "--from", "2026-10-01", "--to", "2026-10-31", "--tz", "America/New_York",
              "--csv").stdout
    rows = {(r["group"], r["name"]): r for r in csv.DictReader(io.StringIO(out))}
    assert rows[("publisher", "Pub")]["payable"] == "10.00" and rows[("buyer", "Buyer A")]["receivable"] == "40.00"
    assert rows[("total", "total")]["margin"] == "30.00" and rows[("total", "total")]["billable_rate"] == "0.5000"
    assert "Buyer A" in cli("report", "period", "--from", "2026-10-03").stdout
    cli("report", "statement", "Pub", "--from", "2026-10-01", "--to", "2026-10-31", "-o", str(tmp_path / "s.html"))
    assert "Statement for Pub" in (tmp_path / "s.html").read_text()
    assert "40.00" in cli("report", "invoice", "Buyer A", "--from", "2026-10-01", "--to", "2026-10-31", "--csv").stdout
    cli("ledger", "adjust", "--publisher", "Pub", "--amount", "-2.50", "--user", "bob", "--reason", "fee")
    assert "-2.50" in cli("ledger", "list", "--from", "2026-10-01", "--to", "2099-12-31").stdout
    cli("rule", "set", "revenue", "--campaign", "HVAC", "--min-duration", "20")
    cli("rule", "set", "payout", "--publisher", "Pub", "--mode", "percent", "--percent", "25")
    assert "min_duration=20" in cli("rule", "show", "--campaign", "HVAC", "--buyer", "Buyer A").stdout
    dry = cli("rerate", "--from", "2026-10-03").stdout
    assert "2 calls checked, 1 changed: revenue 40.00, payout 10.00" in dry and "dry run" in dry
    cli("rerate", "--from", "2026-10-03", "--apply", "--user", "dana")
    assert "0 changed" in cli("rerate", "--from", "2026-10-03").stdout
    # bad input: one clear line, exit 2, nothing lost
    err = cli("ledger", "close", "--from", "2099-01-01", "--user", "x", expect=2).stderr
    assert err.startswith("ppcswitch: period: cannot close a period that has not ended yet")
    assert "no publisher" in cli("ledger", "adjust", "--publisher", "Nope", "--amount", "1", "--user", "a",
                                 "--reason", "r", expect=2).stderr
    assert "decimal" in cli("ledger", "adjust", "--buyer", "Buyer A", "--amount", "1e3", "--user", "a", "--reason", "r",
                            expect=2).stderr
    assert "percent mode is for the payout side" in cli("rule", "set", "revenue", "--mode", "percent", expect=2).stderr
    cli("ledger", "close", "--from", "2026-10-01", "--to", "2026-10-31", "--user", "carol")
    err = cli("ledger", "adjust", "--publisher", "Pub", "--amount", "1", "--user", "a", "--reason", "r").stdout
    assert "adjustment booked" in err  # booked now, in the open period
    lid = cli("calls", "list", "--json").stdout.split('"linkedid": "')[1].split('"')[0]
    assert "dispute window" in cli("ledger", "dispute", lid, "--user", "a", "--reason", "r", expect=2).stderr
