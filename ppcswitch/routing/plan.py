"""Per-snapshot routing plans: what does not change from one call to the next, worked out once.

A plan holds, per campaign, its buyer links in dial order with everything the
rules need already resolved: the Buyer, the weight's exponent, the local zone
as an index into the campaign's zones, the weekly schedule as one byte per
minute of the week, closed dates as day ordinals, geography reasons remembered
per (state, area code), caps with their trace entries prebuilt.
engine.route() walks it; engine.skip_reason() stays the plain reading of the
same rules (dial time, tests), and tests hold the two to the same answers.

A plan belongs to one Network object (snapshots are never changed in place,
only swapped), so it is kept on that object and dies with it.
"""

from __future__ import annotations

from functools import lru_cache
from operator import getitem

from ppcswitch.routing.counters import Counters, Local, local
from ppcswitch.routing.limits import NO_LIMITS, Limits, campaign_key, limits_of, link_key, max_revenue
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network
from ppcswitch.routing.rules import NO_RULES, Rules, window_text

WEEK_MINUTES = 7 * 1440


@lru_cache(maxsize=1024)
def week_bits(weekly: tuple[tuple[tuple[int, int], ...], ...]) -> bytes:
    """Rules.weekly as one byte per local minute of the week (Monday 00:00 first): 1 open, 0 closed.

    Shared between every buyer with the same hours (cached by value)."""
    bits = bytearray(WEEK_MINUTES)
    for day, spans in enumerate(weekly):
        base = day * 1440
        for lo, hi in spans:
            bits[base + lo:base + hi] = b"\x01" * (hi - lo)
    return bytes(bits)


def state_reason(rules: Rules, state: str) -> str:
    """The state part of the geography rules ('' when the caller's state passes)."""
    if rules.states_allowed:
        if not state:
            return "state_unknown"
        if state not in rules.states_allowed:
            return f"state_not_allowed:{state}"
    if state and state in rules.states_denied:
        return f"state_denied:{state}"
    return ""


def area_code_reason(rules: Rules, npa: str) -> str:
    """The area-code part of the geography rules ('' when the caller's area code passes)."""
    if rules.area_codes_allowed:
        if not npa:
            return "area_code_unknown"
        if npa not in rules.area_codes_allowed:
            return f"area_code_not_allowed:{npa}"
    if npa and npa in rules.area_codes_denied:
        return f"area_code_denied:{npa}"
    return ""


@lru_cache(maxsize=4096)
def _reasons(states_allowed: frozenset[str], states_denied: frozenset[str], area_codes_allowed: frozenset[str],
             area_codes_denied: frozenset[str]) -> dict[str, str]:
    """where_key(state, area code) -> geography reason ('' passes) for one set of geography rules.

    Shared by every link with the same geography rules; filled by geo_reason() as callers come."""
    return {}


TABLE_MAX = 4096  # (state, area code) pairs remembered per table: there are about 50 x 400 at most


def where_key(state: str, npa: str) -> str:
    """One string for a (state, area code) pair: hashed once per call, not once per buyer as a tuple."""
    return f"{len(state)}:{state}{npa}"


def geo_reason(table: dict[str, str], rules: Rules, key: str, state: str, npa: str) -> str:
    """The geography reason for a (state, area code) not in `table` yet; remembered there by `key`."""
    reason = state_reason(rules, state) or area_code_reason(rules, npa)
    if len(table) < TABLE_MAX:
        table[key] = reason
    return reason


BIG = 1 << 62  # no cap: never reached


def buyer_cap(buyer: Buyer | None) -> int | None:
    """A buyer's concurrency cap: its --cap, or its rules' `concurrency` if lower."""
    if buyer is None:
        return None
    cap, rule = buyer.concurrency_cap, buyer.rules.concurrency
    return rule if cap is None else cap if rule is None else min(cap, rule)


def _or_big(cap: int | None) -> int:
    return BIG if cap is None else cap


