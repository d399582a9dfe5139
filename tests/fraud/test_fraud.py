"""Fraud signals at their boundaries, the score and its explanation, lists, alerts, the service."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.config import FraudSettings
from ppcswitch.fraud import alerts as al
from ppcswitch.fraud import lists, scorer
from ppcswitch.fraud import signals as s
from ppcswitch.fraud.runtime import cleanup_recordings
from ppcswitch.fraud.score import WEIGHTS, Finding, explain, score, with_external
from ppcswitch.fraud.lists import CampaignScreening
from ppcswitch.fraud.service import FraudService
from ppcswitch.routing.engine import CallFacts

H = 3600.0


# --- repeat caller across publishers, velocity ---------------------------------------

def test_repeat_caller_window_is_inclusive_and_ignores_the_same_publisher():
    at = 100_000.0
    prior = [s.PriorCall(at - 24 * H, 2), s.PriorCall(at - 10, 1), s.PriorCall(at - 24 * H - 1, 3)]
    assert s.repeat_publishers(prior, at, 1, 24 * H) == {2}  # exactly 24 h ago counts, one second more does not
    assert s.repeat_publishers(prior, at, 2, 24 * H) == {1}
    assert s.repeat_publishers([], at, 1, 24 * H) == set()
    assert s.repeat_publishers([s.PriorCall(at - 5, None)], at, 1, 24 * H) == set()


def test_velocity_counts_this_call_and_the_window_edge():
    at = 10_000.0
    prior = [s.PriorCall(at - 600, 1), s.PriorCall(at - 300, 1), s.PriorCall(at - 601, 1)]
    assert s.velocity(prior, at, 600) == 3  # this one + the two within 10 min (600 s ago included)
    assert s.velocity([], at, 600) == 1


# --- near the billable threshold ---------------------------------------------------------

@pytest.mark.parametrize("seconds,near", [(59, False), (60, True), (65, True), (66, False)])
def test_near_threshold_is_minimum_to_minimum_plus_margin(seconds, near):
    assert s.near_threshold(seconds, 60, 5) is near


def test_no_minimum_means_nothing_to_game():
    assert s.near_threshold(3, 0, 5) is False


def test_publisher_clustering_needs_enough_calls_and_the_share():
    assert s.clustering(5, 10, 0.5, 10) is True  # exactly half of exactly the minimum number of calls
    assert s.clustering(4, 10, 0.5, 10) is False
    assert s.clustering(5, 9, 0.5, 10) is False  # 5 of 9 is over half, but too few calls
    assert s.threshold_share(0, 0) == 0.0


# --- caller number ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw,signal", [
    ("+14155550123", ""),  # San Francisco, a real range
    ("anonymous", s.CALLER_ANONYMOUS), ("", s.CALLER_ANONYMOUS), ("Restricted", s.CALLER_ANONYMOUS),
    ("+1415555", s.CALLER_INVALID),  # too short to be a number
    ("sip:bob", s.CALLER_INVALID), ("+1415abc0123", s.CALLER_INVALID),
    ("+15555550123", s.CALLER_CANNOT_CALL),  # area code 555 is not assigned
    ("+18005550100", s.CALLER_CANNOT_CALL),  # toll-free numbers receive calls, they do not place them
    ("+19005551234", s.CALLER_CANNOT_CALL),  # premium rate
])
def test_caller_number(raw, signal):
    assert s.caller_number(raw) == signal


def test_state_mismatch_only_when_both_states_are_known():
    assert s.state_mismatch("CA", "TX") is True
    assert s.state_mismatch("CA", "CA") is False
    assert s.state_mismatch("", "TX") is False and s.state_mismatch("CA", "") is False


# --- attestation -------------------------------------------------------------------------------

def _b64(d) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def _jwt(claims) -> str:
    return f"{_b64({'alg': 'ES256'})}.{_b64(claims)}.sig"


@pytest.mark.parametrize("identity,header,level", [
    (_jwt({"attest": "A"}) + ";info=<https://x.example/c.pem>;ppt=shaken", "", "A"),
    (_jwt({"attest": "b"}), "", "B"),
    (_jwt({"attest": "C"}), "A", "C"),  # the signed claim wins over a carrier header
    (_b64({"attest": "C"}), "", "C"),  # the payload alone, as the dialplan may pass it
    ("", "B", "B"), ("", "b ", "B"), ("", "", ""), ("", "D", ""),
    (_jwt({"attest": "Z"}), "", ""), ("not.a.jwt!", "", ""), (_jwt(["attest"]), "", ""),
    # FILTER() in the dialplan strips ';<>:/=' so the info URL's dots join the signature part.
    (_jwt({"attest": "B"}) + "infohttpscert.example.orgc.pem", "", "B"),
])
def test_attestation_read_from_identity_payload_without_verifying(identity, header, level):
    assert s.attestation(identity, header) == level


def test_attestation_signal_per_level():
    assert [s.attestation_signal(x) for x in ("A", "B", "C", "")] == [
        "", s.ATTESTATION_B, s.ATTESTATION_C, s.ATTESTATION_NONE]


# --- no conversation ----------------------------------------------------------------------------

@pytest.mark.parametrize("connected,caller,buyer,result", [
    (5000, 0, 0, "nobody_spoke"), (5000, 0, 1200, "caller_silent"), (5000, 300, 0, ""),
    (4999, 0, 0, ""),  # too short to judge
    (60000, None, None, ""),  # talk detection not running: no verdict
])
def test_no_conversation(connected, caller, buyer, result):
    assert s.no_conversation(connected, caller, buyer, 5000) == result


# --- score ----------------------------------------------------------------------------------------

def test_score_adds_points_caps_at_100_and_explains_worst_first():
    r = score([Finding(s.ATTESTATION_NONE), Finding(s.NO_CONVERSATION, "caller_silent")])
    assert r.value == 55 and r.flags == [s.NO_CONVERSATION, s.ATTESTATION_NONE]
    assert r.explanation[0] == {"signal": s.NO_CONVERSATION, "points": 40, "detail": "caller_silent"}
    assert explain(r) == "55 = no_conversation +40 (caller_silent), attestation_none +15"
    assert score([Finding(s.BLOCKED), Finding(s.VELOCITY)]).value == 100
    assert score([]).value == 0 and explain(score([])) == "0 = no signals"
    assert with_external(r, 30, "robocall voice").value == 85
    assert with_external(r, 0, "").value == 55
    assert all(0 < v <= 100 for v in WEIGHTS.values())


# --- lists ------------------------------------------------------------------------------------------

def test_list_precedence_campaign_over_network_allow_over_block():
    e = [lists.ListEntry("block", "+1415"), lists.ListEntry("allow", "+14155550123", 7),
         lists.ListEntry("block", "+1212", 7), lists.ListEntry("allow", "+1212555"),
         lists.ListEntry("block", "anonymous")]
    assert lists.verdict(e, "+14155550199", 7) == "block"
    assert lists.verdict(e, "+14155550123", 7) == "allow"  # campaign allow beats network block
    assert lists.verdict(e, "+14155550123", 8) == "block"  # ...only on that campaign
    assert lists.verdict(e, "+12125550123", 7) == "block"  # campaign block beats network allow
    assert lists.verdict(e, "+12125550123", 8) == "allow"
    assert lists.verdict(e, "anonymous", None) == "block"
    assert lists.verdict(e, "+13105550123", 7) == ""


@pytest.mark.parametrize("raw,clean", [("+1 (415) 555", "+1415555"), ("Anonymous", "anonymous"), ("+14155550123", "+14155550123")])
def test_list_patterns_are_cleaned(raw, clean):
    assert lists.clean_pattern(raw) == clean


@pytest.mark.parametrize("raw", ["1415", "+", "+1415x", "+1234567890123456", "'; drop", ""])
def test_bad_list_patterns_are_refused_with_the_reason(raw):
    with pytest.raises(lists.ListError, match="E.164"):
        lists.clean_pattern(raw)


# --- alerts ----------------------------------------------------------------------------------------

def test_alert_when_crossing_once_then_again_only_after_recovering():
    m = al.Monitor(window=3600, min_calls=4, thresholds={al.PUBLISHER_FLAGGED: 0.5})
    out = [m.observe(al.PUBLISHER_FLAGGED, 9, t, bad) for t, bad in
           [(0, True), (1, True), (2, False)]]
    assert out == [None, None, None]  # 2 of 3: rate reached, but fewer than 4 calls
    a = m.observe(al.PUBLISHER_FLAGGED, 9, 3, False)  # 2 of 4 = 50 %: crossed
    assert a == al.Alert(al.PUBLISHER_FLAGGED, 9, 2, 4, 0.5) and a.rate == 0.5
    assert m.observe(al.PUBLISHER_FLAGGED, 9, 4, True) is None  # still over: no second alert
    for t in range(5, 9):
        m.observe(al.PUBLISHER_FLAGGED, 9, t, False)  # 3 of 9: back under
    assert [m.observe(al.PUBLISHER_FLAGGED, 9, t, True) for t in (9, 10, 11)][-1] is not None
    assert m.observe(al.PUBLISHER_FLAGGED, None, 0, True) is None
    assert m.observe(al.BUYER_UNANSWERED, 1, 0, True) is None  # no threshold: off


def test_rate_window_forgets_calls_older_than_the_window():
    w = al.RateWindow(60)
    w.add(0, True)
    w.add(30, False)
    assert w.counts(60) == (1, 2) and w.counts(61) == (0, 1)
    assert al.crossed(1, 1, 0.0, 1) is False  # a rate of 0 is off


# --- the service: screen before routing, assess after the call ---------------------------------------

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def facts(caller="+14155550123", at=None):
    return CallFacts(tracking_number="+18005550100", dialled="+18005550100", caller=caller,
                     caller_valid=caller.startswith("+"), caller_anonymous=caller == "anonymous",
                     at=at or NOW.timestamp())


def record(linkedid, connected_ms=30_000, publisher=1, buyer=5, caller="+14155550123", status="ANSWER"):
    return CallRecord(linkedid=linkedid, tracking_number="+18005550100", caller=caller, caller_valid=True,
                      started_at=NOW, ended_at=NOW + timedelta(milliseconds=connected_ms), outcome=Outcome.CONNECTED,
                      publisher_id=publisher, campaign_id=1, buyer_id=buyer if status == "ANSWER" else None,
                      connected_ms=connected_ms if status == "ANSWER" else 0,
                      attempts=[Attempt(1, buyer, status)])


def test_screen_blocks_allows_and_scores_before_routing():
    f = FraudService(FraudSettings(), clock=lambda: NOW.timestamp())
    f.load([lists.ListEntry("block", "+1415")], {1: CampaignScreening(challenge=True, record=True)})
    r = f.screen("a", facts(), 1, 1, "A")
    assert r.reject_reason == "blocked_caller" and "PPC_CHALLENGE" not in r.variables
    f.load([lists.ListEntry("allow", "+1415")], {1: CampaignScreening(challenge=True, record=True, block_score=30)})
    r = f.screen("b", facts(at=NOW.timestamp() + 1), 1, 2, "")  # repeat on publisher 2 + no attestation: allowed anyway
    assert r.reject_reason == "" and r.variables["PPC_CHALLENGE"] == "" and r.variables["PPC_RECORD"] == "b.wav"
    f.load([], {1: CampaignScreening(challenge=True, block_score=30)})
    r = f.screen("c", facts(at=NOW.timestamp() + 2), 1, 2, "")
    assert r.reject_reason == "fraud_score:80>=30"  # repeat 35 + velocity (3rd call in 10 min) 30 + no attestation 15
    r = f.screen("d", facts(caller="+12125550123"), 1, 1, "A")
    assert r.reject_reason == "" and r.variables["PPC_CHALLENGE"] == "1" and r.variables["PPC_RECORD"] == ""


def test_assess_sets_quality_score_and_challenge_failure():
    f = FraudService(FraudSettings(), clock=lambda: NOW.timestamp())
    f.screen("x", facts(), 1, 1, "B")
    rec = record("x", connected_ms=0, status="NOANSWER")
    rec.outcome = Outcome.ABANDONED
    a = f.assess(rec, talk={"challenge": "failed", "talk_detect": True, "caller_talk_ms": 0, "buyer_talk_ms": 0})
    assert rec.outcome == Outcome.REJECTED and rec.reject_reason == "challenge_failed"
    assert rec.quality_score == 70 and a.score.flags == [s.CHALLENGE_FAILED, s.ATTESTATION_B]
    assert a.row["challenge"] == "failed" and a.row["attestation"] == "B" and a.row["flagged"] is True


def test_assess_no_conversation_and_near_threshold(monkeypatch):
    class Buyer:
        min_duration = 60

    class Net:
        buyers = {5: Buyer()}

    f = FraudService(FraudSettings(clustering_min_calls=2, clustering_share=0.5), clock=lambda: NOW.timestamp())
    f.screen("y", facts(), 1, 1, "A")
    a = f.assess(record("y", connected_ms=62_000), talk={"talk_detect": True, "caller_talk_ms": 0, "buyer_talk_ms": 0},
                 network=Net())
    assert a.score.flags == [s.NO_CONVERSATION, s.NEAR_THRESHOLD] and a.row["near_threshold"] is True
    f.screen("z", facts(caller="+12125550123"), 1, 1, "A")
    a = f.assess(record("z", connected_ms=64_000, caller="+12125550123"),
                 talk={"talk_detect": True, "caller_talk_ms": 9000, "buyer_talk_ms": 9000}, network=Net())
    # 2 of 2 connected calls of publisher 1 ended within 5 s of the minimum: the publisher clusters.
    assert a.score.flags == [s.NEAR_THRESHOLD_PUBLISHER, s.NEAR_THRESHOLD] and a.row["caller_talk_ms"] == 9000


def test_publisher_crossing_the_flagged_rate_is_alerted():
    f = FraudService(FraudSettings(alert_min_calls=3, alert_flagged_rate=0.6, alert_unanswered_rate=0),
                     clock=lambda: NOW.timestamp())
    raised = []
    for i, caller in enumerate(["+15555550100", "+15555550101", "+14155550123"]):  # two impossible callers
        f.screen(str(i), facts(caller=caller), 1, 3, "")
        raised += f.assess(record(str(i), publisher=3, caller=caller)).alerts
    assert raised == [al.Alert(al.PUBLISHER_FLAGGED, 3, 2, 3, 0.6)]


def test_unscreened_record_is_scored_from_what_it_tells():
    f = FraudService(FraudSettings(), clock=lambda: NOW.timestamp())
    a = f.assess(record("r", caller="anonymous"))
    assert a.score.flags == [s.CALLER_ANONYMOUS] and a.row["caller_talk_ms"] is None


# --- recordings and the external scorer ---------------------------------------------------------------

def test_retention_deletes_only_old_recordings(tmp_path):
    old, new = tmp_path / "old.wav", tmp_path / "new.wav"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    now = time.time()
    os.utime(old, (now - 3 * 86400, now - 3 * 86400))
    assert cleanup_recordings(tmp_path, 2, now) == ["old.wav"]
    assert new.exists() and not old.exists()
    assert cleanup_recordings(tmp_path, 0, now) == []
    assert cleanup_recordings(tmp_path / "missing", 2, now) == []


async def test_external_scorer_is_optional_and_its_failures_cost_nothing():
    class Good:
        async def score(self, call):
            return 30, "flat voice"

    class Broken:
        async def score(self, call):
            raise RuntimeError("down")

    assert await scorer.ask(None, {}, 1) == (0, "")
    assert await scorer.ask(Good(), {"linkedid": "1"}, 1) == (30, "flat voice")
    assert await scorer.ask(Broken(), {"linkedid": "1"}, 1) == (0, "")
    assert scorer.clamp("x") == 0 and scorer.clamp(250) == 100 and scorer.clamp(-3) == 0
    assert FraudSettings().scorer_url == ""  # off by default


def test_call_page_serves_only_plain_recording_names(tmp_path):
    from ppcswitch.config import load_settings
    from ppcswitch.web.fraud_views import recording_file

    settings = load_settings(env={"PPCSWITCH_RECORDING_LOCAL_DIRECTORY": str(tmp_path)})
    (tmp_path / "1700000000.42.wav").write_bytes(b"RIFF")
    assert recording_file(settings, "1700000000.42.wav") == tmp_path / "1700000000.42.wav"
    for bad in ("", "../etc/passwd", "/etc/passwd.wav", "x.mp3", "missing.wav", "sub/x.wav"):
        assert recording_file(settings, bad) is None
