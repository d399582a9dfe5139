"""The controller's fraud state: lists and campaign settings, caller history, pending screens, alerts.

Synchronous and in memory like the router: `screen` answers the dialplan before
routing (block/allow lists, pre-routing score, press-1 challenge, recording),
`assess` scores a finished call and sets its quality_score before billing
settles it. Storage and HTTP happen in ppcswitch.fraud.runtime.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from ppcswitch import channel_vars as cv
from ppcswitch.calls import CallRecord, Outcome
from ppcswitch.config import FraudSettings
from ppcswitch.fraud import alerts as al
from ppcswitch.fraud import lists
from ppcswitch.fraud import signals as s
from ppcswitch.fraud.lists import CampaignScreening
from ppcswitch.fraud.score import Finding, Score, score
from ppcswitch.routing import geo
from ppcswitch.routing.engine import CallFacts

CHALLENGE_PASSED, CHALLENGE_FAILED = "passed", "failed"


@dataclass
class Screened:
    """What the pre-routing check saw, kept until the call's record comes."""

    findings: list[Finding]
    attestation: str
    allowed: bool
    recording: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ScreenResult:
    variables: dict[str, str]
    reject_reason: str = ""  # non-empty: refuse the call before routing


@dataclass
class Assessment:
    score: Score
    row: dict  # the call_signals columns
    alerts: list[al.Alert]


