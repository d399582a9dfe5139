"""Postbacks: URL templates, signatures, back-off (pure), and the outbox on SQLite and PostgreSQL:
enqueued once per call, delivered against a local receiver, retried, failed, re-sent, logged; sub-ID report."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from ppcswitch.attribution import outbox, postback, store
from ppcswitch.calls import CallRecord
from ppcswitch.config import AttributionSettings
from ppcswitch.storage import repo

T0 = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)


def record(linkedid="1.1", sub_id="fb-123", billable=True, payout=1250, publisher_id=1):
    return CallRecord(linkedid=linkedid, tracking_number="+18005550100", caller="+14155550123", caller_valid=True,
                      started_at=T0, ended_at=T0 + timedelta(seconds=90), outcome="connected",
                      publisher_id=publisher_id, campaign_id=1, buyer_id=None, billable=billable,
                      payout_cents=payout if billable else 0, connected_ms=80_000, sub_id=sub_id, click_id="abc",
                      attribution={"source": "lease", "utm_source": "facebook"})


def test_url_template_signature_and_backoff():
    body = postback.payload(record(), "billed", "publisher")
    url = postback.render_url("https://t.example/pb?c={click_id}&s={sub_id}&p={payout}&b={billable}&x={nope}", body)
    assert url == "https://t.example/pb?c=abc&s=fb-123&p=12.50&b=true&x={nope}"
    assert postback.render_url("https://t/?k={keyword}", {"keyword": "a b&c=d"}) == "https://t/?k=a%20b%26c%3Dd"
    sig = postback.sign("k", 1700000000, b"{}")
    assert postback.verify("k", "1700000000", b"{}", sig) and not postback.verify("k", "1700000001", b"{}", sig)
    assert [postback.backoff(n, 5, 60) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]
    assert postback.payload(record(), "billed", "buyer")["payout"] == ""  # a buyer never learns the payout


async def test_outbox_delivers_retries_fails_and_resends(sessionmaker, writer):
    statuses = [500, 200, 200]
    got = []

    async def receive(request):
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=statuses[min(len(got), len(statuses)) - 1])

    app = web.Application()
    app.router.add_post("/pb", receive)
    server = TestServer(app)
    await server.start_server()
    try:
        async def seed(s):
            await repo.create_campaign(s, "HVAC")
            await repo.create_publisher(s, "Acme", payout="12.50")
            return await store.set_target(s, "publisher", "Acme", str(server.make_url("/pb")) + "?c={click_id}")

        secret = await writer.run(seed)
        await writer.run(lambda s: store.enqueue_for_call(s, record()))
        assert await writer.run(lambda s: store.enqueue_for_call(s, record())) == 0  # once per call and event
        assert await writer.run(lambda s: store.enqueue_for_call(s, record(publisher_id=None))) == 0

        settings = AttributionSettings(postback_retry_min=0.01, postback_max_attempts=3)
        async with aiohttp.ClientSession() as http:
            assert await outbox.deliver_due(sessionmaker, writer, http, settings) == 1  # 500
            [row] = await _log(sessionmaker)
            assert row["status"] == "pending" and [a["status_code"] for a in row["attempts"]] == [500]
            while not await outbox.deliver_due(sessionmaker, writer, http, settings):  # after the back-off
                pass
            [row] = await _log(sessionmaker)
            assert row["status"] == "delivered" and [a["status_code"] for a in row["attempts"]] == [500, 200]
            assert await outbox.deliver_due(sessionmaker, writer, http, settings) == 0  # nothing twice
            headers, body = got[-1]
            assert postback.verify(secret, headers["X-Ppcswitch-Timestamp"], body, headers["X-Ppcswitch-Signature"])

            await writer.run(lambda s: store.resend(s, row["id"]))  # manual re-send
            assert await outbox.deliver_due(sessionmaker, writer, http, settings) == 1
            [row] = await _log(sessionmaker)
            assert row["status"] == "delivered" and len(row["attempts"]) == 3 and len(got) == 3

            # A receiver that never answers well: failed after postback_max_attempts.
            await writer.run(lambda s: store.enqueue_for_call(s, record(), event="reversed"))
            statuses[:] = [503]
            while len((await _log(sessionmaker))[-1]["attempts"]) < 3:
                await outbox.deliver_due(sessionmaker, writer, http, settings)
            assert (await _log(sessionmaker))[-1]["status"] == "failed"
    finally:
        await server.close()


async def _log(sessionmaker):
    async with sessionmaker() as s:
        return await store.log_for_call(s, "1.1")


async def test_sub_id_report(sessionmaker, writer):
    async def seed(s):
        await repo.create_campaign(s, "HVAC")
        await repo.create_publisher(s, "Acme", payout="12.50")
        for i, (sub, billable) in enumerate([("fb-1", True), ("fb-1", False), ("fb-2", True), ("", False)]):
            await repo.save_call(s, record(linkedid=f"1.{i}", sub_id=sub, billable=billable))

    await writer.run(seed)
    async with sessionmaker() as s:
        rows = await store.sub_id_report(s, None, T0 - timedelta(days=1), T0 + timedelta(days=1))
        back = await repo.get_call(s, "1.0")
    assert [(r["sub_id"], r["calls"], r["billable"], r["conversion_rate"], r["payout_cents"]) for r in rows] == [
        ("", 1, 0, 0.0, 0), ("fb-1", 2, 1, 0.5, 1250), ("fb-2", 1, 1, 1.0, 1250)]
    assert (back.sub_id, back.click_id, back.attribution) == ("fb-1", "abc", {"source": "lease", "utm_source": "facebook"})
