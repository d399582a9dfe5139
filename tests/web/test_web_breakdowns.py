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


# --- the panel: reports by state and sub-ID, call-log filters, bulk pause of numbers ---------------

import csv  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402
from html import unescape  # noqa: E402

import pytest  # noqa: E402

from ppcswitch import app as core  # noqa: E402
from ppcswitch.routing.engine import CallFacts, route  # noqa: E402
from ppcswitch.storage import repo, snapshot  # noqa: E402
from ppcswitch.web import store  # noqa: E402
from web_helpers import call_record, login, start  # noqa: E402


@pytest.fixture
async def client(db_url):
    c = await start(db_url)
    yield c
    await c.close()


def _calls(html: str) -> set[str]:
    return set(re.findall(r'<a href="/calls/(\d+)">', html))


async def test_reports_by_state_and_sub_id_over_30_days_with_links_and_csv(client):
    app = client.server.app
    now = datetime.now(UTC)
    plan = [  # (days ago, state, sub-ID, billable)
        (0, "CA", "fb-1", True), (1, "CA", "fb-1", False), (3, "TX", "fb-2", True), (12, "TX", "fb-1", True),
        (20, "CA", "", True), (25, "NY", "fb-2", True), (29, None, "fb-1", True), (40, "CA", "fb-1", True),
    ]

    async def seed(s):
        pub = (await repo.get_publisher(s, "Acme")).id
        buyer = (await repo.create_buyer(s, "Buyer A", "sip:a@127.0.0.1:5071", revenue="40.00")).id
        for i, (ago, state, sub, billable) in enumerate(plan):
            noon = datetime.combine(now.date() - timedelta(days=ago), datetime.min.time(), UTC) + timedelta(hours=12)
            rec = call_record(i, started=noon, billable=billable, publisher_id=pub,
                              buyer_id=buyer)
            rec.caller_state, rec.sub_id = state, sub
            await repo.save_call(s, rec)
        return pub

    pub = await app[core.WRITER].run(seed)
    await login(client, "admin")
    html = await (await client.get("/reports?preset=30d&tz=UTC")).text()
    # The sub-ID table is there at once over 30 days (read from the daily totals).
    assert 'id="sub-id-report"' in html and "sub-ids-later" not in html
    assert "<td><code>fb-1</code></td><td>4</td><td>3</td><td>75.0%</td><td>37.50</td><td>0</td>" in html
    # Charts by state and by sub-ID: bars with values, each a link to its calls.
    states = re.search(r'<svg[^>]*id="chart-states".*?</svg>', html, re.S).group(0)
    assert [unescape(x) for x in re.findall(r'<text class="value"[^>]*>([^<]+)<', states)] == ["3", "2", "1"]
    link = unescape(re.search(r'<a href="([^"]+)"><rect', states).group(1))
    assert "state=CA" in link
    ca = await (await client.get(link)).text()
    assert len(_calls(ca)) == 3  # the 40-day-old CA call is outside the period
    subs = re.search(r'<svg[^>]*id="chart-sub-ids".*?</svg>', html, re.S).group(0)
    assert "Acme · fb-1" in subs and ">$37.50<" in subs
    sub_link = unescape(re.search(r'<a href="([^"]+)"><rect', subs).group(1))
    assert f"publisher={pub}" in sub_link and "sub_id=fb-1" in sub_link
    assert len(_calls(await (await client.get(sub_link)).text())) == 4
    none = await (await client.get(f"/calls?sub_id=%28none%29&date_from={(now - timedelta(days=29)).date()}")).text()
    assert len(_calls(none)) == 1
    unknown = await (await client.get("/calls?state=unknown")).text()
    assert len(_calls(unknown)) == 1
    assert (await client.get("/calls?state=Texas")).status == 200  # refused politely, the filter says why
    assert "two letters" in await (await client.get("/calls?state=Texas")).text()
    # CSV of the state view.
    resp = await client.get("/reports?preset=30d&tz=UTC&format=csv&view=states")
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert rows[0] == ["state", "calls", "connected", "billable", "billable_rate", "revenue", "payout", "margin"]
    assert rows[1] == ["CA", "3", "3", "2", "0.6667", "80.00", "25.00", "55.00"]
    assert rows[-1][0] == "unknown" and rows[-1][1] == "1"
    assert 'id="csv-states"' in html and 'id="csv-sub-ids"' in html
    # Past a month the sub-ID table is shown when asked for (the CSV is there at once).
    far = f"/reports?from={(now - timedelta(days=45)).date()}&to={now.date()}&tz=UTC"
    html = await (await client.get(far)).text()
    assert 'id="sub-ids-later"' in html and 'id="sub-id-report"' not in html and 'id="sub-ids-csv"' in html
    html = await (await client.get(far + "&sub_ids=1")).text()
    assert "<td><code>fb-1</code></td><td>5</td><td>4</td>" in html  # the 40-day-old call too


