"""The routing service the FastAGI handlers call: decisions as channel variables.

Synchronous and in memory: the network snapshot is swapped whole when the
configuration changes (see app.py), live counts come from LiveCalls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import logging
import random
import time

from ppcswitch import channel_vars as cv
from ppcswitch.numbers import read_caller, to_e164
from ppcswitch.routing import geo
from ppcswitch.routing.counters import Counters
from ppcswitch.routing.engine import CAUSE_NO_CIRCUIT, CallFacts, Decision, DecisionStatus, next_candidate, route
from ppcswitch.routing.live import CallRoute, CallRoutes, LiveCalls
from ppcswitch.routing.model import MAX_CODE_DIGITS, Network, PublisherCode
from ppcswitch.routing.reservations import Reservations, SettledAttempt, SettledCall

log = logging.getLogger(__name__)

# A wrong or missing publisher code is asked for once more; then the number's own publisher takes the call.
CODE_TRIES = 2
CODE_RETRY_SOUND = "please-try-again"  # played before the prompt when it is asked again


@dataclass(frozen=True)
class CodeOutcome:
    """What came of a publisher code prompt, for the call's attribution."""

    status: str  # retry | matched | unknown (digits that are no code) | none (nothing keyed)
    digits: str
    code: PublisherCode | None = None
    other_publisher: bool = False  # the code names a publisher other than the number's own


