"""The per-snapshot routing plan (routing.plan) decides exactly what the plain reading of the rules decides.

route() walks a precomputed plan (schedules as a byte per minute of the week, closed dates as day
ordinals, answers kept per minute, geography per state / area code, counts per buyer and hour);
skip_reason() reads the rules one by one. These properties hold the two to the same answers.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppcswitch.routing import geo
from ppcswitch.routing.counters import Counters
from ppcswitch.routing.engine import CallFacts, route, skip_reason
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network, Publisher, TrackingNumber
from ppcswitch.routing.plan import WEEK_MINUTES, CampaignPlan, week_bits
from ppcswitch.routing.rules import DAYS, parse_hours, parse_rules
from ppcswitch.routing.service import Router

NUMBER = "+18005550100"
# Zones with DST changes at 02:00 / 01:00 UTC / 02:00 with half an hour (Lord Howe), one without DST at +05:45.
ZONES = ["UTC", "America/New_York", "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu"]
# DST changes around which the instants are drawn (UTC epochs), plus an ordinary Monday noon.
CHANGES = [datetime.fromisoformat(s).timestamp() for s in (
    "2026-03-08T07:00:00+00:00", "2026-11-01T06:00:00+00:00",  # New York: spring forward, fall back
    "2026-03-08T10:00:00+00:00", "2026-11-01T09:00:00+00:00",  # Los Angeles
    "2026-03-29T01:00:00+00:00", "2026-10-25T01:00:00+00:00",  # London
    "2026-04-04T15:00:00+00:00", "2026-10-03T15:30:00+00:00",  # Lord Howe (30 minutes)
    "2026-12-31T23:30:00+00:00", "2026-11-23T12:00:00+00:00")]

instant_st = st.builds(lambda base, off, frac: base + off + frac, st.sampled_from(CHANGES),
                       st.integers(-3 * 86400, 3 * 86400), st.sampled_from([0.0, 0.25, 59.999]))


@st.composite
def hours_st(draw) -> str:
    clauses = []
    for _ in range(draw(st.integers(0, 3))):
        lo_day, span = draw(st.integers(0, 6)), draw(st.integers(0, 6))
        days = DAYS[lo_day] if span == 0 else f"{DAYS[lo_day]}-{DAYS[(lo_day + span) % 7]}"
        spans = []
        for _ in range(draw(st.integers(1, 2))):
            lo, hi = draw(st.integers(0, 1439)), draw(st.integers(0, 1440))
            if lo == hi:
                hi = (hi + 1) % 1440 or 1440
            spans.append(f"{lo // 60:02d}:{lo % 60:02d}-{hi // 60:02d}:{hi % 60:02d}")
        clauses.append(f"{days} {', '.join(spans)}")
    return "; ".join(clauses)


def one_link_plan(rules) -> CampaignPlan:
    network = Network(buyers={1: Buyer(1, "B", "PJSIP/x", rules=rules)},
                      campaigns={5: Campaign(5, "C", buyers=(CampaignBuyer(1, 1, rules),))})
    return CampaignPlan(network.campaigns[5], network)


def test_week_bits_is_the_weekly_table():
    weekly = parse_hours("mon-fri 09:00-17:00; sat 22:00-02:00")
    bits = week_bits(weekly)
    assert len(bits) == WEEK_MINUTES and sum(bits) == 5 * 480 + 120 + 120
    assert bits[9 * 60] == 1 and bits[9 * 60 - 1] == 0 and bits[17 * 60 - 1] == 1 and bits[17 * 60] == 0
    assert bits[6 * 1440 + 1] == 1 and bits[6 * 1440 + 120] == 0  # Saturday's span runs into Sunday 02:00
    assert week_bits(parse_hours("mon-fri 09:00-17:00; sat 22:00-02:00")) is bits  # shared by value


@settings(max_examples=400, deadline=None)
@given(hours_st(), st.sampled_from(ZONES), instant_st, st.booleans())
def test_schedule_bits_match_the_plain_reading_across_dst(hours, tz, when, closed_today):
    local = datetime.fromtimestamp(when, ZoneInfo(tz))
    rules = parse_rules({"timezone": tz, "hours": hours,
                         "closed_dates": [local.date().isoformat()] if closed_today else ["2030-01-01"]})
    _, closed = one_link_plan(rules).at(when)
    entry = closed[0]
    assert (entry is None) == rules.is_open(local), (hours, tz, local)
    if entry is not None:
        assert entry == (1, "closed:date" if closed_today else "closed:schedule")
    # The plain reading with skip_reason: same answer.
    assert skip_reason(Buyer(1, "B", "PJSIP/x"), rules, None, when) == ("" if entry is None else entry[1])


# --- a whole decision: the plan against the rules read one by one ------------------------------------

rules_st = st.fixed_dictionaries({}, optional={
    "timezone": st.sampled_from(ZONES),
    "hours": hours_st(),
    "closed_dates": st.lists(st.sampled_from(["2026-03-08", "2026-11-01", "2026-11-23", "2027-01-01"]), max_size=2),
    "states_allowed": st.lists(st.sampled_from(["CA", "NY", "TX", "FL"]), max_size=2),
    "states_denied": st.lists(st.sampled_from(["CA", "NY", "TX"]), max_size=2),
    "area_codes_allowed": st.lists(st.sampled_from(["415", "212", "214"]), max_size=2),
    "area_codes_denied": st.lists(st.sampled_from(["415", "212", "999"]), max_size=1),
    "cap_hourly": st.integers(0, 3), "cap_daily": st.integers(0, 4), "cap_monthly": st.integers(0, 6),
    "cap_total": st.integers(0, 8), "budget_daily": st.sampled_from(["0", "40.00", "100.00"]),
    "budget_monthly": st.sampled_from(["80.00", "500.00"]), "duplicate_days": st.integers(0, 3),
    "min_gap_seconds": st.integers(0, 600), "paused": st.booleans(), "weight": st.integers(1, 5),
})
link_st = st.tuples(
    st.fixed_dictionaries({"paused": st.booleans(), "concurrency_cap": st.none() | st.integers(0, 3),
                           "revenue_cents": st.sampled_from([0, 4000])}),
    rules_st, rules_st | st.just({}), st.sampled_from([1, 2, 3, 1000]), st.integers(0, 3), st.booleans())
CALLERS = ["+14155550123", "+12125550123", "+12145550123", "+18885550123"]


def reference(network: Network, f: CallFacts, live, counters: Counters, rng: random.Random):
    """The routing loop as it was before the plan: skip_reason() per link, then the same weighted sort."""
    campaign = network.campaigns[5]
    ranked, trace = [], []
    for link in campaign.buyers:
        buyer = network.buyers.get(link.buyer_id)
        reason = skip_reason(buyer, link.rules, f, f.at, live, counters) if buyer else "buyer_missing"
        if reason:
            trace.append((link.buyer_id, reason))
            continue
        w = link.rules.weight
        ranked.append((link.priority, -(rng.random() if w == 1 else rng.random() ** (1.0 / w)), link.buyer_id))
    ranked.sort()
    candidates = [bid for _, _, bid in ranked]
    last = counters.last_buyer(f.caller) if f.caller_valid else None
    if last is not None and last in candidates and candidates[0] != last:
        candidates.remove(last)
        candidates.insert(0, last)
    return tuple(candidates), trace, (last if last in candidates else None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(link_st, min_size=1, max_size=8), instant_st, st.sampled_from(CALLERS), st.booleans(),
       st.sampled_from(["", "TX", "CA"]), st.lists(st.tuples(st.integers(1, 9), st.integers(-4 * 86400, 0),
                                                       st.sampled_from(CALLERS)), max_size=25),
       st.integers(0, 2**32), st.lists(st.integers(1, 7200), min_size=1, max_size=3))
def test_route_decides_what_the_rules_read_one_by_one_decide(specs, now, caller, valid, zip_state, history, seed,
                                                              later):
    buyers, links, live = {}, [], {}
    for i, (b, buyer_rules, link_rules, prio, lv, missing) in enumerate(specs, 1):
        if not missing or i == 1:
            buyers[i] = Buyer(i, f"B{i}", "PJSIP/x", rules=parse_rules(buyer_rules), **b)
        links.append(CampaignBuyer(i, prio, parse_rules({**buyer_rules, **link_rules})))
        live[i] = lv
    network = Network(buyers=buyers, publishers={7: Publisher(7, "P")},
                      campaigns={5: Campaign(5, "C", buyers=tuple(links), repeat_caller=True)},
                      numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})
    counters = Counters()
    for bid, ago, who in history:
        counters.delivered_call(bid % len(specs) + 1, ZONES[bid % len(ZONES)], now + ago, who, 4000)
        if bid % 3 == 0:
            counters.offered(bid % len(specs) + 1, now + ago / 1000)
    npa = geo.area_code(caller)
    times = [now] + [now + d for d in later]
    for k, at in enumerate(times):
        f = CallFacts(NUMBER, NUMBER, caller, caller_valid=valid, at=at, area_code=npa,
                      state=zip_state or geo.state_of_area_code(npa))
        d = route(network, f, live, counters=counters, rng=random.Random(seed))
        assert (d.candidates, d.trace, d.sticky_buyer) == reference(network, f, lambda b: live.get(b, 0), counters,
                                                                    random.Random(seed))
        # Counts move between calls: the plan must not answer from stale counts.
        if d.candidates:
            counters.delivered_call(d.candidates[0], ZONES[k % len(ZONES)], at, caller, 4000)


def test_a_delivery_between_two_calls_reaches_the_next_decision():
    rules = parse_rules({"timezone": "America/New_York", "cap_hourly": 1})
    network = Network(buyers={1: Buyer(1, "B", "PJSIP/x", rules=rules)}, publishers={7: Publisher(7, "P")},
                      campaigns={5: Campaign(5, "C", buyers=(CampaignBuyer(1, 1, rules),))},
                      numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})
    now = datetime.fromisoformat("2026-11-23T15:10:00+00:00").timestamp()
    f = CallFacts(NUMBER, NUMBER, "+14155550123", caller_valid=True, at=now)
    c = Counters()
    assert route(network, f, {}, counters=c).candidates == (1,)
    c.delivered_call(1, "America/New_York", now - 60)
    assert route(network, f, {}, counters=c).trace == [(1, "cap_hourly:1")]


def test_totals_read_back_at_start_reach_the_next_decision():
    """storage.repo_routing.load_history updates counters.total in place: remembered room is dropped."""
    rules = parse_rules({"cap_total": 3})
    network = Network(buyers={1: Buyer(1, "B", "PJSIP/x", rules=rules)}, publishers={7: Publisher(7, "P")},
                      campaigns={5: Campaign(5, "C", buyers=(CampaignBuyer(1, 1, rules),))},
                      numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})
    f = CallFacts(NUMBER, NUMBER, "+14155550123", caller_valid=True,
                  at=datetime.fromisoformat("2026-11-23T15:10:00+00:00").timestamp())
    c = Counters()
    assert route(network, f, {}, counters=c).candidates == (1,)
    c.total.update({1: 3})
    assert route(network, f, {}, counters=c).trace == [(1, "cap_total:3")]
    c.total = {1: 1}
    assert route(network, f, {}, counters=c).candidates == (1,)
    assert route(network, f, {1: 2}, counters=c).trace == [(1, "cap_total:3")]  # live legs count too


def test_a_new_snapshot_gets_its_own_plan():
    rules = parse_rules({"states_allowed": ["CA"]})
    network = Network(buyers={1: Buyer(1, "B", "PJSIP/x", rules=rules), 2: Buyer(2, "C", "PJSIP/y")},
                      publishers={7: Publisher(7, "P")},
                      campaigns={5: Campaign(5, "C", buyers=(CampaignBuyer(1, 1, rules), CampaignBuyer(2, 2)))},
                      numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})
    r = Router(network)
    r.first("L1", r.facts(NUMBER, "+14155550123"))
    assert r.routes.get("L1").decision.candidates == (1, 2)
    r.swap(dataclasses.replace(network, buyers={**network.buyers, 1: dataclasses.replace(network.buyers[1],
                                                                                          paused=True)}))
    r.first("L2", r.facts(NUMBER, "+14155550123"))
    assert r.routes.get("L2").decision.candidates == (2,) and r.routes.get("L2").decision.trace == [(1, "paused")]


def test_tiers_never_mix_even_at_the_highest_priorities():
    """The sort key is priority + 0.5 - u/2 (a float): neighbouring tiers stay apart up to priority 1000."""
    links = [CampaignBuyer(i, 999 + i % 2, parse_rules({"weight": 1 + i % 7})) for i in range(1, 21)]
    network = Network(buyers={i: Buyer(i, f"B{i}", "PJSIP/x") for i in range(1, 21)},
                      publishers={7: Publisher(7, "P")}, campaigns={5: Campaign(5, "C", buyers=tuple(links))},
                      numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})
    rng = random.Random(3)
    f = CallFacts(NUMBER, NUMBER, "+14155550123", caller_valid=True,
                  at=datetime.fromisoformat("2026-11-23T15:10:00+00:00").timestamp())
    firsts = set()
    for _ in range(2000):
        got = route(network, f, {}, rng=rng).candidates
        assert [1000 if b % 2 else 999 for b in got] == [999] * 10 + [1000] * 10
        assert sorted(got) == list(range(1, 21))
        firsts.add(got[0])
    assert firsts == {2, 4, 6, 8, 10, 12, 14, 16, 18, 20}  # inside the tier, any buyer can come first


def test_geography_answers_kept_per_place_follow_the_caller():
    """plan.places() keeps one answer per (state, area code): a second caller from elsewhere gets its own."""
    rules = parse_rules({"states_allowed": ["CA"], "area_codes_denied": ["310"]})
    network = Network(buyers={1: Buyer(1, "B", "PJSIP/x", rules=rules), 2: Buyer(2, "C", "PJSIP/y")},
                      publishers={7: Publisher(7, "P")},
                      campaigns={5: Campaign(5, "C", buyers=(CampaignBuyer(1, 1, rules), CampaignBuyer(2, 2)))},
                      numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})
    at = datetime.fromisoformat("2026-11-23T15:10:00+00:00").timestamp()

    def call(state, npa):
        d = route(network, CallFacts(NUMBER, NUMBER, f"+1{npa}5550123", caller_valid=True, at=at,
                                     area_code=npa, state=state), {})
        return d.candidates, d.trace

    for _ in range(2):  # the second round answers from what the first worked out
        assert call("CA", "415") == ((1, 2), [])
        assert call("TX", "512") == ((2,), [(1, "state_not_allowed:TX")])
        assert call("CA", "310") == ((2,), [(1, "area_code_denied:310")])
        assert call("", "") == ((2,), [(1, "state_unknown")])
