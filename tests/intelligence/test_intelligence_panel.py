"""The call page shows the transcript (both sides, times seeking the recording), the AI score with its
reasons and the dispositions; the Transcripts page searches; the QC page groups by publisher and sub-ID
with drill-down links."""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import replace

from aiohttp.test_utils import TestClient, TestServer

from ppcswitch import app as core
from ppcswitch.config import load_settings
from ppcswitch.fraud import store as fraud_store
from ppcswitch.intelligence import rules as pr
from ppcswitch.intelligence import store
from ppcswitch.storage import repo
from ppcswitch.app import create_app
from ppcswitch.web import store as web_store
from web_helpers import PASSWORD, call_record, login

SEGMENTS = [
    {"side": "buyer", "start": 0.4, "end": 2.0, "text": "thank you for calling cool air"},
    {"side": "caller", "start": 2.5, "end": 5.0, "text": "my water heater is leaking can you come tomorrow morning"},
    {"side": "caller", "start": 65.25, "end": 70.0, "text": "my card is [redacted]"},
]


async def seed_transcript(app, rec, segments, sub_id=""):
    hits = pr.dispositions(segments, pr.effective([], None))
    score = pr.score(hits, segments, 5000, 1600)
    result = {"segments": segments, "redactions": 1, "audio_ms": 140000, "cpu_ms": 30000, "engine": "pocketsphinx",
              "caller_speech_ms": 5000, "buyer_speech_ms": 1600, "error": ""}

    async def job(s):
        await store.enqueue(s, rec.linkedid, rec.started_at, rec.campaign_id, rec.publisher_id, f"{rec.linkedid}.wav")
        row = (await store.queue_rows(s, ("pending",), limit=1))[0]
        await store.save_result(s, row.id, result, hits, score)
    await app[core.WRITER].run(job)
    return score


