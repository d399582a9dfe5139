"""Shared reservations (ppcswitch.routing.shared): caps that hold across controllers, on a real PostgreSQL.

Two controllers' routers (the real Router, each with its own SharedReservations and its own
connection pool) on one database take simultaneous calls. A buyer's concurrency cap and its daily
budget hold across both, where each controller alone would have let its own share through; the
holds of a controller that died stop counting within the lease; a settled call counts once even
when it is settled twice. Also measured: one admission is one round trip (printed p50/p99).

The PostgreSQL restart drill runs on a private PostgreSQL server (ppcswitch.cluster.PrivatePostgres:
initdb into a temporary directory, its own port), never on the machine's shared one: while it is
down both controllers route from memory, each admission giving up within ADMIT_TIMEOUT, and the
writes of the calls that end meanwhile wait in order and land once when it is back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pytest  # noqa: F401  (fixtures)

from ppcswitch.storage import snapshot
from ppcswitch import channel_vars as cv
from ppcswitch.config import load_settings
from ppcswitch.routing.reservations import SettledAttempt, SettledCall
from ppcswitch.routing.service import Router
from ppcswitch.routing.shared import ADMIT_TIMEOUT, SharedReservations, confirm
from ppcswitch.storage import db, repo, repo_routing

NUMBER = "+18005550100"


@pytest.fixture
def pg_url(postgres_url):
    return postgres_url  # emptied for each test


async def network_with(url: str, cap: int | None = None, budget: str | None = None, duplicate: str | None = None):
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s, s.begin():
            await repo.create_campaign(s, "HVAC")
            await repo.create_publisher(s, "Pub", payout="10.00")
            await repo.create_buyer(s, "A", "sip:a@127.0.0.1:5071", revenue="40.00", concurrency_cap=cap)
            await repo.create_buyer(s, "B", "sip:b@127.0.0.1:5072", revenue="30.00")
            await repo.add_campaign_buyer(s, "HVAC", "A", 1)
            await repo.add_campaign_buyer(s, "HVAC", "B", 2)
            await repo.add_tracking_number(s, NUMBER, "HVAC", "Pub")
            if budget:
                await repo_routing.set_buyer_rules(s, "A", {"budget_daily": budget})
            if duplicate:
                await repo_routing.set_buyer_rules(s, "A", {"duplicate_window": duplicate})
        async with db.make_sessionmaker(engine)() as s:
            return await snapshot.load_network(s, load_settings(env={}).routing)
    finally:
        await engine.dispose()


async def controllers(url: str, network, lease: float = 30.0, n: int = 2) -> list[Router]:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    routers = []
    for i in range(n):
        r = Router(network)
        r.reservations = SharedReservations(r.counters, dsn, f"node{i + 1}", lease)
        await r.reservations.start()
        routers.append(r)
    return routers


async def stop(routers) -> None:
    for r in routers:
        await r.reservations.stop()


async def call(router: Router, linkedid: str, caller: str) -> str | None:
    """A new call through the real router and the shared admission: the buyer's name it goes to."""
    answer = await confirm(router, linkedid, await router.first_async(linkedid, router.facts(NUMBER, caller)))
    if answer.get(cv.ROUTE_STATUS) != cv.RouteStatus.ROUTE:
        return None
    return router.network.buyers[int(answer[cv.BUYER_ID])].name


async def test_a_concurrency_cap_holds_across_controllers_under_simultaneous_calls(pg_url):
    network = await network_with(pg_url, cap=2)
    routers = await controllers(pg_url, network)
    try:
        got = await asyncio.gather(*(call(routers[i % 2], f"node{i % 2 + 1}-{i}", f"+1415555{1000 + i}")
                                     for i in range(8)))
        assert got.count("A") == 2 and got.count("B") == 6  # each controller alone would give A two
        per_node = [sum(1 for i, b in enumerate(got) if b == "A" and i % 2 == n) for n in range(2)]
        assert sum(per_node) == 2
        # A call that ends frees its slot for the other controller.
        first_a = next(i for i, b in enumerate(got) if b == "A")
        owner = routers[first_a % 2]
        owner.reservations.release(f"node{first_a % 2 + 1}-{first_a}")
        await owner.reservations.queue.join()
        other = routers[1 - first_a % 2]
        assert await call(other, "later-1", "+14155552000") == "A"
        assert await call(other, "later-2", "+14155552001") == "B"
    finally:
        await stop(routers)


