"""Fraud patterns produced by SIPp callers through the real sandbox Asterisk.

Each test asserts the flags and score stored with the call and what billing
made of it: a blocked caller, a repeat caller on two publishers, a caller who
sends no audio (and one who speaks), the press-1 challenge failed and passed,
a call carrying a STIR/SHAKEN Identity header, a recording as long as the call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
import uuid
import wave
from pathlib import Path

import pytest

from ppcswitch.billing import ledger
from ppcswitch.fraud import store
from ppcswitch.sandbox import TRUNK_IP, from_header
from ppcswitch.storage import db, repo

NUMBER, NUMBER_2 = "+18005550100", "+18005550101"
CALLER = "+14155550123"
ROOT = Path(__file__).resolve().parents[2]
MODULES = ("app_read.so", "app_stack.so", "func_talkdetect.so", "app_mixmonitor.so", "res_pjsip_header_funcs.so")


@pytest.fixture
def fraud_dialplan(sandbox, sipp):
    """This checkout's dialplan, SIPp scenarios and modules in the running sandbox (it may predate them)."""
    shutil.copyfile(ROOT / "dialplans/ppcswitch.conf", sandbox.etc_dir / "ppcswitch.conf")
    scenarios = sandbox.in_root(sandbox.sipp_dir)
    for src in (ROOT / "ppcswitch/sipp").glob("*.xml"):
        shutil.copyfile(src, scenarios / src.name)
    for module in MODULES:
        if module.split(".")[0] not in sandbox.cli(f"module show like {module}"):
            sandbox.cli(f"module load {module}")
    sandbox.cli("dialplan reload")
    return sandbox


def buyer(name, proc, **kw):
    return {"name": name, "destination": proc.dest.split("/", 2)[2], "ring_timeout": 3, "min_duration": 0,
            "revenue": "20.00", **kw}


