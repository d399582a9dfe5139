"""Panel and API page render times with 1,000,000 calls in the database, next to the same pages
on a database without calls (the baseline, measured in the same run).

    python bench/panel.py [--calls 1000000] [--db /tmp/ppcswitch-bench-panel.db] [--repeat 15]

SQLite (the embedded default): the calls (one attempt each) are spread over the last 100
days, 10 buyers, 3 campaigns, 5 publishers (100 sub-IDs each), 1,000 tracking numbers,
callers from 40 states; they are written with
sqlite3's executemany (the schema comes from the real migrations), and the database is
kept for the next run (--rebuild to start again). Requests go through aiohttp's test client
in this process, logged in as an admin: the time of each is server work plus loopback HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from ppcswitch import app as core  # noqa: E402
from ppcswitch.config import load_settings  # noqa: E402
from ppcswitch.storage import breakdowns, db, repo  # noqa: E402
from ppcswitch.app import create_app  # noqa: E402
from ppcswitch.web import store  # noqa: E402

PASSWORD = "bench password 1"
CPU: dict[tuple[str, str], float] = {}  # (database, page) -> median CPU ms per request (all threads of the process)
FMT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores datetimes in SQLite
STATES = ("AL AZ AR CA CO CT DE FL GA ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND "
          "OH OK OR PA SC TN TX WA").split()


async def seed_network(url: str) -> None:
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s, s.begin():
            for k in range(3):
                await repo.create_campaign(s, f"Campaign {k}")
            for p in range(5):
                await repo.create_publisher(s, f"Publisher {p}", payout="10.00")
            for b in range(10):
                await repo.create_buyer(s, f"Buyer {b}", f"sip:b{b}@127.0.0.1:{5100 + b}", revenue="40.00",
                                        concurrency_cap=20)
                await repo.add_campaign_buyer(s, f"Campaign {b % 3}", f"Buyer {b}", b // 3 + 1)
            for n in range(1000):
                await repo.add_tracking_number(s, f"+1212555{n:04d}", f"Campaign {n % 3}", f"Publisher {n % 5}")
            await store.create_user(s, "admin", PASSWORD, "admin")
    finally:
        await engine.dispose()


def fill_calls(path: str, count: int) -> float:
    """Insert `count` calls and their attempts; returns seconds taken."""
    rng = random.Random(1)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    span = 100 * 86400
    started = time.monotonic()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    base_id = (con.execute("SELECT COALESCE(MAX(id), 0) FROM calls").fetchone()[0]) + 1
    chunk = 50_000
    for start in range(0, count, chunk):
        calls, attempts = [], []
        for i in range(start, min(count, start + chunk)):
            cid = base_id + i
            t0 = now - timedelta(seconds=span * (i / count)) - timedelta(seconds=rng.random())
            secs = rng.choice((5, 30, 75, 120, 300))
            billable = secs >= 60
            buyer = rng.randrange(1, 11)
            publisher = rng.randrange(1, 6)
            t_ans, t_end = t0 + timedelta(seconds=4), t0 + timedelta(seconds=4 + secs)
            calls.append((cid, f"bench-{cid}", f"+1212555{rng.randrange(1000):04d}", f"+1415{rng.randrange(10**7):07d}",
                          1, t0.strftime(FMT), t_end.strftime(FMT), "connected", publisher, buyer % 3 + 1,
                          buyer, t_ans.strftime(FMT), secs * 1000, 16, "Normal Clearing", "", int(billable),
                          "[]" if billable else f'["duration_below_minimum:{secs}<60"]',
                          4000 if billable else 0, 1000 if billable else 0,
                          f"p{publisher}-{rng.randrange(100):03d}", rng.choice(STATES)))
            attempts.append((cid, 1, buyer, "ANSWER", t0.strftime(FMT), t_ans.strftime(FMT), t_end.strftime(FMT)))
        con.executemany(
            "INSERT INTO calls (id, linkedid, tracking_number, caller, caller_valid, started_at, ended_at, outcome,"
            " publisher_id, campaign_id, buyer_id, answered_at, connected_ms, hangup_cause, hangup_cause_text,"
            " reject_reason, billable, billing_reasons, revenue_cents, payout_cents, sub_id, caller_state)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", calls)
        con.executemany("INSERT INTO call_attempts (call_id, seq, buyer_id, dial_status, started_at, answered_at,"
                        " ended_at) VALUES (?,?,?,?,?,?,?)", attempts)
        con.commit()
    fill_rollups(con)
    con.execute("ANALYZE")
    con.close()
    return time.monotonic() - started


def fill_rollups(con: sqlite3.Connection) -> None:
    """The billing rollups (15-minute and daily) and the daily totals by sub-ID and state of the calls,
    as settling them would have kept them: the reports read these, so without them a report over the
    bench calls would be empty."""
    con.execute("DELETE FROM billing_rollups")
    con.execute("DELETE FROM billing_daily")
    con.execute("DELETE FROM breakdown_daily")
    for statement in breakdowns.backfill_sql("sqlite"):
        con.execute(statement)
    sums = ("count(*), sum(answered_at IS NOT NULL), sum(billable), sum(payout_cents > 0), sum(connected_ms), "
            "sum(revenue_cents), sum(payout_cents)")
    cols = "campaign_id, buyer_id, publisher_id, calls, connected, billable, paid, connected_ms, " \
           "receivable_cents, payable_cents"
    bucket = ("strftime('%Y-%m-%d %H:', started_at) || printf('%02d', (CAST(strftime('%M', started_at) AS INTEGER)"
              " / 15) * 15) || ':00.000000'")
    con.execute(f"INSERT INTO billing_rollups (bucket_start, {cols}) SELECT {bucket}, coalesce(campaign_id, 0), "
                f"coalesce(buyer_id, 0), coalesce(publisher_id, 0), {sums} FROM calls GROUP BY 1, 2, 3, 4")
    con.execute(f"INSERT INTO billing_daily (day_start, {cols}) SELECT substr(bucket_start, 1, 10) || "
                f"' 00:00:00.000000', campaign_id, buyer_id, publisher_id, sum(calls), sum(connected), sum(billable), "
                f"sum(paid), sum(connected_ms), sum(receivable_cents), sum(payable_cents) FROM billing_rollups "
                f"GROUP BY 1, 2, 3, 4")
    con.commit()


def pages(mid_call_id: int) -> list[tuple[str, str]]:
    today = datetime.now(timezone.utc).date()
    week = (today - timedelta(days=7)).isoformat()
    month = f"from={(today - timedelta(days=29)).isoformat()}&to={today.isoformat()}"
    return [
        ("dashboard", "/"),
        ("call log", "/calls"),
        ("call log, billable", "/calls?billable=yes"),
        ("call log, campaign + week", f"/calls?campaign=2&date_from={week}"),
        ("call log, buyer + not billable", "/calls?buyer=7&billable=no"),
        ("call log, caller prefix", "/calls?caller=%2B14155"),
        ("call log, rare caller", "/calls?caller=%2B141500000"),
        ("call log, 40 days back", f"/calls?date_to={(today - timedelta(days=40)).isoformat()}"),
        ("call page", f"/calls/{mid_call_id}"),
        ("buyers", "/buyers"),
        ("numbers", "/numbers?campaign=1"),
        ("numbers, paused only", "/numbers?status=paused"),
        ("live calls", "/live"),
        ("reports, month to date", "/reports"),
        ("reports, last 30 days", "/reports?preset=30d"),
        ("reports, 30 days New York", "/reports?preset=30d&tz=america/new_york"),
        ("reports, today (hourly)", "/reports?preset=today"),
        ("reports, 90 days", f"/reports?from={(today - timedelta(days=89)).isoformat()}&to={today.isoformat()}"),
        ("reports CSV, days", "/reports?preset=30d&format=csv&view=days"),
        ("reports, 30 days, one publisher", "/reports?preset=30d&publisher=2"),
        ("reports CSV, sub-IDs 30 days", f"/reports/sub-ids.csv?{month}&tz=UTC"),
        ("reports CSV, states 30 days", "/reports?preset=30d&format=csv&view=states"),
        ("API sub-IDs, 30 days", f"/api/v1/reports/sub-ids?{month}"),
        ("call log, state", "/calls?state=TX"),
        ("call log, sub-ID", "/calls?publisher=2&sub_id=p2-042"),
        ("call log, one hour", f"/calls?date_from={today.isoformat()}&date_to={today.isoformat()}&hour=1"),
        ("call log, caller typed", "/calls?caller=(415)+555"),
        ("campaign page", "/campaigns/1"),
        ("campaign link", "/campaigns/1/buyers/1"),
        ("settings", "/settings"),
        ("account", "/account"),
        ("API calls", "/api/v1/calls?limit=100"),
        ("API summary", "/api/v1/summary"),
    ]


async def measure(url: str, repeat: int, mid_call_id: int) -> dict[str, list[float]]:
    client = TestClient(TestServer(create_app(load_settings(env={"PPCSWITCH_DATABASE_URL": url}), telephony=False, attribution_service=False)))
    await client.start_server()
    try:
        app = client.server.app

        async def token(s):
            return (await store.create_token(s, await store.user_by_name(s, "admin"), "bench"))[1]

        api_token = await app[core.WRITER].run(token)
        login = await client.get("/login")
        csrf = (await login.text()).split('name="csrf" value="')[1].split('"')[0]
        await client.post("/login", data={"csrf": csrf, "username": "admin", "password": PASSWORD})
        out: dict[str, list[float]] = {}
        for name, path in pages(mid_call_id):
            headers = {"Authorization": f"Bearer {api_token}"} if path.startswith("/api/") else {}
            times, cpu = [], []
            for i in range(repeat + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                resp = await client.get(path, headers=headers)
                await resp.read()
                elapsed = (time.perf_counter() - t0) * 1000
                if resp.status not in (200, 404):
                    raise SystemExit(f"{path}: HTTP {resp.status}")
                if i:  # the first request warms caches
                    times.append(elapsed)
                    cpu.append((time.process_time() - c0) * 1000)
            out[name] = times
            CPU[url, name] = statistics.median(cpu)
        return out
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--db", default="/tmp/ppcswitch-bench-panel.db")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()

    base_path = args.db + ".empty"
    for path in ([args.db, base_path] if args.rebuild else [base_path]):
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    asyncio.run(seed_network(f"sqlite+aiosqlite:///{base_path}"))
    have = 0
    if os.path.exists(args.db):
        with sqlite3.connect(args.db) as con:
            have = con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            columns = {row[1] for row in con.execute("PRAGMA table_info(calls)")}
            if "caller_state" not in columns or not con.execute(
                    "SELECT 1 FROM calls WHERE sub_id != '' LIMIT 1").fetchone():
                have = -1  # calls of an older bench (no sub-IDs or states): write them again
    if have != args.calls:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(args.db + suffix):
                os.remove(args.db + suffix)
        asyncio.run(seed_network(f"sqlite+aiosqlite:///{args.db}"))
        print(f"writing {args.calls:,} calls ...", flush=True)
        print(f"  {fill_calls(args.db, args.calls):.1f} s")
    else:
        print(f"reusing {args.db} with {have:,} calls")
        with sqlite3.connect(args.db) as con:
            if not con.execute("SELECT COUNT(*) FROM breakdown_daily").fetchone()[0]:
                fill_rollups(con)

    baseline = asyncio.run(measure(f"sqlite+aiosqlite:///{base_path}", args.repeat, 1))
    full = asyncio.run(measure(f"sqlite+aiosqlite:///{args.db}", args.repeat, args.calls // 2))
    print(f"\nmedian / p95 ms over {args.repeat} requests each (SQLite, one process); cpu: median CPU ms of the"
          f" process per request (server, client and database threads), less sensitive to other load")
    print(f"{'page':<32}{'no calls':>18}{f'{args.calls:,} calls':>22}{'cpu':>8}   load average {os.getloadavg()[0]:.1f}")
    worst = 0.0
    for name in full:
        b, f = baseline[name], full[name]
        p95 = sorted(f)[max(0, int(len(f) * 0.95) - 1)]
        worst = max(worst, p95)
        bp95 = sorted(b)[max(0, int(len(b) * 0.95) - 1)]
        cpu = CPU[f"sqlite+aiosqlite:///{args.db}", name]
        print(f"{name:<32}{statistics.median(b):>9.1f} /{bp95:>6.1f}{statistics.median(f):>13.1f} /{p95:>6.1f}"
              f"{cpu:>8.1f}")
    print(f"\nslowest p95 with {args.calls:,} calls: {worst:.1f} ms (target < 200 ms)")


if __name__ == "__main__":
    main()
