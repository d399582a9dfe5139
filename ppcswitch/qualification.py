"""Is a finished call billable, on each side, for how much, and if not, why? Pure and synchronous.

The buyer side (revenue) and the publisher side (payout) are decided
separately, each by its own SideRule (ppcswitch.billing.rules). Every side
that is not billable carries machine-readable reasons, e.g.
`duration_below_minimum:47<60`, `duplicate_caller:2026-11-20`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

from ppcswitch.billing.rules import FLAT, SideRule, price


@dataclass(frozen=True)
class SettlementFacts:
    """What qualification needs to know about one finished call."""

    connected_ms: int
    answered: bool  # a buyer answered
    started_at: datetime | None = None  # needed for the duplicate-caller window
    geo_match: bool | None = None  # caller in the buyer's service area (None: unknown)
    quality_score: int | None = None  # fraud/quality score, 0-100, higher is worse (None: not scored)
    revenue_override_cents: int | None = None  # e.g. the winning RTB bid's own amount
    min_duration_override: int | None = None  # e.g. the winning RTB bid's own minimum
    rejected_reason: str = ""  # refused before routing: the only reason given
    ai_score: int | None = None  # the transcript's AI score, 0-100, higher is better (None: no transcript yet)
    dispositions: tuple[str, ...] | None = None  # from the transcript's phrase rules (None: no transcript yet)

    @property
    def seconds(self) -> int:
        return max(0, self.connected_ms) // 1000  # whole connected seconds


@dataclass(frozen=True)
class EarlierCall:
    """An earlier call from the same caller to the same buyer (revenue) or publisher (payout)."""

    started_at: datetime
    billable: bool  # that side of it was billable


@dataclass(frozen=True)
class Side:
    billable: bool
    cents: int
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Qualification:
    revenue: Side
    payout: Side
    payout_depends_on_buyer: bool = True  # revshare: a revenue dispute reverses the payout too

    @property
    def margin_cents(self) -> int:
        return self.revenue.cents - self.payout.cents

    @property
    def reasons(self) -> list[str]:
        """One list for the call record: the buyer side's reasons, then the publisher side's, prefixed
        `payout:`. A call never connected (or refused) says so once: it is the same for both sides."""
        if self.payout.reasons == self.revenue.reasons and self.revenue.reasons[:1] != () and (
                self.revenue.reasons[0] == "not_connected" or self.revenue.reasons[0].startswith("rejected:")):
            return list(self.revenue.reasons)
        return list(self.revenue.reasons) + [f"payout:{r}" for r in self.payout.reasons]


def duplicate_of(started_at: datetime | None, rule: SideRule, prior: Sequence[EarlierCall]) -> EarlierCall | None:
    """The latest earlier call that makes this one a repeat, if any.

    The window is (started_at - window, started_at): a call exactly one window
    later is new again; one second earlier it is still a repeat. Calls of one
    caller are settled in the order they started (ppcswitch.pipeline), so the
    call that came first is the original whatever order they end in.
    """
    window = rule.unique_window or rule.unique_days * 86400
    if not window or started_at is None:
        return None
    start = started_at - timedelta(seconds=window)
    hits = [p for p in prior if start < p.started_at < started_at and (p.billable or rule.unique_counts_unbillable)]
    return max(hits, key=lambda p: p.started_at, default=None)


def _checks(facts: SettlementFacts, rule: SideRule, min_duration: int, prior: Sequence[EarlierCall]) -> list[str]:
    reasons = []
    if facts.seconds < min_duration:
        reasons.append(f"duration_below_minimum:{facts.seconds}<{min_duration}")
    dup = duplicate_of(facts.started_at, rule, prior)
    if dup is not None:
        reasons.append(f"duplicate_caller:{dup.started_at:%Y-%m-%d}")
    if rule.require_geo and facts.geo_match is not True:
        reasons.append("geo_unknown" if facts.geo_match is None else "geo_mismatch")
    if rule.quality_threshold is not None and facts.quality_score is not None \
            and facts.quality_score >= rule.quality_threshold:
        reasons.append(f"quality_flagged:{facts.quality_score}>={rule.quality_threshold}")
    if rule.min_ai_score is not None and facts.ai_score is not None and facts.ai_score < rule.min_ai_score:
        reasons.append(f"ai_score_below:{facts.ai_score}<{rule.min_ai_score}")
    for name in rule.deny_dispositions:
        if facts.dispositions and name in facts.dispositions:
            reasons.append(f"disposition:{name}")
    return reasons


def decide(facts: SettlementFacts, revenue_rule: SideRule, payout_rule: SideRule,
           prior_buyer: Sequence[EarlierCall] = (), prior_publisher: Sequence[EarlierCall] = ()) -> Qualification:
    """Both sides of one call. `prior_*`: earlier calls of this caller (any age; the rule picks the window)."""
    depends = payout_rule.depends_on_buyer
    if facts.rejected_reason or not facts.answered or facts.connected_ms <= 0:
        why = (f"rejected:{facts.rejected_reason}",) if facts.rejected_reason else ("not_connected",)
        return Qualification(Side(False, 0, why), Side(False, 0, why), depends)

    minimum = facts.min_duration_override if facts.min_duration_override is not None else revenue_rule.min_duration
    reasons = _checks(facts, revenue_rule, minimum, prior_buyer)
    if reasons:
        revenue = Side(False, 0, tuple(reasons))
    else:
        cents = facts.revenue_override_cents if facts.revenue_override_cents is not None \
            else price(revenue_rule, facts.seconds)
        revenue = Side(True, cents)

    reasons = _checks(facts, payout_rule, payout_rule.min_duration, prior_publisher)
    if depends and not revenue.billable:
        reasons.append("buyer_not_billable")
    if reasons:
        payout = Side(False, 0, tuple(reasons))
    else:
        payout = Side(True, price(payout_rule, facts.seconds, revenue.cents))
    return Qualification(revenue, payout, depends)


__all__ = ["SettlementFacts", "Qualification", "EarlierCall", "Side", "decide", "duplicate_of", "FLAT"]
