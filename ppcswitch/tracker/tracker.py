"""One call record per call, built from AMI events (keyed by linkedid).

The tracker is synchronous and does no I/O: the AMI client feeds it events in
order, and it hands each finished CallRecord to `on_record` (which queues it
for the database writer). Replayed or duplicate events change nothing: a call
is finished once, and storage is idempotent on linkedid besides.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Callable, Mapping

from ppcswitch import channel_vars as cv
from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.numbers import read_caller, to_e164
from ppcswitch.routing.engine import DecisionStatus
from ppcswitch.routing.live import CallRoutes, LiveCalls
from ppcswitch.routing.model import Network

log = logging.getLogger(__name__)

# Keep the ids of finished calls a while, so late or replayed events for them are ignored.
FINISHED_MEMORY = 50_000
# A stopping Asterisk hangs up every channel with this softhangup flag (AST_SOFTHANGUP_SHUTDOWN),
# the Cause of their SoftHangupRequest events; its Hangup events then say only "Normal Clearing".
SOFTHANGUP_SHUTDOWN = 4
# End reasons (the record's hangup cause text) of calls cut by Asterisk itself stopping.
CUT_BY_SHUTDOWN = "Asterisk shutdown (call cut)"
CUT_BY_RESTART = "Asterisk restart (call cut, end unseen)"


def event_time(event: Mapping[str, Any]) -> datetime:
    """The event's own time (manager.conf timestampevents=yes), else now."""
    try:
        return datetime.fromtimestamp(float(event.get("Timestamp")), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(UTC)


def chan_vars(event: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Channel variables attached to an event (ChanVariable / DestChanVariable headers)."""
    raw = event.get(prefix + "ChanVariable")
    if raw is None:
        return {}
    out = {}
    for item in raw if isinstance(raw, list) else [raw]:
        name, sep, value = str(item).partition("=")
        if sep:
            out[name.strip()] = value
    return out


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


@dataclass
class _Call:
    linkedid: str
    started_at: datetime
    dialled: str = ""
    caller_raw: str = ""
    caller_uid: str = ""
    channel: str = ""  # the caller leg's channel name: what AMI Hangup takes (panel "hang up")
    channels: set[str] = field(default_factory=set)
    attempts: dict[int, Attempt] = field(default_factory=dict)
    leg_attempt: dict[str, int] = field(default_factory=dict)  # buyer leg uniqueid -> attempt
    fallback: bool = False
    hangup_cause: int | None = None
    hangup_cause_text: str = ""
    connection_end: datetime | None = None
    ended_at: datetime | None = None
    vars: dict[str, str] = field(default_factory=dict)  # last channel vars seen on the caller leg
    # Fraud signals (ppcswitch.fraud): talk time per leg from TALK_DETECT, the press-1 challenge's result.
    talk_ms: dict[str, int] = field(default_factory=dict)  # "caller" | "buyer" -> ms of speech
    talking_since: dict[str, datetime] = field(default_factory=dict)  # uniqueid -> ChannelTalkingStart time
    talk_detect: bool = False  # a ChannelTalking event was seen, or the dialplan enabled detection
    challenge: str = ""
    cut_reason: str = ""  # CUT_BY_*: Asterisk stopping ended the call, not a party


class CallTracker:
    def __init__(
        self,
        routes: CallRoutes,
        live: LiveCalls,
        network: Callable[[], Network],
        on_record: Callable[[CallRecord], None],
        region: str = "US",
        reservations=None,
    ) -> None:
        self.routes = routes
        self.live = live
        # routing.reservations.Reservations: a leg that ends unanswered lets go of what it reserved.
        self.reservations = reservations
        self.network = network
        self.on_record = on_record
        self.region = region
        self.calls: dict[str, _Call] = {}
        self._finished: dict[str, None] = {}
        self.finished_count = 0
        self.errors = 0
        # Fraud signals of finished calls, by linkedid, for the fraud service to take (ppcswitch.fraud.runtime).
        self.signals: dict[str, dict] = {}

    def handle(self, event: Mapping[str, Any]) -> None:
        """Feed one AMI event. Never raises: a bad event is logged and skipped."""
        try:
            name = str(event.get("Event", ""))
            handler = self._handlers.get(name)
            if name == "UserEvent":
                handler = self._handlers.get("UserEvent:" + str(event.get("UserEvent", "")))
            if handler is not None:
                handler(self, event)
        except Exception:  # a malformed event must not stop call tracking
            self.errors += 1
            log.exception("could not apply AMI event %r", dict(event) if hasattr(event, "keys") else event)

    # -- events ---------------------------------------------------------------

    def _call_for(self, event: Mapping[str, Any], create: bool = False) -> _Call | None:
        linkedid = str(event.get("Linkedid") or event.get("LinkedID") or "")
        if not linkedid or linkedid in self._finished:
            return None
        call = self.calls.get(linkedid)
        if call is None and create:
            call = self.calls[linkedid] = _Call(linkedid, event_time(event))
        return call

    def _newchannel(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event, create=True)
        if call is None:
            return
        uid = str(event.get("Uniqueid", ""))
        call.channels.add(uid)
        if uid == call.linkedid:  # the first channel of a call is the caller's
            call.caller_uid = uid
            call.channel = str(event.get("Channel", ""))
            call.dialled = str(event.get("Exten", ""))
            call.caller_raw = str(event.get("CallerIDNum", ""))

    def _remember_vars(self, call: _Call, event: Mapping[str, Any]) -> None:
        if str(event.get("Uniqueid", "")) == call.caller_uid:
            call.vars.update(chan_vars(event))

    def _dial_begin(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is None:
            return
        self._remember_vars(call, event)
        vars_ = chan_vars(event)
        seq = _int(vars_.get(cv.ATTEMPT)) or (max(call.attempts, default=0) + 1)
        attempt = call.attempts.get(seq)
        if attempt is None:
            buyer_id = _int(vars_.get(cv.BUYER_ID)) or self._buyer_by_dialstring(str(event.get("DialString", "")))
            attempt = call.attempts[seq] = Attempt(seq, buyer_id)
        attempt.started_at = event_time(event)
        dest = str(event.get("DestUniqueid", ""))
        if dest:
            call.leg_attempt[dest] = seq
            call.channels.add(dest)

    def _dial_end(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is None:
            return
        seq = call.leg_attempt.get(str(event.get("DestUniqueid", "")))
        attempt = call.attempts.get(seq) if seq else None
        if attempt is None:
            return
        status = str(event.get("DialStatus", ""))
        attempt.dial_status = status
        when = event_time(event)
        if status == "ANSWER":
            attempt.answered_at = when
        else:
            attempt.ended_at = when
            self._unanswered(call.linkedid, seq)

    def _attempt_event(self, event: Mapping[str, Any]) -> None:
        """The dialplan's report after Dial() returned (covers targets that never rang)."""
        call = self._call_for(event)
        seq = _int(event.get("Attempt"))
        if call is None or not seq:
            return
        attempt = call.attempts.get(seq)
        if attempt is None:
            attempt = call.attempts[seq] = Attempt(seq, _int(event.get("BuyerID")), started_at=event_time(event))
        status = str(event.get("DialStatus", ""))
        if not attempt.dial_status:
            attempt.dial_status = status
        if status != "ANSWER":
            attempt.ended_at = attempt.ended_at or event_time(event)
            self._unanswered(call.linkedid, seq)

    def _unanswered(self, linkedid: str, seq: int) -> None:
        self.live.release(linkedid, seq)
        if self.reservations is not None:
            self.reservations.unanswered(linkedid, seq)

    def _soft_hangup_request(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is not None and _int(event.get("Cause")) == SOFTHANGUP_SHUTDOWN:
            call.cut_reason = CUT_BY_SHUTDOWN

    def _fallback_event(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is not None:
            call.fallback = True

    def _hangup(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is None:
            return
        uid = str(event.get("Uniqueid", ""))
        when = event_time(event)
        self._remember_vars(call, event)
        answered = any(a.answered_at for a in call.attempts.values())
        if uid == call.caller_uid:
            call.hangup_cause = _int(event.get("Cause"))
            call.hangup_cause_text = str(event.get("Cause-txt", ""))[:100]
            if answered and call.connection_end is None:
                call.connection_end = when
        seq = call.leg_attempt.get(uid)
        if seq:
            attempt = call.attempts[seq]
            attempt.ended_at = when
            self.live.release(call.linkedid, seq)
            if not attempt.answered_at:
                self._unanswered(call.linkedid, seq)
            if attempt.answered_at and call.connection_end is None:
                call.connection_end = when
        self._talk_end(call, uid, when)
        call.channels.discard(uid)
        if not call.channels:
            call.ended_at = when
            self._finish(call)

    # -- fraud signals: talk time per leg (TALK_DETECT), the press-1 challenge --------

    def _leg(self, call: _Call, uid: str) -> str:
        return "caller" if uid == call.caller_uid else "buyer" if uid in call.leg_attempt else ""

    def _talking_start(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is not None:
            call.talk_detect = True
            call.talking_since[str(event.get("Uniqueid", ""))] = event_time(event)

    def _talking_stop(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is None:
            return
        uid = str(event.get("Uniqueid", ""))
        start = call.talking_since.pop(uid, None)
        duration = _int(event.get("Duration"))
        if duration is None and start is not None:
            duration = int((event_time(event) - start).total_seconds() * 1000)
        leg = self._leg(call, uid)
        if leg and duration:
            call.talk_ms[leg] = call.talk_ms.get(leg, 0) + max(0, duration)

    def _talk_end(self, call: _Call, uid: str, when: datetime) -> None:
        """A leg hung up while talking: count its speech up to the hangup."""
        start = call.talking_since.pop(uid, None)
        leg = self._leg(call, uid)
        if start is not None and leg:
            call.talk_ms[leg] = call.talk_ms.get(leg, 0) + max(0, int((when - start).total_seconds() * 1000))

    def _challenge_event(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is not None:
            call.talk_detect = call.talk_detect or str(event.get("TalkDetect", "")) == "1"
            call.challenge = str(event.get("Result", ""))[:8]

    def _talk_detect_event(self, event: Mapping[str, Any]) -> None:
        call = self._call_for(event)
        if call is not None:
            call.talk_detect = True

    _handlers: dict[str, Callable[["CallTracker", Mapping[str, Any]], None]] = {
        "ChannelTalkingStart": _talking_start,
        "ChannelTalkingStop": _talking_stop,
        "UserEvent:" + cv.CHALLENGE_EVENT: _challenge_event,
        "UserEvent:" + cv.TALK_DETECT_EVENT: _talk_detect_event,
        "Newchannel": _newchannel,
        "DialBegin": _dial_begin,
        "DialEnd": _dial_end,
        "Hangup": _hangup,
        "SoftHangupRequest": _soft_hangup_request,
        "UserEvent:" + cv.ATTEMPT_EVENT: _attempt_event,
        "UserEvent:" + cv.FALLBACK_EVENT: _fallback_event,
    }

    # -- the record -------------------------------------------------------------

    def _buyer_by_dialstring(self, dial_string: str) -> int | None:
        for buyer in self.network().buyers.values():
            if buyer.dial_target.partition("/")[2] == dial_string:
                return buyer.id
        return None

    def _finish(self, call: _Call) -> None:
        del self.calls[call.linkedid]
        self._finished[call.linkedid] = None
        if len(self._finished) > FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]
        self.live.release_call(call.linkedid)
        route = self.routes.pop(call.linkedid)
        record = self.build_record(call, route)
        self.signals[call.linkedid] = {"talk_detect": call.talk_detect, "challenge": call.challenge,
                                       "caller_talk_ms": call.talk_ms.get("caller", 0),
                                       "buyer_talk_ms": call.talk_ms.get("buyer", 0)}
        if len(self.signals) > FINISHED_MEMORY:  # nobody takes them (no fraud service): forget the oldest
            del self.signals[next(iter(self.signals))]
        self.finished_count += 1
        self.on_record(record)

    def build_record(self, call: _Call, route) -> CallRecord:
        network = self.network()
        attempts = [call.attempts[k] for k in sorted(call.attempts)]
        answered = next((a for a in attempts if a.answered_at), None)
        if route is not None:
            facts, decision = route.facts, route.decision
            tracking_number = facts.tracking_number or facts.dialled[:64]
            caller, caller_valid = facts.caller, facts.caller_valid
            campaign_id, publisher_id = decision.campaign_id, decision.publisher_id
        else:  # routed before a controller restart, or never reached the controller
            tracking_number = to_e164(call.dialled, self.region) or call.dialled[:64]
            parsed = read_caller(call.caller_raw, self.region)
            caller, caller_valid = parsed.value, parsed.valid
            campaign_id = _int(call.vars.get(cv.CAMPAIGN_ID))
            publisher_id = _int(call.vars.get(cv.PUBLISHER_ID))
            decision = None
        if answered:
            outcome = Outcome.CONNECTED
        elif call.fallback:
            outcome = Outcome.FALLBACK
        elif decision is not None and decision.status == DecisionStatus.REJECT:
            outcome = Outcome.REJECTED
        elif decision is not None and decision.status == DecisionStatus.NO_BUYER:
            outcome = Outcome.NO_BUYER
        elif attempts:
            outcome = Outcome.NOT_CONNECTED
        elif decision is None and to_e164(call.dialled, self.region) is None:
            outcome = Outcome.REJECTED  # the dialplan refused it before asking the controller
        else:
            outcome = Outcome.ABANDONED
        connected_ms = 0
        if answered:
            end = call.connection_end or call.ended_at or answered.answered_at
            connected_ms = max(0, int((end - answered.answered_at).total_seconds() * 1000))
        # Billable or not, and the money, are decided once, when the call is settled (billing.ledger):
        # the record leaves here with none. An accepted RTB bid is billed at its amount (and its own
        # minimum, when it gave one).
        bid = getattr(decision, "bids", {}).get(answered.buyer_id) if decision is not None and answered else None
        reasons: list[str] = []
        reject_reason = decision.reject_reason if decision is not None else ""
        if outcome == Outcome.REJECTED:
            reject_reason = reject_reason or "invalid_number"
            reasons = [f"rejected:{reject_reason}"]
        return CallRecord(
            linkedid=call.linkedid,
            tracking_number=tracking_number,
            caller=caller,
            caller_valid=caller_valid,
            started_at=call.started_at,
            ended_at=call.ended_at or call.started_at,
            outcome=outcome,
            publisher_id=publisher_id,
            campaign_id=campaign_id,
            buyer_id=answered.buyer_id if answered else None,
            answered_at=answered.answered_at if answered else None,
            connected_ms=connected_ms,
            hangup_cause=call.hangup_cause,
            hangup_cause_text=call.cut_reason or call.hangup_cause_text,
            reject_reason=reject_reason,
            billing_reasons=reasons,
            attempts=attempts,
            revenue_override_cents=getattr(bid, "amount_cents", None),
            min_duration_override=getattr(bid, "min_duration", None),
        )

    def cut(self, linkedid: str, when: datetime, reason: str = CUT_BY_RESTART) -> bool:
        """Finish a tracked call that Asterisk lost without a Hangup (it was killed or crashed and
        came back without it): it ended at `when`, the moment the AMI link dropped, so a bridged
        call keeps the connected time it really had. False if the call is not tracked."""
        call = self.calls.get(linkedid)
        if call is None:
            return False
        when = max(when, call.started_at)
        for attempt in call.attempts.values():
            if attempt.ended_at is None:
                attempt.ended_at = max(when, attempt.answered_at or when)
        if call.connection_end is None and any(a.answered_at for a in call.attempts.values()):
            call.connection_end = when
        call.ended_at = when
        call.cut_reason = reason
        self._finish(call)
        return True

    def drop(self, linkedid: str) -> None:
        """Forget a tracked call whose record comes from elsewhere (Asterisk's CDR file); late
        events for it are ignored, its buyer slots released, its route kept for its trace."""
        if self.calls.pop(linkedid, None) is not None:
            self._finished[linkedid] = None
            if len(self._finished) > FINISHED_MEMORY:
                del self._finished[next(iter(self._finished))]
        self.live.release_call(linkedid)
        self.routes.pop(linkedid)

    def sweep(self, max_age_seconds: float, now: datetime | None = None) -> int:
        """Finish calls whose end was never seen (AMI link lost mid-call)."""
        now = now or datetime.now(UTC)
        stale = [c for c in self.calls.values() if (now - c.started_at).total_seconds() > max_age_seconds]
        for call in stale:
            call.ended_at = call.ended_at or now
            self._finish(call)
        return len(stale)