async def test_call_page_transcript_search_and_qc(db_url, tmp_path):
    settings = load_settings(env={"PPCSWITCH_DATABASE_URL": db_url, "PPCSWITCH_RECORDING_LOCAL_DIRECTORY": str(tmp_path)})
    app = create_app(settings, telephony=False, attribution_service=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        rec = replace(call_record(1, publisher_id=1, campaign_id=1), sub_id="fb-7")
        other = call_record(2, publisher_id=1, campaign_id=1)

        async def seed(s):
            await web_store.create_user(s, "noc", PASSWORD, "noc")
            await repo.create_campaign(s, "HVAC")
            await repo.create_publisher(s, "Acme", payout="1.00")
            for r in (rec, other):
                await repo.save_call(s, r)
            await fraud_store.save_signals(s, dict(
                linkedid="lid-1", started_at=rec.started_at, caller=rec.caller, publisher_id=1, campaign_id=1,
                buyer_id=None, connected=True, score=0, flagged=False, flags=[], explanation=[], attestation="A",
                near_threshold=False, caller_talk_ms=5000, buyer_talk_ms=1600, challenge="", recording="lid-1.wav"))

        await app[core.WRITER].run(seed)
        score = await seed_transcript(app, rec, SEGMENTS)
        await seed_transcript(app, other, [{"side": "caller", "start": 1.0, "end": 2.0, "text": "wrong number sorry"}])
        await login(client, "noc")
        calls = await (await client.get("/calls")).text()
        pages = [htmllib.unescape(await (await client.get(f"/calls/{i}")).text())
                 for i in re.findall(r'href="/calls/(\d+)"', calls)]
        page = next(p for p in pages if "lid-1" in p)
        call_id = re.search(r'/calls/(\d+)/recording"', page).group(1)
        assert f'id="ai-score">{score.value} / 100' in page
        assert "disposition:appointment +20" in page and "conversation +10" in page
        assert '<code>appointment</code>' in page
        assert "my water heater is leaking can you come tomorrow morning" in page and "my card is [redacted]" in page
        assert f'data-start="65.25" href="/calls/{call_id}/recording#t=65.25">1:05.25</a>' in page
        assert 'id="transcript-audio"' in page and '/static/transcript.js' in page
        assert page.index("thank you for calling") < page.index("water heater")  # in time order, both sides

        found = htmllib.unescape(await (await client.get("/transcripts?q=Water+HEATER")).text())
        assert "1 in all" in found and "caller: my water heater is leaking" in found and "fb-7" in found
        assert "No transcribed call matches" in await (await client.get("/transcripts?q=zebra")).text()
        by_disp = htmllib.unescape(await (await client.get("/transcripts?disposition=wrong_number")).text())
        assert "1 in all" in by_disp and "wrong number sorry" in by_disp

        qc = htmllib.unescape(await (await client.get("/qc")).text())
        assert "<td>Acme</td><td>fb-7</td>" in qc and "<td>Acme</td><td>—</td>" in qc
        low = re.search(r'class="flagged" href="([^"]+)">1</a>', qc).group(1)
        drill = htmllib.unescape(await (await client.get(low)).text())
        assert "1 in all" in drill and "wrong number sorry" in drill and "water heater" not in drill
        assert (await client.get("/static/transcript.js")).status == 200
        client.session.cookie_jar.clear()
        assert (await client.get("/qc", allow_redirects=False)).status in (302, 303)
    finally:
        await client.close()


async def test_billing_page_sets_the_ai_score_gate(db_url):
    from web_helpers import csrf_of, start

    client = await start(db_url)
    try:
        await login(client, "finance")
        token = await csrf_of(client, "/billing")
        resp = await client.post("/billing/rules", data={"csrf": token, "side": "revenue", "campaign": "1", "party": "",
                                                         "min_ai_score": "45", "deny_dispositions": "wrong_number, stop_calling"},
                                 allow_redirects=False)
        assert resp.status in (302, 303), await resp.text()
        page = htmllib.unescape(await (await client.get("/billing?side=revenue&campaign=1")).text())
        assert "<tr><td><code>min_ai_score</code></td><td>45</td><td>—</td></tr>" in page
        assert "<tr><td><code>deny_dispositions</code></td><td>wrong_number, stop_calling</td><td>—</td></tr>" in page
        async with client.server.app[core.SESSIONS]() as s:
            from ppcswitch.billing import ledger

            revenue, _ = await ledger.rules_for(s, 1, 0, 0)
        assert revenue.min_ai_score == 45 and revenue.deny_dispositions == ("wrong_number", "stop_calling")
        resp = await client.post("/billing/rules", data={"csrf": token, "side": "revenue", "campaign": "1", "party": "",
                                                         "min_ai_score": "101"})
        assert resp.status == 400 and "between 0 and 100" in await resp.text()
    finally:
        await client.close()


async def test_phrase_rules_page(db_url):
    from web_helpers import csrf_of, make_app

    app = make_app(db_url)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        async def seed(s):
            for role in ("admin", "noc"):
                await web_store.create_user(s, role, PASSWORD, role)
            await repo.create_campaign(s, "HVAC")

        await app[core.WRITER].run(seed)
        await login(client, "admin")
        token = await csrf_of(client, "/transcripts/rules?campaign=1")
        for data in ({"action": "add", "disposition": "hot_lead", "phrase": "New Air Conditioner!", "side": "caller",
                      "campaign": "1"},
                     {"action": "off", "disposition": "appointment", "phrase": "schedule", "side": "any", "campaign": "1"}):
            resp = await client.post("/transcripts/rules", data={"csrf": token, **data}, allow_redirects=False)
            assert resp.status in (302, 303), await resp.text()
        page = htmllib.unescape(await (await client.get("/transcripts/rules?campaign=1")).text())
        assert "<td><code>hot_lead</code></td><td>+0</td><td>caller</td><td>new air conditioner</td><td>campaign</td>" in page
        assert "<td>schedule</td>" not in page and 'id="phrases-off"' in page
        assert "<td><code>sale</code></td><td>+30</td><td>buyer</td><td>sign you up</td><td>default</td>" in page
        network = htmllib.unescape(await (await client.get("/transcripts/rules")).text())
        assert "<td>schedule</td>" in network and "hot_lead" not in network  # only campaign 1 changed
        bad = await client.post("/transcripts/rules", data={"csrf": token, "action": "add", "disposition": "Bad Name",
                                                            "phrase": "x"})
        assert bad.status == 400 and "letters, digits and _" in await bad.text()
        async with client.server.app[core.SESSIONS]() as s:
            rules = await store.rules_for_campaign(s, 1)
        assert ("hot_lead", "new air conditioner", "caller") in {(r.disposition, r.phrase, r.side) for r in rules}
        client.session.cookie_jar.clear()
        await login(client, "noc")
        token = await csrf_of(client, "/transcripts/rules")
        resp = await client.post("/transcripts/rules", data={"csrf": token, "action": "add", "disposition": "x",
                                                             "phrase": "y"})
        assert resp.status == 403
    finally:
        await client.close()
