"""The ledger on SQLite and PostgreSQL: settling calls, idempotency, disputes, adjustments, closed periods."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from billing_helpers import network, record
from ppcswitch.billing import ledger
from ppcswitch.billing.ledger import BillingError, PeriodClosedError
from ppcswitch.storage import models as t
from ppcswitch.storage import models_billing as b
from ppcswitch.storage import repo
from ppcswitch.storage.validate import ValidationError

UTC = timezone.utc
T = datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC)
NOW = T + timedelta(days=1)


async def entries(session):
    return [(e.kind, e.account, e.amount_cents) for e in
            await session.scalars(select(b.LedgerEntry).order_by(b.LedgerEntry.id))]


async def test_billable_call_writes_record_decision_and_entries_once(writer, sessionmaker):
    ids = await writer.run(network)
    rec = record(ids, T, 70)
    settled = await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    assert settled.decision.revenue.cents == 4000 and settled.decision.payout.cents == 1000
    # Replayed (same linkedid, e.g. AMI replay or restart): nothing more.
    assert await writer.run(lambda s: ledger.settle(s, record(ids, T, 70, linkedid=rec.linkedid), now=NOW)) is None
    async with sessionmaker() as s:
        assert await entries(s) == [("call", "receivable", 4000), ("call", "payable", 1000)]
        call = await repo.get_call(s, rec.linkedid)
        assert call.billable and call.revenue_cents == 4000 and call.payout_cents == 1000
        assert await s.scalar(select(func.count()).select_from(b.BillingDecision)) == 1
        assert await ledger.ledger_totals(s, T, NOW) == (4000, 1000)


async def test_short_call_is_recorded_with_reasons_and_no_entries(writer, sessionmaker):
    ids = await writer.run(network)
    rec = record(ids, T, 30, quality_score=12)
    await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    async with sessionmaker() as s:
        call = await repo.get_call(s, rec.linkedid)
        assert not call.billable and call.billing_reasons == ["duration_below_minimum:30<60",
                                                              "payout:buyer_not_billable"]
        assert await entries(s) == []
        assert await s.scalar(select(t.Call.quality_score)) == 12


async def test_rules_per_campaign_with_buyer_and_publisher_overrides(writer, sessionmaker):
    ids = await writer.run(network)

    async def rules(s):
        await ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], min_duration=90, unique_days=7)
        await ledger.set_rule(s, "revenue", party_id=ids["b"], flat_cents=3300)
        await ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], party_id=ids["b"], tiers="0:10.00,120:50.00",
                              mode="tiers")
        await ledger.set_rule(s, "payout", campaign_id=ids["campaign"], mode="percent", percent_bp=2500)
        await ledger.set_rule(s, "payout", campaign_id=ids["campaign"], party_id=ids["pub2"], mode="flat",
                              only_when_buyer_pays=False, min_duration=20)
    await writer.run(rules)
    async with sessionmaker() as s:
        ra, pa = await ledger.rules_for(s, ids["campaign"], ids["a"], ids["pub"])
        rb, pb = await ledger.rules_for(s, ids["campaign"], ids["b"], ids["pub2"])
    assert (ra.min_duration, ra.unique_days, ra.flat_cents, ra.mode) == (90, 7, 4000, "flat")
    assert (pa.mode, pa.percent_bp) == ("percent", 2500)
    assert (rb.min_duration, rb.mode, rb.flat_cents) == (90, "tiers", 3300) and rb.tiers[1].cents == 5000
    assert (pb.mode, pb.flat_cents, pb.only_when_buyer_pays, pb.min_duration) == ("flat", 500, False, 20)

    first = await writer.run(lambda s: ledger.settle(s, record(ids, T, 100), now=NOW))
    assert (first.decision.revenue.cents, first.decision.payout.cents) == (4000, 1000)  # 25 % revshare
    repeat = await writer.run(lambda s: ledger.settle(s, record(ids, T + timedelta(days=6), 100), now=NOW))
    assert repeat.decision.revenue.reasons == ("duplicate_caller:2026-11-20",)
    assert repeat.decision.payout.reasons == ("buyer_not_billable",)
    own = await writer.run(lambda s: ledger.settle(s, record(ids, T, 25, buyer="b", publisher="pub2",
                                                              caller="+14155550999"), now=NOW))
    assert not own.decision.revenue.billable and own.decision.payout.cents == 500  # paid on its own criteria


async def test_bad_rule_is_refused(writer):
    await writer.run(network)
    with pytest.raises(BillingError):
        await writer.run(lambda s: ledger.set_rule(s, "revenue", mode="percent"))


async def test_dispute_within_window_nets_both_sides_to_zero(writer, sessionmaker):
    ids = await writer.run(network)
    rec = record(ids, T, 70)
    await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    await writer.run(lambda s: ledger.dispute(s, rec.linkedid, user="alice", reason="caller was a robot",
                                              window_days=30, now=NOW))
    async with sessionmaker() as s:
        assert await entries(s) == [("call", "receivable", 4000), ("call", "payable", 1000),
                                    ("dispute", "receivable", -4000), ("dispute", "payable", -1000)]
        assert await ledger.ledger_totals(s, T, NOW + timedelta(seconds=1)) == (0, 0)
    with pytest.raises(BillingError, match="already disputed"):
        await writer.run(lambda s: ledger.dispute(s, rec.linkedid, user="a", reason="r", window_days=30, now=NOW))


async def test_dispute_after_window_and_without_user_is_refused(writer):
    ids = await writer.run(network)
    rec = record(ids, T, 70)
    await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    late = T + timedelta(days=30, seconds=1)
    with pytest.raises(BillingError, match="dispute window \\(30 days\\).*closed on 2026-12-20"):
        await writer.run(lambda s: ledger.dispute(s, rec.linkedid, user="a", reason="r", window_days=30, now=late))
    with pytest.raises(BillingError, match="--user"):
        await writer.run(lambda s: ledger.dispute(s, rec.linkedid, user=" ", reason="r", window_days=30, now=NOW))
    with pytest.raises(BillingError, match="no call"):
        await writer.run(lambda s: ledger.dispute(s, "nope", user="a", reason="r", window_days=30, now=NOW))


async def test_dispute_with_own_criteria_payout_keeps_the_payout(writer, sessionmaker):
    ids = await writer.run(network)
    await writer.run(lambda s: ledger.set_rule(s, "payout", party_id=ids["pub"], only_when_buyer_pays=False))
    rec = record(ids, T, 70)
    await writer.run(lambda s: ledger.settle(s, rec, now=NOW))
    await writer.run(lambda s: ledger.dispute(s, rec.linkedid, user="a", reason="r", window_days=30, now=NOW))
    async with sessionmaker() as s:
        assert await ledger.ledger_totals(s, T, NOW + timedelta(seconds=1)) == (0, 1000)


async def test_manual_adjustment_carries_reason_and_user(writer, sessionmaker):
    ids = await writer.run(network)
    e = await writer.run(lambda s: ledger.adjust(s, account="payable", party_id=ids["pub"], amount_cents=-250,
                                                 reason="bonus clawback", user="bob", now=NOW))
    assert (e.kind, e.amount_cents, e.publisher_id, e.reason, e.user) == ("adjustment", -250, ids["pub"],
                                                                          "bonus clawback", "bob")
    with pytest.raises(BillingError, match="reason"):
        await writer.run(lambda s: ledger.adjust(s, account="payable", party_id=ids["pub"], amount_cents=1,
                                                 reason="", user="bob"))
    with pytest.raises(ValidationError, match="no publisher"):
        await writer.run(lambda s: ledger.adjust(s, account="payable", party_id=999, amount_cents=1,
                                                 reason="x", user="bob"))


async def test_closed_period_rejects_new_entries_clearly_and_late_calls_book_now(writer, sessionmaker):
    ids = await writer.run(network)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    await writer.run(lambda s: ledger.close_period(s, start, end, user="carol", now=now))
    with pytest.raises(PeriodClosedError, match="closed period 2026-11-01 00:00Z to 2026-12-01 00:00Z "
                                                "\\(closed by carol\\)"):
        await writer.run(lambda s: ledger.adjust(s, account="payable", party_id=ids["pub"], amount_cents=100,
                                                 reason="x", user="bob", booked_at=T, now=now))
    # A call from the closed month replayed now is not lost: it is booked today, saying why.
    await writer.run(lambda s: ledger.settle(s, record(ids, T, 70), now=now))
    async with sessionmaker() as s:
        rows = list(await s.scalars(select(b.LedgerEntry)))
        assert {e.booked_at for e in rows} == {now} and "closed period" in rows[0].reason
        assert await ledger.ledger_totals(s, start, end) == (0, 0)
        # Its counts stay with the call's time, its money rolls up where it was booked.
        ups = {r.bucket_start: r for r in await s.scalars(select(b.BillingRollup))}
        assert set(ups) == {ledger.bucket_of(T), ledger.bucket_of(now)}
        then, today = ups[ledger.bucket_of(T)], ups[ledger.bucket_of(now)]
        assert (then.calls, then.billable, then.receivable_cents, then.payable_cents) == (1, 1, 0, 0)
        assert (today.calls, today.receivable_cents, today.payable_cents) == (0, *[
            sum(e.amount_cents for e in rows if e.account == a) for a in ("receivable", "payable")])
        assert today.receivable_cents > 0
    with pytest.raises(BillingError, match="not ended yet"):
        await writer.run(lambda s: ledger.close_period(s, end, now + timedelta(days=1), user="c", now=now))


async def test_ledger_entries_cannot_be_edited_or_deleted(writer, sessionmaker):
    ids = await writer.run(network)
    await writer.run(lambda s: ledger.settle(s, record(ids, T, 70), now=NOW))
    for sql in ("UPDATE ledger_entries SET amount_cents = 1", "DELETE FROM ledger_entries"):
        with pytest.raises(DBAPIError, match="immutable"):
            await writer.run(lambda s: s.execute(text(sql)))


async def test_daily_rollups_are_filled_when_upgrading_from_0002(db_url):
    """A database billing at 0002_billing gets its daily rollups from the 15-minute ones."""
    from alembic import command

    from ppcswitch.storage.db import _alembic_config, make_engine, make_sessionmaker, upgrade

    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            def to_0002(sync_conn):
                cfg = _alembic_config()
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "0002_billing")
            await conn.run_sync(to_0002)
        async with make_sessionmaker(engine)() as s, s.begin():
            for when, calls in (("2026-11-20T23:45", 2), ("2026-11-21T00:00", 3), ("2026-11-21T23:45", 4)):
                await s.execute(b.BillingRollup.__table__.insert().values(
                    bucket_start=datetime.fromisoformat(when).replace(tzinfo=UTC), campaign_id=1, buyer_id=2,
                    publisher_id=3, calls=calls, connected=0, billable=0, paid=0, connected_ms=0,
                    receivable_cents=calls * 100, payable_cents=0))
    finally:
        await engine.dispose()
    await upgrade(db_url)
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = (await s.execute(select(b.BillingDaily.day_start, b.BillingDaily.calls,
                                           b.BillingDaily.receivable_cents).order_by(b.BillingDaily.day_start))).all()
    finally:
        await engine.dispose()
    assert [(d.isoformat(), c, r) for d, c, r in rows] == [("2026-11-20T00:00:00+00:00", 2, 200),
                                                           ("2026-11-21T00:00:00+00:00", 7, 700)]


async def test_duplicate_window_edges_through_storage(writer):
    ids = await writer.run(network)
    await writer.run(lambda s: ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], unique_days=7))

    async def call(at):
        return (await writer.run(lambda s: ledger.settle(s, record(ids, at, 70), now=NOW))).decision.revenue

    assert (await call(T)).billable
    last_second = await call(T + timedelta(days=7, seconds=-1))
    assert last_second.reasons == ("duplicate_caller:2026-11-20",)
    assert (await call(T + timedelta(days=7))).billable  # exactly 7 days after the billable call: new window
