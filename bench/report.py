"""Period payout/receivable report on 10,000,000 synthetic calls in SQLite.

    python bench/report.py [--calls 10000000] [--db /tmp/ppcswitch-bench-report.db] [--keep]

Builds its own data set: one year of calls (20 campaigns, each with 10 buyers
and 5 publishers; ~27,000 calls a day; about half billable), their ledger
entries (receivable and payable per billable call) and the 15-minute and
daily rollups the controller maintains as calls close, all with bulk
INSERT ... SELECT inside SQLite. Then it times, on the same file:

- the report: `ppcswitch.billing.reports.period_report` for one month in
  America/New_York (owed per publisher, receivable per buyer, margin per
  campaign, billable rate, average duration), i.e. what `ppcswitch report
  period` and the panel run;
- the baseline: the same owed/receivable totals summed straight from the
  ledger entries of that month (indexed on booked_at), without rollups.

It checks that both give the same totals to the cent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ppcswitch.billing import ledger, reports  # noqa: E402
from ppcswitch.storage.db import make_engine, make_sessionmaker, upgrade  # noqa: E402

YEAR_START = 1767225600  # 2026-01-01T00:00:00Z
YEAR = 365 * 86400
TS = "strftime('%Y-%m-%d %H:%M:%S', {}, 'unixepoch') || '.000000'"  # SQLAlchemy's SQLite datetime text


def build(path: Path, n: int) -> None:
    db = sqlite3.connect(path)
    db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-1000000; "
                     "PRAGMA temp_store=MEMORY;")
    step = YEAR / n
    t0 = time.perf_counter()
    db.execute("INSERT INTO campaigns (id, name, paused, created_at) SELECT value, 'Campaign ' || value, 0, "
               "'2026-01-01 00:00:00.000000' FROM generate_series(1, 20)" if _has_series(db) else
               "WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 20) "
               "INSERT INTO campaigns (id, name, paused, created_at) SELECT value, 'Campaign ' || value, 0, "
               "'2026-01-01 00:00:00.000000' FROM s")
    db.execute("WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 200) "
               "INSERT INTO buyers (id, name, destination, ring_timeout, paused, min_duration, revenue_cents, "
               "created_at) SELECT v, 'Buyer ' || v, 'sip:b' || v || '@127.0.0.1', 30, 0, 60, 4000, "
               "'2026-01-01 00:00:00.000000' FROM s")
    db.execute("WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 100) "
               "INSERT INTO publishers (id, name, payout_cents, paused, created_at) SELECT v, 'Publisher ' || v, "
               "1000, 0, '2026-01-01 00:00:00.000000' FROM s")
    # Calls: a pseudo-random but reproducible mix (h is a multiplicative hash of the row number).
    db.execute(f"""
        WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1}),
        g AS (SELECT i, (i * 2654435761) % 4294967296 AS h, {YEAR_START} + CAST(i * {step} AS INTEGER) AS t FROM s),
        c AS (SELECT i, h, t, 1 + h % 20 AS campaign, (h / 20) % 10 AS b, (h / 200) % 5 AS p,
                     CASE WHEN h % 10 < 8 THEN ((h / 1000) % 180) * 1000 + h % 1000 ELSE 0 END AS ms FROM g)
        INSERT INTO calls (id, linkedid, tracking_number, caller, caller_valid, started_at, ended_at, outcome,
                           publisher_id, campaign_id, buyer_id, answered_at, connected_ms, hangup_cause,
                           hangup_cause_text, reject_reason, billable, billing_reasons, revenue_cents, payout_cents)
        SELECT i + 1, 'bench-' || i, '+18005550100', '+1415' || printf('%07d', h % 10000000), 1,
               {TS.format('t')}, {TS.format('t + 5 + ms / 1000')},
               CASE WHEN ms > 0 THEN 'connected' ELSE 'not_connected' END,
               (campaign - 1) * 5 + p + 1, campaign, CASE WHEN ms > 0 THEN (campaign - 1) * 10 + b + 1 END,
               CASE WHEN ms > 0 THEN {TS.format('t + 5')} END, ms, 16, 'Normal Clearing', '',
               ms >= 60000, CASE WHEN ms >= 60000 THEN '[]' WHEN ms > 0 THEN
                 '["duration_below_minimum:' || (ms / 1000) || '<60","payout:buyer_not_billable"]'
                 ELSE '["not_connected"]' END,
               CASE WHEN ms >= 60000 THEN 4000 ELSE 0 END, CASE WHEN ms >= 60000 THEN 1000 ELSE 0 END
        FROM c""")
    db.commit()
    t1 = time.perf_counter()
    for account, column in (("receivable", "revenue_cents"), ("payable", "payout_cents")):
        db.execute(f"""
            INSERT INTO ledger_entries (key, kind, account, call_id, campaign_id, buyer_id, publisher_id,
                                        amount_cents, booked_at, created_at, reason, user)
            SELECT 'call:' || linkedid || ':{account}', 'call', '{account}', id, campaign_id, buyer_id,
                   publisher_id, {column}, started_at, ended_at, 'call', '' FROM calls WHERE billable""")
    db.commit()
    t2 = time.perf_counter()
    bucket = ("substr(started_at, 1, 14) || printf('%02d', (CAST(substr(started_at, 15, 2) AS INTEGER) / 15) * 15)"
              " || ':00.000000'")
    sums = ("count(*), sum(outcome = 'connected'), sum(billable), sum(billable), sum(connected_ms), "
            "sum(revenue_cents), sum(payout_cents)")
    cols = "calls, connected, billable, paid, connected_ms, receivable_cents, payable_cents"
    db.execute(f"INSERT INTO billing_rollups (bucket_start, campaign_id, buyer_id, publisher_id, {cols}) "
               f"SELECT {bucket}, campaign_id, coalesce(buyer_id, 0), publisher_id, {sums} FROM calls "
               f"GROUP BY 1, 2, 3, 4")
    db.execute(f"INSERT INTO billing_daily (day_start, campaign_id, buyer_id, publisher_id, {cols}) "
               f"SELECT substr(started_at, 1, 10) || ' 00:00:00.000000', campaign_id, coalesce(buyer_id, 0), "
               f"publisher_id, {sums} FROM calls GROUP BY 1, 2, 3, 4")
    db.commit()
    t3 = time.perf_counter()
    db.execute("ANALYZE")
    db.close()
    rows = {t: sqlite3.connect(path).execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("calls", "ledger_entries", "billing_rollups", "billing_daily")}
    print(f"built in {t3 - t0:.0f} s (calls {t1 - t0:.0f} s, ledger {t2 - t1:.0f} s, rollups {t3 - t2:.0f} s): "
          + ", ".join(f"{k} {v:,}" for k, v in rows.items()), flush=True)


def _has_series(db) -> bool:
    try:
        db.execute("SELECT * FROM generate_series(1, 1)").fetchall()
        return True
    except sqlite3.OperationalError:
        return False


async def measure(url: str, repeats: int) -> None:
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    p = reports.period("2026-06-01", "2026-06-30", "America/New_York")
    try:
        report_times, base_times = [], []
        for _ in range(repeats):
            async with sm() as s:
                t = time.perf_counter()
                rep = await reports.period_report(s, p)
                report_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                base = await ledger.ledger_totals(s, p.start, p.end)
                base_times.append(time.perf_counter() - t)
        assert (rep.total.receivable_cents, rep.total.payable_cents) == base, (rep.total, base)
        print(f"period: {p.label}; {rep.total.calls:,} calls, {rep.total.billable:,} billable, "
              f"receivable {rep.total.receivable_cents / 100:,.2f}, payable {rep.total.payable_cents / 100:,.2f}, "
              f"{len(rep.by_buyer)} buyers, {len(rep.by_publisher)} publishers, {len(rep.by_campaign)} campaigns")
        print(f"baseline (sum of the month's ledger entries, 2 totals only): median "
              f"{statistics.median(base_times) * 1000:.0f} ms (min {min(base_times) * 1000:.0f})")
        print(f"report (rollups: every publisher/buyer/campaign line): median "
              f"{statistics.median(report_times) * 1000:.0f} ms (min {min(report_times) * 1000:.0f}) "
              f"over {repeats} runs; totals equal the ledger's to the cent")
    finally:
        await engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10_000_000)
    ap.add_argument("--db", default="/tmp/ppcswitch-bench-report.db")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="reuse an existing data set at --db")
    args = ap.parse_args()
    path = Path(args.db)
    url = f"sqlite+aiosqlite:///{path}"
    if not (args.keep and path.exists()):
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        asyncio.run(upgrade(url))
        build(path, args.calls)
    asyncio.run(measure(url, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
