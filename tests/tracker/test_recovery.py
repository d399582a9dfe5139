"""Nothing lost: calls the controller missed are recovered from Asterisk's own CDR file, once.

Unit tests read CDR lines as cdr_csv writes them; the end-to-end test kills the
real controller with SIGKILL mid-call, places calls while it is down, restarts it
and checks the call log: every call exactly once, with the right outcome."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timezone

from ppcswitch.calls import Outcome
from ppcswitch.recovery import group_calls, parse_cdr_line, read_new_rows, record_from_cdr
from ppcswitch.routing.live import LiveCalls
from ppcswitch.routing.model import Buyer, Network, Publisher, TrackingNumber

NUMBER = "+18005550100"
CALLER = "+14155550123"


def cdr(uid, dst, context, app, data, start, answer, end, billsec, disposition, src=CALLER):
    return (f'"","{src}","{dst}","{context}","""x"" <{src}>","PJSIP/sandbox-carrier-1","PJSIP/ppcswitch-buyer-2",'
            f'"{app}","{data}","{start}",{f"{answer!r}".replace(chr(39), chr(34)) if answer else ""},"{end}",'
            f'5,{billsec},"{disposition}","DOCUMENTATION","{uid}",""')


def network():
    def buyer(i, port):
        return Buyer(id=i, name=f"B{i}", dial_target=f"PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:{port}",
                     revenue_cents=4000, min_duration=2)

    return Network(buyers={1: buyer(1, 5071), 2: buyer(2, 5072)},
                   publishers={7: Publisher(id=7, name="P", payout_cents=1250)},
                   numbers={NUMBER: TrackingNumber(NUMBER, campaign_id=3, publisher_id=7)})


def test_failover_call_is_rebuilt_from_its_cdr_rows():
    lines = [
        cdr("17.5", NUMBER, "ppcswitch-dial", "Dial", "PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:5071,20",
            "2026-11-23 10:00:00", None, "2026-11-23 10:00:02", 0, "BUSY"),
        cdr("17.5", NUMBER, "ppcswitch-dial", "Dial", "PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:5072,20",
            "2026-11-23 10:00:02", "2026-11-23 10:00:03", "2026-11-23 10:00:13", 10, "ANSWERED"),
        "not a cdr line",
        cdr("18.1", "600", "default", "Dial", "x", "2026-11-23 10:00:00", None, "2026-11-23 10:00:01", 0, "FAILED"),
    ]
    rows = [r for r in map(parse_cdr_line, lines) if r]
    assert len(rows) == 2  # garbage and calls outside ppcswitch's contexts are skipped
    [(linkedid, call)] = group_calls(rows).items()
    rec = record_from_cdr(call, network())
    assert rec.linkedid == "17.5" and rec.outcome == Outcome.CONNECTED
    assert rec.tracking_number == NUMBER and rec.caller == CALLER and rec.campaign_id == 3 and rec.publisher_id == 7
    assert [(a.seq, a.buyer_id, a.dial_status) for a in rec.attempts] == [(1, 1, "BUSY"), (2, 2, "ANSWER")]
    assert rec.buyer_id == 2 and rec.connected_ms == 10_000 and not rec.billable and rec.revenue_cents == 0  # settled later
    assert rec.started_at == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    assert rec.ended_at == datetime(2026, 11, 23, 10, 0, 13, tzinfo=timezone.utc)


def test_fallback_and_unknown_number_outcomes():
    fallback = parse_cdr_line(cdr("1.1", NUMBER, "ppcswitch-fallback", "Hangup", "34", "2026-11-23 10:00:00", None,
                                  "2026-11-23 10:00:04", 0, "CONGESTION"))
    assert record_from_cdr([fallback], network()).outcome == Outcome.FALLBACK
    unknown = parse_cdr_line(cdr("1.2", "+18005550199", "ppcswitch-dial", "Hangup", "1", "2026-11-23 10:00:00",
                                 None, "2026-11-23 10:00:00", 0, "NO ANSWER"))
    rec = record_from_cdr([unknown], network())
    assert rec.outcome == Outcome.REJECTED and rec.billing_reasons == ["rejected:unknown_tracking_number"]


def test_cdr_file_is_read_incrementally_whole_lines_only_and_after_rotation(tmp_path):
    f = tmp_path / "Master.csv"
    line = cdr("1.1", NUMBER, "ppcswitch-fallback", "Hangup", "34", "2026-11-23 10:00:00", None,
               "2026-11-23 10:00:04", 0, "CONGESTION")
    f.write_text(line + "\n" + line[:20])  # the second line is still being written
    rows, off = read_new_rows(str(f), 0)
    assert len(rows) == 1 and off == len(line) + 1
    with open(f, "a") as out:
        out.write(line[20:].replace("1.1", "1.2") + "\n")
    rows, off2 = read_new_rows(str(f), off)
    assert [r.linkedid for r in rows] == ["1.2"]
    f.write_text(line + "\n")  # rotated: smaller than the offset
    rows, _ = read_new_rows(str(f), off2)
    assert [r.linkedid for r in rows] == ["1.1"]


