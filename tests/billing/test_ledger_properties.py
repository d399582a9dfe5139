"""Property tests over random call streams and rule sets, through the real storage layer.

For every stream: revenue - payout = margin for every call and every report
line; report totals equal ledger totals to the cent; replayed calls (AMI
replays, restarts) add no entries; revshare never pays for a call the buyer
did not pay for; a dispute nets both sides (revshare) to zero.
Hypothesis runs on SQLite (a migrated template file copied per example); one
seeded stream runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from billing_helpers import network, record
from ppcswitch.billing import ledger, reports
from ppcswitch.storage import models_billing as b
from ppcswitch.storage.db import make_engine, make_sessionmaker, upgrade
from ppcswitch.storage.writer import Writer

UTC = timezone.utc
T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
PERIOD = reports.Period(T0 - timedelta(days=1), T0 + timedelta(days=10), "UTC")
CALLERS = ["+14155550101", "+14155550102", "+14155550103"]

revenue_rules = st.fixed_dictionaries({}, optional={
    "min_duration": st.sampled_from([0, 30, 60, 90]), "unique_days": st.integers(0, 2),
    "unique_counts_unbillable": st.booleans(), "quality_threshold": st.integers(0, 100),
    "mode": st.sampled_from(["flat", "tiers"]), "flat_cents": st.integers(0, 10**6),
    "tiers": st.sampled_from(["0:1.00,60:2.50", "30:12.34,120:99.99"])})
payout_rules = st.fixed_dictionaries({}, optional={
    "min_duration": st.sampled_from([0, 20, 60]), "unique_days": st.integers(0, 2),
    "mode": st.sampled_from(["flat", "percent", "tiers"]), "flat_cents": st.integers(0, 10**6),
    "percent_bp": st.integers(0, 10000), "only_when_buyer_pays": st.booleans(), "tiers": st.just("0:0.01,60:7.77")})
calls = st.lists(st.fixed_dictionaries({
    "minute": st.integers(0, 4 * 24 * 60), "seconds": st.sampled_from([0, 1, 29, 30, 59, 60, 61, 90, 200]),
    "caller": st.sampled_from(CALLERS), "buyer": st.sampled_from(["a", "b"]), "publisher": st.sampled_from(["pub", "pub2"]),
    "quality": st.none() | st.integers(0, 100), "replay": st.booleans(), "dispute": st.booleans()}), max_size=25)
scopes = st.sampled_from(["campaign", "party", "both"])


async def run_stream(sm, rule_specs, stream) -> None:
    writer = Writer(sm, max_queue=1000)
    await writer.start()
    try:
        ids = await writer.run(network)
        for side, scope, values in rule_specs:
            party = ids["a" if side == "revenue" else "pub"]
            where = {"campaign": dict(campaign_id=ids["campaign"]), "party": dict(party_id=party),
                     "both": dict(campaign_id=ids["campaign"], party_id=party)}[scope]
            await writer.run(lambda s: ledger.set_rule(s, side, **where, **values))
        now = T0 + timedelta(days=5)
        disputes = []
        for i, c in enumerate(sorted(stream, key=lambda c: c["minute"])):
            rec = record(ids, T0 + timedelta(minutes=c["minute"], seconds=i), c["seconds"], caller=c["caller"],
                         buyer=c["buyer"], publisher=c["publisher"], quality_score=c["quality"])
            await writer.run(lambda s: ledger.settle(s, rec, now=now))
            if c["replay"]:  # the same call again, as after an AMI replay or a restart
                again = record(ids, rec.started_at, c["seconds"], caller=c["caller"], buyer=c["buyer"],
                               publisher=c["publisher"], linkedid=rec.linkedid)
                assert await writer.run(lambda s: ledger.settle(s, again, now=now)) is None
            if c["dispute"]:
                disputes.append(rec.linkedid)
        for linkedid in disputes:
            try:
                await writer.run(lambda s: ledger.dispute(s, linkedid, user="t", reason="r", window_days=30, now=now))
            except ledger.BillingError as exc:
                assert "no revenue" in str(exc)
        async with sm() as session:
            await check_invariants(session, len(stream))
    finally:
        await writer.stop()


async def check_invariants(session, n_calls: int) -> None:
    decisions = {d.call_id: d for d in await session.scalars(select(b.BillingDecision))}
    assert len(decisions) == n_calls
    booked = defaultdict(lambda: defaultdict(int))
    call_entries = defaultdict(int)
    for e in await session.scalars(select(b.LedgerEntry)):
        booked[e.call_id][e.account] += e.amount_cents
        if e.kind == "call":
            call_entries[(e.call_id, e.account)] += 1
    assert all(n == 1 for n in call_entries.values())  # no call booked twice
    for call_id, d in decisions.items():
        rev, pay = booked[call_id]["receivable"], booked[call_id]["payable"]
        if d.payout_depends_on_buyer and not d.revenue_billable:
            assert not d.payout_billable and d.payout_cents == 0 and pay == 0  # revshare: no pay without revenue
        if d.disputed:
            assert rev == 0
            if d.payout_depends_on_buyer:
                assert pay == 0  # a dispute nets both sides to zero
        else:
            assert (rev, pay) == (d.revenue_cents, d.payout_cents)
            assert rev - pay == d.revenue_cents - d.payout_cents  # margin per call
    rep = await reports.period_report(session, PERIOD)
    assert (rep.total.receivable_cents, rep.total.payable_cents) == await ledger.ledger_totals(
        session, PERIOD.start, PERIOD.end)
    assert rep.total.calls == n_calls
    for lines in (rep.by_buyer, rep.by_publisher, rep.by_campaign):
        assert sum(x.receivable_cents for x in lines) == rep.total.receivable_cents
        assert sum(x.payable_cents for x in lines) == rep.total.payable_cents
        assert sum(x.margin_cents for x in lines) == rep.total.margin_cents
        for x in lines:
            assert x.margin_cents == x.receivable_cents - x.payable_cents
    for p in rep.by_publisher:  # statements agree with the report
        assert (await reports.statement(session, "publisher", p.id, PERIOD)).total_cents == p.payable_cents


@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["revenue", "payout"]), scopes, revenue_rules | payout_rules), max_size=3),
       calls)
def test_random_streams_keep_every_invariant(template_db, tmp_path_factory, rule_specs, stream):
    rule_specs = [(side, scope, v) for side, scope, v in rule_specs
                  if not (side == "revenue" and v.get("mode") == "percent") and not (
                      side == "revenue" and ("percent_bp" in v or "only_when_buyer_pays" in v))]
    path = tmp_path_factory.mktemp("ex") / "db.db"
    shutil.copy(template_db, path)

    async def main():
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await run_stream(make_sessionmaker(engine), rule_specs, stream)
        finally:
            await engine.dispose()

    asyncio.run(main())


async def test_a_seeded_stream_on_each_backend(sessionmaker):
    rnd = random.Random(4)
    stream = [{"minute": rnd.randrange(5000), "seconds": rnd.choice([0, 30, 59, 60, 61, 120]),
               "caller": rnd.choice(CALLERS), "buyer": rnd.choice("ab"), "publisher": rnd.choice(["pub", "pub2"]),
               "quality": rnd.choice([None, 10, 95]), "replay": rnd.random() < 0.3, "dispute": rnd.random() < 0.2}
              for _ in range(40)]
    rules = [("revenue", "campaign", {"unique_days": 1, "quality_threshold": 90}),
             ("payout", "both", {"mode": "percent", "percent_bp": 3333})]
    await run_stream(sessionmaker, rules, stream)
