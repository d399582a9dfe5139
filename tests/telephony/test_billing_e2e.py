"""Billing end to end: real SIP calls (SIPp) through the sandbox Asterisk and the controller.

The issue's figures: calls of 30 s and 70 s against a 60 s minimum, placed in
parallel (~75 s): one non-billable record with its reason, one billable, and
the period report shows what the publisher is owed and the buyer owes.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

NUMBER = "+18005550100"


def test_30s_and_70s_calls_against_a_60s_minimum(controller, sipp):
    a = sipp.buyer("answer")
    controller.seed([{"name": "Buyer A", "destination": a.dest.split("/", 2)[2], "ring_timeout": 3,
                      "revenue": "40.00", "min_duration": 60}], publisher_payout="12.50")
    controller.start()
    short = sipp.start_call(NUMBER, caller="+14155550130", seconds=30)
    long = sipp.start_call(NUMBER, caller="+14155550170", seconds=70)
    assert sipp.result(short, timeout=120).answered and sipp.result(long, timeout=120).answered

    calls = {c["caller"]: c for c in controller.wait_calls(2, timeout=20)}
    s, l = calls["+14155550130"], calls["+14155550170"]
    assert s["billable"] is False and (s["revenue_cents"], s["payout_cents"]) == (0, 0)
    assert s["billing_reasons"][0].startswith("duration_below_minimum:") and s["billing_reasons"][0].endswith("<60")
    assert 28 <= int(s["billing_reasons"][0].split(":")[1].split("<")[0]) <= 31
    assert s["billing_reasons"][1:] == ["payout:buyer_not_billable"]
    assert l["billable"] is True and l["billing_reasons"] == [] and abs(l["connected_ms"] / 1000 - 70) <= 2
    assert (l["revenue_cents"], l["payout_cents"]) == (4000, 1250)

    today = datetime.now(timezone.utc).date()
    out = controller.cli("report", "period", "--from", str(today - timedelta(days=1)), "--to",
                         str(today + timedelta(days=1)), "--csv")
    assert out.returncode == 0, out.stderr
    rows = {(r["group"], r["name"]): r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert rows[("publisher", "Pub")]["payable"] == "12.50"
    assert rows[("buyer", "Buyer A")]["receivable"] == "40.00"
    total = rows[("total", "total")]
    assert (total["calls"], total["billable"], total["margin"], total["billable_rate"]) == ("2", "1", "27.50", "0.5000")
    ledger = controller.cli("ledger", "list", "--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1)))
    assert ledger.stdout.count(" call ") == 2, ledger.stdout  # one receivable, one payable, for the 70 s call
