"""Qualification and money, pure: per-side rules, pricing, reasons, boundaries (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from ppcswitch.billing import rules as r
from ppcswitch.billing.rules import RuleError, SideRule, Tier
from ppcswitch.qualification import SettlementFacts, EarlierCall, decide, duplicate_of

UTC = timezone.utc
T = datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC)
REV = SideRule(min_duration=60, flat_cents=4000)
PAY = SideRule(flat_cents=1250)


def facts(seconds: float, **kw) -> SettlementFacts:
    return SettlementFacts(connected_ms=int(seconds * 1000), answered=True, started_at=T, **kw)


@pytest.mark.parametrize("seconds, billable, reasons", [
    (59, False, ("duration_below_minimum:59<60",)),
    (59.999, False, ("duration_below_minimum:59<60",)),  # whole seconds: 59.999 s is 59 s
    (60, True, ()),
    (61, True, ()),
])
def test_minimum_duration_boundary(seconds, billable, reasons):
    d = decide(facts(seconds), REV, PAY)
    assert d.revenue.billable is billable and d.revenue.reasons == reasons
    assert d.revenue.cents == (4000 if billable else 0)
    assert d.payout.billable is billable and d.payout.cents == (1250 if billable else 0)
    if not billable:
        assert d.payout.reasons == ("buyer_not_billable",)
        assert d.reasons == ["duration_below_minimum:59<60", "payout:buyer_not_billable"]


def test_per_call_override_from_a_bid_wins_over_the_rule():
    d = decide(facts(45, revenue_override_cents=5500, min_duration_override=30), REV, PAY)
    assert d.revenue.billable and d.revenue.cents == 5500
    assert not decide(facts(29, min_duration_override=30), REV, PAY).revenue.billable


@pytest.mark.parametrize("elapsed, duplicate", [
    (timedelta(seconds=1), True),  # first second of the window
    (timedelta(days=7) - timedelta(seconds=1), True),  # last second of the window
    (timedelta(days=7), False),  # exactly N days later: a new window
    (timedelta(days=7, seconds=1), False),
])
def test_duplicate_window_edges(elapsed, duplicate):
    rule = SideRule(min_duration=60, flat_cents=4000, unique_days=7)
    prior = [EarlierCall(T - elapsed, True)]
    d = decide(facts(90), rule, PAY, prior_buyer=prior)
    assert d.revenue.billable is not duplicate
    if duplicate:
        assert d.revenue.reasons == (f"duplicate_caller:{(T - elapsed):%Y-%m-%d}",)


def test_unbillable_first_call_counts_only_when_configured():
    prior = [EarlierCall(T - timedelta(hours=1), False)]
    assert decide(facts(90), SideRule(unique_days=1, flat_cents=1), PAY, prior).revenue.billable
    d = decide(facts(90), SideRule(unique_days=1, unique_counts_unbillable=True, flat_cents=1), PAY, prior)
    assert d.revenue.reasons == ("duplicate_caller:2026-11-20",)
    assert duplicate_of(T, SideRule(unique_days=1), [EarlierCall(T, True)]) is None  # not itself


@pytest.mark.parametrize("geo, require, reason", [(True, True, None), (False, True, "geo_mismatch"),
                                                 (None, True, "geo_unknown"), (False, False, None)])
def test_geography(geo, require, reason):
    d = decide(facts(90, geo_match=geo), SideRule(require_geo=require, flat_cents=100), PAY)
    assert d.revenue.reasons == ((reason,) if reason else ())


@pytest.mark.parametrize("score, billable", [(None, True), (0, True), (79, True), (80, False), (100, False)])
def test_quality_threshold(score, billable):
    d = decide(facts(90, quality_score=score), SideRule(quality_threshold=80, flat_cents=100), PAY)
    assert d.revenue.billable is billable
    if not billable:
        assert d.revenue.reasons == (f"quality_flagged:{score}>=80",)


def test_every_failing_check_is_listed():
    rule = SideRule(min_duration=60, unique_days=3, require_geo=True, quality_threshold=50, flat_cents=100)
    d = decide(facts(10, geo_match=False, quality_score=90), rule, PAY, [EarlierCall(T - timedelta(days=1), True)])
    assert d.revenue.reasons == ("duration_below_minimum:10<60", "duplicate_caller:2026-11-19", "geo_mismatch",
                                 "quality_flagged:90>=50")


def test_not_connected_and_rejected():
    d = decide(SettlementFacts(0, False), REV, PAY)
    assert d.revenue.reasons == ("not_connected",) and d.payout.reasons == ("not_connected",)
    d = decide(SettlementFacts(0, False, rejected_reason="unknown_tracking_number"), REV, PAY)
    assert d.payout.reasons == ("rejected:unknown_tracking_number",)
    assert d.reasons == ["rejected:unknown_tracking_number"]  # the same for both sides: said once
    assert decide(SettlementFacts(0, False), REV, PAY).reasons == ["not_connected"]


def test_revenue_tiers_by_duration():
    rule = SideRule(mode=r.TIERS, tiers=(Tier(0, 1000), Tier(90, 2500), Tier(300, 6000)))
    assert [decide(facts(s), rule, PAY).revenue.cents for s in (5, 89, 90, 299, 300, 4000)] == \
        [1000, 1000, 2500, 2500, 6000, 6000]


def test_publisher_on_its_own_criteria_is_paid_when_the_buyer_is_not():
    own = SideRule(min_duration=30, flat_cents=700, only_when_buyer_pays=False)
    d = decide(facts(45), REV, own)
    assert not d.revenue.billable and d.payout.billable and d.payout.cents == 700 and d.margin_cents == -700
    assert not d.payout_depends_on_buyer


@pytest.mark.parametrize("revenue, bp, payout", [(4000, 5000, 2000), (3333, 3333, 1111), (1, 5000, 1),
                                                 (3, 5000, 2), (2, 2500, 1), (999, 10000, 999), (999, 0, 0)])
def test_revshare_percent_is_exact_and_rounds_half_up(revenue, bp, payout):
    d = decide(facts(90), SideRule(flat_cents=revenue), SideRule(mode=r.PERCENT, percent_bp=bp))
    assert d.payout.cents == payout and d.margin_cents == revenue - payout


@pytest.mark.parametrize("side, values, message", [
    ("revenue", {"mode": "percent"}, "payout side"), ("payout", {"percent_bp": 10001}, "between 0 and 10000"),
    ("payout", {"min_duration": -1}, "between 0"), ("payout", {"nope": 1}, "unknown rule field"),
    ("revenue", {"tiers": "90-25"}, "seconds:amount"), ("revenue", {"tiers": "0:1.001"}, "decimal places"),
    ("revenue", {"tiers": "0:1,0:2"}, "same duration"), ("sideways", {}, "side must be"),
    ("revenue", {"require_geo": "yes"}, "true or false"), ("revenue", {"flat_cents": "x"}, "whole number"),
])
def test_bad_rules_are_refused_clearly(side, values, message):
    with pytest.raises(RuleError, match=message):
        r.check_override(side, values)


def test_merge_later_override_wins_and_none_inherits():
    base = SideRule(min_duration=60, flat_cents=4000)
    merged = r.merge(base, {"min_duration": 90, "flat_cents": None}, None, {"unique_days": 7})
    assert (merged.min_duration, merged.flat_cents, merged.unique_days) == (90, 4000, 7)
    assert r.check_override("revenue", {"tiers": "0:10.00, 90:25.00"})["tiers"] == (Tier(0, 1000), Tier(90, 2500))


rules = st.builds(
    SideRule, min_duration=st.integers(0, 200), unique_days=st.integers(0, 3), require_geo=st.booleans(),
    quality_threshold=st.none() | st.integers(0, 100), mode=st.sampled_from([r.FLAT, r.TIERS]),
    flat_cents=st.integers(0, 10**6), tiers=st.lists(st.builds(Tier, st.integers(0, 300), st.integers(0, 10**6)),
                                                     max_size=3, unique_by=lambda t: t.min_seconds).map(tuple))
payout_rules = rules.flatmap(lambda x: st.builds(
    lambda mode, bp, only: SideRule(**{**x.__dict__, "mode": mode, "percent_bp": bp, "only_when_buyer_pays": only}),
    st.sampled_from([r.FLAT, r.TIERS, r.PERCENT]), st.integers(0, 10000), st.booleans()))


@given(rules, payout_rules, st.integers(0, 400_000), st.none() | st.booleans(), st.none() | st.integers(0, 100),
       st.lists(st.tuples(st.integers(1, 5 * 86400), st.booleans()), max_size=3))
def test_decision_invariants(rev, pay, ms, geo, score, prior):
    prior_calls = [EarlierCall(T - timedelta(seconds=s), ok) for s, ok in prior]
    d = decide(SettlementFacts(ms, ms > 0, T, geo, score), rev, pay, prior_calls, prior_calls)
    assert d.margin_cents == d.revenue.cents - d.payout.cents
    for side in (d.revenue, d.payout):
        assert isinstance(side.cents, int) and side.cents >= 0
        assert side.billable == (not side.reasons)  # a side is billable exactly when nothing speaks against it
        assert side.billable or side.cents == 0
    if pay.depends_on_buyer and not d.revenue.billable:  # revshare never pays for an unpaid call
        assert not d.payout.billable and d.payout.cents == 0
