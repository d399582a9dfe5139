"""Reservations shared by every controller of a cluster, on PostgreSQL (`cluster.reservations = "postgresql"`).

The in-process `Reservations` (routing.reservations) keeps counting what this controller sees, so
each decision still reads memory only. PostgreSQL is the authority at one moment: when a leg is
handed to a buyer, `admit()` asks the database, in one round trip (the `ppc_reserve` function,
migration 0009_cluster_reservations), whether one more leg still fits every limit of every level it
touches (buyer, campaign link, campaign, publisher: concurrency, hourly/daily/monthly/total caps,
daily/monthly budgets; and, for a buyer with a duplicate rule, one live leg per caller), counting the holds of *all* controllers and the calls *all* of them
settled. It takes advisory locks on those levels' scopes (in one order: no deadlock), so two
controllers admitting at once are serialised; either the hold is written or the reason is
returned and the AGI handler asks the router for the next buyer (`confirm`).

Each hold has a lease (`cluster.lease_seconds`): the controller renews its own every third of it,
so the holds of a controller that died stop counting within one lease. A leg that ends unanswered
stops holding money and concurrency; a settled call's holds are deleted and its counts (the same
`count()` the in-process counters use) are added to the shared counts, once per call
(`cluster_settled`). Those writes go through one ordered queue off the decision path; while the
database is unreachable (a restart, a network cut) the queue waits and retries its first write
with back-off, in order, so every settled call's counts land once when it is back (a settlement
is keyed by linkedid; dropping a hold or marking it unanswered twice changes nothing). Admissions
meanwhile are not checked across the cluster: each controller routes from its own memory, as on
one box, and says so once per outage in its log (`ppcswitch_cluster_reservations_total{result="error"}`).
An admission never waits more than `ADMIT_TIMEOUT` for the database.

For a buyer with a routing duplicate rule, each settled call's delivery (caller, buyer, answer
time) is written in `cluster_delivered` in the settlement's transaction, and an admission to that
buyer is refused while any controller connected the caller to it within the rule's window: the
rule holds for repeat callers whichever node each of their calls lands on.

A caller's calls are settled in the order they started across the cluster too (on one box the
pipeline's order stage sees to it), so the call that started first is the original for the
unique-caller billing rules whichever node ends its call first: each call handed to a buyer is
noted in `cluster_calls` (a queued write, leased like the holds), and before a call is settled
(`settle_after`, one round trip) it waits while the caller has a call on another node that
started before it, or that has not ended yet and was routed less than `ORDER_MARGIN` after it
started (it may have started first). A dead controller's notes lapse with its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ppcswitch import channel_vars as cv
from ppcswitch.routing.counters import local
from ppcswitch.routing.engine import link_rules
from ppcswitch.routing.limits import NO_LIMITS, Limits, limits_of
from ppcswitch.routing.model import Network
from ppcswitch.routing.plan import buyer_cap
from ppcswitch.routing.reservations import Reservations, SettledCall, count

log = logging.getLogger(__name__)

FAMILIES = ("", "r", "b")  # connected, routed, billable calls (counters.FAMILY); "$": money in cents

RESERVE_SQL = "SELECT ppc_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
# The same, for a leg to a buyer with a duplicate rule: refused without a hold when any controller
# connected this caller to it within the window ($19 seconds), in the same round trip.
RESERVE_DUPLICATE_SQL = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM cluster_delivered WHERE scope = $18 "
    "AND at > now() - $19 * interval '1 second') THEN $18 || ' duplicate' ELSE "
    + RESERVE_SQL.removeprefix("SELECT ") + " END")
ADMIT_TIMEOUT = 1.0  # seconds an admission may wait for the database before the local checks stand alone
RETRY_MIN, RETRY_MAX = 0.05, 2.0  # back-off of the queued writes while the database is unreachable
ORDER_MARGIN = 2.0  # seconds a call may be routed after its channel started (settle_after)
ORDER_WAIT_MAX = 6 * 3600  # a call waits at most this long for a caller's earlier call on another node
EARLIER_SQL = """
WITH me AS (UPDATE cluster_calls SET started = $3 WHERE linkedid = $1)
SELECT linkedid FROM cluster_calls
 WHERE caller = $2 AND linkedid <> $1 AND node <> $4 AND lease_until > now()
   AND ((started IS NOT NULL AND (started < $3 OR (started = $3 AND linkedid < $1)))
        OR (started IS NULL AND arrived < $3 + $5))
 LIMIT 1"""


def is_transient(exc: BaseException) -> bool:
    """A database error that goes away by itself (connection lost or refused, server restarting,
    out of resources): the write is worth doing again. Anything else is a bug: logged, dropped."""
    import asyncpg

    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)):
        return True  # refused, reset, timed out; asyncpg: connection closed / does not exist
    code = getattr(exc, "sqlstate", None) or ""
    return code.startswith(("08", "53", "57P", "40001", "40P01"))


def scope_text(scope) -> str:
    """A scope key (routing.limits) as stored: b<buyer>, l:<campaign>:<buyer>, c:<campaign>, p:<publisher>."""
    if isinstance(scope, int):
        return f"b{scope}"
    return ":".join(str(x) for x in scope)


def scope_limits(network: Network, scope) -> Limits:
    """The limits a scope carries, as routing reads them (a buyer's concurrency is its --cap or rules')."""
    if isinstance(scope, int):
        buyer = network.buyers.get(scope)
        if buyer is None:
            return NO_LIMITS
        own = limits_of(buyer.rules, buyer=True)
        cap = buyer_cap(buyer)
        if cap is None:
            return own
        return Limits(own.prefix, own.timezone, own.family, cap, own.cap_hourly, own.cap_daily, own.cap_monthly,
                      own.cap_total, own.budget_daily_cents, own.budget_monthly_cents)
    kind = scope[0]
    if kind == "l":
        campaign = network.campaigns.get(scope[1])
        link = campaign.links.get(scope[2]) if campaign is not None else None
        lim = getattr(link, "limits", None)
        return lim if isinstance(lim, Limits) else NO_LIMITS
    lim = (network.campaign_limits if kind == "c" else network.publisher_limits).get(scope[1])
    return lim if lim is not None else NO_LIMITS


class _Recorder:
    """Stands in for Counters under `count()`: collects the increments a settled call makes."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], int] = {}
        self.delivered: list[tuple[str, int, float]] = []  # (caller, buyer, answered at)

    def _bump(self, scope, family: str, period: str, n: int) -> None:
        key = (scope_text(scope), family, period)
        self.rows[key] = self.rows.get(key, 0) + n

    def add(self, scope, tz: str, at: float, family: str, n: int = 1) -> None:
        lt = local(tz, at)
        for period in (f"h{lt.hour}", f"d{lt.day}", f"m{lt.month}", "t"):
            self._bump(scope, family, period, n)

    def add_money(self, scope, tz: str, at: float, cents: int) -> None:
        if cents:
            lt = local(tz, at)
            for period in (f"d{lt.day}", f"m{lt.month}"):
                self._bump(scope, "$", period, cents)

    def deliver(self, caller: str, buyer_id: int, epoch: float) -> None:
        self.delivered.append((caller, buyer_id, epoch))

    def offered(self, *args) -> None:
        pass


