"""What calls in flight hold against caps, budgets and duplicate rules, and what settled calls count.

One small interface between routing and billing (`Reservations`), so that a shared implementation
(several controllers on one database) can replace this in-process one without touching either:

- `hold(...)` when the controller hands a buyer to the dialplan: the call takes a slot at every level
  it touches (buyer, campaign link, campaign, publisher) and reserves the most it can cost there (its
  rules' highest price, tiers included, or its RTB bid; the publisher's highest payout);
- `unanswered(linkedid, attempt)` when that leg ends without an answer: it can no longer connect or
  cost anything, but it still counts as routed until its call is settled;
- `settled(call)` once the call's billing decision is stored: its holds are released and the
  settled result is counted (routed, connected and billable calls, the money billed, the caller's
  delivery for the duplicate rule), the one place counts change;
- `release(linkedid)` when a call is settled elsewhere or not at all (a replay already stored);
- `rebuild(calls)` at start, from the stored calls, through the same counting as `settled`, so a
  controller that restarted counts exactly what one that never stopped counts.

Everything here runs on the event loop (or in a test): plain dictionaries, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ppcswitch.routing.counters import Counters
from ppcswitch.routing.limits import campaign_key, link_key, max_payout, max_revenue, publisher_key
from ppcswitch.routing.model import Network


@dataclass(frozen=True, slots=True)
class SettledAttempt:
    buyer_id: int | None
    started_at: float | None  # epoch of the dial (routed counts)


@dataclass(frozen=True, slots=True)
class SettledCall:
    """A call as billing settled it: all counting needs (from a CallRecord or a stored call)."""

    linkedid: str
    caller: str  # E.164 when valid, else '' (no duplicate history)
    campaign_id: int | None
    publisher_id: int | None
    buyer_id: int | None  # the buyer that answered
    answered_at: float | None  # epoch
    attempts: tuple[SettledAttempt, ...] = ()
    revenue_billable: bool = False
    payout_billable: bool = False
    revenue_cents: int = 0
    payout_cents: int = 0


@dataclass(slots=True)
class Hold:
    buyer_id: int
    caller: str
    scopes: tuple  # scope keys (routing.limits): buyer id, link, campaign, publisher
    money: tuple  # cents held per scope
    live: bool = True  # may still connect


@dataclass
class Reservations:
    """The in-process reservations and counters (see the module doc)."""

    counters: Counters
    holds: dict[tuple[str, int], Hold] = field(default_factory=dict)  # (linkedid, attempt) -> hold
    calls: dict[str, list[int]] = field(default_factory=dict)  # linkedid -> its attempts holding

    # -- calls in flight -----------------------------------------------------------------
    def hold(self, network: Network, linkedid: str, attempt: int, buyer_id: int, campaign_id: int | None,
             publisher_id: int | None, caller: str = "", price_cents: int | None = None) -> Hold:
        """The call's attempt `attempt` is handed to `buyer_id`: hold its place and its cost."""
        key = (linkedid, attempt)
        held = self.holds.get(key)
        if held is not None:
            return held
        c, p = campaign_id or 0, publisher_id or 0
        revenue = max_revenue(network, c, buyer_id) if price_cents is None else price_cents
        scopes = [buyer_id, link_key(c, buyer_id), campaign_key(c)]
        money = [revenue, revenue, revenue]
        if p:
            scopes.append(publisher_key(p))
            money.append(max_payout(network, c, p, revenue))
        h = self.holds[key] = Hold(buyer_id, caller, tuple(scopes), tuple(money))
        self.calls.setdefault(linkedid, []).append(attempt)
        held_map = self.counters.held
        for scope, cents in zip(h.scopes, h.money):
            got = held_map.get(scope)
            if got is None:
                held_map[scope] = [1, 1, cents]
            else:
                got[0] += 1
                got[1] += 1
                got[2] += cents
        if caller:
            busy = self.counters.on_call.setdefault(caller, {})
            busy[buyer_id] = busy.get(buyer_id, 0) + 1
        return h

    def unanswered(self, linkedid: str, attempt: int) -> None:
        """That leg ended unanswered: it may not connect any more and costs nothing; it stays counted
        as routed until its call is settled."""
        h = self.holds.get((linkedid, attempt))
        if h is None or not h.live:
            return
        h.live = False
        held_map = self.counters.held
        for scope, cents in zip(h.scopes, h.money):
            got = held_map.get(scope)
            if got is not None:
                got[1] -= 1
                got[2] -= cents
        self._off_call(h)

    def release(self, linkedid: str) -> None:
        """Drop every hold of this call without counting anything."""
        held_map = self.counters.held
        for attempt in self.calls.pop(linkedid, ()):
            h = self.holds.pop((linkedid, attempt), None)
            if h is None:
                continue
            for scope, cents in zip(h.scopes, h.money):
                got = held_map.get(scope)
                if got is None:
                    continue
                got[0] -= 1
                if h.live:
                    got[1] -= 1
                    got[2] -= cents
                if got[0] <= 0:
                    del held_map[scope]
            if h.live:
                self._off_call(h)

    def _off_call(self, h: Hold) -> None:
        if not h.caller:
            return
        busy = self.counters.on_call.get(h.caller)
        if busy is None:
            return
        n = busy.get(h.buyer_id, 0) - 1
        if n > 0:
            busy[h.buyer_id] = n
        else:
            busy.pop(h.buyer_id, None)
            if not busy:
                del self.counters.on_call[h.caller]

    # -- settled calls ---------------------------------------------------------------------
    def settled(self, call: SettledCall, network: Network) -> None:
        """The call's billing decision is stored: count it, and let go of what it held."""
        self.release(call.linkedid)
        count(self.counters, call, network)

    def rebuild(self, calls: Iterable[SettledCall], network: Network) -> int:
        """Counts from stored calls (controller start), as `settled` counted them; returns how many."""
        n = 0
        for call in calls:
            count(self.counters, call, network)
            n += 1
        return n


