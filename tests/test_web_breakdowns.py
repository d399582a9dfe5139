"""Daily totals by sub-ID and by caller's state (storage.breakdowns), kept when calls settle, are
disputed and re-rated: always the same sums as the calls themselves; the migration fills them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, text

from billing_helpers import network, record
from ppcswitch.attribution import store as attribution_store
from ppcswitch.billing import ledger, reports
from ppcswitch.billing.rerate import rerate
from ppcswitch.pipeline import caller_state
from ppcswitch.storage import breakdowns, db

UTC = timezone.utc
DAY0 = datetime(2026, 11, 2, tzinfo=UTC)
NOW = DAY0 + timedelta(days=10)


def calls(ids):
    """Calls over 4 UTC days, some in the hours a New York day shares with the next UTC day."""
    out = []
    plan = [  # (hours after DAY0, seconds, publisher, sub-ID, state)
        (1, 90, "pub", "fb-1", "CA"), (3, 20, "pub", "fb-1", "CA"), (13, 120, "pub", "fb-2", "NY"),
        (23.5, 75, "pub2", "", "TX"), (25, 90, "pub", "fb-1", ""), (26, 0, "pub", "fb-2", "CA"),
        (49, 61, "pub2", "g", "NY"), (50, 59, "pub", "fb-1", "NY"), (70, 300, "pub", "fb-1", "CA"),
        (80, 95, "pub2", "g", "CA"),
    ]
    for n, (hours, seconds, pub, sub, state) in enumerate(plan):
        out.append(record(ids, DAY0 + timedelta(hours=hours), seconds, publisher=pub, sub_id=sub,
                          caller=f"+1415555{n:04d}", caller_state=state, linkedid=f"bd-{n}"))
    return out


def by_day_both_ways(session, facet):
    """{day: totals} from the table, and the same summed from the calls."""
    out = {}
    for i in range(5):
        lo, hi = DAY0 + timedelta(days=i), DAY0 + timedelta(days=i + 1)
        table = {(p, v): list(row) for p, v, *row in session.execute(breakdowns._daily(facet, lo, hi, None))}
        raw = {(int(p), v): [int(x or 0) for x in row] for p, v, *row in session.execute(
            breakdowns._raw(facet, lo, hi, None))}
        out[lo] = (table, raw)
    return out


async def test_totals_follow_settlement_disputes_and_rerating(writer, sessionmaker):
    ids = await writer.run(network)
    recs = calls(ids)
    for rec in recs:
        assert await writer.run(lambda s, rec=rec: ledger.settle(s, rec, now=NOW)) is not None
    # A replay counts nothing.
    assert await writer.run(lambda s: ledger.settle(s, calls(ids)[0], now=NOW)) is None
    await writer.run(lambda s: ledger.dispute(s, "bd-0", user="a", reason="robot", window_days=30, now=NOW))
    # Buyer A now pays from 100 s: the 90 s and 95 s calls of A are no longer billable.
    await writer.run(lambda s: ledger.set_rule(s, "revenue", party_id=ids["a"], min_duration=100))
    result = await writer.run(lambda s: rerate(s, reports.period(DAY0.date(), (DAY0 + timedelta(days=4)).date()),
                                               apply=True, user="ops", now=NOW))
    assert result.changes

    def check(s):
        for facet in breakdowns.FACETS:
            for day, (table, raw) in by_day_both_ways(s, facet).items():
                assert table == raw, (facet, day)

    async with sessionmaker() as s:
        await s.run_sync(check)
        sub = await attribution_store.sub_id_report(s, None, DAY0, DAY0 + timedelta(days=5))
        states = await breakdowns.totals(s, breakdowns.STATE, DAY0, DAY0 + timedelta(days=5))
    # Expected from the README's words: 40.00 / 10.00 per billable call of Buyer A (from 100 s after
    # the re-rating), a disputed call no longer billable and its money taken back.
    fb1 = next(r for r in sub if r["sub_id"] == "fb-1")
    # fb-1: bd-0 (90 s, disputed), bd-1 (20 s), bd-4 (90 s, re-rated away), bd-7 (59 s), bd-8 (300 s).
    assert (fb1["calls"], fb1["billable"], fb1["disputed"], fb1["payout_cents"]) == (5, 1, 1, 1000)
    ca = states[(0, "CA")]
    # CA: bd-0 (disputed), bd-1, bd-5 (not answered), bd-8 (billable), bd-9 (95 s, re-rated away).
    assert (ca["calls"], ca["connected"], ca["billable"], ca["revenue_cents"]) == (5, 4, 1, 4000)
    assert states[(0, "")]["calls"] == 1


async def test_any_zone_period_is_exact_at_its_edges(writer, sessionmaker):
    ids = await writer.run(network)
    for rec in calls(ids):
        await writer.run(lambda s, rec=rec: ledger.settle(s, rec, now=NOW))
    for zone in ("UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"):
        p = reports.period(DAY0.date(), (DAY0 + timedelta(days=2)).date(), zone)

        def raw(s):
            return {(int(pp), vv): [int(x or 0) for x in row]
                    for pp, vv, *row in s.execute(breakdowns._raw("sub_id", p.start, p.end, None))}

        async with sessionmaker() as s:
            got = await breakdowns.totals(s, breakdowns.SUB_ID, p.start, p.end)
            want = await s.run_sync(raw)
        assert {k: list(v.values()) for k, v in got.items()} == want, zone


async def test_the_migration_fills_the_totals_from_stored_calls(tmp_path):
    """A database at 0009 with calls and a dispute: after the upgrade the table holds their sums."""
    from alembic import command

    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    engine = create_engine(f"sqlite:///{tmp_path}/old.db")
    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009_cluster_reservations")
        for i, (sub, billable, pub) in enumerate([("a", 1, 1), ("a", 0, 1), ("b", 1, 2), ("", 1, None)]):
            conn.execute(text(
                "INSERT INTO calls (id, linkedid, tracking_number, caller, caller_valid, started_at, ended_at, outcome,"
                " publisher_id, connected_ms, billable, revenue_cents, payout_cents, sub_id, buyer_id, hangup_cause_text,"
                " reject_reason, billing_reasons)"
                " VALUES (:id, :l, '+18005550100', '+14155550100', 1, :t, :t, 'connected', :p, 90000, :b, :r, :y,"
                " :s, 1, '', '', '[]')"), dict(id=i + 1, l=f"m{i}", t=f"2026-11-0{2 + i % 2} 10:00:00.000000", p=pub, b=billable,
                                 r=4000 * billable, y=1000 * billable, s=sub))
        conn.execute(text("INSERT INTO ledger_entries (key, kind, account, call_id, campaign_id, buyer_id, publisher_id,"
                          " amount_cents, booked_at, created_at, reason, user) VALUES ('d', 'dispute', 'receivable', 1,"
                          " 0, 1, 1, -4000, '2026-11-05 00:00:00', '2026-11-05 00:00:00', 'x', 'y')"))
    engine.dispose()
    await db.upgrade(url)
    eng = db.make_engine(url)
    try:
        async with db.make_sessionmaker(eng)() as s:
            sub = await attribution_store.sub_id_report(s, None, DAY0, DAY0 + timedelta(days=3))
            states = await breakdowns.totals(s, breakdowns.STATE, DAY0, DAY0 + timedelta(days=3))
            nulls = (await s.execute(text("SELECT count(*) FROM calls WHERE caller_state IS NULL"))).scalar()
    finally:
        await eng.dispose()
    assert [(r["publisher_id"], r["sub_id"], r["calls"], r["billable"], r["disputed"]) for r in sub] == [
        (None, "", 1, 1, 0), (1, "a", 2, 0, 1), (2, "b", 1, 1, 0)]
    assert states == {(0, ""): {"calls": 4, "connected": 4, "billable": 2, "disputed": 1, "revenue_cents": 8000,
                                "payout_cents": 3000}}
    assert nulls == 4  # their state was not recorded


def test_caller_state_is_routings_else_the_area_code():
    class Facts:
        state = "NY"

    class Route:
        facts = Facts()

    rec = record({"pub": 1, "campaign": 1, "a": 1}, DAY0, 90, caller="+14155550123")
    assert caller_state(rec, Route()) == "NY"  # e.g. the ZIP the caller keyed in
    assert caller_state(rec, None) == "CA"  # recovered from the CDR file: 415 is California
    rec.caller_valid = False
    assert caller_state(rec, None) == ""
