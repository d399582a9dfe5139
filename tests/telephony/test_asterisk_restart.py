"""Asterisk restarted under SIPp load while the controller runs on (issue #8, fault tests).

One SIPp offers calls at a steady rate to the tracking number, each with its own caller number and
held HOLD seconds once the SIPp buyer answers. Mid-load Asterisk is stopped, gracefully (SIGTERM,
what `systemctl restart asterisk` sends) or killed (SIGKILL, a crash), and started again with the
sandbox's own helper while SIPp keeps offering. What became of each call is read from SIPp's own
files (its log, ppcswitch/sipp/uac_load_logged.xml, and its statistics file), then held against the
call log:

- answered and hung up by the caller: in the log once, connected, HOLD long;
- answered, then cut by the stop (Asterisk's BYE, or the caller's BYE unanswered or refused with
  481 by the new Asterisk): in the log once, connected for the time it really had (answer to
  stop), ended "Asterisk shutdown" / "Asterisk restart";
- no answer from Asterisk at all (it was down, SIPp gave up): not in the log;
- refused by the stopping Asterisk (503 before any channel exists): never connected in the log.

The controller is never restarted: it reconnects to AMI by itself, pushes the fallback buyer into
the new Asterisk, brings its live calls back to what Asterisk has (none at the end), and routes
the calls after the restart normally.
"""

from __future__ import annotations

import csv
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from ppcswitch.calls import Attempt, Outcome
from ppcswitch.routing.live import CallRoutes, LiveCalls
from ppcswitch.routing.model import Buyer, Network
from ppcswitch.tracker.tracker import CUT_BY_RESTART, CUT_BY_SHUTDOWN, CallTracker

NUMBER = "+18005550100"
CALLS, RATE, HOLD = 60, 4.0, 3.0  # 15 s of offers; Asterisk goes down 5 s in
STOP_AFTER, DOWN_FOR = 5.0, 1.5  # seconds; Asterisk's own start adds ~2 s to the gap


def caller(i: int) -> str:
    return f"+1415777{i:04d}"


def sipp_calls(proc) -> dict[str, list[str]]:
    """Caller number -> what SIPp logged for that call, in order ("OFFER", "FINAL 200", ...)."""
    out: dict[str, list[str]] = {}
    for line in proc.log_lines():
        who, _, what = line.partition(" ")
        out.setdefault(who, []).append(what)
    return out


def sipp_stats(proc) -> dict[str, str]:
    """The last (final) line of SIPp's statistics file, by column."""
    rows = list(csv.reader(proc.stats_path.read_text().splitlines(), delimiter=";"))
    return dict(zip(rows[0], rows[-1]))