def _zone(network: Network, scope) -> str:
    """The zone a scope counts its periods in: that of its limits (buyer: its own rules; link: the
    link's rules)."""
    if isinstance(scope, int):
        b = network.buyers.get(scope)
        return b.rules.timezone if b is not None else "UTC"
    kind = scope[0]
    if kind == "l":
        campaign = network.campaigns.get(scope[1])
        link = campaign.links.get(scope[2]) if campaign is not None else None
        if link is not None and link.limits is not None:
            return link.limits.timezone
        b = network.buyers.get(scope[2])
        return b.rules.timezone if b is not None else "UTC"
    lim = (network.campaign_limits if kind == "c" else network.publisher_limits).get(scope[1])
    return lim.timezone if lim is not None else "UTC"


def count(counters: Counters, call: SettledCall, network: Network) -> None:
    """Count one settled call at every level: routed calls at each dial, connected and billable calls
    and the money at the answer; the caller's delivery for the duplicate rule and repeat callers."""
    c, p = call.campaign_id or 0, call.publisher_id or 0
    for a in call.attempts:
        if not a.buyer_id or a.started_at is None:
            continue
        for scope in (a.buyer_id, link_key(c, a.buyer_id), campaign_key(c)) + ((publisher_key(p),) if p else ()):
            counters.add(scope, _zone(network, scope), a.started_at, "r")
    bid, at = call.buyer_id, call.answered_at
    if not bid or at is None:
        return
    buyer_side = (bid, link_key(c, bid), campaign_key(c))
    for scope in buyer_side:
        tz = _zone(network, scope)
        counters.add(scope, tz, at, "")
        if call.revenue_billable:
            counters.add(scope, tz, at, "b")
        counters.add_money(scope, tz, at, call.revenue_cents if call.revenue_billable else 0)
    if p:
        scope = publisher_key(p)
        tz = _zone(network, scope)
        counters.add(scope, tz, at, "")
        if call.payout_billable:
            counters.add(scope, tz, at, "b")
        counters.add_money(scope, tz, at, call.payout_cents if call.payout_billable else 0)
    if call.caller:
        counters.deliver(call.caller, bid, at)
    counters.offered(bid, at)
