"""Scrape cost of /metrics with 1,000 buyers and 1,000 publishers configured.

    python bench/metrics.py [--repeat 200]

Builds the controller's real Metrics, Router and LiveCalls over an in-memory
network (10 campaigns of 100 buyers, 1,000 publishers with one tracking
number each), records finished calls through Metrics.call_finished (the
tracker's hook), and times Metrics.render() (what the /metrics view returns).
Cases, all in this run:

  empty         nothing configured, no calls (the fixed cost of a scrape)
  configured    1,000 buyers and 1,000 publishers configured, no calls yet
  typical       as configured, 100 publishers have had 10 calls each, spread over
                their campaigns' buyers (most of the 1,000), 20 buyers with live legs
  all-active    every publisher and every buyer has had calls of every
                outcome, 100 buyers with live legs (the worst case)

Figures: median and p95 milliseconds per render, samples in the scrape, bytes;
and as the baseline, prometheus_client's generate_latest() formatting the very
same families (what /metrics used before ppcswitch kept its own exposition lines).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ppcswitch.calls import Attempt, CallRecord, Outcome  # noqa: E402
from ppcswitch.metrics import Metrics  # noqa: E402
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network, Publisher, TrackingNumber  # noqa: E402
from ppcswitch.routing.service import Router  # noqa: E402

CAMPAIGNS, BUYERS, PUBLISHERS = 10, 1000, 1000


def network(configured: bool) -> Network:
    if not configured:
        return Network()
    buyers = {i: Buyer(i, f"Buyer {i:04d}", f"PJSIP/ppcswitch-buyer/sip:b{i}@203.0.113.1", concurrency_cap=5, revenue_cents=4000)
              for i in range(1, BUYERS + 1)}
    per = BUYERS // CAMPAIGNS
    campaigns = {c: Campaign(c, f"Campaign {c}", buyers=tuple(CampaignBuyer(b, 1) for b in range(1 + (c - 1) * per, 1 + c * per)))
                 for c in range(1, CAMPAIGNS + 1)}
    publishers = {p: Publisher(p, f"Publisher {p:04d}", payout_cents=1250) for p in range(1, PUBLISHERS + 1)}
    numbers = {f"+1800555{p:04d}": TrackingNumber(f"+1800555{p:04d}", 1 + p % CAMPAIGNS, p) for p in range(1, PUBLISHERS + 1)}
    return Network(buyers, publishers, campaigns, numbers, version=1)


def record(n: int, net: Network, publisher_id: int, buyer_id: int, outcome: str) -> CallRecord:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    answered = outcome == Outcome.CONNECTED
    attempt = Attempt(1, buyer_id, "ANSWER" if answered else "BUSY", start, start + timedelta(seconds=4) if answered else None,
                      start + timedelta(seconds=90))
    campaign_id = net.numbers[f"+1800555{publisher_id:04d}"].campaign_id
    return CallRecord(f"bench.{n}", "+18005550001", "+14155550123", True, start, start + timedelta(seconds=90), outcome,
                      publisher_id=publisher_id, campaign_id=campaign_id, buyer_id=buyer_id if answered else None,
                      answered_at=attempt.answered_at, connected_ms=86000 if answered else 0, billable=answered,
                      revenue_cents=4000 if answered else 0, payout_cents=1250 if answered else 0,
                      attempts=[attempt] if outcome in (Outcome.CONNECTED, Outcome.NOT_CONNECTED) else [])


def buyer_for(net: Network, publisher_id: int, k: int) -> int:
    campaign = net.campaigns[net.numbers[f"+1800555{publisher_id:04d}"].campaign_id]
    return campaign.buyers[k % len(campaign.buyers)].buyer_id


def build(case: str) -> Metrics:
    net = network(case != "empty")
    metrics, router = Metrics(), Router(net)
    metrics.watch(lambda: {"router": router})
    n = 0
    outcomes = [Outcome.CONNECTED, Outcome.NOT_CONNECTED, Outcome.NO_BUYER, Outcome.REJECTED, Outcome.FALLBACK, Outcome.ABANDONED]
    if case == "typical":
        for p in range(1, 101):
            for k in range(10):
                n += 1
                metrics.call_finished(record(n, net, p, buyer_for(net, p, p + k), outcomes[k % 2]), net)
        live = 20
    elif case == "all-active":
        for p in range(1, PUBLISHERS + 1):
            for k, outcome in enumerate(outcomes):
                n += 1
                metrics.call_finished(record(n, net, p, buyer_for(net, p, p + k), outcome), net)
        per = BUYERS // CAMPAIGNS
        for b in range(1, BUYERS + 1):  # every buyer answered at least once
            c = (b - 1) // per + 1
            p = ((c - 1) % CAMPAIGNS) or CAMPAIGNS  # a publisher whose number is in campaign c
            n += 1
            metrics.call_finished(record(n, net, p, b, Outcome.CONNECTED), net)
        live = 100
    else:
        live = 0
    for i in range(live):
        router.live.take(f"live.{i}", 1, 1 + i * (BUYERS // max(live, 1)))
    return metrics


def timed(render, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        render()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


def client_registry(body: bytes) -> CollectorRegistry:
    """The same families, held and formatted by prometheus_client."""
    families = list(text_string_to_metric_families(body.decode()))

    class Same:
        def collect(self):
            return families

    registry = CollectorRegistry()
    registry.register(Same())
    return registry


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    print(f"{'case':<12} {'samples':>8} {'bytes':>8} {'median ms':>10} {'p95 ms':>8}   "
          f"{'baseline: prometheus_client median ms':>38} {'p95 ms':>8}")
    for case in ("empty", "configured", "typical", "all-active"):
        metrics = build(case)
        body = metrics.render()
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        med, p95 = timed(metrics.render, args.repeat)
        registry = client_registry(body)
        base_med, base_p95 = timed(lambda: generate_latest(registry), max(5, args.repeat // 10))
        print(f"{case:<12} {samples:>8} {len(body):>8} {med:>10.2f} {p95:>8.2f}   {base_med:>38.2f} {base_p95:>8.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
