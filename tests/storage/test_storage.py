"""Storage: validation, migrations, call records, routing snapshot, config_version, the writer.

Database tests run on SQLite and PostgreSQL (the db_url fixture is parametrized).
"""

from __future__ import annotations

import asyncio
import sqlite3
import string
import threading
import time
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
from hypothesis import given, strategies as st
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.config import RoutingSettings
from ppcswitch.storage import models as t
from ppcswitch.storage import repo, snapshot, validate
from ppcswitch.storage.db import head_revision, make_engine, make_sessionmaker, upgrade
from ppcswitch.storage.validate import ValidationError
from ppcswitch.storage.writer import Writer, WriterStopped, is_transient

UTC = timezone.utc
T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


# --- validation (pure) -----------------------------------------------------

@pytest.mark.parametrize("value, expected", [("HVAC", "HVAC"), ("  Buyer A  ", "Buyer A"), ("x" * 100, "x" * 100),
                                             ("Plomberie Générale", "Plomberie Générale")])
def test_name_ok(value, expected):
    assert validate.name(value) == expected


@pytest.mark.parametrize("value", ["", "   ", "x" * 101, "a\x00b", "a\nb", "a\tb", "a\x1bb", "evil\u202eliam",
                                   "zero\u200bwidth", None, 5])
def test_name_rejected(value):
    with pytest.raises(ValidationError, match="^name: "):
        validate.name(value)


GOOD_DESTINATIONS = [
    "sip:buyer-a@127.0.0.1:5071", "sip:buyer-b@127.0.0.1", "sip:+18005550100@sip.example.com",
    "sip:a.b_c-d*1#2@host-1.example.co.uk:65535", "sip:x@[2001:db8::1]:5060", "sip:x@[::1]", "sip:x@localhost:1",
    "pjsip:buyer_a", "pjsip:Buyer-1.x",
]


@pytest.mark.parametrize("value", GOOD_DESTINATIONS)
def test_destination_ok(value):
    assert validate.destination(value) == value
    assert validate.destination(f"  {value} ") == value


HOSTILE_DESTINATIONS = [
    "sip:a@b,tT", "sip:a@b&PJSIP/x", "${EXTEN}", "sip:${EXTEN}@b", "sip:a@${X}", "sip:a@b|x", "sip:a@b;transport=tcp",
    "sip:a@b:5060,60,tTU(evil)", "sip:a@b)", "sip:a@b(", "sip:'a'@b", 'sip:"a"@b', "sip:a b@c", "sip:a@b c",
    "sip:a@b\n", "sip:a@b\r\nAction: Originate", "sip:a\t@b", "sip:a@b\x00", "sip:a@b{", "sip:a@b}", "sip:a@b$",
    "sip:a@b%2c", "sip:a@b\\", "sip:a@b/x", "sip:a@b:0", "sip:a@b:65536", "sip:a@b:99999", "sip:a@b:",
    "sip:a@999.1.1.1", "sip:a@1.2.3", "sip:a@[zz::1]", "sip:a@[::1", "sip:a@-b.com", "sip:a@b-.com", "sip:a@b..c",
    "sip:a@b.", "sip:@b", "sip:a@", "sip:a", "sips:a@b", "SIP:a@b", "tel:+18005550100", "PJSIP/buyer",
    "pjsip:", "pjsip:a/b", "pjsip:a&b", "pjsip:a,b", "pjsip:a b", "pjsip:a;b", "pjsip:${X}", "local:1@ctx",
    "sip:\u0430@b",  # Cyrillic a
    "sip:a@b\u202e", "", " ", "sip:" + "a" * 5000 + "@b", "pjsip:" + "a" * 5000, "x" * 5000, None, 42,
]


@pytest.mark.parametrize("value", HOSTILE_DESTINATIONS)
def test_destination_rejected(value):
    with pytest.raises(ValidationError, match="^destination: "):
        validate.destination(value)


FORBIDDEN = set(",&|;${}()'\"\\/`!<>%") | set(string.whitespace) | {chr(i) for i in range(32)} | {"\x7f"}


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60).map(lambda s: "sip:" + s)
       | st.text(max_size=30).map(lambda s: "pjsip:" + s))
def test_accepted_destinations_cannot_inject(value):
    try:
        accepted = validate.destination(value)
    except ValidationError:
        return
    assert not FORBIDDEN & set(accepted.replace("[", "").replace("]", "")), accepted
    assert accepted.isascii()