class Router:
    def __init__(self, network: Network, region: str = "US", allow_anonymous: bool = False,
                 rng: random.Random | None = None, clock=time.time) -> None:
        self.network = network
        self.region = region
        self.allow_anonymous = allow_anonymous
        self.live = LiveCalls()
        self.routes = CallRoutes()
        self.counters = Counters()
        # What calls in flight hold against caps, budgets and duplicate rules; counts from settled calls.
        self.reservations = Reservations(self.counters)
        # caller -> {linkedid: epoch routed} of calls not settled yet: a caller's calls settle in the
        # order they came (ppcswitch.pipeline), so the first call is the original whatever the end order.
        self.unsettled: dict[str, dict[str, float]] = {}
        self.on_ping = None  # (buyer name, seconds, outcome) for each RTB ping (metrics), set by the app
        self.rng = rng or random.Random()
        self.clock = clock
        self.rtb = None  # rtb.auction.Auctioneer when the app runs one: bids for RTB buyers
        self.code_prompt = "beep"  # attribution.code_prompt: sound(s) asking for a publisher code

    def swap(self, network: Network) -> None:
        """Take a new configuration snapshot; the next decision uses it."""
        self.network = network
        self.counters.forget()  # what was worked out for the old snapshot's links (and keeps them alive)

    def facts(self, dialled: str, caller_id: str, sub_id: str = "", click_id: str = "") -> CallFacts:
        """A new call's facts; sub_id / click_id: its attribution so far (lease, SIP headers), for RTB."""
        caller = read_caller(caller_id, self.region)
        npa = geo.area_code(caller.value) if caller.valid else ""
        return CallFacts(
            tracking_number=to_e164(dialled, self.region),
            dialled=dialled[:64],
            caller=caller.value,
            caller_valid=caller.valid,
            caller_anonymous=caller.anonymous,
            at=self.clock(),
            area_code=npa,
            state=geo.state_of_area_code(npa),
            sub_id=sub_id,
            click_id=click_id,
        )

    def finished(self, record) -> tuple[dict | None, CallRoute | None]:
        """A call's record is final: its routing trace (None if not routed here) and its route."""
        call = self.routes.finished.pop(record.linkedid, None)
        if call is None:
            return None, None
        return trace_of(call, record.buyer_id), call

    def settled(self, record, call: CallRoute | None = None) -> None:
        """The call's billing decision is stored (the only one): count it for caps, budgets and
        duplicates, let go of what it held, and tell its RTB bidders how it went, at what it billed."""
        self.reservations.settled(settled_call(record), self.network)
        self.forget_unsettled(record)
        if call is not None and self.rtb is not None:
            for buyer_id, bid in call.decision.bids.items():
                buyer = self.network.buyers.get(buyer_id)
                if buyer is not None:
                    self.rtb.post(buyer, bid, record)

    def not_settled(self, record) -> None:
        """The call was stored before (a replay) or could not be stored: only let go of its holds."""
        self.reservations.release(record.linkedid)
        self.forget_unsettled(record)

    def forget_unsettled(self, record) -> None:
        waiting = self.unsettled.get(record.caller) if record.caller_valid else None
        if waiting is not None:
            waiting.pop(record.linkedid, None)
            if not waiting:
                del self.unsettled[record.caller]

    def sweep_unsettled(self, max_age: float, now: float | None = None) -> int:
        """Forget unsettled calls older than `max_age` seconds (their end was never seen)."""
        now = self.clock() if now is None else now
        gone = 0
        for caller in list(self.unsettled):
            calls = self.unsettled[caller]
            for linkedid in [k for k, at in calls.items() if now - at > max_age]:
                del calls[linkedid]
                gone += 1
            if not calls:
                del self.unsettled[caller]
        return gone

    def _arrived(self, linkedid: str, facts: CallFacts) -> None:
        if facts.caller_valid:
            self.unsettled.setdefault(facts.caller, {}).setdefault(linkedid, facts.at)

    def decide(self, facts: CallFacts) -> Decision:
        return route(self.network, facts, self.live.counts, self.allow_anonymous, self.counters, self.rng)

    # Each step of a call has one decision (_begin, _rezip, _recode) and one answer (_answer); the
    # FastAGI handlers await the *_async forms, which run an RTB auction between the two when the
    # decision has RTB candidates. The plain forms are the same steps without the auction.

    def _begin(self, linkedid: str, facts: CallFacts) -> CallRoute:
        call = CallRoute(linkedid, facts, self.decide(facts))
        self.routes.add(call)
        self._arrived(linkedid, facts)
        return call

    def first(self, linkedid: str, facts: CallFacts) -> dict[str, str]:
        """Decide a new call; returns the channel variables for the dialplan."""
        return self._answer(self._begin(linkedid, facts))

    async def first_async(self, linkedid: str, facts: CallFacts) -> dict[str, str]:
        """first(), with an auction among the RTB candidates before anyone is dialled."""
        call = self._begin(linkedid, facts)
        await self._auction(call)
        return self._answer(call)

    async def with_zip_async(self, linkedid: str, digits: str) -> dict[str, str]:
        """with_zip(), with an auction among the RTB candidates of the new decision."""
        call = self.routes.get(linkedid)
        if call is None:
            return {}
        self._rezip(call, digits)
        await self._auction(call)
        return self._answer(call)

    async def _auction(self, call: CallRoute) -> None:
        d = call.decision
        if self.rtb is None or d.status != DecisionStatus.ROUTE:
            return
        if not any(b in self.network.buyers and self.network.buyers[b].rtb for b in d.candidates):
            return
        from ppcswitch.rtb.auction import apply_bids, metric_outcome

        results = await self.rtb.run(self.network, call.linkedid, call.facts, d)
        if self.on_ping is not None:
            for r in results:
                outcome = metric_outcome(r.outcome)
                if outcome is not None:
                    buyer = self.network.buyers.get(r.buyer_id)
                    self.on_ping(buyer.name if buyer else str(r.buyer_id), r.ms / 1000, outcome)
        apply_bids(d, self.network, results, self.clock())

    def with_zip(self, linkedid: str, digits: str) -> dict[str, str]:
        """The caller keyed in a ZIP code (or nothing): decide again with its state.

        A ZIP that is no 5 digits or names no state leaves the area code's state in place."""
        call = self.routes.get(linkedid)
        if call is None:
            return {}
        self._rezip(call, digits)
        return self._answer(call)

    def _rezip(self, call: CallRoute, digits: str) -> None:
        digits = "".join(ch for ch in (digits or "") if ch.isdigit())[:5]
        state = geo.state_of_zip(digits)
        facts = dataclasses.replace(call.facts, zip_asked=True, zip_code=digits if geo.valid_zip(digits) else "",
                                    state=state or call.facts.state)
        call.facts, call.decision = facts, self.decide(facts)

    async def with_code_async(self, linkedid: str, digits: str) -> tuple[dict[str, str], CodeOutcome | None]:
        """The caller keyed in a publisher code (or nothing): decide again as that publisher's call."""
        call = self.routes.get(linkedid)
        if call is None:  # e.g. the controller restarted mid-call: the dialplan falls back
            return {}, None
        outcome = self._recode(call, digits)
        await self._auction(call)
        return self._answer(call), outcome

    def with_code(self, linkedid: str, digits: str) -> dict[str, str]:
        call = self.routes.get(linkedid)
        if call is None:
            return {}
        self._recode(call, digits)
        return self._answer(call)

    def _recode(self, call: CallRoute, digits: str) -> CodeOutcome:
        digits = "".join(ch for ch in (digits or "") if ch.isdigit())[:MAX_CODE_DIGITS]
        call.code_tries += 1
        code = self.network.publisher_codes.get(digits) if digits else None
        if code is None and call.code_tries < CODE_TRIES:
            call.facts = dataclasses.replace(call.facts, publisher_code=digits)  # still CODE: asked again
            return CodeOutcome("retry", digits)
        facts = call.facts
        tn = self.network.numbers.get(facts.tracking_number or "")
        other = code is not None and (tn is None or code.publisher_id != tn.publisher_id)
        # A lease's or SIP header's values came with the number's own publisher's traffic: they do not
        # follow the call to another publisher. A sub-ID code sets the sub-ID.
        sub_id = code.sub_id if code is not None and code.sub_id else ("" if other else facts.sub_id)
        facts = dataclasses.replace(facts, code_asked=True, publisher_code=digits,
                                    code_publisher_id=code.publisher_id if code else None, sub_id=sub_id,
                                    click_id="" if other else facts.click_id)
        call.facts, call.decision = facts, self.decide(facts)
        status = "matched" if code is not None else ("unknown" if digits else "none")
        return CodeOutcome(status, digits, code, other)

    def _answer(self, call: CallRoute) -> dict[str, str]:
        decision = call.decision
        if decision.status == DecisionStatus.REJECT:
            return {cv.ROUTE_STATUS: cv.RouteStatus.REJECT, cv.HANGUP_CAUSE: str(decision.hangup_cause)}
        out = {cv.CAMPAIGN_ID: str(decision.campaign_id), cv.PUBLISHER_ID: str(decision.publisher_id)}
        if decision.status == DecisionStatus.ZIP:
            out[cv.ROUTE_STATUS] = cv.RouteStatus.ZIP
            return out
        if decision.status == DecisionStatus.CODE:
            out[cv.ROUTE_STATUS] = cv.RouteStatus.CODE
            again = CODE_RETRY_SOUND if call.code_tries else ""
            out[cv.CODE_PROMPT] = "&".join(p for p in (again, self.code_prompt) if p)
            out[cv.CODE_DIGITS] = str(self.network.code_digits)
            return out
        campaign = self.network.campaigns.get(decision.campaign_id)
        if campaign is not None and campaign.whisper:
            out[cv.WHISPER] = campaign.whisper
        out.update(self._dial_next(call))
        return out

    def next(self, linkedid: str, last_status: str) -> dict[str, str]:
        """The last Dial() ended without an answer: the next buyer, or no buyer left."""
        call = self.routes.get(linkedid)
        if call is None:  # e.g. the controller restarted mid-call: the dialplan falls back
            return {}
        if call.attempts:
            self.live.release(linkedid, len(call.attempts))
            self.reservations.unanswered(linkedid, len(call.attempts))
        return self._dial_next(call)

    def _dial_next(self, call: CallRoute) -> dict[str, str]:
        decision: Decision = call.decision
        now = self.clock()
        found = next_candidate(self.network, decision.candidates, call.next_index, self.live.count, decision.trace,
                               call.facts, decision.campaign_id, self.counters, now, decision.publisher_id,
                               decision.bids)
        if found is None:
            if not call.attempts:
                decision.status = DecisionStatus.NO_BUYER
            decision.hangup_cause = CAUSE_NO_CIRCUIT
            call.next_index = len(decision.candidates)
            return {cv.ROUTE_STATUS: cv.RouteStatus.NOBUYER, cv.HANGUP_CAUSE: str(CAUSE_NO_CIRCUIT)}
        index, buyer = found
        call.next_index = index + 1
        call.attempts.append(buyer.id)
        attempt = len(call.attempts)
        self.live.take(call.linkedid, attempt, buyer.id)
        self.counters.offered(buyer.id, now)
        bid = decision.bids.get(buyer.id)
        # The call holds its place and the most it can cost at every level until it is settled.
        self.reservations.hold(self.network, call.linkedid, attempt, buyer.id, decision.campaign_id,
                               decision.publisher_id, call.facts.caller if call.facts.caller_valid else "",
                               getattr(bid, "amount_cents", None))
        return {
            cv.ROUTE_STATUS: cv.RouteStatus.ROUTE,
            cv.DEST: getattr(bid, "dial_target", "") or buyer.dial_target,
            cv.DIAL_TIMEOUT: str(buyer.ring_timeout),
            cv.BUYER_ID: str(buyer.id),
            cv.ATTEMPT: str(attempt),
        }