def test_live_counts_keep_only_calls_asterisk_still_has():
    live = LiveCalls()
    live.take("a", 1, 1)
    live.take("b", 1, 1)
    live.take("c", 1, 2)
    live.retain({"b"})
    assert live.snapshot() == {1: 1} and live.has_call("b") and not live.has_call("a")


# -- real processes ---------------------------------------------------------------


def test_calls_during_a_controller_crash_are_recorded_once(controller, sipp, sandbox):
    a = sipp.buyer("answer")
    dest = a.dest.split("/", 2)[2]
    controller.seed([{"name": "A", "destination": dest, "ring_timeout": 5, "min_duration": 1}])
    controller.env["PPCSWITCH_ROUTING_FALLBACK_BUYER"] = "A"
    controller.env["PPCSWITCH_RECOVERY_CDR_FILE"] = str(sandbox.cdr_file)
    controller.env["PPCSWITCH_RECOVERY_INTERVAL"] = "1"
    controller.start()
    ids = controller.ids()

    before = sipp.call(NUMBER, caller="+14155550101", seconds=1)  # seen normally
    controller.wait_calls(1)
    time.sleep(1)  # its heartbeat is stored
    across = sipp.start_call(NUMBER, caller="+14155550102", seconds=4)  # routed, ends while down
    time.sleep(1.5)
    controller.stop(signal.SIGKILL)
    during = sipp.call(NUMBER, caller="+14155550103", seconds=1)  # fallback buyer, controller down
    still_up = sipp.start_call(NUMBER, caller="+14155550104", seconds=5)  # live when it comes back
    assert sipp.result(across).answered and before.answered and during.answered
    controller.start()
    assert sipp.result(still_up).answered
    deadline = time.monotonic() + 20
    while len(calls := controller.calls()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.5)  # more passes: a duplicate would show up now
    calls = {c["caller"]: c for c in controller.calls()}
    assert sorted(calls) == ["+14155550101", "+14155550102", "+14155550103", "+14155550104"], controller.log()
    for c in calls.values():
        assert c["outcome"] == "connected" and c["buyer_id"] == ids["A"] and c["billable"], c
        assert c["tracking_number"] == NUMBER and c["campaign_id"] == ids["campaign:HVAC"]
    assert abs(calls["+14155550102"]["connected_ms"] - 4000) <= 1500
    assert abs(calls["+14155550104"]["connected_ms"] - 5000) <= 1500
    assert len(a.invites()) == 4


def test_a_controller_without_its_ami_link_does_not_move_the_recovery_window(controller, sipp, sandbox):
    """Killed controller; a call answered by the fallback buyer; a controller run for a while without its AMI
    secret (it sees no call end, so it must write no heartbeat); then the controller again: the call is
    recovered from Asterisk's CDR file."""
    a = sipp.buyer("answer")
    controller.seed([{"name": "A", "destination": a.dest.split("/", 2)[2], "ring_timeout": 5, "min_duration": 1}])
    controller.env["PPCSWITCH_ROUTING_FALLBACK_BUYER"] = "A"
    controller.env["PPCSWITCH_RECOVERY_CDR_FILE"] = str(sandbox.cdr_file)
    controller.env["PPCSWITCH_RECOVERY_INTERVAL"] = "1"
    controller.start()
    assert sipp.call(NUMBER, caller="+14155550111", seconds=1).answered
    controller.wait_calls(1)
    time.sleep(1)  # its heartbeat is stored
    controller.stop(signal.SIGKILL)
    assert sipp.call(NUMBER, caller="+14155550112", seconds=1).answered  # the fallback buyer, nobody watching
    secret = controller.env["PPCSWITCH_AMI_SECRET"]
    controller.env["PPCSWITCH_AMI_SECRET"] = ""
    controller.start(wait_ami=False)
    time.sleep(12)  # two heartbeat periods and more without the AMI link
    controller.stop()
    controller.env["PPCSWITCH_AMI_SECRET"] = secret
    controller.start()
    deadline = time.monotonic() + 20
    while len(controller.calls()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert sorted(c["caller"] for c in controller.calls()) == ["+14155550111", "+14155550112"], controller.log()


async def test_each_node_keeps_its_own_heartbeat(writer, sessionmaker):
    """Two controllers of a cluster on one database (cluster.node): each reads back its own floor,
    never the other's; the single box's row is node ''."""
    from datetime import timedelta

    from ppcswitch.config import RecoverySettings
    from ppcswitch.recovery import HEARTBEAT_MARGIN, Recovery

    def recovery(node: str) -> Recovery:
        return Recovery(RecoverySettings(cdr_file=""), None, network, lambda r: None, sessionmaker, writer, node=node)

    old = recovery("node1")
    old.started = datetime.now(timezone.utc) - timedelta(hours=1)
    await old.load_floor()  # new database: its own start
    old.synced = True  # its AMI link is up and what it missed is recovered: it beats "now"
    await old.beat(type("Ami", (), {"connected": True})())
    await old._beat
    fresh = recovery("node2")
    assert await fresh.load_floor() == fresh.started  # node1's heartbeat is not node2's
    again = recovery("node1")
    floor = await again.load_floor()
    assert again.started - HEARTBEAT_MARGIN - timedelta(seconds=5) < floor <= again.started - HEARTBEAT_MARGIN
    single = recovery("")
    assert await single.load_floor() == single.started