@pytest.mark.parametrize("value, expected", [("8005550100", "+18005550100"), ("+1 800 555 0100", "+18005550100"),
                                             ("(202) 555-0123", "+12025550123"), ("+44 20 7946 0000", "+442079460000"),
                                             (" +1 800 555 0100\n", "+18005550100")])
def test_phone_ok(value, expected):
    assert validate.phone(value, "US") == expected


@pytest.mark.parametrize("value", ["+15555550100", "123", "abc", "", "+1800555010099999", "800-555-0100;x",
                                   "+1 800\n555 0100", "٨٠٠٥٥٥٠١٠٠", None, "1" * 500])
def test_phone_rejected(value):
    with pytest.raises(ValidationError, match="^number: "):
        validate.phone(value, "US")


@pytest.mark.parametrize("func, value, expected", [
    (validate.ring_timeout, 1, 1), (validate.ring_timeout, "300", 300), (validate.ring_timeout, " 15 ", 15),
    (validate.concurrency_cap, None, None), (validate.concurrency_cap, "", None), (validate.concurrency_cap, "1", 1),
    (validate.concurrency_cap, 10000, 10000), (validate.min_duration, 0, 0), (validate.min_duration, "86400", 86400),
    (validate.priority, "2", 2),
])
def test_ints_ok(func, value, expected):
    assert func(value) == expected


@pytest.mark.parametrize("func, value", [
    (validate.ring_timeout, 0), (validate.ring_timeout, 301), (validate.ring_timeout, "abc"),
    (validate.ring_timeout, True), (validate.ring_timeout, 1.5), (validate.ring_timeout, "1e2"),
    (validate.concurrency_cap, 0), (validate.concurrency_cap, 10001), (validate.concurrency_cap, "-1"),
    (validate.min_duration, -1), (validate.min_duration, 86401), (validate.priority, 0),
    (validate.ring_timeout, "9" * 5000),
])
def test_ints_rejected(func, value):
    with pytest.raises(ValidationError):
        func(value)


def test_transient_errors():
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert is_transient(locked)
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: calls")))
    assert not is_transient(ValueError("bug"))


# --- helpers ---------------------------------------------------------------

def make_record(linkedid: str = "1700000000.1", started: datetime = T0, **kw) -> CallRecord:
    values = dict(tracking_number="+18005550100", caller="+12025550123", caller_valid=True, started_at=started,
                  ended_at=started + timedelta(seconds=95), outcome=Outcome.CONNECTED, publisher_id=1, campaign_id=1,
                  buyer_id=2, answered_at=started + timedelta(seconds=20), connected_ms=75_250, hangup_cause=16,
                  hangup_cause_text="Normal Clearing", billable=True, revenue_cents=4000, payout_cents=1000,
                  attempts=[Attempt(1, 1, "NOANSWER", started + timedelta(seconds=1), None,
                                    started + timedelta(seconds=16)),
                            Attempt(2, 2, "ANSWER", started + timedelta(seconds=16), started + timedelta(seconds=20),
                                    started + timedelta(seconds=95))])
    values.update(kw)
    return CallRecord(linkedid=linkedid, **values)


async def count(sessionmaker, model) -> int:
    async with sessionmaker() as s:
        return await s.scalar(select(func.count()).select_from(model))


async def version(sessionmaker) -> int:
    async with sessionmaker() as s:
        return await repo.config_version(s)


# --- migrations ------------------------------------------------------------

async def test_migrations_to_head_from_empty(db_url):
    assert await upgrade(db_url) == head_revision() is not None
    assert await upgrade(db_url) == head_revision()  # a second run is a no-op
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"campaigns", "publishers", "buyers", "campaign_buyers", "tracking_numbers", "calls",
                    "call_attempts", "config_version", "alembic_version"} <= tables
            indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("calls")})
            assert {f"ix_calls_{c}" for c in ("started_at", "campaign_id", "publisher_id", "buyer_id")} <= indexes

            # The migration and the models describe the same schema.
            from alembic.autogenerate import compare_metadata
            from alembic.migration import MigrationContext
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), t.Base.metadata))
            assert diff == []
        assert await version(make_sessionmaker(engine)) == 0
    finally:
        await engine.dispose()


