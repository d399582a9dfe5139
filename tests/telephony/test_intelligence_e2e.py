"""Call intelligence end to end with real speech: SIPp callers and a SIPp buyer play sentences made
with espeak-ng (8 kHz mu-law RTP) into real calls through the sandbox Asterisk, the campaign
records, and the controller's worker transcribes each leg with the embedded engine.

Asserted: each side's key words are in the stored transcript, a spoken card number is redacted,
the dispositions and the AI score follow the phrase rules, and a `min_ai_score` gate changes
billable through a re-rating booked in the ledger."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from ppcswitch.billing import ledger
from ppcswitch.fraud import store as fraud_store
from ppcswitch.intelligence import store
from ppcswitch.sandbox import BUYER_IP, udp_bound, free_udp_port
from ppcswitch.storage import models_billing as b
from speech import need_tools, pcmu_scenario, rtp_pcap, say
from test_fraud_e2e import _asterisk_owner, buyer, fraud_dialplan, in_db, run, uac  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.asterisk

CALLER_1 = [("en-us", 150, "can you come tomorrow morning"),
            ("en-us+m3", 140, "my card number is four one one one one one one one one one one one one one one one")]
CALLER_2 = [("en-us", 130, "it is about my account"), ("en-us", 130, "it is about my account")]
BUYER = [("en-us+m3", 140, "is it about your water heater")]


def start_buyer(box, sipp, scenario: str):
    port = free_udp_port(BUYER_IP)
    proc = box._start_sipp(f"uas-speak-{port}", ["-sf", f"{box.sipp_dir}/{scenario}", "-i", BUYER_IP,
                                                 "-p", str(port)])
    sipp.procs.append(proc)
    proc.port, proc.dest = port, f"PJSIP/ppcswitch-buyer/sip:buyer@{BUYER_IP}:{port}"
    deadline = time.monotonic() + 5
    while not udp_bound(BUYER_IP, port):
        assert proc.poll() is None and time.monotonic() < deadline, "SIPp buyer did not start"
        time.sleep(0.02)
    return proc


def transcript(controller, linkedid, timeout=120.0):
    deadline = time.monotonic() + timeout
    while True:
        t = in_db(controller, lambda s: store.get_transcript(s, linkedid))
        if t is not None and t["status"] in ("done", "failed") or time.monotonic() > deadline:
            return t
        time.sleep(0.5)


def side(t, name):
    return " ".join(s["text"] for s in t["segments"] if s["side"] == name)


def test_spoken_calls_are_transcribed_redacted_scored_and_gated(controller, sipp, fraud_dialplan, tmp_path):
    need_tools()
    box = fraud_dialplan
    work = f"/tmp/ppcswitch-speech-{uuid.uuid4().hex[:8]}"  # inside the sandbox root: SIPp reads it there
    local_work = box.root / work.lstrip("/")
    local_work.mkdir(parents=True)
    scenarios = box.in_root(box.sipp_dir)
    seconds = {}
    for name, parts in (("caller1", CALLER_1), ("caller2", CALLER_2), ("buyer", BUYER)):
        seconds[name] = rtp_pcap(say(parts, tmp_path / f"{name}.ul"), local_work / f"{name}.pcap")
        src = ROOT / "ppcswitch/sipp" / ("uas_talk.xml" if name == "buyer" else "uac_talk.xml")
        pcmu_scenario(src, scenarios / f"speak-{name}.xml", f"{work}/{name}.pcap")

    talker = start_buyer(box, sipp, "speak-buyer.xml")
    controller.seed([buyer("Cool Air", talker)])
    inside = f"/tmp/ppcswitch-rec-{uuid.uuid4().hex[:8]}"
    recordings = box.root / inside.lstrip("/")
    recordings.mkdir(parents=True)
    shutil.chown(recordings, *_asterisk_owner(box))
    controller.env.update({"PPCSWITCH_RECORDING_DIRECTORY": inside, "PPCSWITCH_RECORDING_LOCAL_DIRECTORY": str(recordings),
                           "PPCSWITCH_INTELLIGENCE_RETRY_SECONDS": "1",
                           "PPCSWITCH_INTELLIGENCE_ALERT_LOW_SCORE_RATE": "0.5", "PPCSWITCH_FRAUD_ALERT_MIN_CALLS": "2"})
    in_db(controller, lambda s: fraud_store.set_campaign(s, "HVAC", record=True))
    campaign_id = controller.ids()["campaign:HVAC"]
    in_db(controller, lambda s: ledger.set_rule(s, "revenue", campaign_id=campaign_id, min_ai_score=40))
    controller.start()
    try:
        hold = int(max(seconds.values()) * 1000) + 1500
        procs = [uac(box, f"speak-{name}.xml", hold_ms=hold, caller=caller)  # both calls at once
                 for name, caller in (("caller1", "+14155550123"), ("caller2", "+12125550199"))]
        for proc in procs:
            log = run(sipp, proc, timeout=60)
            assert "FINAL 200" in log, log
        calls = {c["caller"]: c for c in controller.wait_calls(2)}
        good, bad = calls["+14155550123"], calls["+12125550199"]
        t1, t2 = transcript(controller, good["linkedid"]), transcript(controller, bad["linkedid"])
        assert t1 and t1["status"] == "done", t1
        assert t2 and t2["status"] == "done", t2

        # Each side's words, from its own leg.
        assert "tomorrow morning" in side(t1, "caller"), t1["segments"]
        assert "water heater" in side(t1, "buyer") and "water heater" in side(t2, "buyer"), (t1["segments"], t2["segments"])
        assert "my account" in side(t2, "caller"), t2["segments"]
        # The spoken card number never reached the database.
        assert "[redacted]" in side(t1, "caller") and "one one one one one one" not in json.dumps(t1["segments"]), t1["segments"]
        assert t1["redactions"] == 1
        # Dispositions and score from the shipped phrase rules.
        assert "appointment" in t1["dispositions"] and "already_customer" not in t1["dispositions"], t1
        assert t2["dispositions"] == ["already_customer"], t2
        assert t1["ai_score"] >= 40 > t2["ai_score"], (t1["score_reasons"], t2["score_reasons"])
        assert "disposition:appointment" in {r["reason"] for r in t1["score_reasons"]}
        assert "disposition:already_customer" in {r["reason"] for r in t2["score_reasons"]}

        # Both were billable when they ended; the gate took the second back when its transcript came.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            calls = {c["caller"]: c for c in controller.calls()}
            if not calls["+12125550199"]["billable"]:
                break
            time.sleep(0.3)
        good, bad = calls["+14155550123"], calls["+12125550199"]
        assert good["billable"] is True and good["revenue_cents"] == 2000, good
        assert bad["billable"] is False and f"ai_score_below:{t2['ai_score']}<40" in bad["billing_reasons"], bad
        entries = in_db(controller, lambda s: _entries(s, bad["linkedid"]))
        assert ("call", "receivable", 2000, "") in entries and ("rerate", "receivable", -2000, "intelligence") in entries
        assert sum(e[2] for e in entries if e[1] == "receivable") == 0
        metrics = controller.metrics()
        assert 'ppcswitch_transcriptions_total{result="done"} 2.0' in metrics
        assert "ppcswitch_transcription_queue_depth 0.0" in metrics
        # Half the publisher's transcribed calls scored low: alerted like the fraud rates.
        assert 'reason="alert:publisher_low_ai_score"} 1.0' in metrics, metrics
        alerts = in_db(controller, lambda s: fraud_store.open_alerts(s))
        assert [(a.kind, a.bad, a.total) for a in alerts if a.kind == "publisher_low_ai_score"] == [
            ("publisher_low_ai_score", 1, 2)]
    finally:
        shutil.rmtree(recordings, ignore_errors=True)
        shutil.rmtree(local_work, ignore_errors=True)


async def _entries(s, linkedid):
    d = await s.scalar(select(b.BillingDecision).where(b.BillingDecision.linkedid == linkedid))
    rows = await s.scalars(select(b.LedgerEntry).where(b.LedgerEntry.call_id == d.call_id).order_by(b.LedgerEntry.id))
    return [(e.kind, e.account, e.amount_cents, e.user) for e in rows]