async def test_a_daily_budget_holds_across_controllers_and_settled_calls_count_once(pg_url):
    network = await network_with(pg_url, budget="100.00")  # A bills 40.00 a call: two fit, not three
    routers = await controllers(pg_url, network)
    try:
        got = await asyncio.gather(*(call(routers[i % 2], f"c{i}", f"+1415555{3000 + i}") for i in range(6)))
        assert got.count("A") == 2  # 2 x 40.00 held; a third would pass 100.00
        a = next(b for b in network.buyers.values() if b.name == "A")
        now = time.time()
        for i, b in enumerate(got):
            r = routers[i % 2]
            if b == "A":  # both settle billable at 40.00: 80.00 spent today
                settled = SettledCall(f"c{i}", f"+1415555{3000 + i}", a_campaign(network), a_publisher(network),
                                      a.id, now, (SettledAttempt(a.id, now),), True, True, 4000, 1000)
                r.reservations.settled(settled, network)
                r.reservations.settled(settled, network)  # a replay counts nothing more
            else:
                r.reservations.release(f"c{i}")
        for r in routers:
            await r.reservations.queue.join()
        # 80.00 settled + 40.00 > 100.00: neither controller gives A another call today, though each
        # settled only 40.00 itself.
        assert [await call(r, f"after-{j}", f"+1415555{4000 + j}") for j, r in enumerate(routers)] == ["B", "B"]
    finally:
        await stop(routers)


def a_campaign(network) -> int:
    return next(iter(network.campaigns))


def a_publisher(network) -> int:
    return next(iter(network.publishers))


async def test_a_repeat_caller_on_two_controllers_at_once_reaches_the_buyer_once(pg_url):
    network = await network_with(pg_url, duplicate="1h")  # A takes a caller once an hour
    routers = await controllers(pg_url, network)
    try:
        got = await asyncio.gather(call(routers[0], "dup-1", "+14155556000"), call(routers[1], "dup-2", "+14155556000"))
        assert sorted(got) == ["A", "B"]  # each controller alone would have sent both to A
        other = await call(routers[0], "other", "+14155556001")  # another caller is not held back
        assert other == "A"
    finally:
        await stop(routers)


async def test_a_repeat_caller_connected_on_one_controller_is_a_duplicate_on_the_other(pg_url):
    network = await network_with(pg_url, duplicate="1h")  # A takes a caller once an hour
    routers = await controllers(pg_url, network)
    a = next(b for b in network.buyers.values() if b.name == "A")
    try:
        assert await call(routers[0], "first", "+14155556100") == "A"
        now = time.time()
        routers[0].live.release_call("first")
        routers[0].reservations.settled(SettledCall("first", "+14155556100", a_campaign(network), a_publisher(network),
                                                    a.id, now, (SettledAttempt(a.id, now),), True, True, 4000, 1000),
                                        network)
        await routers[0].reservations.queue.join()
        # Ten minutes later on the other node, which never saw the first call: not A again.
        assert await call(routers[1], "again", "+14155556100") == "B"
        assert await call(routers[1], "someone", "+14155556101") == "A"
    finally:
        await stop(routers)


async def test_a_dead_controllers_holds_lapse_within_the_lease(pg_url):
    network = await network_with(pg_url, cap=1)
    routers = await controllers(pg_url, network, lease=1.5)
    try:
        assert await call(routers[0], "held", "+14155555000") == "A"
        routers[0].reservations.tasks[1].cancel()  # node1 dies: its leases are no longer renewed
        assert await call(routers[1], "blocked", "+14155555001") == "B"
        await asyncio.sleep(2.0)
        assert await call(routers[1], "freed", "+14155555002") == "A"
    finally:
        await stop(routers)