async def test_sqlite_pragmas(sqlite_url):
    await upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.scalar(text("PRAGMA journal_mode"))) == "wal"
            assert (await conn.scalar(text("PRAGMA foreign_keys"))) == 1
            assert (await conn.scalar(text("PRAGMA busy_timeout"))) == 5000
            assert (await conn.scalar(text("PRAGMA synchronous"))) == 1  # NORMAL
    finally:
        await engine.dispose()


# --- calls -----------------------------------------------------------------

async def test_call_round_trip(writer, sessionmaker):
    paris = timezone(timedelta(hours=2))
    record = make_record(started=T0.astimezone(paris), revenue_cents=2**40 + 1, payout_cents=1,
                         billing_reasons=["short", "duplicate caller"])
    record.attempts.reverse()  # stored and returned in seq order whatever the input order
    assert await writer.run(lambda s: repo.save_call(s, record)) is True
    async with sessionmaker() as s:
        got = await repo.get_call(s, record.linkedid)
        assert await repo.get_call(s, "no-such-call") is None
    assert got is not None
    for dt in (got.started_at, got.ended_at, got.answered_at, *(a.started_at for a in got.attempts)):
        assert dt.tzinfo is not None and dt.utcoffset() == timedelta(0)
    assert got.started_at == T0 and got.started_at.microsecond == 123456
    assert (got.revenue_cents, got.payout_cents) == (2**40 + 1, 1)
    assert isinstance(got.revenue_cents, int)
    assert [a.seq for a in got.attempts] == [1, 2]
    record.attempts.reverse()
    assert got == record


async def test_call_minimal_record(writer, sessionmaker):
    record = CallRecord("x.1", "not-a-number" * 10, "anonymous", False, T0, T0, Outcome.REJECTED,
                        reject_reason="unknown number")
    assert await writer.run(lambda s: repo.save_call(s, record))
    async with sessionmaker() as s:
        assert await repo.get_call(s, "x.1") == record


async def test_naive_datetimes_are_refused(writer, sessionmaker):
    record = make_record(started=datetime(2024, 1, 1, 12, 0))
    with pytest.raises(Exception, match="naive datetime"):
        await writer.run(lambda s: repo.save_call(s, record))
    assert await count(sessionmaker, t.Call) == 0


async def test_save_call_twice_keeps_one(writer, sessionmaker):
    record = make_record()
    assert await writer.run(lambda s: repo.save_call(s, record)) is True
    changed = make_record(outcome=Outcome.ABANDONED, attempts=[])
    assert await writer.run(lambda s: repo.save_call(s, changed)) is False
    assert await count(sessionmaker, t.Call) == 1
    assert await count(sessionmaker, t.CallAttempt) == 2
    async with sessionmaker() as s:
        assert (await repo.get_call(s, record.linkedid)).outcome == Outcome.CONNECTED


