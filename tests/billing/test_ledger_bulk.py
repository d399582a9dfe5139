"""Settling calls in bulk (ledger.settle_many_sync, the finished-call pipeline's groups) stores exactly
what settling them one by one stores: the same calls, attempts, decisions, ledger entries and rollups,
with unique-caller rules, tiers, revshare, a closed period, replays and repeat callers in one group.
On SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, text

from billing_helpers import network, record
from ppcswitch.billing import ledger
from ppcswitch.calls import Outcome
from ppcswitch.storage import models_billing as b
from ppcswitch.storage.db import make_engine, make_sessionmaker, upgrade
from ppcswitch.storage.writer import SyncJob, Writer, run_sync_jobs

UTC = timezone.utc
T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=3)
TABLES = ("calls", "call_attempts", "billing_decisions", "ledger_entries", "billing_rollups", "billing_daily",
          "breakdown_daily")


def stream(ids, seed: int) -> list:
    rnd = random.Random(seed)
    out, n = [], 0
    for _ in range(60):
        n += 1
        rec = record(ids, T0 + timedelta(minutes=rnd.randint(0, 3000), seconds=n),
                     rnd.choice([0, 1, 29, 30, 59, 60, 61, 90, 200]), caller=rnd.choice(
                         ["+14155550101", "+14155550102", "+14155550103", "+14155550104", "+14155550105"]),
                     buyer=rnd.choice(["a", "b"]), publisher=rnd.choice(["pub", "pub2"]),
                     quality_score=rnd.choice([None, 10, 90]), linkedid=f"lid-bulk-{seed}-{n}")
        if rnd.random() < 0.1:
            rec.outcome, rec.reject_reason, rec.buyer_id, rec.answered_at, rec.connected_ms = (
                Outcome.REJECTED, "unknown_tracking_number", None, None, 0)
        out.append(rec)
        if rnd.random() < 0.15:  # a replay of the same call, in the same group
            out.append(record(ids, rec.started_at, 30, caller=rec.caller, linkedid=rec.linkedid))
    return out


async def settled_rows(url: str, bulk: bool, seed: int) -> tuple[dict, list]:
    await upgrade(url)
    engine = make_engine(url)
    sm = make_sessionmaker(engine)
    writer = Writer(sm, max_queue=1000)
    await writer.start()
    try:
        ids = await writer.run(network)
        await writer.run(lambda s: ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], unique_days=1,
                                                   mode="tiers", tiers="0:1.00,60:2.50"))
        await writer.run(lambda s: ledger.set_rule(s, "payout", party_id=ids["pub"], mode="percent", percent_bp=5000,
                                                   only_when_buyer_pays=True, unique_days=1))
        await writer.run(lambda s: ledger.close_period(s, T0, T0 + timedelta(hours=6), user="t", now=NOW))
        records = stream(ids, seed)
        results = []
        for i in range(0, len(records), 17):  # groups as the writer makes them
            group = records[i:i + 17]
            if bulk:
                many = lambda s, rs: ledger.settle_many_sync(s, rs, now=NOW)  # noqa: E731
                jobs = [SyncJob(lambda s, r=r: ledger.settle_sync(s, r, now=NOW), many=(many, r)) for r in group]
                results += await writer.run(SyncJob(lambda s, jobs=jobs: run_sync_jobs(s, jobs)))
            else:
                for r in group:
                    results.append(await writer.run(SyncJob(lambda s, r=r: ledger.settle_sync(s, r, now=NOW))))
        async with sm() as session:
            rows = {}
            for table in TABLES:
                result = await session.execute(text(f"SELECT * FROM {table}"))
                cols = [c for c in result.keys() if c not in ("id", "call_id", "created_at")]
                rows[table] = sorted(repr(tuple(r._mapping[c] for c in cols)) for r in result)
            calls = dict((await session.execute(text("SELECT id, linkedid FROM calls"))).all())
            entries = (await session.execute(select(b.LedgerEntry.call_id, b.LedgerEntry.key))).all()
            rows["entry_calls"] = sorted(f"{calls[cid]}:{key}" for cid, key in entries)
        outcome = [None if r is None else (r.decision.revenue, r.decision.payout, r.decision.reasons) for r in results]
        return rows, outcome
    finally:
        await writer.stop()
        await engine.dispose()


async def test_bulk_settlement_stores_what_one_by_one_does(db_url, tmp_path):
    if db_url.startswith("sqlite"):
        one, many = f"sqlite+aiosqlite:///{tmp_path}/one.db", f"sqlite+aiosqlite:///{tmp_path}/many.db"
        a, b_ = await settled_rows(one, False, 5), await settled_rows(many, True, 5)
    else:
        a = await settled_rows(db_url, False, 5)
        engine = make_engine(db_url)
        async with engine.begin() as conn:  # the same database again, empty
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
        b_ = await settled_rows(db_url, True, 5)
    assert a[1] == b_[1]
    assert any(x is None for x in a[1]) and any(x is not None for x in a[1])
    for table in a[0]:
        assert a[0][table] == b_[0][table], table