class Link:
    """One campaign-buyer link, resolved for the per-call loop (see engine.route).

    The trace entries (buyer id, reason) are built here once; a call appends the one that applies."""

    __slots__ = (
        "bid", "buyer", "rules", "priority", "tier_top", "weight", "inv_weight", "skip", "live", "cap", "cap_skip", "ruled",
        "zone", "closed_days", "closed_skip", "week", "week_skip", "geo", "where", "gap", "gap_skip",
        "dup_seconds", "dup_skip", "counted", "cap_hourly", "cap_daily", "cap_monthly", "cap_total",
        "budget_daily_left", "budget_monthly_left", "hourly_skip", "daily_skip", "monthly_skip", "total_skip",
        "budget_daily_skip", "budget_monthly_skip", "family", "price", "extra", "own", "own_zone",
    )

    def __init__(self, link: CampaignBuyer, buyer: Buyer | None, zones: list[str], campaign_id: int = 0,
                 network: Network | None = None) -> None:
        bid = link.buyer_id
        rules = link.rules
        self.bid = bid
        self.buyer = buyer
        self.rules = rules
        self.priority = link.priority
        # Sort key of the link's tier: priority + 0.5 - u/2 with u in [0, 1) stays inside (priority,
        # priority + 0.5], so tiers never mix (priorities are whole numbers of at most 1000).
        self.tier_top = link.priority + 0.5
        self.weight = w = rules.weight
        self.inv_weight = 1.0 / w
        # A buyer skipped whatever the call: its trace entry (None: checked per call).
        if buyer is None:
            self.skip = (bid, "buyer_missing")
        elif buyer.paused:
            self.skip = (bid, "paused")
        elif rules.paused:
            self.skip = (bid, "paused_on_campaign")
        else:
            self.skip = None
        cap = buyer_cap(buyer)
        self.cap = BIG if cap is None else cap
        self.cap_skip = (bid, f"concurrency_cap:{cap}")
        # NO_RULES: nothing after the concurrency cap (as in skip_reason).
        self.ruled = ruled = rules is not NO_RULES
        # The buyer's own caps and budgets count all its calls, whatever the campaign; they are read
        # in the buyer's own zone. Those set on the link count its calls on this campaign (extra).
        own = limits_of(buyer.rules, buyer=True) if buyer is not None else NO_LIMITS
        self.own = own
        self.counted = ruled and own is not NO_LIMITS
        self.family = own.family
        self.price = max_revenue(network, campaign_id, bid) if network is not None and buyer is not None else 0
        extra = []
        if ruled and isinstance(link.limits, Limits) and link.limits is not NO_LIMITS:
            extra.append((link_key(campaign_id, bid), link.limits))
        climits = network.campaign_limits.get(campaign_id) if network is not None else None
        if climits is not None and climits is not NO_LIMITS:
            extra.append((campaign_key(campaign_id), climits))
        self.extra = tuple(extra)
        self.live = cap is not None or self.counted or bool(extra)  # the live count is read only when a cap uses it
        if ruled and rules.timed:
            if rules.timezone not in zones:
                zones.append(rules.timezone)
            self.zone = zones.index(rules.timezone)
        else:
            self.zone = -1
        # The zone the buyer's own caps count in (the link may set another zone for its schedule).
        if self.counted:
            if own.timezone not in zones:
                zones.append(own.timezone)
            self.own_zone = zones.index(own.timezone)
        else:
            self.own_zone = -1
        self.closed_days = frozenset(d.toordinal() for d in rules.closed_dates)
        self.closed_skip = (bid, "closed:date")
        self.week = week_bits(rules.weekly) if rules.weekly is not None else None
        self.week_skip = (bid, "closed:schedule")
        self.geo = ruled and rules.geo
        self.where = _reasons(rules.states_allowed, rules.states_denied, rules.area_codes_allowed,
                              rules.area_codes_denied)
        self.gap = rules.min_gap_seconds if ruled else 0
        self.gap_skip = (bid, f"min_gap:{self.gap}s")
        self.dup_seconds = rules.duplicate_seconds
        self.dup_skip = (bid, f"duplicate:{window_text(rules.duplicate_seconds)}")
        # Caps and budgets; no cap: BIG, a number never reached (one test per call, not two).
        self.cap_hourly, self.hourly_skip = _or_big(own.cap_hourly), (bid, f"cap_hourly:{own.cap_hourly}")
        self.cap_daily, self.daily_skip = _or_big(own.cap_daily), (bid, f"cap_daily:{own.cap_daily}")
        self.cap_monthly, self.monthly_skip = _or_big(own.cap_monthly), (bid, f"cap_monthly:{own.cap_monthly}")
        self.cap_total, self.total_skip = own.cap_total, (bid, f"cap_total:{own.cap_total}")  # None: no lookup
        # Budget: spent + held + price > budget  <=>  held > budget - price - spent (whole cents), where
        # price is the most this call can bill the buyer (tiers included) and held what calls in flight may.
        price = self.price
        b = own.budget_daily_cents
        self.budget_daily_left = BIG if b is None else b - price
        self.budget_daily_skip = (bid, f"budget_daily:{b}")
        b = own.budget_monthly_cents
        self.budget_monthly_left = BIG if b is None else b - price
        self.budget_monthly_skip = (bid, f"budget_monthly:{b}")

    def room(self, counters: Counters, lt: Local) -> tuple:
        """How far this buyer is from its caps at local periods `lt`, remembered in `counters` until its
        counts change: (calls in flight at which a count cap is reached, the same, money in flight above
        which a budget is passed, calls this hour, today, this month, the daily budget's money room).
        Count caps: hourly, daily, monthly, total; budgets: daily, monthly."""
        h, d, mo, spent_d, spent_m = counters.periods(self.bid, lt, self.family)
        total = counters.total_of(self.bid, self.family) if self.cap_total is not None else 0
        room = min(self.cap_hourly - h, self.cap_daily - d, self.cap_monthly - mo,
                   BIG if self.cap_total is None else self.cap_total - total)
        money_d, money_m = self.budget_daily_left - spent_d, self.budget_monthly_left - spent_m
        got = (room, room, min(money_d, money_m), h, d, mo, money_d)
        counters.remember(lt, self.bid, self, got)
        return got

    def over(self, calls: int, money: int, room: tuple) -> tuple[int, str]:
        """The trace entry when `calls` in flight reach room[0] or `money` in flight passes room[2]: the
        first count cap reached (skip_reason's order: hourly, daily, monthly, total), else the budget."""
        _, caps, _, h, d, mo, money_d = room
        if calls < caps:
            return self.budget_daily_skip if money > money_d else self.budget_monthly_skip
        if h + calls >= self.cap_hourly:
            return self.hourly_skip
        if d + calls >= self.cap_daily:
            return self.daily_skip
        if mo + calls >= self.cap_monthly:
            return self.monthly_skip
        return self.total_skip