async def test_an_admission_is_one_round_trip(pg_url):
    network = await network_with(pg_url, cap=1000, budget="100000.00")
    routers = await controllers(pg_url, network)
    try:
        for i in range(200):
            assert await call(routers[i % 2], f"rt{i}", f"+1415556{i:04d}") == "A"
        samples = sorted(routers[0].reservations.round_trips + routers[1].reservations.round_trips)
        p50, p99 = statistics.median(samples), samples[int(len(samples) * 0.99) - 1]
        print(f"\nshared reservation: 1 round trip, p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms over {len(samples)}")
        assert len(samples) == 200 and p50 < 0.05
    finally:
        await stop(routers)


@pytest.fixture(scope="module")
def private_pg():
    """A PostgreSQL server of this module's own (it is restarted): root and the machine's binaries."""
    from ppcswitch.cluster import PrivatePostgres
    from fixtures_asterisk import _unavailable  # skips, or fails under PPCSWITCH_REQUIRE_SERVICES=1 (CI)
    from ppcswitch.sandbox import SandboxError

    if os.geteuid() != 0 or shutil.which("runuser") is None:
        _unavailable("a private PostgreSQL needs root (runuser -u postgres)")
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="ppcswitch-pg-")))
    try:
        pg.init()
        pg.start()
    except SandboxError as exc:
        pg.destroy()
        _unavailable(f"private PostgreSQL unavailable: {exc}")
    yield pg
    pg.destroy()


async def admin(pg, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg.admin_dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetch(url: str, sql: str, *args):
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=5)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_a_postgresql_restart_routing_goes_on_from_memory_and_writes_land_once(private_pg):
    await admin(private_pg, "DROP DATABASE IF EXISTS restart_drill WITH (FORCE)")
    await admin(private_pg, "CREATE DATABASE restart_drill")
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{private_pg.port}/restart_drill"
    network = await network_with(url, cap=2)
    a = next(b for b in network.buyers.values() if b.name == "A")
    routers = await controllers(url, network)

    def settle(r: Router, linkedid: str, caller: str) -> None:
        now = time.time()
        r.live.release_call(linkedid)  # the call is over
        r.reservations.settled(SettledCall(linkedid, caller, a_campaign(network), a_publisher(network), a.id, now,
                                           (SettledAttempt(a.id, now),), True, True, 4000, 1000), network)

    try:
        assert await call(routers[0], "before", "+14155557000") == "A"
        settle(routers[0], "before", "+14155557000")
        await routers[0].reservations.queue.join()

        private_pg.stop("fast")  # what `systemctl restart postgresql` does first
        # Routing goes on from memory: each controller keeps its own count of the cap (2 each), and
        # no admission waits on the dead database longer than ADMIT_TIMEOUT.
        took, got = [], []
        for i in range(6):
            started = time.perf_counter()
            got.append(await call(routers[i % 2], f"down-{i}", f"+1415555{7100 + i}"))
            took.append(time.perf_counter() - started)
        assert got == ["A", "A", "A", "A", "B", "B"], got
        assert max(took) < ADMIT_TIMEOUT + 0.5, took
        assert all(r.reservations.errors for r in routers)
        # The calls end while the database is down: their writes wait, in order.
        for i, buyer in enumerate(got):
            r = routers[i % 2]
            if buyer == "A":
                settle(r, f"down-{i}", f"+1415555{7100 + i}")
                settle(r, f"down-{i}", f"+1415555{7100 + i}")  # a replay (the CDR file) as well
            else:
                r.live.release_call(f"down-{i}")
                r.reservations.release(f"down-{i}")
        await asyncio.sleep(1.0)
        # Every write waits (the first one being retried): on each controller three calls noted
        # (cluster_calls), four settlements (two calls, each twice) and a release (holds and note).
        # Nothing dropped, nothing done.
        assert [r.reservations.queue.qsize() + 1 for r in routers] == [9, 9]
        assert all(r.reservations.retries for r in routers)

        private_pg.start()
        for r in routers:
            await asyncio.wait_for(r.reservations.queue.join(), 15)
        # Landed once: five settled calls counted once each, no hold left behind.
        settled = await fetch(url, "SELECT linkedid, node FROM cluster_settled ORDER BY linkedid")
        assert [(x["linkedid"], x["node"]) for x in settled] == [
            ("before", "node1"), ("down-0", "node1"), ("down-1", "node2"), ("down-2", "node1"), ("down-3", "node2")]
        [total] = await fetch(url, "SELECT n FROM cluster_counts WHERE scope = $1 AND family = '' AND period = 't'",
                              f"b{a.id}")
        assert total["n"] == 5
        assert await fetch(url, "SELECT * FROM cluster_holds") == []
        assert await fetch(url, "SELECT * FROM cluster_calls") == []
        # And the cap is the cluster's again: two calls in flight across both controllers, not four.
        got = await asyncio.gather(*(call(routers[i % 2], f"after-{i}", f"+1415555{7200 + i}") for i in range(4)))
        assert sorted(got) == ["A", "A", "B", "B"], got
    finally:
        await stop(routers)
        await admin(private_pg, "DROP DATABASE IF EXISTS restart_drill WITH (FORCE)")


