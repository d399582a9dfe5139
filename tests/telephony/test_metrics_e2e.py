"""/metrics of a real controller after real SIPp calls through the sandbox Asterisk:
the counters move by exactly the calls placed, the scrape passes `promtool check
metrics`, and credentials are asked for when a password is set."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request

import pytest

from metrics_scrape import promtool, samples, value

NUMBER = "+18005550100"
UNKNOWN = "+18009999999"
CALLER = "+14155550123"
USER, PASSWORD = "prometheus", "s3cret-scrape"


def scrape(controller, user=USER, password=PASSWORD) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{controller.http_port}/metrics")
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def test_counters_move_by_exactly_the_calls_placed(controller, sipp):
    first, second = sipp.buyer("busy"), sipp.buyer("answer")
    controller.seed(
        [
            {"name": "First", "destination": first.dest.split("/", 2)[2], "ring_timeout": 2, "revenue": "30.00"},
            {"name": "Second", "destination": second.dest.split("/", 2)[2], "ring_timeout": 3,
             "revenue": "40.00", "min_duration": 1, "concurrency_cap": 5},
        ],
        publisher_payout="12.50",
    )
    controller.env["PPCSWITCH_HTTP_METRICS_PASSWORD"] = PASSWORD
    controller.start()

    # Credentials are required once a password is set.
    for user, password in ((None, None), (USER, "wrong"), ("someone", PASSWORD)):
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(controller, user, password)
        assert err.value.code == 401
    before = samples(scrape(controller))

    # Two calls fail over from the busy First to Second, who answers; one unknown number.
    procs = [sipp.start_call(NUMBER, caller=CALLER, seconds=2) for _ in range(2)]
    assert sipp.call(UNKNOWN, caller=CALLER).code == 404
    assert all(sipp.result(p).answered for p in procs)
    assert len(controller.wait_calls(3)) == 3

    text = scrape(controller)
    after = samples(text)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    hvac = {"campaign": "HVAC", "publisher": "Pub"}
    assert moved("ppcswitch_calls_offered_total", **hvac) == 2
    assert moved("ppcswitch_calls_offered_total", campaign="none", publisher="none") == 1
    assert moved("ppcswitch_calls_total", **hvac, outcome="connected") == 2
    assert moved("ppcswitch_calls_total", campaign="none", publisher="none", outcome="rejected") == 1
    assert moved("ppcswitch_calls_routed_total", campaign="HVAC", buyer="First") == 2
    assert moved("ppcswitch_calls_routed_total", campaign="HVAC", buyer="Second") == 2
    assert moved("ppcswitch_calls_answered_total", campaign="HVAC", buyer="Second") == 2
    assert moved("ppcswitch_calls_answered_total", campaign="HVAC", buyer="First") == 0
    assert moved("ppcswitch_calls_billable_total", **hvac) == 2
    assert moved("ppcswitch_buyer_billable_calls_total", campaign="HVAC", buyer="Second") == 2
    assert moved("ppcswitch_revenue_cents_total", campaign="HVAC", buyer="Second") == 8000
    assert moved("ppcswitch_payout_cents_total", campaign="HVAC", publisher="Pub") == 2500
    assert moved("ppcswitch_dial_outcomes_total", buyer="First", outcome="busy") == 2
    assert moved("ppcswitch_dial_outcomes_total", buyer="Second", outcome="answer") == 2
    assert moved("ppcswitch_buyer_ring_seconds_count", buyer="Second") == 2
    assert moved("ppcswitch_fallback_calls_total") == 0
    assert moved("ppcswitch_routing_decision_seconds_count", step="decide") == 3
    assert moved("ppcswitch_routing_decision_seconds_count", step="next") == 2
    # route x3 and next x2 at least; the dialplan may ask other scripts (attribution, ...) too.
    assert moved("ppcswitch_agi_requests_total") >= 5
    assert moved("ppcswitch_db_write_seconds_count") == 3
    assert value(after, "ppcswitch_ami_connected") == 1
    assert value(after, "ppcswitch_agi_up") == 1
    assert value(after, "ppcswitch_live_calls") == 0
    assert value(after, "ppcswitch_db_write_queue_depth") == 0
    # No caller number and no call id in any label.
    assert CALLER not in text and CALLER[1:] not in text
    assert not any(c["linkedid"] in text for c in controller.calls())

    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr


def test_live_calls_and_cap_use_per_buyer_while_a_call_is_up(controller, sipp):
    a = sipp.buyer("answer")
    controller.seed([{"name": "Capped", "destination": a.dest.split("/", 2)[2], "concurrency_cap": 2, "min_duration": 1}])
    controller.start()
    proc = sipp.start_call(NUMBER, caller=CALLER, seconds=3)
    try:
        for _ in range(50):
            live = samples(controller.metrics())
            if value(live, "ppcswitch_buyer_live_calls", buyer="Capped") == 1:
                break
            time.sleep(0.1)
        assert value(live, "ppcswitch_buyer_live_calls", buyer="Capped") == 1
        assert value(live, "ppcswitch_buyer_concurrency_cap", buyer="Capped") == 2
        assert value(live, "ppcswitch_buyer_cap_use_ratio", buyer="Capped") == 0.5
        assert value(live, "ppcswitch_live_calls") == 1
    finally:
        assert sipp.result(proc).answered
    controller.wait_calls(1)
    assert ("ppcswitch_buyer_live_calls", frozenset({("buyer", "Capped")})) not in samples(controller.metrics())
