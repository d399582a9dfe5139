"""The routing core's rules and selection, pure and in memory (unit + property tests)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppcswitch import channel_vars as cv
from ppcswitch.routing import geo
from ppcswitch.routing.counters import Counters
from ppcswitch.routing.engine import CallFacts, route, skip_reason
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network, Publisher, TrackingNumber
from ppcswitch.routing.rules import RulesError, normalize, parse_rules
from ppcswitch.routing.service import Router

NY = ZoneInfo("America/New_York")
NUMBER = "+18005550100"


def at(y, mo, d, h=0, mi=0, s=0, tz=NY, fold=0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=tz, fold=fold).timestamp()


def net(specs, campaign_kw=None) -> Network:
    """specs: list of (buyer kwargs incl. rules dict, priority)."""
    buyers, links = {}, []
    for i, (kw, prio) in enumerate(specs, 1):
        kw = dict(kw)
        rules = parse_rules(kw.pop("rules", {}))
        buyers[i] = Buyer(i, f"B{i}", f"PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:{5070 + i}", rules=rules, **kw)
        links.append(CampaignBuyer(i, prio, rules))
    return Network(buyers=buyers, publishers={7: Publisher(7, "P")},
                   campaigns={5: Campaign(5, "HVAC", buyers=tuple(links), **(campaign_kw or {}))},
                   numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})


def facts(when: float, caller="+14155550123", state=None, **kw) -> CallFacts:
    npa = geo.area_code(caller)
    return CallFacts(NUMBER, NUMBER, caller, caller_valid=True, at=when, area_code=npa,
                     state=geo.state_of_area_code(npa) if state is None else state, **kw)


def decide(network, f, live=None, counters=None, rng=None):
    live = live or {}
    return route(network, f, live, counters=counters, rng=rng or random.Random(1))


# --- schedules -----------------------------------------------------------------

def test_schedule_boundaries_in_the_buyers_zone():
    n = net([({"rules": {"timezone": "America/New_York", "hours": "mon-fri 09:00-17:00"}}, 1)])
    # 2026-11-23 is a Monday.
    for when, open_ in [((8, 59, 59), False), ((9, 0, 0), True), ((16, 59, 59), True), ((17, 0, 0), False)]:
        d = decide(n, facts(at(2026, 11, 23, *when)))
        assert (d.candidates == (1,)) is open_, when
        if not open_:
            assert d.trace == [(1, "closed:schedule")]
    assert decide(n, facts(at(2026, 11, 22, 12))).trace == [(1, "closed:schedule")]  # Sunday


def test_schedule_past_midnight_closed_dates_and_dst():
    rules = {"timezone": "America/Los_Angeles", "hours": "fri 22:00-02:00", "closed_dates": ["2026-12-25"]}
    n = net([({"rules": rules}, 1)])
    la = ZoneInfo("America/Los_Angeles")
    assert decide(n, facts(at(2026, 11, 27, 23, tz=la))).candidates == (1,)  # Friday night
    assert decide(n, facts(at(2026, 11, 28, 1, 59, tz=la))).candidates == (1,)  # into Saturday
    assert decide(n, facts(at(2026, 11, 28, 2, 0, tz=la))).candidates == ()
    assert decide(n, facts(at(2026, 12, 25, 23, tz=la))).trace == [(1, "closed:date")]
    # Open 09:00-17:00 local on both sides of the spring-forward change: UTC hours shift by one.
    day = net([({"rules": {"timezone": "America/New_York", "hours": "mon-sun 09:00-17:00"}}, 1)])
    assert decide(day, facts(datetime(2026, 3, 7, 14, tzinfo=UTC).timestamp())).candidates == (1,)  # 09:00 EST
    assert decide(day, facts(datetime(2026, 3, 9, 13, tzinfo=UTC).timestamp())).candidates == (1,)  # 09:00 EDT
    assert decide(day, facts(datetime(2026, 3, 9, 12, 59, tzinfo=UTC).timestamp())).candidates == ()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.integers(0, 23), st.integers(0, 59), st.integers(0, 1439), st.integers(1, 1440))
def test_schedule_matches_a_plain_reading(day, hour, minute, lo, length):
    hi = min(1440, lo + length)
    text = f"{('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')[day]} {lo // 60:02d}:{lo % 60:02d}-{hi // 60:02d}:{hi % 60:02d}"
    rules = parse_rules({"hours": text})
    t = datetime(2026, 11, 23 + day, hour, minute, tzinfo=UTC)  # 23 Nov 2026 is a Monday
    assert rules.is_open(t) == (lo <= hour * 60 + minute < hi)


# --- caps and counters ---------------------------------------------------------

def test_daily_cap_resets_at_local_midnight_across_dst():
    n = net([({"rules": {"timezone": "America/New_York", "cap_daily": 2}}, 1)])
    c = Counters()
    # 1 Nov 2026 has 25 hours in New York (DST ends at 02:00).
    for t in (at(2026, 11, 1, 0, 10), at(2026, 11, 1, 1, 30, fold=1)):
        c.delivered_call(1, "America/New_York", t)
    assert decide(n, facts(at(2026, 11, 1, 23, 59, 59)), counters=c).trace == [(1, "cap_daily:2")]
    assert decide(n, facts(at(2026, 11, 2, 0, 0, 0)), counters=c).candidates == (1,)
    # Spring forward: 8 Mar 2026 has 23 hours; the cap still holds until local midnight.
    c2 = Counters()
    for t in (at(2026, 3, 8, 0, 30), at(2026, 3, 8, 3, 30)):
        c2.delivered_call(1, "America/New_York", t)
    assert decide(n, facts(at(2026, 3, 8, 23, 59, 59)), counters=c2).trace == [(1, "cap_daily:2")]
    assert decide(n, facts(at(2026, 3, 9, 0, 0, 0)), counters=c2).candidates == (1,)


def test_hourly_cap_resets_on_the_repeated_hour_and_monthly_and_total():
    n = net([({"rules": {"timezone": "America/New_York", "cap_hourly": 1}}, 1)])
    c = Counters()
    c.delivered_call(1, "America/New_York", at(2026, 11, 1, 1, 10, fold=0))  # 01:10 EDT
    assert decide(n, facts(at(2026, 11, 1, 1, 59, fold=0)), counters=c).trace == [(1, "cap_hourly:1")]
    assert decide(n, facts(at(2026, 11, 1, 1, 5, fold=1)), counters=c).candidates == (1,)  # 01:05 EST: new hour
    m = net([({"rules": {"timezone": "America/New_York", "cap_monthly": 1, "cap_total": 2}}, 1)])
    c = Counters()
    c.delivered_call(1, "America/New_York", at(2026, 10, 31, 23, 59))
    assert decide(m, facts(at(2026, 10, 31, 23, 59, 59)), counters=c).trace == [(1, "cap_monthly:1")]
    assert decide(m, facts(at(2026, 11, 1, 0, 0)), counters=c).candidates == (1,)
    c.delivered_call(1, "America/New_York", at(2026, 11, 1, 0, 1))
    assert decide(m, facts(at(2026, 12, 5)), counters=c).trace == [(1, "cap_total:2")]


def test_caps_count_live_legs_and_budget():
    n = net([({"rules": {"cap_daily": 3}}, 1), ({"revenue_cents": 4000, "rules": {"budget_daily": "100.00"}}, 2)])
    c = Counters()
    now = at(2026, 11, 23, 12)
    c.delivered_call(1, "UTC", now - 60)
    c.delivered_call(2, "UTC", now - 60, revenue_cents=4000)
    assert decide(n, facts(now), counters=c, live={1: 1}).candidates == (1, 2)
    assert decide(n, facts(now), counters=c, live={1: 2}).trace[0] == (1, "cap_daily:3")
    c.delivered_call(2, "UTC", now - 30, revenue_cents=4000)  # 80.00 spent: one more 40.00 call would pass 100.00
    assert (2, "budget_daily:10000") in decide(n, facts(now), counters=c).trace


# --- duplicates, gaps, geography ------------------------------------------------

def test_duplicate_rule_at_its_boundary_and_min_gap():
    n = net([({"rules": {"duplicate_days": 7}}, 1), ({}, 2)])
    c = Counters()
    t0 = at(2026, 11, 1, 12)
    c.delivered_call(1, "UTC", t0, caller="+14155550123")
    assert decide(n, facts(t0 + 7 * 86400 - 1), counters=c).trace == [(1, "duplicate:7d")]
    assert decide(n, facts(t0 + 7 * 86400), counters=c).candidates[0] == 1
    assert 1 in decide(n, facts(t0 + 60, caller="+14155550124"), counters=c).candidates  # another caller
    g = net([({"rules": {"min_gap_seconds": 30}}, 1)])
    c = Counters()
    c.offered(1, t0)
    assert decide(g, facts(t0 + 29.9), counters=c).trace == [(1, "min_gap:30s")]
    assert decide(g, facts(t0 + 30), counters=c).candidates == (1,)


def test_geography_states_and_area_codes():
    n = net([({"rules": {"states_allowed": ["CA"]}}, 1), ({"rules": {"states_denied": "NY"}}, 1),
             ({"rules": {"area_codes_allowed": "212"}}, 1), ({"rules": {"area_codes_denied": ["415"]}}, 1)])
    t = at(2026, 11, 23, 12)
    d = decide(n, facts(t, caller="+14155550123"))  # San Francisco
    assert sorted(d.candidates) == [1, 2] and dict(d.trace) == {3: "area_code_not_allowed:415", 4: "area_code_denied:415"}
    d = decide(n, facts(t, caller="+12125550123"))  # New York
    assert sorted(d.candidates) == [3, 4] and dict(d.trace) == {1: "state_not_allowed:NY", 2: "state_denied:NY"}
    d = decide(n, facts(t, caller="+18885550123"))  # toll free: no state
    assert dict(d.trace)[1] == "state_unknown"


def test_zip_prompt_routes_by_the_state_of_the_zip_keyed_in():
    n = net([({"rules": {"states_allowed": ["TX"]}}, 1), ({"rules": {"states_allowed": "CA"}}, 2)],
            campaign_kw={"zip_prompt": True})
    r = Router(n, rng=random.Random(1))
    v = r.first("L1", r.facts(NUMBER, "+12125550123"))
    assert v[cv.ROUTE_STATUS] == "ZIP"
    v = r.with_zip("L1", "75201")  # Dallas
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.BUYER_ID] == "1"
    r.first("L2", r.facts(NUMBER, "+12125550123"))
    assert r.with_zip("L2", "94103")[cv.BUYER_ID] == "2"
    r.first("L3", r.facts(NUMBER, "+14155550123"))
    assert r.with_zip("L3", "12")[cv.BUYER_ID] == "2"  # no ZIP: the area code's state (CA)
    assert r.routes.get("L3").decision.trace == [(1, "state_not_allowed:CA")]


# --- selection -------------------------------------------------------------------

def test_tiers_then_weights_within_statistical_tolerance():
    n = net([({"rules": {"weight": 1}}, 2), ({"rules": {"weight": 3}}, 2), ({"rules": {"weight": 6}}, 2), ({}, 1)])
    rng = random.Random(42)
    firsts, seconds = Counter(), Counter()
    trials = 20_000
    for _ in range(trials):
        d = decide(n, facts(at(2026, 11, 23, 12)), rng=rng)
        assert d.candidates[0] == 4  # priority 1 before the tier of 2
        firsts[d.candidates[1]] += 1
        seconds[d.candidates[2]] += 1
    for bid, share in {1: 0.1, 2: 0.3, 3: 0.6}.items():
        sigma = (share * (1 - share) / trials) ** 0.5
        assert abs(firsts[bid] / trials - share) < 4 * sigma, (bid, firsts)
    # Same seed, same order: tests and replays are reproducible.
    assert [decide(n, facts(0), rng=random.Random(7)).candidates for _ in range(3)] == \
           [decide(n, facts(0), rng=random.Random(7)).candidates] * 3


def test_repeat_caller_goes_back_to_their_buyer():
    n = net([({}, 1), ({}, 2)], campaign_kw={"repeat_caller": True})
    c = Counters()
    c.delivered_call(2, "UTC", at(2026, 11, 1), caller="+14155550123")
    d = decide(n, facts(at(2026, 11, 23)), counters=c)
    assert d.candidates == (2, 1) and d.sticky_buyer == 2
    assert decide(n, facts(at(2026, 11, 23), caller="+14155550999"), counters=c).candidates == (1, 2)


# --- never an ineligible buyer ------------------------------------------------------

rules_st = st.fixed_dictionaries({}, optional={
    "timezone": st.sampled_from(["UTC", "America/New_York", "America/Los_Angeles", "Europe/London"]),
    "hours": st.sampled_from(["", "mon-fri 09:00-17:00", "sat-sun 00:00-24:00", "mon-sun 22:00-06:00"]),
    "states_allowed": st.lists(st.sampled_from(["CA", "NY", "TX", "FL"]), max_size=2),
    "states_denied": st.lists(st.sampled_from(["CA", "NY", "TX"]), max_size=1),
    "cap_daily": st.integers(0, 3), "cap_hourly": st.integers(0, 2), "duplicate_days": st.integers(0, 3),
    "min_gap_seconds": st.integers(0, 120), "paused": st.booleans(), "weight": st.integers(1, 5),
})
buyer_st = st.tuples(
    st.fixed_dictionaries({"paused": st.booleans(), "concurrency_cap": st.none() | st.integers(0, 3)}),
    rules_st, st.integers(1, 3), st.integers(0, 4), st.integers(0, 3))


def _eligible_plainly(buyer, r, f, live, delivered, offered_ago) -> bool:
    """The rules read one by one, the way an operator states them."""
    local = datetime.fromtimestamp(f.at, ZoneInfo(r.get("timezone", "UTC")))
    minute = local.hour * 60 + local.minute
    hours = r.get("hours", "")
    open_ = {"": True, "mon-fri 09:00-17:00": local.weekday() < 5 and 540 <= minute < 1020,
             "sat-sun 00:00-24:00": local.weekday() >= 5,
             "mon-sun 22:00-06:00": minute >= 1320 or minute < 360}[hours]
    return not (
        buyer["paused"] or r.get("paused") or not open_
        or (buyer["concurrency_cap"] is not None and live >= buyer["concurrency_cap"])
        or (r.get("states_allowed") and f.state not in r["states_allowed"])
        or f.state in r.get("states_denied", [])
        or (r.get("min_gap_seconds") and offered_ago < r["min_gap_seconds"])
        or (r.get("duplicate_days") and delivered)
        or ("cap_daily" in r and delivered + live >= r["cap_daily"])
        or ("cap_hourly" in r and delivered + live >= r["cap_hourly"])
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(buyer_st, min_size=1, max_size=6), st.integers(0, 7 * 24 * 3600),
       st.sampled_from(["+14155550123", "+12125550123", "+12145550123", "+18885550123"]), st.integers(0, 2**32))
def test_an_ineligible_buyer_is_never_chosen(specs, offset, caller, seed):
    now = at(2026, 11, 23) + offset
    specs_ = [({**b, "rules": r}, prio) for b, r, prio, _, _ in specs]
    n = net(specs_)
    c = Counters()
    live = {}
    for i, (b, r, prio, lv, delivered) in enumerate(specs, 1):
        live[i] = lv
        for k in range(delivered and 1):  # one delivery of this caller, a minute ago (same hour, same day)
            c.delivered_call(i, r.get("timezone", "UTC"), now - 60 if (now - 60) // 3600 == now // 3600 else now,
                             caller=caller)
    d = decide(n, facts(now, caller=caller), live=live, counters=c, rng=random.Random(seed))
    assert sorted(d.candidates + tuple(b for b, _ in d.trace)) == list(range(1, len(specs) + 1))
    for i, (b, r, prio, lv, delivered) in enumerate(specs, 1):
        lt = datetime.fromtimestamp(now, ZoneInfo(r.get("timezone", "UTC")))
        last = c.last_delivery(caller, i)
        same_period = last is not None and datetime.fromtimestamp(last, lt.tzinfo).hour == lt.hour
        plain = _eligible_plainly(b, r, d_facts := facts(now, caller=caller), lv, 1 if (delivered and same_period) else 0,
                                  now - c.last_offer[i] if i in c.last_offer else 1e9)
        assert (i in d.candidates) == plain, (i, b, r, lv, delivered, dict(d.trace), d_facts)
    prios = [n.campaigns[5].links[b].priority for b in d.candidates]
    assert prios == sorted(prios)


# --- validation ---------------------------------------------------------------------

@pytest.mark.parametrize("data,key", [
    ({"timezone": "Mars/Base"}, "timezone"), ({"hours": "mon 9-5"}, "hours"), ({"hours": "funday 09:00-10:00"}, "hours"),
    ({"states_allowed": ["ZZ"]}, "states_allowed"), ({"cap_daily": -1}, "cap_daily"), ({"cap_daily": "x"}, "cap_daily"),
    ({"budget_daily": "1e3"}, "budget_daily"), ({"closed_dates": ["2026-13-01"]}, "closed_dates"),
    ({"area_codes_denied": "12"}, "area_codes_denied"), ({"weight": 0}, "weight"), ({"colour": "red"}, "colour"),
    ({"paused": "yes"}, "paused"),
])
def test_bad_rules_are_refused_with_the_key(data, key):
    with pytest.raises(RulesError) as exc:
        normalize(data)
    assert exc.value.key == key and str(exc.value).startswith(key + ":")


def test_tables_ship_with_the_project():
    assert geo.state_of_zip("10001") == "NY" and geo.state_of_zip("94103") == "CA" and geo.state_of_zip("75201") == "TX"
    assert geo.state_of_zip("abcde") == "" and geo.state_of_zip("1234") == ""
    assert geo.state_of_area_code("212") == "NY" and geo.state_of_area_code("800") == ""
    assert len(geo.AREA_CODE_STATE) > 300 and len(geo.ZIP3_STATE) > 900
    assert skip_reason(Buyer(1, "x", "PJSIP/x", paused=True)) == "paused"