async def test_save_call_concurrently(engine, sessionmaker):
    record = make_record()

    async def save() -> bool:
        # Separate sessions and connections, bypassing the writer: the database itself must settle the race.
        async with sessionmaker() as s, s.begin():
            return await repo.save_call(s, record)

    results = await asyncio.gather(*(save() for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert await count(sessionmaker, t.Call) == 1
    assert await count(sessionmaker, t.CallAttempt) == 2


async def test_save_call_concurrently_through_writer(writer, sessionmaker):
    record = make_record()
    futures = [writer.submit(lambda s: repo.save_call(s, record)) for _ in range(5)]
    assert await asyncio.gather(*futures) == [True, False, False, False, False]
    assert await count(sessionmaker, t.Call) == 1


async def test_list_calls_newest_first(writer, sessionmaker):
    for i in range(5):
        record = make_record(f"call.{i}", started=T0 + timedelta(minutes=i))
        await writer.run(lambda s, r=record: repo.save_call(s, r))
    async with sessionmaker() as s:
        assert [r.linkedid for r in await repo.list_calls(s)] == [f"call.{i}" for i in (4, 3, 2, 1, 0)]
        page = await repo.list_calls(s, limit=2, offset=1)
        assert [r.linkedid for r in page] == ["call.3", "call.2"]
        assert len(page[0].attempts) == 2
        assert await repo.count_calls(s) == 5


# --- configuration and the routing snapshot --------------------------------

async def build_network(writer) -> None:
    async def job(s):
        await repo.create_campaign(s, "HVAC")
        await repo.create_campaign(s, "Plumbing", paused=True)
        await repo.create_publisher(s, "Pub", payout="12.50")
        await repo.create_buyer(s, "A", "sip:buyer-a@127.0.0.1:5071", revenue="40", concurrency_cap="10",
                                ring_timeout="15")
        await repo.create_buyer(s, "B", "pjsip:buyer_b", revenue="35.00", paused=True)
        await repo.create_buyer(s, "C", "sip:c@[2001:db8::1]", min_duration=0)
        await repo.add_campaign_buyer(s, "HVAC", "C", 2)
        await repo.add_campaign_buyer(s, "HVAC", "B", 1)
        await repo.add_campaign_buyer(s, "HVAC", "A", 2)
        await repo.add_tracking_number(s, "(800) 555-0100", "HVAC", "Pub")
    await writer.run(job)


async def test_load_network(writer, sessionmaker):
    await build_network(writer)
    routing = RoutingSettings(fallback_buyer="C", buyer_endpoint="ppcswitch-buyer")
    async with sessionmaker() as s:
        net = await snapshot.load_network(s, routing)
        no_fallback = await snapshot.load_network(s, RoutingSettings(fallback_buyer=""))
        unknown = await snapshot.load_network(s, RoutingSettings(fallback_buyer="Nobody"))
    by_name = {b.name: b for b in net.buyers.values()}
    a, b, c = by_name["A"], by_name["B"], by_name["C"]
    assert a.dial_target == "PJSIP/ppcswitch-buyer/sip:buyer-a@127.0.0.1:5071"
    assert b.dial_target == "PJSIP/buyer_b"
    assert c.dial_target == "PJSIP/ppcswitch-buyer/sip:c@[2001:db8::1]"
    assert (a.revenue_cents, a.concurrency_cap, a.ring_timeout, a.min_duration, a.paused) == (4000, 10, 15, 60, False)
    assert (b.revenue_cents, b.concurrency_cap, b.ring_timeout, b.paused) == (3500, None, 30, True)
    assert c.min_duration == 0
    hvac = next(k for k in net.campaigns.values() if k.name == "HVAC")
    # By priority, then buyer id: B (1), A (2, created before C), C (2).
    assert [cb.buyer_id for cb in hvac.buyers] == [b.id, a.id, c.id]
    assert [cb.priority for cb in hvac.buyers] == [1, 2, 2]
    assert next(k for k in net.campaigns.values() if k.name == "Plumbing").paused
    pub = next(iter(net.publishers.values()))
    assert (pub.name, pub.payout_cents) == ("Pub", 1250)
    assert net.numbers["+18005550100"].campaign_id == hvac.id
    assert net.numbers["+18005550100"].publisher_id == pub.id
    assert net.fallback_buyer_id == c.id
    assert no_fallback.fallback_buyer_id is None and unknown.fallback_buyer_id is None
    assert net.version == await version(sessionmaker) == 10
    with pytest.raises(Exception):
        net.buyers[a.id].paused = True  # frozen


async def test_load_network_rereads_after_a_concurrent_write(writer, sessionmaker, monkeypatch):
    await build_network(writer)
    read, reads = repo.read_network, 0

    async def racing(session, routing, version):
        nonlocal reads
        reads += 1
        network = await read(session, routing, version)
        if reads == 1:  # a configuration write commits while the snapshot is being read
            await writer.run(lambda s: repo.create_buyer(s, "Late", "pjsip:late"))
        return network

    monkeypatch.setattr(repo, "read_network", racing)
    async with sessionmaker() as s:
        net = await snapshot.load_network(s, RoutingSettings())
    assert reads == 2
    assert "Late" in {b.name for b in net.buyers.values()}
    assert net.version == 11


async def test_load_network_skips_tampered_destination(writer, sessionmaker):
    await build_network(writer)

    async def tamper(s):
        await s.execute(t.Buyer.__table__.update().where(t.Buyer.name == "A").values(destination="sip:a@b,tT"))
    await writer.run(tamper)
    async with sessionmaker() as s:
        net = await snapshot.load_network(s, RoutingSettings())
    assert "A" not in {b.name for b in net.buyers.values()}
    assert all(cb.buyer_id in net.buyers for k in net.campaigns.values() for cb in k.buyers)


async def test_config_version_bumps_on_every_config_write(writer, sessionmaker):
    steps = [
        lambda s: repo.create_campaign(s, "HVAC"),
        lambda s: repo.create_publisher(s, "Pub", payout="1"),
        lambda s: repo.create_buyer(s, "A", "pjsip:a"),
        lambda s: repo.add_campaign_buyer(s, "HVAC", "A"),
        lambda s: repo.add_tracking_number(s, "+18005550100", "HVAC", "Pub"),
        lambda s: repo.set_buyer_paused(s, "A", True),
        lambda s: repo.set_buyer_paused(s, "A", False),
        lambda s: repo.update_buyer(s, "A", revenue="12.34", concurrency_cap=None),
        lambda s: repo.update_publisher(s, "Pub", payout="2"),
        lambda s: repo.set_campaign_paused(s, "HVAC", True),
        lambda s: repo.set_campaign_buyer_priority(s, "HVAC", "A", 3),
        lambda s: repo.remove_campaign_buyer(s, "HVAC", "A"),
        lambda s: repo.remove_tracking_number(s, "8005550100"),
    ]
    assert await version(sessionmaker) == 0
    for i, step in enumerate(steps, 1):
        await writer.run(step)
        assert await version(sessionmaker) == i
    # Refused writes and call records leave it alone.
    for bad in (lambda s: repo.create_campaign(s, "HVAC"), lambda s: repo.create_buyer(s, "X", "sip:a@b,tT"),
                lambda s: repo.add_tracking_number(s, "+18005550100", "Nope", "Pub")):
        with pytest.raises(ValidationError):
            await writer.run(bad)
    await writer.run(lambda s: repo.save_call(s, make_record()))
    assert await version(sessionmaker) == len(steps)


@pytest.mark.parametrize("job, field, message", [
    (lambda s: repo.create_campaign(s, "HVAC"), "name", "already exists"),
    (lambda s: repo.create_publisher(s, "P2", payout="-5"), "payout", "negative"),
    (lambda s: repo.create_buyer(s, "B2", "sip:a@b&PJSIP/x"), "destination", "not an accepted destination"),
    (lambda s: repo.create_buyer(s, "B2", "pjsip:b", ring_timeout=0), "ring_timeout", "from 1 to 300"),
    (lambda s: repo.create_buyer(s, "B2", "pjsip:b", revenue="abc"), "revenue", "not a decimal"),
    (lambda s: repo.add_campaign_buyer(s, "Nope", "A"), "campaign", "no campaign named 'Nope'"),
    (lambda s: repo.add_campaign_buyer(s, "HVAC", 999), "buyer", "no buyer id 999"),
    (lambda s: repo.add_campaign_buyer(s, "HVAC", "A"), "buyer", "already on campaign"),
    (lambda s: repo.add_tracking_number(s, "+15555550100", "HVAC", "P"), "number", "not a valid phone number"),
    (lambda s: repo.add_tracking_number(s, "+18005550100", "HVAC", "P"), "number", "already a tracking number"),
    (lambda s: repo.add_tracking_number(s, "+18005550199", "HVAC", "Nobody"), "publisher", "no publisher"),
])
async def test_config_writes_validate(writer, sessionmaker, job, field, message):
    async def setup(s):
        await repo.create_campaign(s, "HVAC")
        await repo.create_publisher(s, "P")
        await repo.create_buyer(s, "A", "pjsip:a")
        await repo.add_campaign_buyer(s, "HVAC", "A")
        await repo.add_tracking_number(s, "+18005550100", "HVAC", "P")
    await writer.run(setup)
    before = await version(sessionmaker)
    with pytest.raises(ValidationError, match=message) as info:
        await writer.run(job)
    assert info.value.field == field
    assert await version(sessionmaker) == before


# --- the writer ------------------------------------------------------------

async def test_failing_job_commits_nothing_and_writer_goes_on(writer, sessionmaker):
    async def failing(s):
        await repo.create_campaign(s, "Half done")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await writer.run(failing)
    assert await count(sessionmaker, t.Campaign) == 0
    assert await version(sessionmaker) == 0
    row = await writer.run(lambda s: repo.create_campaign(s, "Next"))
    assert row.name == "Next" and row.id is not None
    assert await count(sessionmaker, t.Campaign) == 1


async def test_jobs_run_in_submission_order(writer, sessionmaker):
    seen: list[int] = []

    def job(i: int):
        async def run(s):
            await asyncio.sleep(0.01 if i % 3 == 0 else 0)  # slow jobs must not be overtaken
            seen.append(i)
            await repo.create_campaign(s, f"c{i:02d}")
            return i
        return run

    futures = [writer.submit(job(i)) for i in range(30)]
    assert await asyncio.gather(*futures) == list(range(30))
    assert seen == list(range(30))
    async with sessionmaker() as s:
        ids = (await s.execute(select(t.Campaign.name).order_by(t.Campaign.id))).scalars().all()
    assert ids == [f"c{i:02d}" for i in range(30)]
    assert writer.depth == 0 and writer.last_write_seconds > 0


async def test_stop_drains_the_queue(sessionmaker):
    writer = Writer(sessionmaker, max_queue=100)
    await writer.start()

    async def job(s, i):
        await asyncio.sleep(0.005)
        await repo.create_campaign(s, f"c{i}")
        return i

    futures = [writer.submit(lambda s, i=i: job(s, i)) for i in range(20)]
    assert writer.depth >= 19
    await writer.stop()
    assert [f.result() for f in futures] == list(range(20))
    assert await count(sessionmaker, t.Campaign) == 20
    with pytest.raises(WriterStopped):
        writer.submit(lambda s: repo.create_campaign(s, "late"))


async def test_full_queue_makes_submitters_wait(sessionmaker):
    writer = Writer(sessionmaker, max_queue=2)
    await writer.start()
    gate = asyncio.Event()

    async def blocked(s):
        await gate.wait()
        return "first"

    first = writer.submit(blocked)
    await asyncio.sleep(0.05)  # the writer is now inside `blocked`
    queued = [writer.submit(lambda s: asyncio.sleep(0, "queued")) for _ in range(2)]
    assert writer.depth == 3
    with pytest.raises(asyncio.QueueFull):
        writer.submit(lambda s: asyncio.sleep(0))
    waiting = asyncio.create_task(writer.submit_wait(lambda s: asyncio.sleep(0, "waited")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    gate.set()
    assert await (await waiting) == "waited"
    assert await first == "first" and await asyncio.gather(*queued) == ["queued", "queued"]
    await writer.stop()


def _hold_sqlite_lock(path: str, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # takes the write lock
    conn.execute("UPDATE config_version SET version = version")
    locked.set()
    time.sleep(seconds)
    conn.execute("COMMIT")
    conn.close()


async def test_writer_retries_when_sqlite_is_locked(sqlite_url):
    await upgrade(sqlite_url)
    # A short busy_timeout turns the held lock into real "database is locked" errors.
    engine = make_engine(sqlite_url, sqlite_busy_timeout_ms=50)
    sessionmaker = make_sessionmaker(engine)
    writer = Writer(sessionmaker, retry_min=0.02, retry_max=0.1)
    await writer.start()
    try:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_sqlite_lock,
                                  args=(sqlite_url.split("///", 1)[1], 1.0, locked))
        holder.start()
        await asyncio.to_thread(locked.wait, 5)
        started = time.monotonic()
        row = await writer.run(lambda s: repo.create_campaign(s, "Patient"))
        assert time.monotonic() - started >= 0.5  # it really had to wait for the lock
        await asyncio.to_thread(holder.join)
        assert row.name == "Patient"
        assert writer.retries >= 1
        assert await count(sessionmaker, t.Campaign) == 1
        assert await version(sessionmaker) == 1
    finally:
        await writer.stop()
        await engine.dispose()


async def test_writer_retries_when_postgres_drops_the_connection(postgres_url):
    await upgrade(postgres_url)
    engine = make_engine(postgres_url)
    sessionmaker = make_sessionmaker(engine)
    writer = Writer(sessionmaker, retry_min=0.02, retry_max=0.1)
    await writer.start()
    attempts = 0

    async def job(s):
        nonlocal attempts
        attempts += 1
        pid = await s.scalar(text("SELECT pg_backend_pid()"))
        if attempts == 1:  # kill our own server process, as a PostgreSQL restart would
            admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            await admin.close()
        return await repo.create_campaign(s, "Survivor")

    try:
        row = await writer.run(job)
        assert attempts == 2 and row.name == "Survivor" and writer.retries == 1
        assert await count(sessionmaker, t.Campaign) == 1
    finally:
        await writer.stop()
        await engine.dispose()


async def test_stop_with_timeout_fails_leftover_jobs(sessionmaker):
    writer = Writer(sessionmaker, max_queue=10)
    await writer.start()
    gate = asyncio.Event()
    running = writer.submit(lambda s: gate.wait())
    left = writer.submit(lambda s: repo.create_campaign(s, "never"))
    await writer.stop(timeout=0.1)
    for fut in (running, left):
        with pytest.raises(WriterStopped):
            fut.result()
    assert await count(sessionmaker, t.Campaign) == 0


async def test_waiting_jobs_share_a_transaction_and_a_failing_one_fails_alone(writer, sessionmaker):
    """Group commit: jobs queued together commit together, but one that fails rolls back only
    itself; the others are stored, in order, and their callers get their results."""
    from sqlalchemy import select

    async def fails(session):
        await repo.create_publisher(session, "Doomed", payout="1.00")
        raise ValueError("bad form")

    futures = [writer.submit(lambda s: repo.create_publisher(s, "First", payout="1.00")),
               writer.submit(fails),
               writer.submit(lambda s: repo.create_publisher(s, "Third", payout="3.00"))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], ValueError) and not isinstance(results[0], Exception)
    async with sessionmaker() as s:
        names = list(await s.scalars(select(t.Publisher.name).order_by(t.Publisher.id)))
    assert names == ["First", "Third"]
    assert writer.depth == 0


# --- SyncJobs: with SQLite, on the writer's own thread ---------------------------------------

async def test_sync_jobs_run_on_the_writer_thread_in_order_with_async_jobs(writer, sessionmaker, db_url):
    """Calls are stored by SyncJobs (a plain Session). With SQLite they run on the writer's thread;
    with PostgreSQL through run_sync. Either way they keep submission order with ordinary jobs,
    share group commits, and a failing one fails alone."""
    import threading as th

    from sqlalchemy import select

    from ppcswitch.storage.writer import SyncJob

    threads = []

    def create(name):
        def job(session):
            threads.append(th.current_thread().name)
            session.add(t.Publisher(name=name, payout_cents=100))
            session.flush()
            return name
        return SyncJob(job)

    def fails(session):
        session.add(t.Publisher(name="Doomed", payout_cents=100))
        session.flush()
        raise ValueError("bad row")

    futures = [writer.submit(create("S1")), writer.submit(lambda s: repo.create_publisher(s, "A1", payout="1.00")),
               writer.submit(create("S2")), writer.submit(SyncJob(fails)), writer.submit(create("S3")),
               writer.submit(lambda s: repo.create_publisher(s, "A2", payout="1.00"))]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert [results[i] for i in (0, 2, 4)] == ["S1", "S2", "S3"]
    async with sessionmaker() as s:
        names = list(await s.scalars(select(t.Publisher.name).order_by(t.Publisher.id)))
    assert names == ["S1", "A1", "S2", "S3", "A2"]
    on_thread = [name.startswith("ppcswitch-db-writer") for name in threads]
    assert all(on_thread) if db_url.startswith("sqlite") else not any(on_thread)
    assert writer.depth == 0


async def test_sync_jobs_wait_out_a_locked_sqlite_database(sqlite_url):
    """The writer's thread meets "database is locked" like the async path: retried until it succeeds."""
    from ppcswitch.storage.db import make_sync_sessionmaker, make_writer_engine
    from ppcswitch.storage.writer import SyncJob

    await upgrade(sqlite_url)
    engine = make_engine(sqlite_url, sqlite_busy_timeout_ms=50)
    sync_engine = make_writer_engine(sqlite_url, sqlite_busy_timeout_ms=50)
    sessionmaker = make_sessionmaker(engine)
    writer = Writer(sessionmaker, retry_min=0.02, retry_max=0.1, sync_sessionmaker=make_sync_sessionmaker(sync_engine))
    await writer.start()
    try:
        locked = threading.Event()
        holder = threading.Thread(target=_hold_sqlite_lock, args=(sqlite_url.split("///", 1)[1], 1.0, locked))
        holder.start()
        await asyncio.to_thread(locked.wait, 5)
        started = time.monotonic()

        def job(session):
            session.add(t.Publisher(name="Patient", payout_cents=100))
            session.flush()
            return "stored"

        assert await writer.run(SyncJob(job)) == "stored"
        assert time.monotonic() - started >= 0.5
        await asyncio.to_thread(holder.join)
        assert writer.retries >= 1
        assert await count(sessionmaker, t.Publisher) == 1
    finally:
        await writer.stop()
        sync_engine.dispose()
        await engine.dispose()
