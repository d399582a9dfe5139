"""Prometheus metrics of the controller (`/metrics`).

Naming follows Prometheus: a `ppcswitch_` prefix, `_total` counters, seconds.
Labels are names the operator knows (campaign, publisher, buyer) and small
fixed sets (outcome, step, reason); never caller numbers or call ids, so the
number of series is bounded by the configured network.

Call counters are derived from the finished call record, the same record the
database keeps, so the dashboards and the panel agree. Component health (AMI,
FastAGI, database writer, live calls) is read from the components at scrape
time by a collector, so nothing has to remember to update it.

Hooks for code that does not exist yet call the recording methods directly:
`rtb_ping(buyer, seconds, outcome)`, `fraud_flag(publisher, reason)`.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import gc
import hmac
import time
from typing import Any, Callable, Iterator

from ppcswitch.calls import CallRecord, Outcome
from ppcswitch.cpu import CPU
from ppcswitch.routing.model import Network

# Prometheus text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The label value when a call never got as far as a campaign, publisher or buyer.
NONE = "none"

# Dial() statuses folded into the outcomes an operator reasons about.
DIAL_OUTCOMES = {
    "ANSWER": "answer",
    "BUSY": "busy",
    "NOANSWER": "noanswer",
    "CANCEL": "cancel",  # the caller hung up while the buyer rang
    "CHANUNAVAIL": "failed",
    "CONGESTION": "failed",
}

RTB_OUTCOMES = ("bid", "no_bid", "timeout", "error")

# Routing decisions are in-memory work: microseconds to a few milliseconds.
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
RING_BUCKETS = (1, 2, 3, 5, 8, 13, 20, 30, 45, 60)
RTB_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# A FastAGI request is part of the caller's post-dial delay: the buckets read in milliseconds.
AGI_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
GC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """Every metric of the controller; `render()` is the /metrics body."""

    def __init__(self, node: str = "") -> None:
        self._families: list[_Family] = []
        self.node = node  # cluster.node: ppcswitch_node_info{node} (a single box: node="")
        # Publisher-side counters carry the publisher, buyer-side ones the buyer, never both:
        # series stay bounded by tracking numbers and campaign-buyer links, not their product.
        cp, cb = ("campaign", "publisher"), ("campaign", "buyer")
        f = self._add
        self.offered = f(_Counter("ppcswitch_calls_offered", "Finished calls that reached the switch", cp))
        self.calls = f(_Counter("ppcswitch_calls", "Finished calls by outcome", cp + ("outcome",)))
        self.billable = f(_Counter("ppcswitch_calls_billable", "Billable calls, by publisher", cp))
        self.routed = f(_Counter("ppcswitch_calls_routed", "Buyer legs the controller handed to the dialplan (one per buyer tried)", cb))
        self.answered = f(_Counter("ppcswitch_calls_answered", "Calls answered, by the buyer that answered", cb))
        self.buyer_billable = f(_Counter("ppcswitch_buyer_billable_calls", "Billable calls, by the buyer that answered", cb))
        self.revenue = f(_Counter("ppcswitch_revenue_cents", "Revenue of billable calls, in cents", cb))
        self.payout = f(_Counter("ppcswitch_payout_cents", "Publisher payout of billable calls, in cents", cp))
        self.fallback = f(_Counter("ppcswitch_fallback_calls", "Calls the dialplan handled alone because the controller was unreachable"))
        self.dials = f(_Counter("ppcswitch_dial_outcomes", "Dial attempts by result", ("buyer", "outcome")))
        # Per buyer only sum and count (average ring time): a histogram per buyer would make
        # every scrape pay 13 series per buyer. The distribution is kept across buyers.
        self.ring = f(_Summary("ppcswitch_buyer_ring_seconds", "Time from dialling a buyer to its answer", ("buyer",)))
        self.ring_all = f(_Histogram("ppcswitch_ring_seconds", "Time from dialling a buyer to its answer, all buyers", RING_BUCKETS))
        self.decision = f(_Histogram("ppcswitch_routing_decision_seconds", "Time to take a routing decision", DECISION_BUCKETS, ("step",)))
        self.rtb_time = f(_Summary("ppcswitch_rtb_ping_seconds", "RTB ping round trip per buyer (sum and count)", ("buyer",)))
        self.rtb_time_all = f(_Histogram("ppcswitch_rtb_ping_all_seconds", "RTB ping round trip, all buyers", RTB_BUCKETS))
        self.rtb = f(_Counter("ppcswitch_rtb_pings", "RTB pings by outcome (bid, no_bid, timeout, error)", ("buyer", "outcome")))
        self.flags = f(_Counter("ppcswitch_fraud_flags", "Calls flagged as suspect, by publisher and reason", ("publisher", "reason")))
        self.write_time = f(_Histogram("ppcswitch_db_write_seconds", "Time to store one call record", WRITE_BUCKETS))
        self.agi_time = f(_Histogram("ppcswitch_agi_request_seconds", "FastAGI requests from connect to close, by script (Asterisk waits this long)", AGI_BUCKETS, ("script",)))
        self.gc_pause = f(_Histogram("ppcswitch_gc_pause_seconds", "Pauses of Python's garbage collector (every call waits them out)", GC_BUCKETS))
        self.records_failed = f(_Counter("ppcswitch_call_record_failures", "Call records the database refused"))
        self.pool_shortages = f(_Counter("ppcswitch_pool_shortages", "Number leases that reused a live lease: the pool is too small (attribution)", ("pool",)))
        self.postbacks = f(_Counter("ppcswitch_postbacks", "Postback/webhook delivery attempts by target kind and result (delivered, retry, failed)", ("kind", "result")))
        self._add(CPU)  # ppcswitch_cpu_seconds_total{stage}: the process's own counters (ppcswitch.cpu)
        self._components: Callable[[], dict[str, Any]] = dict

    def _add(self, family):
        self._families.append(family)
        return family

    # -- wiring -------------------------------------------------------------

    def extend(self, family):
        """Add a family owned by another module (anything with render(out)); returns it."""
        return self._add(family)

    def watch(self, components: Callable[[], dict[str, Any]]) -> None:
        """Read component health at scrape time from `components()`:
        ami, agi, writer, tracker, router (any may be missing while starting)."""
        self._components = components

    def time_gc(self) -> Callable[[], None]:
        """Observe every collection's pause (gc.callbacks); returns the function that stops it."""
        observe, started = self.gc_pause.observe, [0.0]

        def callback(phase: str, _info: dict) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            elif started[0]:
                observe(time.perf_counter() - started[0])

        gc.callbacks.append(callback)
        return lambda: gc.callbacks.remove(callback) if callback in gc.callbacks else None

    def time_router(self, router) -> None:
        """Measure the router's decisions without the router knowing about metrics:
        `decide` (a new call, or again after a ZIP; RTB auctions are timed by rtb_ping)
        and `next` (the next buyer after a failed Dial)."""
        for step in ("decide", "next"):
            original = getattr(router, step, None)
            if original is None:
                continue
            observe = self.decision.labels(step).observe

            def timed(*args, _original=original, _observe=observe, **kwargs):
                started = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    _observe(time.perf_counter() - started)

            setattr(router, step, timed)

    def render(self) -> bytes:
        out: list[str] = []
        for family in self._families:
            family.render(out)
        _component_state(self._components(), out)
        out.append(f"{_header('ppcswitch_node_info', 'Constant 1 labelled with this controller (cluster.node)', 'gauge')}"
                   f"ppcswitch_node_info{_labels(('node',), (self.node,))} 1.0\n")
        return "".join(out).encode("utf-8")

    # -- recording ------------------------------------------------------------

    def call_finished(self, record: CallRecord, network: Network) -> None:
        """Count one finished call record (called once per call by the tracker)."""
        campaign = _name(network.campaigns, record.campaign_id)
        publisher = _name(network.publishers, record.publisher_id)
        self.offered.labels(campaign, publisher).inc()
        self.calls.labels(campaign, publisher, record.outcome).inc()
        if record.outcome == Outcome.FALLBACK:
            self.fallback.inc()
        for attempt in record.attempts:
            if attempt.buyer_id is None:  # the dialplan's fallback leg: no controller decision
                continue
            buyer = _name(network.buyers, attempt.buyer_id)
            self.routed.labels(campaign, buyer).inc()
            self.dials.labels(buyer, DIAL_OUTCOMES.get(attempt.dial_status, "failed")).inc()
            if attempt.answered_at and attempt.started_at:
                ring = max(0.0, (attempt.answered_at - attempt.started_at).total_seconds())
                self.ring.labels(buyer).observe(ring)
                self.ring_all.observe(ring)
        if record.buyer_id is not None:
            buyer = _name(network.buyers, record.buyer_id)
            self.answered.labels(campaign, buyer).inc()
            if record.billable:
                self.billable.labels(campaign, publisher).inc()
                self.buyer_billable.labels(campaign, buyer).inc()
                self.revenue.labels(campaign, buyer).inc(record.revenue_cents)
                self.payout.labels(campaign, publisher).inc(record.payout_cents)

    def rtb_ping(self, buyer: str, seconds: float, outcome: str) -> None:
        """One RTB ping to `buyer` (by name): outcome is bid, no_bid, timeout or error."""
        if outcome not in RTB_OUTCOMES:
            raise ValueError(f"RTB outcome must be one of {RTB_OUTCOMES}, got {outcome!r}")
        self.rtb.labels(buyer, outcome).inc()
        self.rtb_time.labels(buyer).observe(seconds)
        self.rtb_time_all.observe(seconds)

    def fraud_flag(self, publisher: str, reason: str) -> None:
        """One call of `publisher` (by name) flagged; `reason` must come from a fixed set."""
        self.flags.labels(publisher, reason).inc()

    def record_failed(self) -> None:
        self.records_failed.inc()


