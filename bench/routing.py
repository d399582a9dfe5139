"""Routing decisions per second and their latency, next to a plain dict lookup of the number.

    python bench/routing.py [--decisions 200000] [--seed 1]

100,000 tracking numbers, 1,000 buyers on 100 campaigns (20 buyers each, in
3 priority tiers, weighted), every rule switched on: schedules in 4 time zones
with closed dates, state and area-code geography, concurrency / hourly / daily
/ monthly / total caps, daily and monthly budgets, the duplicate rule, a
minimum gap, repeat callers; counters hold 200,000 past deliveries. No RTB.
The calls are decided three times: cold (caches filling), timed one by one
(latency), then untimed (decisions per second).
Runs on one core (one thread, no I/O), as the controller's event loop does.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ppcswitch.routing import geo  # noqa: E402
from ppcswitch.routing.counters import Counters  # noqa: E402
from ppcswitch.routing.engine import CallFacts, route  # noqa: E402
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network, Publisher, TrackingNumber  # noqa: E402
from ppcswitch.routing.rules import merged, parse_rules  # noqa: E402

ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
STATES = ["CA", "TX", "FL", "NY", "PA", "IL", "OH", "GA", "NC", "MI"]


def build(rng: random.Random) -> tuple[Network, list[str]]:
    buyers, rules_json = {}, {}
    for bid in range(1, 1001):
        data = {
            "timezone": rng.choice(ZONES),
            "hours": "mon-fri 00:00-24:00; sat-sun 08:00-22:00",
            "closed_dates": ["2026-12-25", "2027-01-01"],
            "states_denied": rng.sample(STATES, 1),
            "area_codes_denied": ["999"],
            "cap_hourly": 50, "cap_daily": 400, "cap_monthly": 9000, "cap_total": 1_000_000,
            "budget_daily": "50000.00", "budget_monthly": "900000.00",
            "duplicate_days": 30, "min_gap_seconds": 0, "weight": rng.randint(1, 10),
        }
        rules_json[bid] = data
        buyers[bid] = Buyer(bid, f"B{bid}", f"PJSIP/ppcswitch-buyer/sip:b{bid}@10.0.0.1", concurrency_cap=20,
                            revenue_cents=4000, rules=parse_rules(data))
    campaigns = {}
    for cid in range(1, 101):
        ids = range((cid - 1) * 10 + 1, (cid - 1) * 10 + 11)
        extra = rng.sample(range(1, 1001), 10)
        links = []
        for i, bid in enumerate(list(ids) + extra):
            override = {"states_allowed": rng.sample(STATES, 6)} if i % 4 == 0 else {}
            links.append(CampaignBuyer(bid, 1 + i % 3, merged(rules_json[bid], override)))
        campaigns[cid] = Campaign(cid, f"C{cid}", buyers=tuple(links), repeat_caller=True)
    publishers = {p: Publisher(p, f"P{p}") for p in range(1, 51)}
    numbers = {}
    for n in range(100_000):
        e164 = f"+1800{n:07d}"
        numbers[e164] = TrackingNumber(e164, 1 + n % 100, 1 + n % 50)
    return Network(buyers=buyers, publishers=publishers, campaigns=campaigns, numbers=numbers), list(numbers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    network, numbers = build(rng)
    now = time.time()
    npas = [npa for npa in geo.AREA_CODE_STATE][:200]
    callers = [f"+1{rng.choice(npas)}{rng.randint(2000000, 9999999)}" for _ in range(50_000)]
    counters = Counters()
    for _ in range(200_000):  # history: deliveries over the last 40 days
        counters.delivered_call(rng.randint(1, 1000), rng.choice(ZONES), now - rng.uniform(0, 40 * 86400),
                                rng.choice(callers), 4000)
    live = {bid: rng.randint(0, 10) for bid in range(1, 1001)}
    calls = []
    for _ in range(args.decisions):
        caller = rng.choice(callers)
        npa = caller[2:5]
        calls.append(CallFacts(rng.choice(numbers), "", caller, caller_valid=True, at=now + rng.uniform(0, 3600),
                               area_code=npa, state=geo.state_of_area_code(npa)))

    # The long-lived snapshot is frozen out of the collector, as a controller would do after a reload.
    gc.collect()
    gc.freeze()
    if os.environ.get("BENCH_NO_GC"):
        gc.disable()
    # Baseline: a plain dict lookup of the dialled number, same calls, same loop shape.
    table = network.numbers
    lookup_times = []
    perf = time.perf_counter_ns
    for f in calls:
        t0 = perf()
        table.get(f.tracking_number)
        lookup_times.append(perf() - t0)

    # Pass 1 (cold): every cache the plan keeps (minutes, places, cap room) is filled as calls come.
    # Pass 2: latency of each decision, timed one by one. Pass 3: decisions per second with no timer
    # in the loop. Passes 2 and 3 see what a running controller sees: the plan already worked out.
    decision_rng = random.Random(args.seed)
    start = time.perf_counter()
    for f in calls:
        route(network, f, live, False, counters, decision_rng)
    cold = time.perf_counter() - start
    times = []
    routed = skipped = 0
    for f in calls:
        t0 = perf()
        d = route(network, f, live, False, counters, decision_rng)
        times.append(perf() - t0)
        routed += bool(d.candidates)
        skipped += len(d.trace)
    start = time.perf_counter()
    for f in calls:
        route(network, f, live, False, counters, decision_rng)
    wall = time.perf_counter() - start

    def pct(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))] / 1000

    print(f"routing benchmark: {len(numbers):,} tracking numbers, {len(network.buyers):,} buyers, "
          f"{len(network.campaigns)} campaigns x 20 buyers, all rules on, {len(calls):,} decisions, one core")
    print(f"  dict lookup of the number : p50 {pct(lookup_times, .5):7.2f} us   p99 {pct(lookup_times, .99):7.2f} us")
    print(f"  routing decision          : p50 {pct(times, .5):7.2f} us   p99 {pct(times, .99):7.2f} us   "
          f"mean {statistics.fmean(times) / 1000:.2f} us")
    print(f"  decisions per second      : {len(calls) / wall:,.0f}  (first pass, caches cold: {len(calls) / cold:,.0f})")
    print(f"  calls with a buyer        : {routed / len(calls):.1%}; buyers skipped per call: {skipped / len(calls):.1f}")


if __name__ == "__main__":
    main()
