"""The panel shows a call's fraud signals and serves its recording; the Quality page lists publishers and alerts."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient, TestServer

from ppcswitch import app as core
from ppcswitch.config import load_settings
from ppcswitch.fraud import store as fraud_store
from ppcswitch.fraud.alerts import Alert, PUBLISHER_FLAGGED
from ppcswitch.storage import repo
from ppcswitch.app import create_app
from ppcswitch.web import store
from web_helpers import PASSWORD, call_record, login


async def test_call_page_signals_recording_and_quality_view(db_url, tmp_path):
    settings = load_settings(env={"PPCSWITCH_DATABASE_URL": db_url, "PPCSWITCH_RECORDING_LOCAL_DIRECTORY": str(tmp_path)})
    app = create_app(settings, telephony=False, attribution_service=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        (tmp_path / "lid-1.wav").write_bytes(b"RIFF....WAVEfmt ")
        rec = call_record(1, publisher_id=1)

        async def seed(s):
            await store.create_user(s, "noc", PASSWORD, "noc")
            await repo.create_publisher(s, "Shady", payout="1.00")
            await repo.save_call(s, rec)
            await fraud_store.save_signals(s, dict(
                linkedid="lid-1", started_at=rec.started_at, caller=rec.caller, publisher_id=1, campaign_id=None,
                buyer_id=None, connected=True, score=65, flagged=True, flags=["no_conversation", "attestation_none"],
                explanation=[{"signal": "no_conversation", "points": 50, "detail": "nobody_spoke"},
                             {"signal": "attestation_none", "points": 15, "detail": ""}],
                attestation="", near_threshold=False, caller_talk_ms=0, buyer_talk_ms=0, challenge="",
                recording="lid-1.wav"))
            await fraud_store.save_alert(s, Alert(PUBLISHER_FLAGGED, 1, 6, 10, 0.5), pause=False)

        await app[core.WRITER].run(seed)
        await login(client, "noc")
        calls = await (await client.get("/calls")).text()
        call_id = re.search(r'href="/calls/(\d+)"', calls).group(1)
        html = await (await client.get(f"/calls/{call_id}")).text()
        assert 'id="fraud-score">65 / 100 (flagged)' in html and "no_conversation +50" in html and "nobody_spoke" in html
        assert f'src="/calls/{call_id}/recording"' in html
        audio = await client.get(f"/calls/{call_id}/recording?download=1")
        assert audio.status == 200 and audio.headers["Content-Type"] == "audio/wav"
        assert audio.headers["Content-Disposition"].startswith("attachment") and await audio.read() == b"RIFF....WAVEfmt "
        assert (await client.get("/calls/999999/recording")).status == 404
        quality = await (await client.get("/quality")).text()
        assert 'id="fraud-alerts"' in quality and "6 of 10 calls flagged" in quality
        assert "<td>Shady</td><td>1</td>" in quality
        client.session.cookie_jar.clear()
        assert (await client.get(f"/calls/{call_id}/recording", allow_redirects=False)).status in (302, 303, 401)
    finally:
        await client.close()