def in_db(controller, fn):
    async def go():
        engine = db.make_engine(controller.db_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                return await fn(s)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def signals(controller, linkedid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        found = in_db(controller, lambda s: store.get_signals(s, linkedid))
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def uac(box, scenario, number=NUMBER, hold_ms=1000, caller=CALLER, extra=()):
    args = [box.sip_target, "-sf", f"{box.sipp_dir}/{scenario}", "-i", TRUNK_IP, "-s", number,
            "-m", "1", "-l", "1", "-d", str(hold_ms), "-set", "from", from_header(caller), *extra]
    return box._start_sipp("uac-fraud", args)


def run(sipp, proc, timeout=30):
    sipp.procs.append(proc)
    proc.wait(timeout)
    return "\n".join(proc.log_lines())


def by_caller_order(calls):
    return sorted(calls, key=lambda c: c["started_at"])


def test_blocked_caller_never_rings_a_buyer(controller, sipp, fraud_dialplan):
    a = sipp.buyer("answer")
    controller.seed([buyer("A", a)])
    in_db(controller, lambda s: store.add_entry(s, "block", "+1415555"))
    controller.start()
    result = sipp.call(NUMBER, caller=CALLER, seconds=1)
    assert result.code == 403 and not result.answered, result
    [c] = controller.wait_calls(1)
    assert c["outcome"] == "rejected" and c["reject_reason"] == "blocked_caller"
    assert c["billable"] is False and c["billing_reasons"][0] == "rejected:blocked_caller"
    assert len(a.invites()) == 0
    sig = signals(controller, c["linkedid"])
    assert sig["score"] == 100 and sig["flags"][0] == "blocked_caller", sig


def test_repeat_caller_on_two_publishers_is_flagged_and_not_billable(controller, sipp, fraud_dialplan):
    a = sipp.buyer("answer")
    controller.seed([buyer("A", a)])

    async def second_publisher(s):
        await repo.create_publisher(s, "Other", payout="5.00")
        await repo.add_tracking_number(s, NUMBER_2, "HVAC", "Other")
        c = await repo.get_campaign(s, "HVAC")
        await ledger.set_rule(s, "revenue", campaign_id=c.id, quality_threshold=50)

    in_db(controller, second_publisher)
    controller.start()
    assert sipp.call(NUMBER, caller=CALLER, seconds=1).answered
    controller.wait_calls(1)
    assert sipp.call(NUMBER_2, caller=CALLER, seconds=1).answered
    first, second = by_caller_order(controller.wait_calls(2))
    s1, s2 = signals(controller, first["linkedid"]), signals(controller, second["linkedid"])
    assert "repeat_caller_publishers" not in s1["flags"] and first["billable"] is True, (s1, first)
    # Second publisher, same caller within the window: 35 points, plus 15 for no attestation.
    assert s2["flags"] == ["repeat_caller_publishers", "attestation_none"] and s2["score"] == 50, s2
    assert second["billable"] is False and "quality_flagged:50>=50" in second["billing_reasons"], second


def test_caller_sending_no_audio_is_flagged_no_conversation_and_not_billable(controller, sipp, fraud_dialplan):
    a = sipp.buyer("answer")
    controller.seed([buyer("A", a)])
    controller.env["PPCSWITCH_FRAUD_NO_CONVERSATION_SECONDS"] = "2"
    in_db(controller, lambda s: ledger.set_rule(s, "revenue", campaign_id=1, quality_threshold=40))
    controller.start()
    assert sipp.call(NUMBER, caller=CALLER, seconds=3).answered  # uac_call.xml: no RTP at all
    [silent] = controller.wait_calls(1)
    s1 = signals(controller, silent["linkedid"])
    assert s1["caller_talk_ms"] == 0 and "no_conversation" in s1["flags"], s1
    assert s1["explanation"][0]["detail"] == "nobody_spoke" and s1["score"] == 65, s1
    assert silent["billable"] is False and any(r.startswith("quality_flagged:") for r in silent["billing_reasons"])
    # A caller who speaks (uac_talk.xml plays g711a.pcap) is measured and not flagged.
    log = run(sipp, uac(fraud_dialplan, "uac_talk.xml", hold_ms=4000, caller="+12125550199"))
    assert "FINAL 200" in log, log
    talking = [c for c in controller.wait_calls(2) if c["linkedid"] != silent["linkedid"]][0]
    s2 = signals(controller, talking["linkedid"])
    assert s2["caller_talk_ms"] > 1000 and "no_conversation" not in s2["flags"], s2
    assert talking["billable"] is True, talking


def test_buyer_talk_time_is_measured_from_its_answer(controller, sipp, fraud_dialplan):
    """The buyer's leg gets talk detection when it answers (Dial's U()): a buyer who speaks
    (uas_talk.xml plays g711a.pcap) is measured, one who does not is 0."""
    talker, mute = sipp.buyer("talk"), sipp.buyer("answer")
    controller.seed([buyer("Talker", talker), buyer("Mute", mute)])
    controller.start()
    assert sipp.call(NUMBER, caller=CALLER, seconds=4).answered  # Talker (priority 1)
    [first] = controller.wait_calls(1)
    controller.cli("buyer", "pause", "Talker")
    time.sleep(3)  # the paused buyer leaves the routing snapshot
    assert sipp.call(NUMBER, caller="+12125550199", seconds=3).answered  # Mute
    second = [c for c in controller.wait_calls(2) if c["linkedid"] != first["linkedid"]][0]
    ids = controller.ids()
    assert (first["buyer_id"], second["buyer_id"]) == (ids["Talker"], ids["Mute"])
    s1, s2 = signals(controller, first["linkedid"]), signals(controller, second["linkedid"])
    assert s1["buyer_talk_ms"] > 1000, s1
    assert s2["buyer_talk_ms"] == 0, s2


def test_press_1_challenge_failed_ends_the_call_and_passed_reaches_the_buyer(controller, sipp, fraud_dialplan):
    a = sipp.buyer("answer")
    controller.seed([buyer("A", a)])
    in_db(controller, lambda s: store.set_campaign(s, "HVAC", challenge=True))
    controller.start()
    log = run(sipp, uac(fraud_dialplan, "uac_press2.xml", hold_ms=8000))
    assert "FINAL 200" in log and "HANGUP remote" in log, log
    [failed] = controller.wait_calls(1)
    assert len(a.invites()) == 0
    assert failed["outcome"] == "rejected" and failed["reject_reason"] == "challenge_failed", failed
    assert failed["billable"] is False and failed["billing_reasons"][0] == "rejected:challenge_failed"
    s1 = signals(controller, failed["linkedid"])
    assert s1["challenge"] == "failed" and s1["flags"][0] == "challenge_failed" and s1["score"] >= 60, s1

    log = run(sipp, uac(fraud_dialplan, "uac_press1.xml", hold_ms=2000, caller="+12125550123"))
    assert "FINAL 200" in log and "PRESSED 1" in log, log
    passed = by_caller_order(controller.wait_calls(2))[1]
    assert len(a.invites()) == 1 and passed["outcome"] == "connected" and passed["billable"] is True, passed
    assert signals(controller, passed["linkedid"])["challenge"] == "passed"
    # The challenge is not billed: connected time counts from the buyer's answer only.
    assert passed["connected_ms"] <= 2500, passed


def jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'ES256', 'ppt': 'shaken', 'typ': 'passport'})}.{enc(claims)}.c2lnbmF0dXJl"


