"""The routing decision: pure, synchronous, in memory.

route() answers "who may take this call, in which order" and explains every
buyer it passed over, with a reason a machine can read ("closed:schedule",
"cap_daily:10", "state_not_allowed:TX" ...); next_candidate() picks the next buyer to dial at the
moment of dialling, so a cap is checked against the live count right then.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, Mapping

from ppcswitch.routing.counters import Counters, local
from ppcswitch.routing.limits import campaign_key, limits_of, link_key, max_payout, max_revenue, publisher_key
from ppcswitch.routing.model import Buyer, Campaign, Network
from ppcswitch.routing.plan import BIG, area_code_reason, buyer_cap, campaign_plan, state_reason
from ppcswitch.routing.rules import NO_RULES, Rules, window_text

# Q.850 causes given to the dialplan. Carriers map them to SIP responses:
# 1 -> 404 (number not ours), 21 -> 403 (refused), 34 -> 503 (try another route).
CAUSE_UNALLOCATED = 1
CAUSE_REJECTED = 21
CAUSE_NO_CIRCUIT = 34


class DecisionStatus:
    ROUTE = "route"
    REJECT = "reject"
    NO_BUYER = "no_buyer"
    ZIP = "zip"  # ask the caller for a ZIP code first, then decide
    CODE = "code"  # ask the caller for a publisher code first (the number asks for one), then decide


@dataclass(frozen=True, slots=True)
class CallFacts:
    tracking_number: str | None  # E.164, None when the dialled value is no number
    dialled: str  # what the carrier sent, for the record
    caller: str  # E.164, "anonymous" or the cleaned raw value
    caller_valid: bool = False
    caller_anonymous: bool = False
    at: float = 0.0  # when the call came in, epoch seconds (0: now)
    area_code: str = ""  # the caller's NANP area code, '' when none
    state: str = ""  # the caller's US state: from the ZIP keyed in, else from the area code
    zip_code: str = ""  # 5 digits keyed in at the IVR prompt, '' when none
    zip_asked: bool = False  # the IVR prompt was played (whatever came of it)
    code_asked: bool = False  # the publisher code prompt is over (whatever came of it)
    code_publisher_id: int | None = None  # the publisher a keyed-in code named (None: the number's own)
    publisher_code: str = ""  # digits keyed in at the publisher code prompt
    sub_id: str = ""  # attribution known before routing (pool lease, SIP header, IVR code): told to RTB buyers
    click_id: str = ""


@dataclass
class Decision:
    status: str
    campaign_id: int | None = None
    publisher_id: int | None = None
    candidates: tuple[int, ...] = ()  # buyer ids, in dial order
    reject_reason: str = ""
    hangup_cause: int = 0
    trace: list[tuple[int, str]] = field(default_factory=list)  # (buyer id, why skipped)
    sticky_buyer: int | None = None  # repeat caller sent back to this buyer
    bids: dict[int, object] = field(default_factory=dict)  # buyer id -> accepted rtb Bid
    auction: list[dict] = field(default_factory=list)  # every ping and its result, for the trace


class NoCounts(Counters):
    """For callers without history (unit tests of other rules)."""


_NO_COUNTS = NoCounts()
_rng = random.Random()
_second = itemgetter(1)  # the buyer id of a ranked (sort key, buyer id)


def route(
    network: Network,
    facts: CallFacts,
    live: Mapping[int, int],
    allow_anonymous: bool = False,
    counters: Counters | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """The ordered buyers for this call and why every other one was passed over.

    `live` holds the buyer legs ringing or connected now per buyer id (absent: none); it is read
    with .get, not through a function, because it is read once per buyer on every call."""
    tn = network.numbers.get(facts.tracking_number) if facts.tracking_number else None
    if tn is None:
        return Decision(DecisionStatus.REJECT, reject_reason="unknown_tracking_number", hangup_cause=CAUSE_UNALLOCATED)
    publisher_id = facts.code_publisher_id or tn.publisher_id  # a publisher code keyed in names the publisher
    decision = Decision(DecisionStatus.ROUTE, campaign_id=tn.campaign_id, publisher_id=publisher_id)
    campaign = network.campaigns.get(tn.campaign_id)
    publisher = network.publishers.get(publisher_id)
    if facts.caller_anonymous and not allow_anonymous:
        return _reject(decision, "anonymous_caller", CAUSE_REJECTED)
    if tn.paused:
        return _reject(decision, "number_paused", CAUSE_REJECTED)
    if campaign is None or campaign.paused:
        return _reject(decision, "campaign_paused", CAUSE_REJECTED)
    if tn.ask_code and not facts.code_asked:
        decision.status = DecisionStatus.CODE
        return decision
    if publisher is None or publisher.paused:
        return _reject(decision, "publisher_paused", CAUSE_REJECTED)
    if campaign.zip_prompt and not facts.zip_asked:
        decision.status = DecisionStatus.ZIP
        return decision
    counters = counters or _NO_COUNTS
    rng = rng or _rng
    now = facts.at or time.time()
    # One sort gives tier order and, inside a tier, a weighted random order: each buyer is keyed by
    # u ** (1 / weight) (Efraimidis-Spirakis weighted sampling without replacement), largest first.
    ranked: list[tuple[float, int]] = []
    rank = ranked.append
    rand = rng.random
    skip = decision.trace.append
    # The rules of skip_reason(), in its order and with its reasons, over the snapshot's plan: what is
    # the same for every buyer of this call is read once here (local periods per zone, the caller's
    # past deliveries), what is the same for every call was resolved in the plan (routing.plan).
    plan = campaign_plan(network, campaign)
    periods, closed = plan.at(now)
    state, npa = facts.state, facts.area_code
    places = plan.places(state, npa)  # per link: its geography trace entry for this caller, or None
    seen = counters.delivered.get(facts.caller) if facts.caller_valid else None
    busy = counters.on_call.get(facts.caller) if facts.caller_valid else None
    dups = plan.duplicates(seen, now, busy) if (seen or busy) and plan.dup_links else ()
    hours = counters.hours
    memos = [hours.get(lt.hour) or counters.hour(lt) for lt in periods]
    last_offer = counters.last_offer
    live_get = live.get
    held_get = counters.held.get
    # The publisher's own caps and budget (payout), read for each buyer at what it could cost.
    plimits = network.publisher_limits.get(publisher_id)
    if plimits is not None:
        pkey, plt = publisher_key(publisher_id), local(plimits.timezone, now)
    for k, shut, place in zip(plan.links, closed, places):
        bid = k.bid
        if shut is not None:  # skipped whatever the call (missing, paused), closed date, weekly hours
            if shut is k.skip:
                skip(shut)
            elif k.cap < BIG and live_get(bid, 0) >= k.cap:  # the concurrency cap comes before the schedule
                skip(k.cap_skip)
            else:
                skip(shut)
            continue
        live = live_get(bid, 0) if k.live else 0
        if live >= k.cap:  # (no cap: a number never reached)
            skip(k.cap_skip)
            continue
        if place is not None:
            skip(place)
            continue
        gap = k.gap
        if gap:
            last = last_offer.get(bid)
            if last is not None and now - last < gap:
                skip(k.gap_skip)
                continue
        if dups and k in dups:
            skip(k.dup_skip)
            continue
        if k.counted:
            # Calls in flight hold their place (routing.reservations): legs that may still connect
            # count against the caps (every call handed out, for caps that count routed calls) and
            # the most they can cost against the budgets.
            zone = k.own_zone
            room = memos[zone].get(k)
            if room is None:
                room = k.room(counters, periods[zone])
            hc = held_get(bid)
            if hc is None:
                calls = money = 0
            else:
                calls, money = (hc[0] if k.family == "r" else hc[1]), hc[2]
            if live > calls:
                calls = live
            if calls >= room[0] or money > room[2]:  # a count cap reached, or the budget passed: which, in order
                skip(k.over(calls, money, room))
                continue
        if k.extra:  # caps of this link and of the whole campaign
            why = extra_reason(k, counters, now)
            if why:
                skip((bid, why))
                continue
        if plimits is not None:
            why = plimits.reason(counters, pkey, plt, max_payout(network, tn.campaign_id, publisher_id, k.price))
            if why:
                skip((bid, why))
                continue
        # tier + 0.5 - key / 2 (priority at most 1000): tiers in order, larger keys first; a float to
        # compare, not a (priority, key) pair.
        rank(((k.tier_top - rand() * 0.5) if k.weight == 1 else (k.tier_top - rand() ** k.inv_weight * 0.5), bid))
    ranked.sort()
    candidates = list(map(_second, ranked))
    if campaign.repeat_caller and facts.caller_valid:
        last = counters.last_buyer(facts.caller)
        if last is not None and last in candidates and candidates[0] != last:
            candidates.remove(last)
            candidates.insert(0, last)
        decision.sticky_buyer = last if last in candidates else None
    decision.candidates = tuple(candidates)
    if not candidates:
        decision.status = DecisionStatus.NO_BUYER
        decision.hangup_cause = CAUSE_NO_CIRCUIT
    return decision


def extra_reason(k, counters: Counters, now: float, price: int | None = None) -> str:
    """The first limit of the link itself or of its campaign that one more call would pass ('')."""
    for key, lim in k.extra:
        why = lim.reason(counters, key, local(lim.timezone, now), k.price if price is None else price)
        if why:
            return why
    return ""


def _reject(decision: Decision, reason: str, cause: int) -> Decision:
    decision.status = DecisionStatus.REJECT
    decision.reject_reason = reason
    decision.hangup_cause = cause
    return decision


def skip_reason(
    buyer: Buyer,
    rules: Rules = NO_RULES,
    facts: CallFacts | None = None,
    now: float = 0.0,
    live_count: Callable[[int], int] | None = None,
    counters: Counters | None = None,
    network: Network | None = None,
    campaign_id: int | None = None,
    publisher_id: int | None = None,
    price_cents: int | None = None,
) -> str:
    """Why this buyer cannot take this call right now ('' when it can).

    The rules read one by one: next_candidate() asks it again at dial time. route() reads the same
    rules from the snapshot's plan (routing.plan); tests/routing/test_routing_plan.py holds the two to the
    same answers. `price_cents`: the most this call can bill the buyer (an RTB bid), else its rules'
    highest price."""
    if buyer.paused:
        return "paused"
    if rules.paused:
        return "paused_on_campaign"
    bid = buyer.id
    live = live_count(bid) if live_count is not None else 0
    cap = buyer_cap(buyer)
    if cap is not None and live >= cap:
        return f"concurrency_cap:{cap}"
    if counters is None:
        counters = _NO_COUNTS
    if price_cents is None:
        price_cents = max_revenue(network, campaign_id or 0, bid) if network is not None else buyer.revenue_cents
    now = now or time.time()
    if rules is not NO_RULES:
        lt = None
        if rules.timed:
            lt = local(rules.timezone, now)
            if not rules.open_at(lt):
                return "closed:date" if lt.date in rules.closed_dates else "closed:schedule"
        if rules.geo and facts is not None:
            reason = _geo_reason(rules, facts)
            if reason:
                return reason
        gap = rules.min_gap_seconds
        if gap:
            last = counters.last_offer.get(bid)
            if last is not None and now - last < gap:
                return f"min_gap:{gap}s"
        window = rules.duplicate_seconds
        if window and facts is not None and facts.caller_valid:
            if counters.on_call.get(facts.caller, {}).get(bid):
                return f"duplicate:{window_text(window)}"
            seen = counters.delivered.get(facts.caller)
            last = seen.get(bid) if seen else None
            if last is not None and now - last < window:
                return f"duplicate:{window_text(window)}"
        # The buyer's own caps and budgets: all its calls, in its own zone.
        own = limits_of(buyer.rules, buyer=True)
        if own.any:
            why = own.reason(counters, bid, local(own.timezone, now), price_cents, live)
            if why:
                return why
        link = network.campaigns[campaign_id].links.get(bid) if network is not None and \
            campaign_id in network.campaigns else None
        if link is not None and link.limits is not None and link.limits.any:
            why = link.limits.reason(counters, link_key(campaign_id, bid), local(link.limits.timezone, now),
                                     price_cents)
            if why:
                return why
    if network is not None:
        lim = network.campaign_limits.get(campaign_id)
        if lim is not None and lim.any:
            why = lim.reason(counters, campaign_key(campaign_id), local(lim.timezone, now), price_cents)
            if why:
                return why
        lim = network.publisher_limits.get(publisher_id)
        if lim is not None and lim.any:
            why = lim.reason(counters, publisher_key(publisher_id), local(lim.timezone, now),
                             max_payout(network, campaign_id or 0, publisher_id, price_cents))
            if why:
                return why
    return ""


def _geo_reason(rules: Rules, facts: CallFacts) -> str:
    # The same reading route() uses through the plan (routing.plan), so the two cannot drift apart.
    return state_reason(rules, facts.state) or area_code_reason(rules, facts.area_code)


def link_rules(network: Network, campaign_id: int | None, buyer_id: int) -> Rules:
    campaign: Campaign | None = network.campaigns.get(campaign_id) if campaign_id is not None else None
    if campaign is None:
        return NO_RULES
    link = campaign.links.get(buyer_id)
    return link.rules if link is not None else NO_RULES


def next_candidate(
    network: Network,
    candidates: tuple[int, ...],
    start: int,
    live_count: Callable[[int], int],
    trace: list[tuple[int, str]] | None = None,
    facts: CallFacts | None = None,
    campaign_id: int | None = None,
    counters: Counters | None = None,
    now: float = 0.0,
    publisher_id: int | None = None,
    bids: Mapping[int, object] | None = None,
) -> tuple[int, Buyer] | None:
    """First dialable buyer at or after index `start`: (index, buyer), or None.

    Every rule is checked again at dial time: a failover may come a minute later. A buyer that bid
    (`bids`, RTB) is checked at its bid: what the call would bill it."""
    for index in range(start, len(candidates)):
        buyer = network.buyers.get(candidates[index])
        if buyer is None:
            reason = "buyer_missing"
        else:
            rules = link_rules(network, campaign_id, buyer.id)
            bid = bids.get(buyer.id) if bids else None
            reason = skip_reason(buyer, rules, facts, now, live_count, counters, network, campaign_id, publisher_id,
                                 bid.amount_cents if bid is not None else None)
        if not reason:
            return index, buyer
        if trace is not None:
            trace.append((candidates[index], reason))
    return None