def when(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_asterisk_restart_under_load_keeps_every_call_once(controller, sipp, sandbox, hard):
    buyer = sipp.buyer("answer")
    controller.seed([{"name": "A", "destination": buyer.dest.split("/", 2)[2], "ring_timeout": 5, "min_duration": 1}])
    controller.env.update({"PPCSWITCH_ROUTING_FALLBACK_BUYER": "A", "PPCSWITCH_RECOVERY_INTERVAL": "1",
                           "PPCSWITCH_RECOVERY_CDR_FILE": str(sandbox.cdr_file)})
    controller.start()
    buyer_id, pid = controller.ids()["A"], controller.proc.pid

    # -max_retrans 2: an INVITE nobody answers fails after ~3.5 s, so calls placed while Asterisk
    # is down fail in SIPp instead of waiting out the 32 s of SIP's timer B.
    load = sandbox.start_sipp_uac_load([(NUMBER, caller(i)) for i in range(CALLS)], RATE, HOLD,
                                       extra=("-max_retrans", "2", "-recv_timeout", "10000"))
    sipp.procs.append(load)  # stopped by PID at teardown
    load_started = time.monotonic()  # SIPp offers call i at i / RATE seconds from here
    time.sleep(STOP_AFTER)
    stopped_at = datetime.now(UTC)
    with sandbox.stopped(hard=hard):
        deadline = time.monotonic() + 5
        while (controller.health() or {}).get("ami_connected") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not controller.health()["ami_connected"], "the controller did not notice Asterisk going"
        time.sleep(DOWN_FOR)
    deadline = time.monotonic() + 10  # back with the reconnect back-off (ami.reconnect_max 2 s here)
    while not (controller.health() or {}).get("ami_connected") and time.monotonic() < deadline:
        time.sleep(0.1)
    back_after = time.monotonic() - load_started
    load.wait(60)

    # What SIPp saw, from its own files.
    seen = sipp_calls(load)
    offered = [caller(i) for i in range(CALLS)]
    assert sorted(seen) == sorted(offered) and all(seen[c][0] == "OFFER" for c in offered)
    answered = [c for c in offered if "FINAL 200" in seen[c]]
    clean = [c for c in answered if seen[c][-1] == "END caller"]
    cut = [c for c in answered if c not in clean]
    unreached = [c for c in offered if seen[c] == ["OFFER"]]
    refused = [c for c in offered if any(e.startswith("FINAL ") and e != "FINAL 200" for e in seen[c])]
    setup_cut = [c for c in offered if c not in answered + unreached + refused]  # provisional only
    stats = sipp_stats(load)
    assert int(stats["TotalCallCreated"]) == CALLS
    ended_cleanly = [c for c in answered if seen[c][-1] in ("END caller", "END remote")]  # SIPp's "successful"
    assert int(stats["SuccessfulCall(C)"]) == len(ended_cleanly), stats
    assert int(stats["FailedCall(C)"]) == CALLS - len(ended_cleanly), stats
    assert int(stats["FailedMaxUDPRetrans(C)"]) >= len(unreached), stats
    # The fault really hit the load: bridged calls were cut, calls came while Asterisk was stopping or
    # down (refused with a 503 while it stops, unanswered while it is gone: how many of each depends on
    # how fast this machine stops and starts Asterisk).
    assert len(cut) >= 3 and len(unreached) + len(refused) + len(setup_cut) >= 2, seen
    if hard:  # nobody hung the cut calls up: the caller's BYE went unanswered or met a 481
        assert all(seen[c][-1] in ("FINAL 200", "END 481") for c in cut), seen
    else:  # Asterisk hung them up as it stopped
        assert all(seen[c][-1] == "END remote" for c in cut), seen
    after = [caller(i) for i in range(CALLS) if i / RATE > back_after + 0.5]  # offered once AMI was back
    assert len(after) >= 4 and set(after) <= set(clean), ("calls after the restart failed", back_after, seen)
    print(f"{'SIGKILL' if hard else 'SIGTERM'}: {CALLS} offered, {len(clean)} answered and ended by the caller, "
          f"{len(cut)} cut while bridged, {len(refused)} refused ({sorted({e for c in refused for e in seen[c]})}), "
          f"{len(unreached)} unanswered (Asterisk down), {len(setup_cut)} cut while ringing; "
          f"controller back on AMI {back_after:.1f} s into the load")

    # The call log: every call that reached a channel exactly once, nothing else.
    deadline = time.monotonic() + 20
    while len(controller.calls()) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.5)  # more recovery passes (1 s apart): a duplicate would show up now
    calls = controller.calls()
    by_caller: dict[str, dict] = {}
    for c in calls:
        assert c["caller"] not in by_caller, f"{c['caller']} stored twice"
        by_caller[c["caller"]] = c
    log = controller.log()[-4000:]
    assert set(by_caller) <= set(offered), log
    assert not set(unreached) & set(by_caller), "a call that never reached Asterisk is in the log"
    assert set(answered) <= set(by_caller), (sorted(set(answered) - set(by_caller)), log)
    for who in refused + setup_cut:  # a 503 from a stopping Asterisk has no channel, hence no record
        assert who not in by_caller or by_caller[who]["outcome"] != Outcome.CONNECTED, by_caller[who]
    for who in answered:
        c = by_caller[who]
        assert c["outcome"] == Outcome.CONNECTED and c["buyer_id"] == buyer_id, c
        assert c["routing"], f"{who}: routed by the controller, but its routing trace is missing"
    for who in clean:
        c = by_caller[who]
        assert abs(c["connected_ms"] - HOLD * 1000) <= 700 and c["billable"], c
        assert c["hangup_cause_text"] not in (CUT_BY_SHUTDOWN, CUT_BY_RESTART), c
    for who in cut:  # connected from the buyer's answer until Asterisk went down, and said so
        c = by_caller[who]
        had = (stopped_at - when(c["answered_at"])).total_seconds() * 1000
        # (a call whose hold was just running out can outlast HOLD by the few ms the stop took)
        assert 0 < c["connected_ms"] <= HOLD * 1000 + 500 and abs(c["connected_ms"] - had) <= 700, (c, had)
        assert c["hangup_cause_text"] == (CUT_BY_RESTART if hard else CUT_BY_SHUTDOWN), c
        assert when(c["ended_at"]) - stopped_at < timedelta(seconds=1), c
    for who in after:  # after the restart: routed and tracked live, not rebuilt from the CDR
        assert by_caller[who]["hangup_cause"] == 16, by_caller[who]
    assert len(buyer.invites()) - len(answered) in range(len(setup_cut) + 1)

    # The controller (never restarted) is back in step with the new Asterisk by itself.
    assert controller.proc.pid == pid and controller.proc.poll() is None
    health = controller.health()
    assert health["ami_connected"] and health["live_calls"] == 0 and health["write_queue_depth"] == 0, health
    assert "0 active calls" in sandbox.cli("core show channels count")
    metrics = controller.metrics()
    assert metric(metrics, "ppcswitch_ami_reconnects_total") >= 1
    assert metric(metrics, "ppcswitch_live_calls") == 0
    assert not re.search(r"^ppcswitch_buyer_live_calls\{.*\} [1-9]", metrics, re.M), "buyer slots left taken"
    assert f"PPC_FALLBACK_DEST={buyer.dest}" in sandbox.cli("dialplan show globals"), "fallback not pushed again"