def _epoch(when) -> float | None:
    return when.timestamp() if when is not None else None


def settled_call(record) -> SettledCall:
    """What counting needs of a settled CallRecord (its billing fields set by billing.ledger.settle)."""
    return SettledCall(
        linkedid=record.linkedid, caller=record.caller if record.caller_valid else "",
        campaign_id=record.campaign_id, publisher_id=record.publisher_id, buyer_id=record.buyer_id,
        answered_at=_epoch(record.answered_at),
        attempts=tuple(SettledAttempt(a.buyer_id, _epoch(a.started_at)) for a in sorted(record.attempts, key=lambda a: a.seq)),
        revenue_billable=bool(record.billable), payout_billable=bool(record.payout_billable),
        revenue_cents=record.revenue_cents, payout_cents=record.payout_cents)


def trace_of(call: CallRoute, winner: int | None) -> dict:
    """What routing considered and decided for one call, for the record (JSON-ready)."""
    d, f = call.decision, call.facts
    return {
        "status": d.status,
        "caller_state": f.state,
        "area_code": f.area_code,
        "zip": f.zip_code,
        **({"publisher_code": f.publisher_code, "code_publisher_id": f.code_publisher_id} if f.code_asked else {}),
        "candidates": list(d.candidates),
        "skipped": [[bid, why] for bid, why in d.trace],
        "sticky_buyer": d.sticky_buyer,
        "bids": d.auction,
        "attempts": list(call.attempts),
        "winner": winner,
    }