def metrics_authorized(authorization: str, username: str, password: str) -> bool:
    """True when an HTTP Basic `Authorization` header carries exactly these credentials."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Both compared in constant time, so timing tells nothing about either.
    ok_user = hmac.compare_digest(user.encode(), username.encode())
    ok_password = hmac.compare_digest(given.encode(), password.encode())
    return bool(sep) and ok_user and ok_password


def _name(items: dict, key: int | None) -> str:
    item = items.get(key) if key is not None else None
    return item.name if item is not None else NONE


# -- exposition ---------------------------------------------------------------
# A scrape must stay cheap with thousands of series (bench/metrics.py): each series keeps
# its exposition line prefix, escaped once when the series is created, so a scrape only
# joins strings. The controller is one asyncio thread, so no locks are needed.


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    pairs = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _le(bound: str) -> str:
    return 'le="' + bound + '"'


def _header(name: str, doc: str, kind: str) -> str:
    return f"# HELP {name} {doc.replace(chr(92), chr(92) * 2)}\n# TYPE {name} {kind}\n"


class _Family:
    kind = ""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.labelnames = name, tuple(labelnames)
        self.header = _header(name, doc, self.kind)
        self.children: dict[tuple, Any] = {}
        if not labelnames:  # an unlabelled series exists (at 0) from the start
            self.labels()

    def labels(self, *values):
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
            child = self.children[values] = self._child(values)
        return child

    def render(self, out: list[str]) -> None:
        out.append(self.header)
        for child in self.children.values():
            child.render(out)


class _CounterSeries:
    __slots__ = ("line", "value")

    def __init__(self, line: str) -> None:
        self.line, self.value = line, 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount

    def render(self, out: list[str]) -> None:
        out.append(f"{self.line}{self.value!r}\n")


class _Counter(_Family):
    kind = "counter"

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name + "_total", doc, labelnames)

    def _child(self, values: tuple) -> _CounterSeries:
        return _CounterSeries(f"{self.name}{_labels(self.labelnames, values)} ")

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)


class _SummarySeries:
    __slots__ = ("sum_line", "count_line", "sum", "count")

    def __init__(self, name: str, labels: str) -> None:
        self.sum_line, self.count_line = f"{name}_sum{labels} ", f"{name}_count{labels} "
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1

    def render(self, out: list[str]) -> None:
        out.append(f"{self.sum_line}{self.sum!r}\n{self.count_line}{self.count}\n")


class _Summary(_Family):
    """Sum and count only (no quantiles): averages, cheap per label."""

    kind = "summary"

    def _child(self, values: tuple) -> _SummarySeries:
        return _SummarySeries(self.name, _labels(self.labelnames, values))


class _HistogramSeries(_SummarySeries):
    __slots__ = ("bounds", "bucket_lines", "counts")

    def __init__(self, name: str, names: tuple[str, ...], values: tuple, bounds: tuple[float, ...]) -> None:
        super().__init__(name, _labels(names, values))
        self.bounds = bounds
        les = [repr(float(b)) for b in bounds] + ["+Inf"]
        self.bucket_lines = [f"{name}_bucket{_labels(names, values, _le(le))} " for le in les]
        self.counts = [0] * len(les)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    @contextlib.contextmanager
    def time(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)

    def render(self, out: list[str]) -> None:
        total = 0
        for line, n in zip(self.bucket_lines, self.counts):
            total += n
            out.append(f"{line}{total}\n")
        super().render(out)


class _Histogram(_Family):
    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...], labelnames: tuple[str, ...] = ()) -> None:
        self.buckets = tuple(sorted(buckets))
        super().__init__(name, doc, labelnames)

    def _child(self, values: tuple) -> _HistogramSeries:
        return _HistogramSeries(self.name, self.labelnames, values, self.buckets)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def time(self):
        return self.labels().time()


def _gauge(out: list[str], name: str, doc: str, value: float) -> None:
    out.append(f"{_header(name, doc, 'gauge')}{name} {float(value)!r}\n")


def _counter(out: list[str], name: str, doc: str, value: float) -> None:
    out.append(f"{_header(name, doc, 'counter')}{name} {float(value)!r}\n")


def _component_state(c: dict[str, Any], out: list[str]) -> None:
    """Health read from the running components at scrape time (any may be missing while starting)."""
    ami, agi, writer, tracker, router = (c.get(k) for k in ("ami", "agi", "writer", "tracker", "router"))
    if ami is not None:
        _gauge(out, "ppcswitch_ami_connected", "1 when logged in to Asterisk's AMI", 1 if ami.connected else 0)
        _counter(out, "ppcswitch_ami_reconnects_total", "AMI reconnects since start", ami.reconnects)
        _gauge(out, "ppcswitch_ami_event_lag_seconds", "Delay of the last AMI event behind its Asterisk timestamp", ami.last_event_lag)
    if agi is not None:
        _gauge(out, "ppcswitch_agi_up", "1 when the FastAGI server listens", 1 if getattr(agi, "_server", None) is not None else 0)
        _counter(out, "ppcswitch_agi_requests_total", "FastAGI requests served", agi.stats["requests"])
        _counter(out, "ppcswitch_agi_dropped_connections_total", "FastAGI connections dropped as malformed or slow", agi.stats["dropped"])
        _counter(out, "ppcswitch_agi_errors_total", "FastAGI requests whose handler failed", agi.stats["errors"])
    if writer is not None:
        _gauge(out, "ppcswitch_db_write_queue_depth", "Writes waiting for the database writer", writer.depth)
        _gauge(out, "ppcswitch_db_last_write_seconds", "Duration of the writer's last job, retries included", writer.last_write_seconds)
        _counter(out, "ppcswitch_db_write_retries_total", "Transient database failures retried", writer.retries)
    if tracker is not None:
        _gauge(out, "ppcswitch_live_calls", "Calls in progress", len(tracker.calls))
    if router is not None:
        _buyer_load(router, out)
        shared = getattr(router, "reservations", None)
        if hasattr(shared, "admitted"):  # cluster.reservations = postgresql (routing.shared)
            name = "ppcswitch_cluster_reservations_total"
            out.append(_header(name, "Shared reservations asked of PostgreSQL, by result", "counter"))
            for result, n in (("admitted", shared.admitted), ("refused", shared.refused), ("error", shared.errors)):
                out.append(f'{name}{{result="{result}"}} {float(n)!r}\n')
            name = "ppcswitch_cluster_reservation_seconds"
            out.append(_header(name, "Time of each shared reservation (one round trip to PostgreSQL)", "summary"))
            recent = sorted(shared.round_trips)
            for q in (0.5, 0.99):  # over the recent admissions (up to the last 10000)
                if recent:
                    out.append(f'{name}{{quantile="{q}"}} {recent[min(len(recent) - 1, int(len(recent) * q))]!r}\n')
            out.append(f"{name}_sum {shared.seconds_sum!r}\n{name}_count {float(shared.admitted + shared.refused + shared.errors)!r}\n")
            _gauge(out, "ppcswitch_cluster_write_queue_depth",
                   "Shared reservation writes (releases, settled counts) waiting for PostgreSQL", shared.queue.qsize())
            _counter(out, "ppcswitch_cluster_write_retries_total",
                     "Shared reservation writes tried again while PostgreSQL was unreachable", shared.retries)


def _buyer_load(router, out: list[str]) -> None:
    """Live legs and cap per buyer, only for buyers with live legs: a series per configured
    buyer would make every scrape pay for idle buyers (absent means 0)."""
    network = router.network
    live = [_header("ppcswitch_buyer_live_calls", "Live legs (ringing or connected) per buyer", "gauge")]
    cap = [_header("ppcswitch_buyer_concurrency_cap", "Concurrency cap of buyers with live legs", "gauge")]
    use = [_header("ppcswitch_buyer_cap_use_ratio", "Live legs over concurrency cap (1 = at cap)", "gauge")]
    for buyer_id, count in router.live.snapshot().items():
        buyer = network.buyers.get(buyer_id)
        label = _labels(("buyer",), (buyer.name if buyer is not None else NONE,))
        live.append(f"ppcswitch_buyer_live_calls{label} {float(count)!r}\n")
        if buyer is not None and buyer.concurrency_cap:
            cap.append(f"ppcswitch_buyer_concurrency_cap{label} {float(buyer.concurrency_cap)!r}\n")
            use.append(f"ppcswitch_buyer_cap_use_ratio{label} {count / buyer.concurrency_cap!r}\n")
    out += live + cap + use


# For features that add their own series (ppcswitch/intelligence): the same counter and text header.
Counter = _Counter
header = _header