# -- the tracker's part, without Asterisk ---------------------------------------------------------


def tracker_with_bridged_call(records: list) -> CallTracker:
    buyer = Buyer(id=1, name="A", dial_target="PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:5071", min_duration=1)
    tracker = CallTracker(CallRoutes(), LiveCalls(), lambda: Network(buyers={1: buyer}), records.append)
    t0 = 1_800_000_000.0
    for event in [
        {"Event": "Newchannel", "Linkedid": "9.1", "Uniqueid": "9.1", "Exten": NUMBER, "CallerIDNum": caller(1),
         "Timestamp": str(t0)},
        {"Event": "DialBegin", "Linkedid": "9.1", "Uniqueid": "9.1", "DestUniqueid": "9.2",
         "ChanVariable": ["PPC_ATTEMPT=1", "PPC_BUYER_ID=1"], "Timestamp": str(t0 + 1)},
        {"Event": "DialEnd", "Linkedid": "9.1", "Uniqueid": "9.1", "DestUniqueid": "9.2", "DialStatus": "ANSWER",
         "Timestamp": str(t0 + 2)},
    ]:
        tracker.handle(event)
    tracker.live.take("9.1", 1, 1)
    return tracker


def test_a_call_asterisk_lost_is_cut_at_the_link_loss_with_its_connected_time():
    records = []
    tracker = tracker_with_bridged_call(records)
    lost_at = datetime.fromtimestamp(1_800_000_000.0 + 6.5, UTC)
    assert tracker.cut("9.1", lost_at) and not tracker.cut("9.1", lost_at)  # once
    [rec] = records
    assert rec.outcome == Outcome.CONNECTED and rec.connected_ms == 4500 and rec.ended_at == lost_at
    assert rec.hangup_cause is None and rec.hangup_cause_text == CUT_BY_RESTART
    assert not rec.billable and rec.billing_reasons == []  # billing decides when the call is settled
    assert [a.ended_at for a in rec.attempts] == [lost_at] and isinstance(rec.attempts[0], Attempt)
    assert tracker.live.snapshot() == {} and not tracker.calls
    tracker.handle({"Event": "Hangup", "Linkedid": "9.1", "Uniqueid": "9.1", "Cause": "16"})  # late: ignored
    assert len(records) == 1


def test_calls_a_stopping_asterisk_hangs_up_say_so():
    records = []
    tracker = tracker_with_bridged_call(records)
    t = 1_800_000_000.0 + 5
    tracker.handle({"Event": "SoftHangupRequest", "Linkedid": "9.1", "Uniqueid": "9.1", "Cause": "4"})
    for uid in ("9.1", "9.2"):
        tracker.handle({"Event": "Hangup", "Linkedid": "9.1", "Uniqueid": uid, "Cause": "16",
                        "Cause-txt": "Normal Clearing", "Timestamp": str(t)})
    [rec] = records
    assert rec.connected_ms == 3000 and rec.hangup_cause == 16 and rec.hangup_cause_text == CUT_BY_SHUTDOWN
    # Any other soft hangup (a bridge ending, cause 16) is an ordinary end.
    records.clear()
    tracker = tracker_with_bridged_call(records)
    tracker.handle({"Event": "SoftHangupRequest", "Linkedid": "9.1", "Uniqueid": "9.2", "Cause": "16"})
    for uid in ("9.1", "9.2"):
        tracker.handle({"Event": "Hangup", "Linkedid": "9.1", "Uniqueid": uid, "Cause": "16",
                        "Cause-txt": "Normal Clearing", "Timestamp": str(t)})
    assert records[0].hangup_cause_text == "Normal Clearing"
