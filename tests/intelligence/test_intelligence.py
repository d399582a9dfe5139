"""Call intelligence: redaction, dispositions and the AI score, the billing gate (min_ai_score,
deny_dispositions) through the one rules engine, and the transcription queue end to end on a real
database with real worker processes and the embedded pocketsphinx model (speech from tests/data/speech)."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from billing_helpers import network, record
from ppcswitch.billing import ledger
from ppcswitch.billing.rules import RuleError, SideRule, check_override
from ppcswitch.config import Settings
from ppcswitch.intelligence import rules as pr
from ppcswitch.intelligence import store
from ppcswitch.intelligence.engine import EngineError, load_engine, read_pcm16
from ppcswitch.intelligence.redact import MARK, redact
from ppcswitch.intelligence.runtime import Intelligence
from ppcswitch.metrics import Metrics
from ppcswitch.qualification import SettlementFacts, decide
from ppcswitch.storage import models_billing as b
from ppcswitch.storage.models_intelligence import Transcript

SPEECH = Path(__file__).parents[1] / "data" / "speech"
UTC = timezone.utc


# --- redaction -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected, runs", [
    ("my card is four one one one one one one one one one one one one one one one thanks",
     f"my card is {MARK} thanks", 1),
    ("my social is 123-45-6789 ok", f"my social is {MARK} ok", 1),
    ("it is 4111 1111 1111 1111", f"it is {MARK}", 1),
    ("call me at five five five oh one two three", f"call me at {MARK}", 1),
    ("double five double five one two", MARK, 1),
    ("talk to you for one minute", "talk to you for one minute", 0),  # "to"/"for" alone are words
    ("i want to talk to two people", "i want to talk to two people", 0),
    ("room 12 at 3 pm", "room 12 at 3 pm", 0),
    ("four to one one four four one one", MARK, 1),  # misheard digits inside a run still count
])
def test_redaction(text, expected, runs):
    assert redact(text, 6) == (expected, runs)


def test_redaction_off_and_threshold():
    assert redact("one two three four five six seven", 0) == ("one two three four five six seven", 0)
    assert redact("one two three four five", 6)[1] == 0
    assert redact("one two three four five six", 6)[1] == 1


# --- dispositions and the score ------------------------------------------------------

def seg(side, start, text):
    return {"side": side, "start": start, "end": start + 2, "text": text}


def test_default_dispositions_by_side_and_order():
    segments = [seg("buyer", 0, "thank you for calling"), seg("caller", 3, "Sorry, WRONG number!"),
                seg("caller", 6, "please stop calling"), seg("buyer", 9, "who is this")]
    hits = pr.dispositions(segments, pr.effective([], None))
    assert [h.disposition for h in hits] == ["wrong_number", "stop_calling"]  # "who is this" is a caller phrase
    assert hits[0].side == "caller" and hits[0].at == 3


def test_campaign_rules_add_and_switch_off_defaults():
    rows = [pr.PhraseRule("appointment", "tomorrow morning", "any", False, 7),  # off for campaign 7
            pr.PhraseRule("hot_lead", "new air conditioner", "caller", True, 7),
            pr.PhraseRule("sale", "deal", "any", True, None)]  # network-wide
    segments = [seg("caller", 1, "i need a new air conditioner, come tomorrow morning, deal")]
    assert {h.disposition for h in pr.dispositions(segments, pr.effective(rows, 7))} == {"hot_lead", "sale"}
    assert {h.disposition for h in pr.dispositions(segments, pr.effective(rows, 8))} == {"appointment", "sale"}


def test_score_reasons():
    segments = [seg("caller", 0, "can you come tomorrow morning please"), seg("buyer", 3, "yes we can")]
    hits = pr.dispositions(segments, pr.effective([], None))
    good = pr.score(hits, segments, 3000, 2000)
    assert good.value == 50 + 20 + 10
    assert [r["reason"] for r in good.reasons] == ["disposition:appointment", "conversation"]
    bad = pr.score(pr.dispositions([seg("caller", 0, "stop calling me")], pr.effective([], None)),
                   [seg("caller", 0, "stop calling me")], 1000, 0, fraud_score=60, fraud_flags=["caller_velocity"])
    assert [(r["reason"], r["points"]) for r in bad.reasons] == [
        ("disposition:stop_calling", -40), ("buyer_silent", -15), ("few_caller_words", -10), ("fraud_score", -30)]
    assert bad.value == 0 and "caller_velocity" in bad.reasons[-1]["detail"]
    assert pr.score([], [], 0, 0).value == 20  # nobody said anything: caller silent


def test_phrase_rule_validation():
    with pytest.raises(pr.PhraseError):
        pr.check_rule("Wrong Number!", "x", "any")
    with pytest.raises(pr.PhraseError):
        pr.check_rule("ok", "   ", "any")
    with pytest.raises(pr.PhraseError):
        pr.check_rule("ok", "fine", "both")
    assert pr.check_rule("Sale", "Sign You UP!", "buyer") == ("sale", "sign you up", "buyer")


# --- the billing gate (same rules engine) ----------------------------------------------

PAY = SideRule(flat_cents=1000)


@pytest.mark.parametrize("score, billable", [(None, True), (59, False), (60, True)])
def test_min_ai_score_gate(score, billable):
    d = decide(SettlementFacts(90_000, True, ai_score=score), SideRule(min_ai_score=60, flat_cents=4000), PAY)
    assert d.revenue.billable is billable
    assert d.revenue.reasons == (() if billable else (f"ai_score_below:{score}<60",))
    assert d.payout.billable is billable  # revshare follows


def test_deny_dispositions_gate_on_payout_side_only():
    facts = SettlementFacts(90_000, True, ai_score=80, dispositions=("appointment", "wrong_number"))
    d = decide(facts, SideRule(flat_cents=4000), SideRule(flat_cents=1000, only_when_buyer_pays=False,
                                                          deny_dispositions=("wrong_number", "stop_calling")))
    assert d.revenue.billable and not d.payout.billable
    assert d.reasons == ["payout:disposition:wrong_number"]


def test_rule_values_checked():
    assert check_override("revenue", {"deny_dispositions": "Wrong_Number, stop_calling"}) == {
        "deny_dispositions": ("wrong_number", "stop_calling")}
    with pytest.raises(RuleError):
        check_override("revenue", {"min_ai_score": 101})
    with pytest.raises(RuleError):
        check_override("revenue", {"deny_dispositions": "wrong number"})


# --- the engine ----------------------------------------------------------------------------

def test_engine_reads_telephone_audio_and_finds_words():
    engine = load_engine("pocketsphinx")
    segments = engine.transcribe(str(SPEECH / "06.wav"))  # mu-law 8 kHz, as delivered by a carrier
    words = " ".join(s.text for s in segments).split()
    assert words.count("one") >= 10
    assert all(s.start < s.end for s in segments) and all(w.start <= w.end for s in segments for w in s.words)
    pcm, rate = read_pcm16(str(SPEECH / "06.wav"))
    assert rate == 8000 and len(pcm) > 8000 * 2


def test_engine_errors(tmp_path):
    with pytest.raises(EngineError, match="expected 'pocketsphinx'"):
        load_engine("whisper")
    with pytest.raises(EngineError, match="no_such_module"):
        load_engine("no_such_module:Engine")
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(EngineError, match="WAV without fmt"):
        load_engine("pocketsphinx").transcribe(str(bad))


# --- the queue, the workers, storing and re-rating ------------------------------------------

def pcm_wav(src: Path, dest: Path, pad_seconds: float = 0.0) -> None:
    """A 16-bit 8 kHz PCM WAV (what MixMonitor writes) from a shipped mu-law one, silence in front."""
    pcm, rate = read_pcm16(str(src))
    pcm = bytes(int(pad_seconds * rate) * 2) + pcm
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm))
    dest.write_bytes(header + pcm)


def side_text(t):
    return " ".join(x["text"] for x in t["segments"])


async def wait_for(predicate, timeout=60.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_transcripts_queue_store_redact_and_rerate(sessionmaker, writer, tmp_path):
    async with sessionmaker() as s:
        ids = await network(s)
        await s.commit()
    recs = tmp_path / "rec"
    recs.mkdir()
    # Call 1: caller asks for the technician tomorrow morning and gives a card number; the buyer talks.
    pcm_wav(SPEECH / "02.wav", recs / "c1-caller.wav")
    pcm_wav(SPEECH / "06.wav", recs / "c1-buyer.wav", pad_seconds=1.0)
    shutil.copy(recs / "c1-caller.wav", recs / "c1.wav")
    # Call 2: only the caller talks (buyer leg silent).
    pcm_wav(SPEECH / "08.wav", recs / "c2-caller.wav")
    (recs / "c2-buyer.wav").write_bytes((recs / "c2-caller.wav").read_bytes()[:44] + bytes(0))
    now = datetime.now(UTC) - timedelta(minutes=5)
    r1, r2 = record(ids, now, 120, linkedid="c1"), record(ids, now + timedelta(seconds=1), 120, linkedid="c2")
    from ppcswitch.attribution import store as attribution_store
    from ppcswitch.storage import models_attribution as ma

    await writer.run(lambda s: attribution_store.set_target(s, "publisher", ids["pub"], "https://pub.example/pb?p={payout}"))
    for rec in (r1, r2):  # settled and told "billed", as the pipeline does
        await writer.run(lambda s, rec=rec: ledger.settle(s, rec))
        await writer.run(lambda s, rec=rec: attribution_store.enqueue_for_call(s, rec))
    # The gate applies to calls settled before their transcript: both were billable when they ended.
    await writer.run(lambda s: ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], min_ai_score=50))
    async with sessionmaker() as s:
        assert (await s.get(b.BillingDecision, 1)).revenue_billable

    settings = Settings()
    settings.intelligence.retry_seconds = 0.2
    settings.intelligence.max_attempts = 2
    settings.intelligence.alert_low_score_rate = 0.5
    settings.fraud.alert_min_calls = 2
    metrics = Metrics()
    metrics.watch(lambda: {})
    intel = Intelligence(settings, sessionmaker, writer, metrics, str(recs))
    alerts = []
    intel.on_alert = alerts.append
    await intel.start()
    for rec, name in ((r1, "c1.wav"), (r2, "c2.wav")):
        intel.enqueue(rec, name)
    missing = record(ids, now, 90, linkedid="gone")
    intel.enqueue(missing, "gone.wav")  # never written: retried, then failed
    shutil.copy(recs / "c2-caller.wav", recs / "late-caller.wav")
    intel.enqueue(record(ids, now, 90, linkedid="late"), "late.wav")  # its record never reaches the database
    text = metrics.render().decode()
    assert "ppcswitch_transcription_queue_depth 4.0" in text
    feeder = asyncio.create_task(intel.run())
    try:
        async def finished():
            async with sessionmaker() as s:
                return await s.scalar(select(func.count()).select_from(Transcript)
                                      .where(Transcript.status.in_(("done", "failed")))) == 4
        await wait_for(finished, 120)
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await intel.stop()

    async with sessionmaker() as s:
        t1, t2 = await store.get_transcript(s, "c1"), await store.get_transcript(s, "c2")
        gone = await store.get_transcript(s, "gone")
        late = await store.get_transcript(s, "late")
        d1 = await s.scalar(select(b.BillingDecision).where(b.BillingDecision.linkedid == "c1"))
        d2 = await s.scalar(select(b.BillingDecision).where(b.BillingDecision.linkedid == "c2"))
        entries2 = list(await s.scalars(select(b.LedgerEntry).where(b.LedgerEntry.call_id == d2.call_id)
                                        .order_by(b.LedgerEntry.id)))
        hits, total = await store.search(s, "tomorrow morning")
        qc = await store.qc(s, now - timedelta(hours=1), 40)
    caller1 = " ".join(x["text"] for x in t1["segments"] if x["side"] == "caller")
    buyer1 = " ".join(x["text"] for x in t1["segments"] if x["side"] == "buyer")
    assert "tomorrow morning" in caller1
    assert MARK in buyer1 and "one one one one one one" not in buyer1 and t1["redactions"] == 1
    assert min(x["start"] for x in t1["segments"] if x["side"] == "buyer") >= 0.9  # times from the leg's start
    assert t1["dispositions"] == ["appointment"] and t1["ai_score"] >= 50
    assert d1.ai_score == t1["ai_score"] and d1.revenue_billable  # passes the gate: nothing booked
    assert "water heater" in " ".join(x["text"] for x in t2["segments"])
    assert "buyer_silent" in [r["reason"] for r in t2["score_reasons"]] and t2["ai_score"] < 50
    # Call 2 fails the gate: re-rated through the ledger, its revenue and payout taken back.
    assert not d2.revenue_billable and json.loads(d2.revenue_reasons) == [f"ai_score_below:{t2['ai_score']}<50"]
    assert [(e.kind, e.account, e.amount_cents) for e in entries2] == [
        ("call", "receivable", 4000), ("call", "payable", 1000), ("rerate", "receivable", -4000),
        ("rerate", "payable", -1000)]
    assert entries2[-1].user == "intelligence"
    async with sessionmaker() as s:
        outbox = [(o.linkedid, o.event, json.loads(o.body)["payout"]) for o in
                  await s.scalars(select(ma.PostbackOutbox).order_by(ma.PostbackOutbox.id))]
    # The publisher was told both calls billed; the one taken back is reversed, like a dispute.
    assert outbox == [("c1", "billed", "10.00"), ("c2", "billed", "10.00"), ("c2", "reversed", "-10.00")]
    assert gone["status"] == "failed" and "FileNotFoundError" in gone["error"] and gone["attempts"] == 2
    # Transcribed before its call was settled: stored, and the call gets its facts once settled.
    assert late["status"] == "done" and late["attempts"] == 1 and "water heater" in side_text(late)
    late_rec = record(ids, now, 90, linkedid="late")
    await writer.run(lambda s: ledger.settle(s, late_rec))
    changed = await writer.run(lambda s: store.rate_settled(s, now - timedelta(days=1)))
    assert [c.linkedid for c in changed] == ["late"] and changed[0].new_revenue_cents == 0
    assert await writer.run(lambda s: store.rate_settled(s, now - timedelta(days=1))) == []  # once
    assert total == 1 and hits[0]["linkedid"] == "c1" and "tomorrow morning" in hits[0]["match"]["text"]
    assert qc[0]["calls"] == 3 and qc[0]["low"] == 2 and qc[0]["dispositions"] == {"appointment": 1}
    text = metrics.render().decode()
    assert 'ppcswitch_transcriptions_total{result="done"} 3.0' in text
    assert 'ppcswitch_transcriptions_total{result="failed"} 1.0' in text
    assert "ppcswitch_transcription_queue_depth 0.0" in text
    # Re-rateable over history: a stricter gate applied with `ppcswitch rerate` takes the first call back too.
    from ppcswitch.billing.reports import Period
    from ppcswitch.billing.rerate import rerate

    await writer.run(lambda s: ledger.set_rule(s, "revenue", campaign_id=ids["campaign"], min_ai_score=100))
    period = Period(now - timedelta(hours=1), now + timedelta(hours=1))
    res = await writer.run(lambda s: rerate(s, period, apply=True, user="alice"))
    assert {c.linkedid for c in res.changes} == {"c1", "c2", "late"} and res.revenue_delta_cents == -4000
    async with sessionmaker() as s:
        d1 = await s.scalar(select(b.BillingDecision).where(b.BillingDecision.linkedid == "c1"))
    assert not d1.revenue_billable and json.loads(d1.revenue_reasons) == [f"ai_score_below:{t1['ai_score']}<100"]
    # One of the publisher's two transcribed calls scored low: at the 50 % alert rate, one alert.
    assert [(a.kind, a.subject_id, a.bad, a.total) for a in alerts] == [("publisher_low_ai_score", ids["pub"], 1, 2)]


async def test_queue_survives_restart_and_is_bounded(sessionmaker, writer, tmp_path):
    async with sessionmaker() as s:
        ids = await network(s)
        await s.commit()
    settings = Settings()
    settings.intelligence.queue_max = 2
    metrics = Metrics()
    metrics.watch(lambda: {})
    intel = Intelligence(settings, sessionmaker, writer, metrics, str(tmp_path))
    await intel.start()
    now = datetime.now(UTC)
    for i in range(3):
        intel.enqueue(record(ids, now, 90, linkedid=f"q{i}"), f"q{i}.wav")
    await writer.run(lambda s: store.mark_running(s, [1]))  # a controller stopped while transcribing q0
    await intel.stop()
    async with sessionmaker() as s:
        statuses = dict((await s.execute(select(Transcript.linkedid, Transcript.status))).all())
    assert statuses == {"q0": "running", "q1": "pending", "q2": "skipped"}  # past queue_max: skipped, counted
    assert 'ppcswitch_transcriptions_total{result="skipped"} 1.0' in metrics.render().decode()
    again = Intelligence(settings, sessionmaker, writer, Metrics(), str(tmp_path))
    await again.start()  # a new controller: what was running is queued again
    await again.stop()
    async with sessionmaker() as s:
        assert [j.linkedid for j in await store.due(s, 10)] == ["q0", "q1"]
        assert await store.queue_stats(s) == (2, (await s.get(Transcript, 1)).enqueued_at)


async def test_phrase_rules_and_retention(sessionmaker, writer):
    async with sessionmaker() as s:
        await network(s)
        await s.commit()
    await writer.run(lambda s: store.set_phrase(s, "hot_lead", "New Air Conditioner", "caller", "HVAC"))
    await writer.run(lambda s: store.set_phrase(s, "appointment", "tomorrow morning", "any", "HVAC", enabled=False))
    from ppcswitch.storage.validate import ValidationError

    with pytest.raises(ValidationError):
        await writer.run(lambda s: store.set_phrase(s, "bad name", "x"))
    async with sessionmaker() as s:
        rules = await store.rules_for_campaign(s, 1)
        other = await store.rules_for_campaign(s, 2)
    assert ("hot_lead", "new air conditioner") in {(r.disposition, r.phrase) for r in rules}
    assert ("appointment", "tomorrow morning") not in {(r.disposition, r.phrase) for r in rules}
    assert ("appointment", "tomorrow morning") in {(r.disposition, r.phrase) for r in other}
    old = datetime.now(UTC) - timedelta(days=100)
    await writer.run(lambda s: store.enqueue(s, "old", old, 1, 1, "old.wav", "done"))
    await writer.run(lambda s: store.enqueue(s, "old-queued", old, 1, 1, "old2.wav"))
    await writer.run(lambda s: store.enqueue(s, "new", datetime.now(UTC), 1, 1, "new.wav", "done"))
    assert await writer.run(lambda s: store.delete_expired(s, datetime.now(UTC) - timedelta(days=90))) == 1
    async with sessionmaker() as s:
        assert set((await s.scalars(select(Transcript.linkedid))).all()) == {"old-queued", "new"}


def test_redacted_digits_muted_in_the_audio_when_enabled(tmp_path):
    from ppcswitch.intelligence import worker

    pcm_wav(SPEECH / "06.wav", tmp_path / "m-caller.wav")
    shutil.copy(tmp_path / "m-caller.wav", tmp_path / "m.wav")
    before, rate = read_pcm16(str(tmp_path / "m-caller.wav"))
    kept = worker.transcribe_call(str(tmp_path), "m.wav", "pocketsphinx", 6, False)
    assert read_pcm16(str(tmp_path / "m-caller.wav"))[0] == before  # off by default: audio untouched
    result = worker.transcribe_call(str(tmp_path), "m.wav", "pocketsphinx", 6, True)
    assert result["redactions"] == kept["redactions"] == 1 and result["error"] == ""
    for name in ("m-caller.wav", "m.wav"):
        after, _ = read_pcm16(str(tmp_path / name))
        assert len(after) == len(before)
        # The digits (from about 1.5 s to the end) are silence now; "my card number is" is not.
        assert not any(after[int(2.5 * rate) * 2:int(5.0 * rate) * 2])
        assert any(after[int(0.3 * rate) * 2:int(1.0 * rate) * 2])
    assert [s["side"] for s in result["segments"]] == ["caller"]  # no buyer leg: the caller's alone


class ScriptedEngine:
    """A plug-in engine (intelligence.engine = "test_intelligence:ScriptedEngine"): lines without word times."""

    name = "scripted"

    def transcribe(self, path):
        from ppcswitch.intelligence.engine import Segment

        return [Segment(0.5, 2.0, "my card is 4111 1111 1111 1111"), Segment(3.0, 4.0, "thanks")]


def test_plug_in_engine_by_configuration(tmp_path):
    from ppcswitch.intelligence import worker

    engine = load_engine("test_intelligence:ScriptedEngine")
    assert engine.name == "scripted"
    with pytest.raises(EngineError, match="no transcribe"):
        load_engine("json:JSONDecoder")
    pcm_wav(SPEECH / "08.wav", tmp_path / "p-buyer.wav")
    result = worker.transcribe_call(str(tmp_path), "p.wav", "test_intelligence:ScriptedEngine", 6, True)
    assert result["engine"] == "scripted" and result["redactions"] == 1
    assert [s["text"] for s in result["segments"]] == [f"my card is {MARK}", "thanks"]
    assert {s["side"] for s in result["segments"]} == {"buyer"}
    after, rate = read_pcm16(str(tmp_path / "p-buyer.wav"))
    assert not any(after[int(0.5 * rate) * 2:int(2.0 * rate) * 2])  # no word times: the whole line muted


def test_engine_setting_checked_at_start():
    from ppcswitch.config import ConfigError, load_settings

    assert load_settings(env={}).intelligence.engine == "pocketsphinx"
    assert load_settings(env={"PPCSWITCH_INTELLIGENCE_ENGINE": "vendor.stt:Whisper"}).intelligence.engine == "vendor.stt:Whisper"
    assert load_settings(env={"PPCSWITCH_INTELLIGENCE_ENGINE": ""}).intelligence.engine == ""  # off
    with pytest.raises(ConfigError, match="intelligence.engine: expected"):
        load_settings(env={"PPCSWITCH_INTELLIGENCE_ENGINE": "whisper"})
