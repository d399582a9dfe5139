"""ppcswitch/metrics.py without a process: the exposition is valid and parses back to
what was recorded, labels are escaped, call records map to the right counters."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from metrics_scrape import promtool, samples, value
from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.metrics import Metrics, metrics_authorized
from ppcswitch.routing.model import Buyer, Campaign, Network, Publisher

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NET = Network(
    buyers={1: Buyer(1, "Cool Air", "PJSIP/x"), 2: Buyer(2, 'Odd "Buyer"\\ \n', "PJSIP/y")},
    publishers={7: Publisher(7, "Acme")},
    campaigns={3: Campaign(3, "HVAC")},
)


def call(outcome, attempts, buyer_id=None, billable=False, revenue=0, payout=0):
    return CallRecord("1700000000.1", "+18005550100", "+14155550123", True, T0, T0 + timedelta(seconds=90), outcome,
                      publisher_id=7, campaign_id=3, buyer_id=buyer_id, billable=billable,
                      revenue_cents=revenue, payout_cents=payout, attempts=attempts)


def test_call_records_move_the_right_series_and_the_exposition_is_valid():
    m = Metrics()
    busy = Attempt(1, 2, "BUSY", T0, None, T0 + timedelta(seconds=1))
    answer = Attempt(2, 1, "ANSWER", T0 + timedelta(seconds=1), T0 + timedelta(seconds=5))
    m.call_finished(call(Outcome.CONNECTED, [busy, answer], buyer_id=1, billable=True, revenue=4000, payout=1250), NET)
    m.call_finished(call(Outcome.FALLBACK, [Attempt(1, None, "ANSWER", T0, T0)]), NET)
    m.call_finished(CallRecord("x.2", "+18009999999", "+1415", True, T0, T0, Outcome.REJECTED), NET)
    m.rtb_ping("Cool Air", 0.08, "bid")
    m.fraud_flag("Acme", "repeat_caller")
    with m.write_time.time():
        pass
    text = m.render().decode()
    s = samples(text)
    assert value(s, "ppcswitch_calls_offered_total", campaign="HVAC", publisher="Acme") == 2
    assert value(s, "ppcswitch_calls_offered_total", campaign="none", publisher="none") == 1
    assert value(s, "ppcswitch_calls_total", campaign="HVAC", publisher="Acme", outcome="fallback") == 1
    assert value(s, "ppcswitch_fallback_calls_total") == 1
    assert value(s, "ppcswitch_calls_routed_total", campaign="HVAC", buyer='Odd "Buyer"\\ \n') == 1
    assert value(s, "ppcswitch_dial_outcomes_total", buyer='Odd "Buyer"\\ \n', outcome="busy") == 1
    assert value(s, "ppcswitch_dial_outcomes_total", buyer="Cool Air", outcome="answer") == 1
    assert value(s, "ppcswitch_calls_answered_total", campaign="HVAC", buyer="Cool Air") == 1
    assert value(s, "ppcswitch_buyer_billable_calls_total", campaign="HVAC", buyer="Cool Air") == 1
    assert value(s, "ppcswitch_calls_billable_total", campaign="HVAC", publisher="Acme") == 1
    assert value(s, "ppcswitch_revenue_cents_total", campaign="HVAC", buyer="Cool Air") == 4000
    assert value(s, "ppcswitch_payout_cents_total", campaign="HVAC", publisher="Acme") == 1250
    assert value(s, "ppcswitch_buyer_ring_seconds_sum", buyer="Cool Air") == 4
    assert value(s, "ppcswitch_ring_seconds_bucket", le="3.0") == 0
    assert value(s, "ppcswitch_ring_seconds_bucket", le="5.0") == 1  # le is "less or equal"
    assert value(s, "ppcswitch_ring_seconds_bucket", le="+Inf") == 1
    assert value(s, "ppcswitch_rtb_pings_total", buyer="Cool Air", outcome="bid") == 1
    assert value(s, "ppcswitch_rtb_ping_all_seconds_bucket", le="0.1") == 1
    assert value(s, "ppcswitch_fraud_flags_total", publisher="Acme", reason="repeat_caller") == 1
    assert value(s, "ppcswitch_db_write_seconds_count") == 1
    assert "4155550123" not in text and "1700000000" not in text
    check = promtool("check", "metrics", stdin=text)
    assert check.returncode == 0, check.stdout + check.stderr


def test_misuse_is_refused():
    m = Metrics()
    with pytest.raises(ValueError):
        m.rtb_ping("Cool Air", 0.1, "maybe")
    with pytest.raises(ValueError):
        m.offered.labels("HVAC")
    with pytest.raises(ValueError):
        m.offered.labels("HVAC", "Acme").inc(-1)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_metrics_credentials():
    assert metrics_authorized(basic("prometheus", "pw"), "prometheus", "pw")
    assert not metrics_authorized(basic("prometheus", "pw2"), "prometheus", "pw")
    assert not metrics_authorized(basic("other", "pw"), "prometheus", "pw")
    assert not metrics_authorized("Bearer pw", "prometheus", "pw")
    assert not metrics_authorized("Basic !!!", "prometheus", "pw")
    assert not metrics_authorized("Basic " + base64.b64encode(b"prometheuspw").decode(), "prometheus", "pw")
    assert not metrics_authorized("", "prometheus", "pw")
