"""Caps and budgets at every level, and the most a call can cost: pure, over the routing snapshot.

Four levels carry limits (README "What happens to a call"):

- the buyer (its --cap and its rules): every call of that buyer, whatever the campaign;
- the campaign link (`buyer rules NAME --campaign C`): that buyer's calls on that campaign;
- the campaign (`campaign caps C`): every call of the campaign, whichever buyer takes it;
- the publisher (`publisher caps P`): every call of the publisher.

Each is read against one scope's counts (routing.counters, keyed by scope_key) plus what calls in
flight hold there (routing.reservations): so simultaneous calls cannot push a level past its limit.
Budgets are money: revenue for buyer, link and campaign; payout for the publisher.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppcswitch.billing import rules as billing
from ppcswitch.routing.counters import FAMILY, Counters, Local
from ppcswitch.routing.model import Buyer, Network
from ppcswitch.routing.rules import Rules

BUYER, LINK, CAMPAIGN, PUBLISHER = "buyer", "link", "campaign", "publisher"


def link_key(campaign_id: int, buyer_id: int) -> tuple:
    return ("l", campaign_id, buyer_id)


def campaign_key(campaign_id: int) -> tuple:
    return ("c", campaign_id)


def publisher_key(publisher_id: int) -> tuple:
    return ("p", publisher_id)


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one level, with the trace reasons they give (prefix: "" for a buyer and its
    link, "campaign_" / "publisher_" for those levels: `campaign_cap_daily:100`)."""

    prefix: str = ""
    timezone: str = "UTC"
    family: str = ""  # FAMILY prefix of what the count caps count
    concurrency: int | None = None
    cap_hourly: int | None = None
    cap_daily: int | None = None
    cap_monthly: int | None = None
    cap_total: int | None = None
    budget_daily_cents: int | None = None
    budget_monthly_cents: int | None = None

    @property
    def any(self) -> bool:
        return any(x is not None for x in (self.concurrency, self.cap_hourly, self.cap_daily, self.cap_monthly,
                                           self.cap_total, self.budget_daily_cents, self.budget_monthly_cents))

    def reason(self, counters: Counters, key, lt: Local | None, price_cents: int, live: int = 0) -> str:
        """Why one more call at up to `price_cents` would pass a limit of this level ('' when it would
        not). `live`: legs ringing or connected now that no reservation covers (adopted after a restart)."""
        held = counters.held.get(key)
        calls, legs, money = held if held is not None else (0, 0, 0)
        in_flight = max(calls if self.family == "r" else legs, live)
        p = self.prefix
        if self.concurrency is not None and max(legs, live) >= self.concurrency:
            return f"{p}concurrency_cap:{self.concurrency}" if p else f"concurrency:{self.concurrency}"
        if lt is None:
            return ""
        h, d, mo, spent_d, spent_m = counters.periods(key, lt, self.family)
        if self.cap_hourly is not None and h + in_flight >= self.cap_hourly:
            return f"{p}cap_hourly:{self.cap_hourly}"
        if self.cap_daily is not None and d + in_flight >= self.cap_daily:
            return f"{p}cap_daily:{self.cap_daily}"
        if self.cap_monthly is not None and mo + in_flight >= self.cap_monthly:
            return f"{p}cap_monthly:{self.cap_monthly}"
        if self.cap_total is not None and counters.total_of(key, self.family) + in_flight >= self.cap_total:
            return f"{p}cap_total:{self.cap_total}"
        if self.budget_daily_cents is not None and spent_d + money + price_cents > self.budget_daily_cents:
            return f"{p}budget_daily:{self.budget_daily_cents}"
        if self.budget_monthly_cents is not None and spent_m + money + price_cents > self.budget_monthly_cents:
            return f"{p}budget_monthly:{self.budget_monthly_cents}"
        return ""


NO_LIMITS = Limits()


def limits_of(rules: Rules, prefix: str = "", buyer: bool = False) -> Limits:
    """The limits a rules object sets at one level. `buyer`: a buyer's own rules, whose concurrency
    goes with its --cap (routing.plan.buyer_cap), not here."""
    conc = None if buyer else rules.concurrency
    out = Limits(prefix, rules.timezone, FAMILY[rules.cap_counts], conc, rules.cap_hourly, rules.cap_daily,
                 rules.cap_monthly, rules.cap_total, rules.budget_daily_cents, rules.budget_monthly_cents)
    return out if out.any else NO_LIMITS


# --- the most a call can cost ------------------------------------------------------------

def _override(network: Network, side: str, campaign_id: int, party_id: int) -> list:
    rows = network.billing_rules
    c = campaign_id or 0
    layers = [rows.get((side, 0, 0)), rows.get((side, c, 0)) if c else None,
              rows.get((side, 0, party_id)) if party_id else None, rows.get((side, c, party_id)) if c and party_id else None]
    return [x for x in layers if x]


def revenue_rule(network: Network, campaign_id: int, buyer: Buyer) -> billing.SideRule:
    """The buyer side's rule of a call (the same layering as billing.ledger.rules_for_sync)."""
    base = billing.SideRule(min_duration=buyer.min_duration, flat_cents=buyer.revenue_cents)
    return billing.merge(base, *_override(network, billing.REVENUE, campaign_id, buyer.id))


def payout_rule(network: Network, campaign_id: int, publisher_id: int) -> billing.SideRule:
    publisher = network.publishers.get(publisher_id)
    base = billing.SideRule(flat_cents=publisher.payout_cents if publisher else 0)
    return billing.merge(base, *_override(network, billing.PAYOUT, campaign_id, publisher_id))


def highest(rule: billing.SideRule, revenue_cents: int = 0) -> int:
    """The most a rule can price one call at (tiers: the highest tier)."""
    if rule.mode == billing.TIERS:
        return max((t.cents for t in rule.tiers), default=0)
    return billing.price(rule, 10**9, revenue_cents)


def max_revenue(network: Network, campaign_id: int, buyer_id: int) -> int:
    """The most a call of this campaign can bill this buyer (cents), remembered per snapshot."""
    memo = _memo(network)
    key = ("r", campaign_id, buyer_id)
    got = memo.get(key)
    if got is None:
        buyer = network.buyers.get(buyer_id)
        got = memo[key] = highest(revenue_rule(network, campaign_id, buyer)) if buyer is not None else 0
    return got


def max_payout(network: Network, campaign_id: int, publisher_id: int, revenue_cents: int) -> int:
    """The most a call of this campaign can pay this publisher when its revenue is at most `revenue_cents`."""
    memo = _memo(network)
    key = ("p", campaign_id, publisher_id, revenue_cents)
    got = memo.get(key)
    if got is None:
        if len(memo) > 100_000:
            memo.clear()
        got = memo[key] = highest(payout_rule(network, campaign_id, publisher_id), revenue_cents)
    return got


def _memo(network: Network) -> dict:
    try:
        return network.__dict__["_prices"]
    except KeyError:
        memo: dict = {}
        object.__setattr__(network, "_prices", memo)  # a derived cache of a frozen snapshot
        return memo