class Ended:
    """What settle_after reads of a finished call's record."""

    def __init__(self, linkedid: str, caller: str, started: float) -> None:
        from datetime import datetime, timezone

        self.linkedid, self.caller, self.caller_valid = linkedid, caller, True
        self.started_at = datetime.fromtimestamp(started, timezone.utc)


async def test_a_callers_calls_on_two_controllers_settle_in_the_order_they_started(pg_url):
    network = await network_with(pg_url)
    routers = await controllers(pg_url, network, lease=3.0)
    done: list[str] = []
    try:
        t0 = time.time()
        assert await call(routers[0], "first", "+14155558000") == "A"  # node1, started first
        await asyncio.sleep(0.3)
        assert await call(routers[1], "second", "+14155558000") == "A"  # node2, 0.3 s later
        assert await call(routers[1], "alone", "+14155558001") == "A"  # another caller
        for r in routers:
            await r.reservations.queue.join()
        # The later call ends first: it waits for the first, still up on the other node.
        assert routers[1].reservations.settle_after(Ended("second", "+14155558000", t0 + 0.3), lambda r: done.append(r.linkedid))
        assert routers[1].reservations.settle_after(Ended("alone", "+14155558001", t0 + 0.3), lambda r: done.append(r.linkedid))
        await asyncio.sleep(1.0)
        assert done == ["alone"]
        # The first ends: it goes at once, and once it is settled the second follows.
        assert routers[0].reservations.settle_after(Ended("first", "+14155558000", t0), lambda r: done.append(r.linkedid))
        await asyncio.sleep(0.5)
        assert done == ["alone", "first"]
        a = next(b for b in network.buyers.values() if b.name == "A")
        routers[0].reservations.settled(SettledCall("first", "+14155558000", a_campaign(network), a_publisher(network),
                                                    a.id, t0, (SettledAttempt(a.id, t0),), True, True, 4000, 1000),
                                        network)
        await routers[0].reservations.queue.join()
        for _ in range(30):
            if len(done) == 3:
                break
            await asyncio.sleep(0.1)
        assert done == ["alone", "first", "second"]
        assert routers[1].reservations.ordered_waits == 1

        # A dead controller's call holds nobody back longer than its lease.
        assert await call(routers[0], "ghost", "+14155558002") == "A"
        await routers[0].reservations.queue.join()
        routers[0].reservations.tasks[1].cancel()  # node1 dies: its leases are no longer renewed
        waited = time.monotonic()
        assert routers[1].reservations.settle_after(Ended("late", "+14155558002", time.time()), lambda r: done.append(r.linkedid))
        while "late" not in done:
            await asyncio.sleep(0.1)
            assert time.monotonic() - waited < 3.0 + 2.0
        assert time.monotonic() - waited > 1.0
    finally:
        await stop(routers)