class FraudService:
    def __init__(self, settings: FraudSettings, region: str = "US", clock=time.time) -> None:
        self.settings = settings
        self.region = region
        self.clock = clock
        self.entries: list[lists.ListEntry] = []
        self.campaigns: dict[int, CampaignScreening] = {}
        self.history: dict[str, list[s.PriorCall]] = defaultdict(list)
        self.pending: dict[str, Screened] = {}
        # Per publisher, over the repeat window: connected calls and whether each ended near the threshold.
        self.threshold_calls: dict[int, al.RateWindow] = {}
        rates = {al.PUBLISHER_FLAGGED: settings.alert_flagged_rate, al.BUYER_UNANSWERED: settings.alert_unanswered_rate}
        self.monitor = al.Monitor(settings.alert_window_minutes * 60, settings.alert_min_calls,
                                  {k: v for k, v in rates.items() if v > 0})

    # -- configuration ------------------------------------------------------------
    def load(self, entries: list[lists.ListEntry], campaigns: dict[int, CampaignScreening]) -> None:
        self.entries, self.campaigns = entries, campaigns

    def remember(self, caller: str, at: float, publisher_id: int | None) -> None:
        """One call of this caller (at start-up: read back from stored signals)."""
        if caller and caller != "anonymous":
            keep = max(self.settings.repeat_window_hours * 3600, self.settings.velocity_window_minutes * 60)
            self.history[caller] = s.prior_within(self.history[caller], at, keep) + [s.PriorCall(at, publisher_id)]

    # -- before routing -------------------------------------------------------------
    def screen(self, linkedid: str, facts: CallFacts, campaign_id: int | None, publisher_id: int | None,
               attestation: str) -> ScreenResult:
        """Lists, pre-routing signals and score; the variables for the dialplan."""
        if len(self.pending) > 50_000:  # calls whose record never came (AMI down): forget the oldest
            del self.pending[next(iter(self.pending))]
        caller = facts.caller
        verdict = lists.verdict(self.entries, caller, campaign_id)
        findings: list[Finding] = []
        at = facts.at or self.clock()
        if verdict != lists.ALLOW:
            findings = self.caller_findings(caller, at, publisher_id, attestation)
        self.remember(caller if facts.caller_valid else "", at, publisher_id)
        settings = self.campaigns.get(campaign_id or 0, CampaignScreening())
        screened = Screened(findings, attestation, verdict == lists.ALLOW)
        self.pending[linkedid] = screened
        out = {cv.CAMPAIGN_ID: str(campaign_id or ""), cv.PUBLISHER_ID: str(publisher_id or "")}
        if verdict == lists.BLOCK:
            screened.findings = [Finding(s.BLOCKED)] + findings
            return ScreenResult(out, "blocked_caller")
        pre = score(findings).value
        if settings.block_score is not None and pre >= settings.block_score and verdict != lists.ALLOW:
            return ScreenResult(out, f"fraud_score:{pre}>={settings.block_score}")
        out[cv.CHALLENGE] = "1" if settings.challenge and verdict != lists.ALLOW else ""
        if settings.record:
            screened.recording = recording_name(linkedid)
        out[cv.RECORD] = screened.recording
        return ScreenResult(out)

    def caller_findings(self, caller: str, at: float, publisher_id: int | None, attestation: str) -> list[Finding]:
        st = self.settings
        out = []
        number = s.caller_number(caller, self.region)
        if number:
            out.append(Finding(number))
        prior = self.history.get(caller, []) if caller and caller != "anonymous" else []
        others = s.repeat_publishers(prior, at, publisher_id, st.repeat_window_hours * 3600)
        if others:
            out.append(Finding(s.REPEAT_PUBLISHERS, f"{len(others)} other publisher(s) in {st.repeat_window_hours:g} h"))
        n = s.velocity(prior, at, st.velocity_window_minutes * 60) if prior else 1
        if n >= st.velocity_calls:
            out.append(Finding(s.VELOCITY, f"{n} calls in {st.velocity_window_minutes:g} min"))
        level = s.attestation_signal(attestation)
        if level:
            out.append(Finding(level))
        return out

    # -- after the call -------------------------------------------------------------
    def assess(self, record: CallRecord, route=None, talk: dict | None = None, network=None) -> Assessment:
        """Score a finished call; sets record.quality_score (and a failed challenge's outcome)."""
        st = self.settings
        talk = talk or {}
        screened = self.pending.pop(record.linkedid, None)
        at = record.started_at.timestamp()
        if screened is None:  # never screened (fallback, recovered): what the record alone tells
            findings = [Finding(x) for x in [s.caller_number(record.caller, self.region)] if x]
            screened = Screened(findings, "", False)
        findings = list(screened.findings)
        challenge = talk.get("challenge", "")
        if challenge == CHALLENGE_FAILED:
            findings.append(Finding(s.CHALLENGE_FAILED))
            if record.outcome in (Outcome.ABANDONED, Outcome.REJECTED):
                record.outcome, record.reject_reason = Outcome.REJECTED, "challenge_failed"
        if route is not None and not screened.allowed:
            zip_state = geo.state_of_zip(route.facts.zip_code)
            area_state = geo.state_of_area_code(route.facts.area_code)
            if s.state_mismatch(area_state, zip_state):
                findings.append(Finding(s.STATE_MISMATCH, f"area code {area_state}, ZIP {zip_state}"))
        connected = bool(record.buyer_id) and record.connected_ms > 0
        near = False
        if connected and record.publisher_id is not None:
            buyer = network.buyers.get(record.buyer_id) if network is not None else None
            minimum = record.min_duration_override if record.min_duration_override is not None else \
                (buyer.min_duration if buyer is not None else 0)
            near = s.near_threshold(record.connected_seconds, minimum, st.threshold_margin_seconds)
            w = self.threshold_calls.setdefault(record.publisher_id, al.RateWindow(st.repeat_window_hours * 3600))
            w.add(at, near)
            n_near, n_conn = w.counts(at)
            if not screened.allowed:
                if near:
                    findings.append(Finding(s.NEAR_THRESHOLD, f"{record.connected_seconds}s, minimum {minimum}s"))
                if near and s.clustering(n_near, n_conn, st.clustering_share, st.clustering_min_calls):
                    findings.append(Finding(s.NEAR_THRESHOLD_PUBLISHER, f"{n_near} of {n_conn} calls"))
        caller_ms, buyer_ms = talk.get("caller_talk_ms"), talk.get("buyer_talk_ms")
        if connected and talk.get("talk_detect") and not screened.allowed:
            silent = s.no_conversation(record.connected_ms, caller_ms or 0, buyer_ms or 0,
                                       st.no_conversation_seconds * 1000)
            if silent:
                findings.append(Finding(s.NO_CONVERSATION, silent))
        result = score(findings)
        record.quality_score = result.value
        flagged = result.value >= st.flag_score
        raised = []
        for kind, subject, bad in [(al.PUBLISHER_FLAGGED, record.publisher_id, flagged)] + [
                (al.BUYER_UNANSWERED, a.buyer_id, a.dial_status != "ANSWER") for a in record.attempts]:
            alert = self.monitor.observe(kind, subject, self.clock(), bad)
            if alert is not None:
                raised.append(alert)
        row = dict(linkedid=record.linkedid, started_at=record.started_at, caller=record.caller[:64],
                   publisher_id=record.publisher_id, campaign_id=record.campaign_id, buyer_id=record.buyer_id,
                   connected=connected, score=result.value, flagged=flagged, flags=result.flags,
                   explanation=result.explanation, attestation=screened.attestation, near_threshold=near,
                   caller_talk_ms=caller_ms if talk.get("talk_detect") else None,
                   buyer_talk_ms=buyer_ms if talk.get("talk_detect") and record.buyer_id else None,
                   challenge=challenge, recording=screened.recording)
        return Assessment(result, row, raised)


def recording_name(linkedid: str) -> str:
    """The recording's file name: the linkedid with only safe characters, .wav."""
    return "".join(ch for ch in linkedid if ch.isalnum() or ch in ".-_") + ".wav"
