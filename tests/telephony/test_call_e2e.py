"""A real call, end to end: SIPp trunk -> sandbox Asterisk -> FastAGI -> Dial -> SIPp buyer,
AMI -> call tracker -> one call record. Nothing here is faked."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime

import pytest

NUMBER = "+18005550100"
CALLER = "+14155550123"


def buyer(name, proc, **kw):
    return {"name": name, "destination": proc.dest.split("/", 2)[2], "ring_timeout": 3, **kw}


def seconds_between(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def test_call_reaches_buyer_and_is_recorded_once(controller, sipp):
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, revenue="40.00", min_duration=2)], publisher_payout="12.50")
    controller.start()
    ids = controller.ids()

    result = sipp.call(NUMBER, caller=CALLER, seconds=3)
    assert result.answered and result.hangup == "caller", result

    calls = controller.wait_calls(1)
    time.sleep(1)  # a duplicate record would show up now
    calls = controller.calls()
    assert len(calls) == 1
    c = calls[0]
    assert c["tracking_number"] == NUMBER and c["caller"] == CALLER
    assert c["campaign_id"] == ids["campaign:HVAC"] and c["publisher_id"] == ids["publisher:Pub"]
    assert c["buyer_id"] == ids["Buyer A"] and c["outcome"] == "connected"
    assert abs(c["connected_ms"] / 1000 - 3) <= 1, c
    assert c["billable"] is True and c["billing_reasons"] == []
    assert c["revenue_cents"] == 4000 and c["payout_cents"] == 1250
    assert [(x["seq"], x["buyer_id"], x["dial_status"]) for x in c["attempts"]] == [(1, ids["Buyer A"], "ANSWER")]
    assert c["answered_at"] and seconds_between(c["started_at"], c["answered_at"]) >= 0
    assert c["hangup_cause"] == 16
    assert len(a.invites()) == 1


def test_short_call_is_not_billable_and_says_why(controller, sipp):
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, revenue="40.00", min_duration=60)])
    controller.start()
    assert sipp.call(NUMBER, caller=CALLER, seconds=2).answered
    [c] = controller.wait_calls(1)
    assert c["billable"] is False and c["revenue_cents"] == 0 and c["payout_cents"] == 0
    # The buyer side's reason, then the publisher side's (paid only when the buyer pays).
    assert len(c["billing_reasons"]) == 2 and c["billing_reasons"][0].startswith("duration_below_minimum:")
    assert c["billing_reasons"][0].endswith("<60") and c["billing_reasons"][1] == "payout:buyer_not_billable"


@pytest.mark.parametrize("first_kind,status", [("busy", "BUSY"), ("noanswer", "NOANSWER")])
def test_first_buyer_busy_or_silent_fails_over_to_second(controller, sipp, first_kind, status):
    first, second = sipp.buyer(first_kind), sipp.buyer("answer")
    controller.seed([buyer("First", first, ring_timeout=2), buyer("Second", second, min_duration=1)])
    controller.start()
    ids = controller.ids()

    result = sipp.call(NUMBER, caller=CALLER, seconds=2)
    assert result.answered, result
    [c] = controller.wait_calls(1)
    assert [(x["seq"], x["buyer_id"], x["dial_status"]) for x in c["attempts"]] == [
        (1, ids["First"], status),
        (2, ids["Second"], "ANSWER"),
    ]
    assert c["buyer_id"] == ids["Second"] and c["billable"] is True
    assert len(first.invites()) == 1 and len(second.invites()) == 1
    if status == "NOANSWER":  # rang for its 2 s ring timeout before the failover
        assert 1.5 <= seconds_between(c["attempts"][0]["started_at"], c["attempts"][0]["ended_at"]) <= 3.5


def test_all_buyers_busy_gets_message_and_503(controller, sipp):
    b1, b2 = sipp.buyer("busy"), sipp.buyer("busy")
    controller.seed([buyer("B1", b1), buyer("B2", b2)])
    controller.start()
    result = sipp.call(NUMBER, caller=CALLER)
    assert result.code == 503 and result.early_media, result
    [c] = controller.wait_calls(1)
    assert c["outcome"] == "not_connected" and [x["dial_status"] for x in c["attempts"]] == ["BUSY", "BUSY"]
    assert c["billable"] is False and c["billing_reasons"] == ["not_connected"]


def test_controller_down_gives_fallback_then_routes_again_after_restart(controller, sipp):
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, min_duration=1)])
    controller.start()
    assert sipp.call(NUMBER, caller=CALLER, seconds=1).answered

    controller.stop()
    down = sipp.call(NUMBER, caller=CALLER, seconds=1)
    # No fallback buyer configured: a polite message (early media) and 503, never dead air.
    assert down.code == 503 and down.early_media, down
    assert len(a.invites()) == 1, "nothing is dialled while the controller is down"

    controller.start()
    again = sipp.call(NUMBER, caller=CALLER, seconds=1)
    assert again.answered, again
    assert len(a.invites()) == 2
    outcomes = sorted(c["outcome"] for c in controller.wait_calls(2))
    assert outcomes == ["connected", "connected"]


def test_controller_down_uses_the_fallback_buyer_it_pushed(controller, sipp):
    a, fallback = sipp.buyer("answer"), sipp.buyer("answer")
    controller.env["PPCSWITCH_ROUTING_FALLBACK_BUYER"] = "Default"
    controller.seed([buyer("Buyer A", a), buyer("Default", fallback)])
    controller.start()
    controller.stop(sig=9)  # even a crash leaves the pushed fallback in Asterisk
    assert sipp.call(NUMBER, caller=CALLER, seconds=1).answered
    assert len(fallback.invites()) == 1 and len(a.invites()) == 0


@pytest.mark.parametrize(
    "number,caller,source_ip,code,reason",
    [
        ("+18009999999", CALLER, "127.0.0.2", 404, "unknown_tracking_number"),
        (NUMBER, "anonymous", "127.0.0.2", 403, "anonymous_caller"),
        (NUMBER, "", "127.0.0.2", 403, "anonymous_caller"),
        (NUMBER, CALLER, "127.0.0.3", None, None),  # no trunk at that address
        ("+1800555,0100", CALLER, "127.0.0.2", 404, None),  # dialplan metacharacters
        ("+18005550100&PJSIP/x", CALLER, "127.0.0.2", 404, None),
    ],
    ids=["unknown-number", "anonymous", "empty-caller-id", "not-a-trunk", "comma", "ampersand"],
)
def test_refused_calls_never_dial_out(controller, sipp, number, caller, source_ip, code, reason):
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a)])
    controller.start()
    result = sipp.call(number, caller=caller, source_ip=source_ip)
    assert not result.answered
    if reason is None and code is not None:  # refused by the dialplan itself, the AGI never asked
        assert result.code == code, result
        calls = controller.wait_calls(1, timeout=3)
        assert [(c["outcome"], c["reject_reason"], c["attempts"]) for c in calls] in ([], [("rejected", "invalid_number", [])])
    elif code is not None:
        assert result.code == code, result
        [c] = controller.wait_calls(1)
        assert c["outcome"] == "rejected" and c["reject_reason"] == reason and c["attempts"] == []
        assert c["billable"] is False
    else:
        assert result.code in (401, 403, None), result
        time.sleep(1)
        assert controller.calls() == []
    assert a.invites() == []


@pytest.mark.parametrize(
    "caller,stored",
    [
        ("+442079460000", "+442079460000"),
        ("4155550123", "+14155550123"),
        ('Bob "the" O\'Neil', "Bob the ONeil"),
        ("x" * 300, "x" * 64),
    ],
    ids=["international", "national", "quotes", "very-long"],
)
def test_odd_caller_ids_route_and_are_stored_safely(controller, sipp, caller, stored):
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, min_duration=1)])
    controller.start()
    assert sipp.call(NUMBER, caller=caller, seconds=1).answered
    [c] = controller.wait_calls(1)
    assert c["caller"] == stored and c["outcome"] == "connected"


def test_bad_fastagi_clients_do_not_disturb_calls(controller, sipp):
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, min_duration=1)])
    controller.start()
    stop = threading.Event()

    def pester():
        payloads = [b"", b"garbage\r\n\r\n", b"agi_network_script: route\n", b"\xff" * 70000, b"agi_channel: x"]
        i = 0
        while not stop.is_set():
            with socket.create_connection((controller.env["PPCSWITCH_AGI_HOST"], 4573), timeout=2) as s:
                s.sendall(payloads[i % len(payloads)])
                if i % 5 == 4:
                    time.sleep(0.05)  # a few stay open, silent
            i += 1

    threads = [threading.Thread(target=pester) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        calls = [sipp.start_call(NUMBER, caller=CALLER, seconds=1) for _ in range(5)]
        results = [sipp.result(p) for p in calls]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(r.answered for r in results), [str(r) for r in results]
    assert len(controller.wait_calls(5)) == 5
    # After the storm, the controller sits idle: no busy loop on dead connections.
    time.sleep(2.5)
    cpu0 = controller.cpu_seconds()
    time.sleep(2)
    assert controller.cpu_seconds() - cpu0 < 0.3