async def test_bulk_pause_and_resume_numbers_with_a_preview(client):
    app = client.server.app

    async def seed(s):
        for n in ("+18005550121", "+18005550122", "+18005550123"):
            await repo.add_tracking_number(s, n, "HVAC", "Acme")

    await app[core.WRITER].run(seed)
    await login(client, "admin")
    listing = await (await client.get("/numbers")).text()
    assert 'value="pause"' in listing and 'value="resume"' in listing
    token = re.search(r'name="csrf" value="([^"]+)"', listing).group(1)
    picked = [("numbers", "+18005550121"), ("numbers", "+18005550122")]
    preview = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "pause"), *picked])
    html = await preview.text()
    assert preview.status == 200 and "Pause 2 numbers?" in html and html.count("Active → <strong>Paused</strong>") == 2
    assert 'id="bulk-apply"' in html
    async with app[core.SESSIONS]() as s:
        assert not any(r.paused for r in (await store.list_numbers(s))[0])  # a preview changes nothing
    done = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "pause"), ("step", "apply"), *picked])
    assert done.status == 200 and "2 numbers paused." in await done.text()
    async with app[core.SESSIONS]() as s:
        paused = {r.number: r.paused for r in (await store.list_numbers(s))[0]}
        audit = (await store.list_audit(s, 5))[0]
        network = await snapshot.load_network(s, app[core.SETTINGS].routing)
    assert paused == {"+18005550121": True, "+18005550122": True, "+18005550123": False}
    assert audit.action == "number.bulk_pause" and "+18005550121" in audit.detail
    listing = await (await client.get("/numbers?status=paused")).text()
    assert listing.count('class="badge paused"') == 2 and "+18005550123" not in listing
    # Routing refuses calls to a paused number (and routes the others).
    facts = CallFacts(tracking_number="+18005550121", dialled="+18005550121", caller="+14155550123",
                      caller_valid=True, caller_anonymous=False, at=0.0)
    assert route(network, facts, {}).reject_reason == "number_paused"
    other = CallFacts(tracking_number="+18005550123", dialled="+18005550123", caller="+14155550123",
                      caller_valid=True, caller_anonymous=False, at=0.0)
    assert route(network, other, {}).reject_reason != "number_paused"
    # Resume one paused and one active: the preview says one of them is active already.
    again = [("numbers", "+18005550122"), ("numbers", "+18005550123")]
    preview = await (await client.post("/numbers/bulk", data=[("csrf", token), ("action", "resume"), *again])).text()
    assert "Resume 2 numbers?" in preview and 'id="bulk-unchanged"' in preview
    done = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "resume"), ("step", "apply"), *again])
    assert "1 number resumed." in await done.text()
    async with app[core.SESSIONS]() as s:
        paused = {r.number: r.paused for r in (await store.list_numbers(s))[0]}
    assert paused == {"+18005550121": True, "+18005550122": False, "+18005550123": False}
    # A read-only user cannot.
    await client.post("/logout", data={"csrf": token})
    await login(client, "finance")
    token = re.search(r'name="csrf" value="([^"]+)"', await (await client.get("/numbers")).text()).group(1)
    refused = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "pause"), ("step", "apply"), *picked])
    assert refused.status == 403
