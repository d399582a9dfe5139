"""The finished-call pipeline: the stages every call goes through once it is over, in this order.

1. record     the tracker (AMI events) or recovery (Asterisk's CDR file) hands over one CallRecord
              per linkedid, with no billing verdict and no money;
2. attribute  sub-ID, click ID and tags (ppcswitch.attribution);
3. score      fraud signals and the quality score (ppcswitch.fraud.runtime; an external scorer may
              take a moment);
4. order      a call waits until the earlier calls of the same caller are settled, so the call that
              came first is the original for the unique-caller rules whatever order the calls end in
              (in a cluster also those on other nodes: routing.shared, settle_after);
5. settle     one writer transaction: the record, its billing decision (the only one: revenue at the
              buyer's rules or its winning RTB bid, payout at the publisher's), ledger entries,
              rollups, the routing trace and the postback outbox (ppcswitch.billing.ledger); the
              calls the writer finds waiting together are settled in bulk (settle_many), the
              same rows in multi-row statements;
6. feed       from the settled result only, on the event loop: caps, budgets and duplicate history
              (routing.reservations), the metrics (calls, billable, revenue, payout) and the RTB posts.

A call already stored (a replay, or seen both by the tracker and in the CDR file) changes nothing
and is not counted again; a call that cannot be stored lets go of what it held.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ppcswitch.billing import ledger
from ppcswitch.calls import CallRecord
from ppcswitch.cpu import CPU, SETTLE
from ppcswitch.routing import geo
from ppcswitch.storage import repo_routing
from ppcswitch.storage.writer import SyncJob

log = logging.getLogger(__name__)

# A call waits for an earlier call of its caller at most this long (that call's end was never seen).
ORDER_WAIT_MAX = 6 * 3600


def caller_state(record: CallRecord, route) -> str:
    """The caller's state as routing saw it (a ZIP keyed in, else the area code); a call not routed
    here (recovered from the CDR file) by its area code; '' when unknown."""
    if route is not None:
        return route.facts.state or ""
    return geo.state_of_area_code(geo.area_code(record.caller)) if record.caller_valid else ""


class FinishedCalls:
    """Stages 4 to 6 (order, settle, feed); stages 1 to 3 call `__call__` (see the module doc)."""

    def __init__(self, router, writer, metrics, enqueue_postbacks: Callable | None = None) -> None:
        self.router = router
        self.writer = writer
        self.metrics = metrics
        self.enqueue_postbacks = enqueue_postbacks  # (session, record) in the settling transaction
        self.waiting: dict[str, list[tuple[float, CallRecord]]] = {}  # earlier call's linkedid -> calls after it
        self.settled = 0
        self.replayed = 0

    # -- 4. order ------------------------------------------------------------------------
    def __call__(self, record: CallRecord) -> None:
        earlier = self._earlier(record)
        if earlier is not None:
            self.waiting.setdefault(earlier, []).append((time.monotonic(), record))
            return
        in_order = getattr(self.router.reservations, "settle_after", None)  # a cluster: other nodes' calls
        if in_order is None or not in_order(record, self.settle):
            self.settle(record)

    def _earlier(self, record: CallRecord) -> str | None:
        """An unsettled call of the same caller that came before this one (its linkedid), if any."""
        if not record.caller_valid:
            return None
        calls = self.router.unsettled.get(record.caller)
        if not calls:
            return None
        mine = calls.get(record.linkedid)
        if mine is None:
            mine = record.started_at.timestamp()
        for linkedid, at in calls.items():
            if linkedid != record.linkedid and at < mine:
                return linkedid
        return None

    def _resolved(self, record: CallRecord) -> None:
        """The call is settled (or given up): calls that waited for it go on."""
        for _, later in self.waiting.pop(record.linkedid, ()):
            self(later)

    def sweep(self, max_age: float = ORDER_WAIT_MAX) -> int:
        """Settle calls that waited too long for an earlier call whose end was never seen."""
        now = time.monotonic()
        stale = [(k, rec) for k, recs in self.waiting.items() for since, rec in recs if now - since > max_age]
        for earlier, rec in stale:
            self.waiting[earlier] = [x for x in self.waiting[earlier] if x[1] is not rec]
            if not self.waiting[earlier]:
                del self.waiting[earlier]
            log.warning("call %s settled without waiting longer for call %s of the same caller", rec.linkedid, earlier)
            self.settle(rec)
        return len(stale)

    # -- 5. settle ------------------------------------------------------------------------
    def settle(self, record: CallRecord) -> None:
        stage = CPU.enter(SETTLE)
        try:
            self._settle(record)
        finally:
            CPU.leave(stage)

    def _settle(self, record: CallRecord) -> None:
        trace, route = self.router.finished(record)
        if record.caller_state is None:  # stored with the call (reports by state)
            record.caller_state = caller_state(record, route)
        metrics, enqueue = self.metrics, self.enqueue_postbacks

        def job(session):
            with metrics.write_time.time():
                # The record, its billing decision, ledger entries and rollups: one transaction.
                settled = ledger.settle_sync(session, record)
                if settled is not None and enqueue is not None:  # postbacks/webhooks: the outbox, same transaction
                    enqueue(session, record)
                if trace is not None:
                    repo_routing.save_trace_sync(session, record.linkedid, trace)
                return settled

        # The writer settles the calls waiting together in bulk (settle_many); alone, job.
        save = SyncJob(job, many=(self.settle_many, (record, trace)))

        def done(f: asyncio.Future) -> None:
            self.feed(record, route, f)

        try:
            self.writer.submit(save).add_done_callback(done)
        except asyncio.QueueFull:
            # The database is behind: wait for room rather than drop the record.
            async def later():
                (await self.writer.submit_wait(save)).add_done_callback(done)

            asyncio.get_running_loop().create_task(later())

    def settle_many(self, session, items: list[tuple[CallRecord, dict | None]]) -> list:
        """What `job` does for each call, for many calls in one go (on the writer, in its transaction):
        the same rows, in multi-row statements (ledger.settle_many_sync)."""
        started = time.perf_counter()
        records = [record for record, _ in items]
        settled = ledger.settle_many_sync(session, records)
        enqueue = self.enqueue_postbacks
        if enqueue is not None:
            billed = [record for record, s in zip(records, settled) if s is not None]
            many = getattr(enqueue, "many", None)  # the same rows for many calls (attribution.store)
            if many is not None:
                many(session, billed)
            else:
                for record in billed:
                    enqueue(session, record)
        traces = [(record.linkedid, trace) for record, trace in items if trace is not None]
        if traces:
            repo_routing.save_traces_sync(session, traces)
        share = (time.perf_counter() - started) / len(items)  # each record's share of the group
        for _ in items:
            self.metrics.write_time.observe(share)
        return settled

    # -- 6. feed ---------------------------------------------------------------------------
    def feed(self, record: CallRecord, route, f: asyncio.Future) -> None:
        stage = CPU.enter(SETTLE)
        try:
            self._feed(record, route, f)
        finally:
            CPU.leave(stage)

    def _feed(self, record: CallRecord, route, f: asyncio.Future) -> None:
        router = self.router
        try:
            if f.cancelled() or f.exception() is not None:
                self.metrics.record_failed()
                log.error("call %s could not be stored: %s", record.linkedid,
                          "cancelled" if f.cancelled() else f.exception())
                router.not_settled(record)
                return
            if f.result() is None:  # stored before: it was counted then (or rebuilt from the database)
                self.replayed += 1
                router.not_settled(record)
                return
            self.settled += 1
            router.settled(record, route)
            self.metrics.call_finished(record, router.network)
        except Exception:  # feeding must never stop the calls behind it
            log.exception("could not count settled call %s", record.linkedid)
        finally:
            self._resolved(record)