def test_attestation_from_the_identity_header(controller, sipp, fraud_dialplan):
    a = sipp.buyer("answer")
    controller.seed([buyer("A", a)])
    controller.start()
    identity = jwt({"attest": "C", "orig": {"tn": "14155550123"}, "iat": 1}) + \
        ";info=<https://cert.example.org/c.pem>;alg=ES256;ppt=shaken"
    log = run(sipp, uac(fraud_dialplan, "uac_identity.xml", extra=("-set", "identity", identity, "-set", "attest", "A")))
    assert "FINAL 200" in log, log
    [c] = controller.wait_calls(1)
    s = signals(controller, c["linkedid"])
    # The Identity claim wins over the carrier's own header.
    assert s["attestation"] == "C" and "attestation_c" in s["flags"], s
    report = in_db(controller, lambda s: store.publisher_quality(s))
    assert report[0]["attestation"] == {"A": 0, "B": 0, "C": 1, "none": 0}


def test_recording_is_as_long_as_the_call_with_each_direction_beside_it(controller, sipp, fraud_dialplan):
    a = sipp.buyer("answer")
    controller.seed([buyer("A", a)])
    inside = f"/tmp/ppcswitch-rec-{uuid.uuid4().hex[:8]}"
    local = fraud_dialplan.root / inside.lstrip("/")
    local.mkdir(parents=True)
    shutil.chown(local, *_asterisk_owner(fraud_dialplan))
    controller.env.update({"PPCSWITCH_RECORDING_DIRECTORY": inside, "PPCSWITCH_RECORDING_LOCAL_DIRECTORY": str(local)})
    in_db(controller, lambda s: store.set_campaign(s, "HVAC", record=True))
    controller.start()
    try:
        log = run(sipp, uac(fraud_dialplan, "uac_talk.xml", hold_ms=4000))
        assert "FINAL 200" in log, log
        [c] = controller.wait_calls(1)
        s = signals(controller, c["linkedid"])
        path = local / s["recording"]
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        with wave.open(str(path)) as w:
            seconds = w.getnframes() / w.getframerate()
        assert abs(seconds - c["connected_ms"] / 1000) <= 1.0, (seconds, c["connected_ms"])
        stem = path.name[:-4]
        assert (local / f"{stem}-caller.wav").is_file() and (local / f"{stem}-buyer.wav").is_file()
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _asterisk_owner(box):
    st = box.spool_dir.stat()
    return st.st_uid, st.st_gid