def _place(k: Link, key: str, state: str, npa: str) -> tuple[int, str] | None:
    if not k.geo:
        return None
    reason = k.where.get(key)
    if reason is None:
        reason = geo_reason(k.where, k.rules, key, state, npa)
    return (k.bid, reason) if reason else None


NO_PLACES = tuple((None,) * n for n in range(64))  # campaigns without geography rules: one shared tuple per size

MINUTES_KEPT = 256  # minutes of closed/open answers kept per campaign (calls come in at about now)


def _closed(lt: Local, days: frozenset[int], week: bytes | None) -> int:
    """0 open, 1 closed date, 2 outside the weekly hours (skip_reason's order) at local periods `lt`."""
    if days and lt.day in days:
        return 1
    if week is not None and not week[lt.week_minute]:
        return 2
    return 0


class CampaignPlan:
    __slots__ = ("links", "zones", "minutes", "dup_links", "schedules", "schedule_of", "entries", "geo_links",
                 "_places")

    def __init__(self, campaign: Campaign, network: Network) -> None:
        zones: list[str] = []
        buyers = network.buyers
        self.links = tuple(Link(link, buyers.get(link.buyer_id), zones, campaign.id, network)
                           for link in campaign.buyers)
        self.zones = tuple(zones)  # the local zones the campaign's rules read
        self.minutes: dict[int, tuple[list[Local], tuple]] = {}
        # The distinct schedules (zone, closed day ordinals, week bits): buyers share them, so a minute
        # is read once per schedule. Per link: its schedule's index (-1: none) and its trace entries by
        # _closed() code; a link skipped whatever the call has its skip entry for every code.
        schedules: dict[tuple, int] = {}
        schedule_of, entries = [], []
        for k in self.links:
            if k.skip is None and k.zone >= 0 and (k.closed_days or k.week is not None):
                schedule_of.append(schedules.setdefault((k.zone, k.closed_days, k.week), len(schedules)))
            else:
                schedule_of.append(-1)
            entries.append((k.skip,) * 3 if k.skip is not None else (None, k.closed_skip, k.week_skip))
        self.schedules = tuple(schedules)
        self.schedule_of = tuple(schedule_of)
        self.entries = tuple(entries)
        # buyer id -> its links with a duplicate rule: (link, window in seconds)
        dup: dict[int, list] = {}
        for k in self.links:
            if k.ruled and k.dup_seconds:
                dup.setdefault(k.bid, []).append((k, k.dup_seconds))
        self.dup_links = {bid: tuple(v) for bid, v in dup.items()}
        self.geo_links = any(k.geo for k in self.links)
        self._places: dict[str, tuple] = {}

    def places(self, state: str, npa: str) -> tuple:
        """Per link, in order: the trace entry its geography rules give a caller from (state, area code),
        or None when they let the caller through. Worked out once per place, not on every call."""
        if not self.geo_links:
            return NO_PLACES[len(self.links)] if len(self.links) < len(NO_PLACES) else (None,) * len(self.links)
        key = where_key(state, npa)
        got = self._places.get(key)
        if got is None:
            got = tuple(_place(k, key, state, npa) for k in self.links)
            if len(self._places) >= TABLE_MAX:
                self._places.clear()
            self._places[key] = got
        return got

    def at(self, now: float) -> tuple[list[Local], tuple]:
        """At epoch `now`: the local periods per zone, and per link the trace entry that skips it whatever
        else (missing, paused, closed date, outside the weekly hours) or None.

        The same for a whole minute (local offsets change on minutes, as counters.local assumes),
        so worked out once per minute, not on every call."""
        minute = int(now // 60)
        got = self.minutes.get(minute)
        if got is None:
            periods = [local(tz, now) for tz in self.zones]
            codes = [_closed(periods[z], days, week) for z, days, week in self.schedules]
            codes.append(0)  # schedule -1: none, open
            got = (periods, tuple(map(getitem, self.entries, map(codes.__getitem__, self.schedule_of))))
            if len(self.minutes) >= MINUTES_KEPT:
                self.minutes.clear()
            self.minutes[minute] = got
        return got

    def duplicates(self, seen: dict[int, float] | None, now: float, busy: dict | None = None) -> set[Link] | tuple:
        """The links whose duplicate rule refuses a caller delivered to `seen` {buyer id: epoch} before,
        or on a call with a buyer in `busy` {buyer id: calls} now (ringing or connected).

        Once per call from the caller's few past buyers, not once per link."""
        dup = self.dup_links
        out: set[Link] | tuple = ()
        if busy:
            for bid in busy:
                links = dup.get(bid)
                if links is not None:
                    if not out:
                        out = set()
                    out.update(k for k, _ in links)
        for bid, when in (seen or {}).items():  # the caller's few past buyers
            links = dup.get(bid)
            if links is not None:
                for k, window in links:
                    if now - when < window:
                        if not out:
                            out = set()
                        out.add(k)
        return out


def campaign_plan(network: Network, campaign: Campaign) -> CampaignPlan:
    """The campaign's plan in this snapshot, made on its first call."""
    try:
        plans = network.__dict__["_plans"]
    except KeyError:
        plans = {}
        object.__setattr__(network, "_plans", plans)  # Network is frozen: a derived cache, not a field
    plan = plans.get(campaign.id)
    if plan is None:
        plan = plans[campaign.id] = CampaignPlan(campaign, network)
    return plan