def increments(call: SettledCall, network: Network) -> list[tuple[str, str, str, int]]:
    """(scope, family, period, amount) rows a settled call adds to the shared counts."""
    return counted(call, network)[0]


def caller_scope(caller: str, buyer_id: int) -> str:
    """The scope of one caller and one buyer (duplicate rule): its live leg, its last delivery."""
    return f"u:{caller}:{buyer_id}"[:64]


def counted(call: SettledCall, network: Network) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, float]]]:
    """The shared counts' rows of a settled call, and its deliveries to buyers with a duplicate rule
    (caller scope, answered at): what another controller needs to keep that rule for the caller."""
    rec = _Recorder()
    count(rec, call, network)  # type: ignore[arg-type]
    deliveries = [(caller_scope(caller, buyer), at) for caller, buyer, at in rec.delivered
                  if link_rules(network, call.campaign_id or 0, buyer).duplicate_seconds]
    return [(s, f, p, n) for (s, f, p), n in rec.rows.items()], deliveries


class SharedReservations(Reservations):
    """Reservations checked against every controller's, on PostgreSQL (see the module doc)."""

    def __init__(self, counters, dsn: str, node: str, lease_seconds: float = 30.0, clock=time.time) -> None:
        super().__init__(counters)
        self.dsn = dsn
        self.node = node or "node"
        self.lease = float(lease_seconds)
        self.clock = clock
        self.network: Network | None = None  # the router's snapshot, read at each admission
        self.pool = None
        self.queue: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []
        self.admitted = self.refused = self.errors = 0
        self.round_trips: list[float] = []  # seconds of recent admissions (tests, bench)
        self.seconds_sum = 0.0  # all admissions' time (metrics: ppcswitch_cluster_reservation_seconds)
        self.unchecked_since = 0.0  # monotonic time the database stopped answering admissions (0: it answers)
        self.retries = 0  # queued writes tried again (the database was unreachable)
        self.writes = 0  # queued writes done
        self.waiting: set[asyncio.Task] = set()  # calls waiting for a caller's earlier call on another node
        self.ordered_waits = 0  # calls that waited so

    async def start(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.dsn, min_size=2, max_size=4)
        self.tasks = [asyncio.create_task(self._writes()), asyncio.create_task(self._renew())]

    async def stop(self) -> None:
        if self.tasks and not self.tasks[0].done():
            try:  # the settled calls' counts still queued
                await asyncio.wait_for(self.queue.join(), 5)
            except asyncio.TimeoutError:
                log.warning("shared reservations: %d write(s) not done at stop", self.queue.qsize())
        for task in [*self.tasks, *self.waiting]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.waiting, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()

    # -- the decision path ---------------------------------------------------------------
    async def admit(self, network: Network, linkedid: str, attempt: int) -> str:
        """'' when the leg's hold fits every limit across the cluster (and is now stored), else why not.
        One round trip; a database error admits (the local checks have passed) and is logged."""
        h = self.holds.get((linkedid, attempt))
        if h is None or self.pool is None:
            return ""
        at = self.clock()
        args: dict[str, list[Any]] = {k: [] for k in ("s", "f", "c", "ch", "cd", "cm", "ct", "bd", "bm", "kh", "kd", "km", "m")}
        for scope, money in zip(h.scopes, h.money):
            lim = scope_limits(network, scope)
            if not lim.any:
                continue  # nothing to hold there: no row, no lock
            lt = local(lim.timezone, at)
            for k, v in zip(args, (scope_text(scope), lim.family, lim.concurrency, lim.cap_hourly, lim.cap_daily,
                                   lim.cap_monthly, lim.cap_total, lim.budget_daily_cents, lim.budget_monthly_cents,
                                   f"h{lt.hour}", f"d{lt.day}", f"m{lt.month}", money)):
                args[k].append(v)
        duplicate: tuple = ()
        if h.caller:
            # The duplicate rule across nodes: one live leg per caller and buyer in the whole cluster
            # (a repeat caller arriving on two nodes at once reaches the buyer once), and no leg while
            # any controller connected them within the rule's window (cluster_delivered).
            campaign_id = next((s[1] for s in h.scopes if isinstance(s, tuple) and s[0] == "l"), 0)
            window = link_rules(network, campaign_id, h.buyer_id).duplicate_seconds
            if window:
                lt = local("UTC", at)
                scope = caller_scope(h.caller, h.buyer_id)
                for k, v in zip(args, (scope, "", 1, None, None, None, None, None, None,
                                       f"h{lt.hour}", f"d{lt.day}", f"m{lt.month}", 0)):
                    args[k].append(v)
                duplicate = (scope, float(window))
        if not args["s"]:
            return ""  # no level of this leg has a limit: no round trip
        started = time.perf_counter()
        try:
            async with self.pool.acquire(timeout=ADMIT_TIMEOUT) as conn:
                why = await conn.fetchval(RESERVE_DUPLICATE_SQL if duplicate else RESERVE_SQL, self.node, linkedid,
                                          attempt, self.lease, *args.values(), *duplicate, timeout=ADMIT_TIMEOUT)
        except Exception as exc:  # the database is down: the local checks stand alone
            self.errors += 1
            if not self.unchecked_since:
                self.unchecked_since = time.monotonic()
                log.warning("shared reservations not checked (%s: %s): routing from this controller's memory "
                            "until the database answers", exc.__class__.__name__, exc)
            return ""
        finally:
            took = time.perf_counter() - started
            self.seconds_sum += took
            self.round_trips.append(took)
            if len(self.round_trips) > 10000:
                del self.round_trips[:5000]
        if self.unchecked_since:
            log.warning("shared reservations checked again after %.1f s", time.monotonic() - self.unchecked_since)
            self.unchecked_since = 0.0
        if why:
            self.refused += 1
        else:
            self.admitted += 1
        return why or ""

    # -- what calls do after (queued, in order, off the decision path) ----------------------
    def hold(self, network: Network, linkedid: str, attempt: int, buyer_id: int, campaign_id: int | None,
             publisher_id: int | None, caller: str = "", price_cents: int | None = None):
        first = linkedid not in self.calls
        h = super().hold(network, linkedid, attempt, buyer_id, campaign_id, publisher_id, caller, price_cents)
        if first and caller:  # the caller's order across nodes (settle_after)
            self.queue.put_nowait((
                "INSERT INTO cluster_calls (linkedid, node, caller, arrived, lease_until) "
                "VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second') ON CONFLICT DO NOTHING",
                (linkedid, self.node, caller[:64], self.clock(), self.lease)))
        return h

    def settle_after(self, record, then) -> bool:
        """The pipeline's order stage across nodes: True when `then(record)` will be called once no
        call of the record's caller on another node that started before it is left unsettled
        (the module doc); False (settle now) for a call without a valid caller."""
        if not getattr(record, "caller_valid", False) or not record.caller or self.pool is None:
            return False
        task = asyncio.get_running_loop().create_task(self._in_order(record, then))
        self.waiting.add(task)
        task.add_done_callback(self.waiting.discard)
        return True

    async def _in_order(self, record, then) -> None:
        started, since, delay, logged = record.started_at.timestamp(), time.monotonic(), 0.2, False
        while time.monotonic() - since < ORDER_WAIT_MAX:
            try:
                async with self.pool.acquire(timeout=ADMIT_TIMEOUT) as conn:
                    earlier = await conn.fetchval(EARLIER_SQL, record.linkedid, record.caller[:64], started,
                                                  self.node, ORDER_MARGIN, timeout=ADMIT_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down: settle now (its writes wait in the writer)
                log.debug("call %s settled without the cluster's order (%s)", record.linkedid, exc)
                break
            if earlier is None:
                break
            if not logged:
                log.info("call %s waits for call %s of the same caller on another node", record.linkedid, earlier)
                logged = True
                self.ordered_waits += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        then(record)

    def unanswered(self, linkedid: str, attempt: int) -> None:
        super().unanswered(linkedid, attempt)
        self.queue.put_nowait(("UPDATE cluster_holds SET live = false WHERE linkedid = $1 AND attempt = $2",
                               (linkedid, attempt)))

    def release(self, linkedid: str) -> None:
        super().release(linkedid)
        if not self._settling:
            self.queue.put_nowait(("DELETE FROM cluster_holds WHERE linkedid = $1", (linkedid,)))
            self.queue.put_nowait(("DELETE FROM cluster_calls WHERE linkedid = $1", (linkedid,)))

    _settling = False

    def settled(self, call: SettledCall, network: Network) -> None:
        self._settling = True  # its holds go in the same transaction as its counts (below)
        try:
            super().settled(call, network)  # local: releases and counts
        finally:
            self._settling = False
        self.queue.put_nowait((None, (call.linkedid, *counted(call, network))))

    async def _settle(self, conn, linkedid: str, rows: list, deliveries: list = ()) -> None:
        """Holds out and counts in, in one transaction: an admission running meanwhile sees the hold,
        or the count, or both (it reads holds first), never neither."""
        async with conn.transaction():
            await conn.execute("DELETE FROM cluster_holds WHERE linkedid = $1", linkedid)
            await conn.execute("DELETE FROM cluster_calls WHERE linkedid = $1", linkedid)
            if await conn.fetchval("INSERT INTO cluster_settled (linkedid, node) VALUES ($1, $2) "
                                   "ON CONFLICT DO NOTHING RETURNING 1", linkedid, self.node) is None:
                return  # counted already (a replay)
            if rows:
                await conn.executemany(
                    "INSERT INTO cluster_counts (scope, family, period, n) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (scope, family, period) DO UPDATE SET n = cluster_counts.n + EXCLUDED.n", rows)
            if deliveries:
                await conn.executemany(
                    "INSERT INTO cluster_delivered (scope, at) VALUES ($1, to_timestamp($2)) ON CONFLICT (scope) "
                    "DO UPDATE SET at = greatest(cluster_delivered.at, EXCLUDED.at)", deliveries)

    async def _writes(self) -> None:
        while True:
            sql, params = await self.queue.get()
            try:
                await self._write(sql, params)
            finally:
                self.queue.task_done()

    async def _write(self, sql, params) -> None:
        """One queued write, retried while the database is unreachable (order kept: the next waits)."""
        delay, since = RETRY_MIN, None
        while True:
            try:
                async with self.pool.acquire() as conn:
                    if sql is None:
                        await self._settle(conn, *params)
                    else:
                        await conn.execute(sql, *params)
                self.writes += 1
                if since is not None:
                    log.warning("shared reservations: writes land again after %.1f s", time.monotonic() - since)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    self.errors += 1
                    log.error("shared reservations: a write failed and is dropped (%s: %s)",
                              exc.__class__.__name__, exc)
                    return
                if since is None:
                    since = time.monotonic()
                    log.warning("shared reservations: database unreachable (%s); %d write(s) wait",
                                exc.__class__.__name__, self.queue.qsize() + 1)
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _renew(self) -> None:
        """Keep this controller's holds alive; a dead controller's lapse within one lease."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                async with self.pool.acquire() as conn:
                    # Only the holds of the calls this process holds: a controller restarted under the
                    # same node name must not keep its dead predecessor's holds alive (they lapse).
                    await conn.execute("UPDATE cluster_holds SET lease_until = now() + $2 * interval '1 second' "
                                       "WHERE node = $1 AND linkedid = ANY($3::text[])", self.node, self.lease,
                                       list(self.calls))
                    await conn.execute("UPDATE cluster_calls SET lease_until = now() + $2 * interval '1 second' "
                                       "WHERE node = $1 AND linkedid = ANY($3::text[])", self.node, self.lease,
                                       list(self.calls))
                    await conn.execute("DELETE FROM cluster_holds WHERE lease_until < now() - interval '1 hour'")
                    await conn.execute("DELETE FROM cluster_calls WHERE lease_until < now() - interval '1 hour'")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("shared reservations: leases not renewed (%s)", exc)


async def confirm(router, linkedid: str, answer: dict[str, str]) -> dict[str, str]:
    """The router's answer, once the shared reservations admit its buyer; else the next buyer's (or
    none). Nothing to do with in-process reservations."""
    res = router.reservations
    if not isinstance(res, SharedReservations):
        return answer
    while answer.get(cv.ROUTE_STATUS) == cv.RouteStatus.ROUTE:
        try:
            attempt = int(answer.get(cv.ATTEMPT) or 0)
        except ValueError:
            return answer
        why = await res.admit(router.network, linkedid, attempt)
        if not why:
            return answer
        log.info("call %s: buyer %s refused across the cluster (%s); trying the next", linkedid,
                 answer.get(cv.BUYER_ID), why)
        answer = router.next(linkedid, "CONGESTION")
    return answer


def reservations_ctx(settings_key, router_key):
    """An aiohttp cleanup context, after routing's and before AMI's: with cluster.reservations =
    "postgresql" the router's reservations become shared (the counts loaded at start stay, the
    in-process holds are none yet)."""

    async def ctx(app):
        settings = app[settings_key]
        if settings.cluster.reservations != "postgresql":
            yield
            return
        router = app[router_key]
        dsn = settings.database.url.replace("postgresql+asyncpg://", "postgresql://", 1)
        shared = SharedReservations(router.counters, dsn, settings.cluster.node, settings.cluster.lease_seconds)
        await shared.start()
        router.reservations = shared
        log.info("reservations shared on PostgreSQL (node %s, lease %.0f s)", shared.node, shared.lease)
        yield
        await shared.stop()

    return ctx
