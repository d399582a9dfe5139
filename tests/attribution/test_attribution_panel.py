"""Attribution in the panel and API, on SQLite and PostgreSQL: a dispute queues "reversed" postbacks in its
own transaction; the call page's delivery log, re-send and dispute form (roles, CSRF, audit); the pools page
with leases and shortages; payout and conversion per sub-ID (page, CSV, API); the API's delivery log,
re-send and pools."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from ppcswitch.app import create_app
from ppcswitch import keys
from ppcswitch import app as core
from ppcswitch.attribution import service as attribution_service
from ppcswitch.attribution import store as attribution_store
from ppcswitch.billing import ledger
from ppcswitch.calls import Attempt, CallRecord
from ppcswitch.config import load_settings
from ppcswitch.storage import models_attribution as m
from ppcswitch.storage import models_billing, repo
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import store
from web_helpers import PASSWORD, csrf_of, login, start, token_for

PUB_URL = "https://track.acme.example/pb?click={click_id}&sub={sub_id}&payout={payout}&event={event}&key=s3cr3t"
BUYER_URL = "https://crm.coolair.example/hook?token=t0ps3cret"


def call(linkedid: str, ids: dict, *, sub_id="fb-1", seconds=90, started=None) -> CallRecord:
    started = started or datetime.now(timezone.utc) - timedelta(hours=1)
    answered = started + timedelta(seconds=2)
    return CallRecord(linkedid=linkedid, tracking_number="+18005550100", caller="+14155550123", caller_valid=True,
                      started_at=started, ended_at=answered + timedelta(seconds=seconds), outcome="connected",
                      campaign_id=ids["campaign"], publisher_id=ids["publisher"], buyer_id=ids["buyer"],
                      answered_at=answered, connected_ms=seconds * 1000, hangup_cause=16, sub_id=sub_id,
                      click_id="abc", attribution={"source": "lease"},
                      attempts=[Attempt(seq=1, buyer_id=ids["buyer"], dial_status="ANSWER", started_at=started,
                                        answered_at=answered, ended_at=answered + timedelta(seconds=seconds))])


async def settle(s, record: CallRecord) -> None:
    """As the controller stores a finished call: the decision, then the "billed" outbox rows."""
    assert await ledger.settle(s, record) is not None
    await attribution_store.enqueue_for_call(s, record)


async def seed_network(s, *, targets=True) -> dict:
    try:  # the panel tests' app has them already
        k, p = await repo.get_campaign(s, "HVAC"), await repo.get_publisher(s, "Acme")
    except ValidationError:
        k, p = await repo.create_campaign(s, "HVAC"), await repo.create_publisher(s, "Acme", payout="12.50")
    b = await repo.create_buyer(s, "Cool Air", "sip:ca@127.0.0.1:5071", revenue="40.00", min_duration=60)
    if targets:
        await attribution_store.set_target(s, "publisher", "Acme", PUB_URL, "pub-secret")
        await attribution_store.set_target(s, "buyer", "Cool Air", BUYER_URL, "buyer-secret")
    return {"campaign": k.id, "publisher": p.id, "buyer": b.id}


async def outbox(sessionmaker, linkedid: str) -> list[m.PostbackOutbox]:
    async with sessionmaker() as s:
        return list(await s.scalars(select(m.PostbackOutbox).where(m.PostbackOutbox.linkedid == linkedid)
                                    .order_by(m.PostbackOutbox.id)))


# --- the reversal, in storage --------------------------------------------------------------------

async def test_dispute_queues_reversed_postbacks_in_its_transaction(sessionmaker, writer):
    ids = await writer.run(seed_network)
    await writer.run(lambda s: settle(s, call("r.1", ids)))
    assert sorted((r.event, r.kind) for r in await outbox(sessionmaker, "r.1")) == [("billed", "buyer"),
                                                                                      ("billed", "publisher")]
    booked = await writer.run(lambda s: ledger.dispute(s, "r.1", user="alice", reason="robocall", window_days=30))
    assert sorted(e.amount_cents for e in booked) == [-4000, -1250]  # revshare: the payout goes too
    rows = await outbox(sessionmaker, "r.1")
    reversed_ = {r.kind: r for r in rows if r.event == "reversed"}
    assert set(reversed_) == {"publisher", "buyer"} and all(r.status == "pending" for r in reversed_.values())
    pub, buyer = json.loads(reversed_["publisher"].body), json.loads(reversed_["buyer"].body)
    assert (pub["event"], pub["billable"], pub["payout"], pub["revenue"], pub["sub_id"]) == (
        "reversed", False, "-12.50", "", "fb-1")
    assert (buyer["revenue"], buyer["payout"]) == ("-40.00", "")  # a buyer never learns the payout
    assert reversed_["publisher"].url == ("https://track.acme.example/pb?click=abc&sub=fb-1&payout=-12.50"
                                          "&event=reversed&key=s3cr3t")
    async with sessionmaker() as s:  # due now, signed with the target's secret
        assert {row.id for row, _ in await attribution_store.due(s)} >= {r.id for r in reversed_.values()}
    with pytest.raises(ValidationError, match="already disputed"):
        await writer.run(lambda s: ledger.dispute(s, "r.1", user="alice", reason="again", window_days=30))
    assert len(await outbox(sessionmaker, "r.1")) == 4  # nothing queued twice


async def test_reversal_only_to_targets_that_were_told_of_the_billing(sessionmaker, writer):
    async def seed(s):
        ids = await seed_network(s, targets=False)
        await attribution_store.set_target(s, "buyer", "Cool Air", BUYER_URL, "buyer-secret")
        # The publisher is paid on its own criteria: a dispute takes back the revenue only.
        await ledger.set_rule(s, "payout", campaign_id=ids["campaign"], only_when_buyer_pays=False)
        return ids

    ids = await writer.run(seed)
    await writer.run(lambda s: settle(s, call("r.2", ids)))
    await writer.run(lambda s: attribution_store.set_target(s, "publisher", "Acme", PUB_URL, "x"))  # too late
    await writer.run(lambda s: settle(s, call("r.3", ids)))
    for linkedid in ("r.2", "r.3"):
        await writer.run(lambda s, i=linkedid: ledger.dispute(s, i, user="bob", reason="wrong number", window_days=30))
    # r.2: the publisher got no "billed" postback (no URL then); r.3: it did, but it is still paid.
    for linkedid in ("r.2", "r.3"):
        assert [(r.event, r.kind) for r in await outbox(sessionmaker, linkedid) if r.event == "reversed"] == [
            ("reversed", "buyer")]


async def test_a_refused_dispute_queues_nothing(sessionmaker, writer):
    ids = await writer.run(seed_network)
    started = datetime.now(timezone.utc) - timedelta(days=3)
    await writer.run(lambda s: settle(s, call("r.4", ids, started=started)))
    now = datetime.now(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    await writer.run(lambda s: ledger.close_period(s, day - timedelta(days=1), day, user="alice", now=now))
    with pytest.raises(ledger.PeriodClosedError):  # the reversal would fall in the closed day
        await writer.run(lambda s: ledger.dispute(s, "r.4", user="alice", reason="late", window_days=30,
                                                  now=day - timedelta(hours=1)))
    assert [r.event for r in await outbox(sessionmaker, "r.4")] == ["billed", "billed"]


# --- the panel and API ---------------------------------------------------------------------------

@pytest.fixture
async def client(db_url):
    c = await start(db_url)
    yield c
    await c.close()


async def _seed_calls(client) -> dict:
    app = client.server.app
    ids = await app[core.WRITER].run(seed_network)
    await app[core.WRITER].run(lambda s: settle(s, call("p.1", ids)))
    rows = {r.kind: r for r in await outbox(app[core.SESSIONS], "p.1")}
    pub_row, buyer_row = rows["publisher"], rows["buyer"]
    retry = datetime.now(timezone.utc) + timedelta(minutes=5)
    await app[core.WRITER].run(lambda s: attribution_store.record_attempt(s, pub_row.id, 500, "HTTP 500", 42, False,
                                                                          retry))
    await app[core.WRITER].run(lambda s: attribution_store.record_attempt(s, buyer_row.id, 200, "", 7, True, None))
    async with app[core.SESSIONS]() as s:
        call_id = (await store.call_by_linkedid(s, "p.1")).id
    return {**ids, "call": call_id, "pub_row": pub_row.id, "buyer_row": buyer_row.id}


async def _audit(client) -> str:
    async with client.server.app[core.SESSIONS]() as s:
        return " ".join(f"{e.action}:{e.via}:{e.target}" for e in await store.list_audit(s))


async def test_call_page_delivery_log_and_resend(client):
    app = client.server.app
    ids = await _seed_calls(client)
    url = f"/calls/{ids['call']}"
    await login(client, "noc")
    html = await (await client.get(url)).text()
    assert 'id="postback-log"' in html and "s3cr3t" not in html and "t0ps3cret" not in html
    assert "https://track.acme.example/pb?click=…&amp;sub=…" in html and "publisher postback: Acme" in html
    assert "buyer webhook: Cool Air" in html and re.search(r"<td>500 HTTP 500</td><td>42</td>", html)
    assert "next try" in html and "delivered" in html
    assert "Re-send" not in html and 'action="/calls/' not in html  # noc: no re-send, no dispute
    token = await csrf_of(client, url)
    resend = f"{url}/postbacks/{ids['buyer_row']}/resend"
    assert (await client.post(resend, data={"csrf": token})).status == 403
    await client.post("/logout", data={"csrf": token})

    await login(client, "finance")
    html = await (await client.get(url)).text()
    assert html.count(">Re-send</button>") == 2
    for data in ({}, {"csrf": "forged"}):  # no CSRF token: refused, nothing queued
        assert (await client.post(resend, data=data)).status == 403
    async with app[core.SESSIONS]() as s:
        assert [row.id for row, _ in await attribution_store.due(s)] == []
    token = await csrf_of(client, url)
    resp = await client.post(resend, data={"csrf": token}, allow_redirects=False)
    assert resp.status == 302
    page = await (await client.get(resp.headers["Location"])).text()
    assert f"Postback #{ids['buyer_row']} is queued to be sent again." in page
    async with app[core.SESSIONS]() as s:  # the delivered webhook is due again: the controller sends it
        assert [row.id for row, _ in await attribution_store.due(s)] == [ids["buyer_row"]]
    assert f"postback.resend:panel:postback {ids['buyer_row']}" in await _audit(client)
    # A postback of another call is not re-sent through this call's page.
    await app[core.WRITER].run(lambda s: settle(s, call("p.2", ids)))
    other = (await outbox(app[core.SESSIONS], "p.2"))[0].id  # pending since it was stored
    await app[core.WRITER].run(lambda s: attribution_store.record_attempt(s, other, 200, "", 5, True, None))
    page = await (await client.post(f"{url}/postbacks/{other}/resend", data={"csrf": token})).text()
    assert "has no postback" in page
    assert (await outbox(app[core.SESSIONS], "p.2"))[0].status == "delivered"  # untouched


async def test_dispute_from_the_call_page(client):
    app = client.server.app
    ids = await _seed_calls(client)
    url = f"/calls/{ids['call']}"
    await login(client, "noc")
    token = await csrf_of(client, url)
    assert (await client.post(f"{url}/dispute", data={"csrf": token, "reason": "robocall"})).status == 403
    await client.post("/logout", data={"csrf": token})
    await login(client, "finance")
    token = await csrf_of(client, url)
    assert (await client.post(f"{url}/dispute", data={"reason": "robocall"})).status == 403  # no CSRF
    bad = await client.post(f"{url}/dispute", data={"csrf": token, "reason": "  "})
    assert bad.status == 400 and 'id="e-dispute"' in await bad.text()
    async with app[core.SESSIONS]() as s:
        assert not list(await s.scalars(select(models_billing.LedgerEntry).where(
            models_billing.LedgerEntry.kind == "dispute")))
    ok = await client.post(f"{url}/dispute", data={"csrf": token, "reason": "robocall"}, allow_redirects=False)
    assert ok.status == 302
    html = await (await client.get(ok.headers["Location"])).text()
    assert "Dispute booked: receivable -40.00, payable -12.50" in html
    assert 'id="disputed"' in html and "robocall" in html and 'action="' + url + '/dispute"' not in html
    assert html.count("<td>reversed</td>") == 2  # the reversal postbacks, in the delivery log at once
    assert "call.dispute:panel:p.1" in await _audit(client)
    again = await client.post(f"{url}/dispute", data={"csrf": token, "reason": "twice"})
    assert again.status == 400 and "already disputed" in await again.text()


async def test_api_delivery_log_resend_and_roles(client):
    app = client.server.app
    ids = await _seed_calls(client)
    noc, finance = await token_for(client, "noc"), await token_for(client, "finance")
    h = {"Authorization": f"Bearer {noc}"}
    log = await (await client.get("/api/v1/calls/p.1/postbacks", headers=h)).json()
    items = {n["kind"]: n for n in log["items"]}
    pub, buyer = items["publisher"], items["buyer"]
    assert (pub["kind"], pub["status"], pub["url"], pub["owner"]) == (
        "publisher", "pending", "https://track.acme.example/pb?click=…&sub=…&payout=…&event=…&key=…", "Acme")
    assert pub["attempts"] == [{"at": pub["attempts"][0]["at"], "status_code": 500, "error": "HTTP 500", "ms": 42}]
    assert pub["next_attempt_at"] and buyer["status"] == "delivered" and buyer["next_attempt_at"] is None
    assert (await client.get("/api/v1/calls/nope/postbacks", headers=h)).status == 404
    path = f"/api/v1/postbacks/{ids['buyer_row']}/resend"
    assert (await client.post(path, headers=h)).status == 403
    resp = await client.post(path, headers={"Authorization": f"Bearer {finance}"})
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "pending" and body["id"] == ids["buyer_row"]
    async with app[core.SESSIONS]() as s:
        assert ids["buyer_row"] in [row.id for row, _ in await attribution_store.due(s)]
    assert f"postback.resend:api:postback {ids['buyer_row']}" in await _audit(client)
    missing = await client.post("/api/v1/postbacks/999999/resend", headers={"Authorization": f"Bearer {finance}"})
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"


async def test_sub_id_report_page_csv_and_api(client):
    app = client.server.app
    ids = await app[core.WRITER].run(lambda s: seed_network(s, targets=False))
    for i, (sub, seconds) in enumerate([("fb-1", 90), ("fb-1", 10), ("fb-2", 90), ("", 90), ("=cmd", 90)]):
        await app[core.WRITER].run(lambda s, i=i, sub=sub, seconds=seconds: settle(s, call(f"s.{i}", ids, sub_id=sub,
                                                                                              seconds=seconds)))
    await app[core.WRITER].run(lambda s: ledger.dispute(s, "s.2", user="a", reason="dup", window_days=30))
    today = datetime.now(timezone.utc).date()
    q = f"from={today - timedelta(days=1)}&to={today}&tz=UTC"
    await login(client, "finance")
    html = await (await client.get(f"/reports?{q}")).text()
    assert 'id="sub-id-report"' in html
    assert "<td><code>fb-1</code></td><td>2</td><td>1</td><td>50.0%</td><td>12.50</td><td>0</td>" in html
    assert "<td><code>fb-2</code></td><td>1</td><td>0</td><td>0.0%</td><td>0.00</td><td>1</td>" in html  # disputed
    csv_url = re.search(r'href="([^"]+)" id="sub-ids-csv"', html).group(1).replace("&amp;", "&")
    csv_resp = await client.get(csv_url)
    lines = (await csv_resp.text()).splitlines()
    assert csv_resp.headers["Content-Type"].startswith("text/csv")
    assert lines[0] == "publisher,sub_id,calls,billable,conversion_rate,payout,disputed"
    assert "Acme,fb-1,2,1,0.5000,12.50,0" in lines and "Acme,'=cmd,1,1,1.0000,12.50,0" in lines
    one = await (await client.get(f"/reports?{q}&publisher={ids['publisher']}")).text()
    assert "fb-1" in one
    assert (await client.get(f"/reports?{q}&publisher=x")).status == 400
    token = await csrf_of(client)
    await client.post("/logout", data={"csrf": token})
    await login(client, "noc")
    assert (await client.get(csv_url)).status == 403

    finance, noc = await token_for(client, "finance"), await token_for(client, "noc")
    api = await client.get(f"/api/v1/reports/sub-ids?{q}&publisher_id={ids['publisher']}",
                           headers={"Authorization": f"Bearer {finance}"})
    body = await api.json()
    lines = {r["sub_id"]: r for r in body["items"]}
    assert api.status == 200 and set(lines) == {"", "=cmd", "fb-1", "fb-2"}
    assert lines["fb-1"] == {"publisher_id": ids["publisher"], "publisher": "Acme", "sub_id": "fb-1", "calls": 2,
                             "billable": 1, "conversion_rate": 0.5, "payout": "12.50", "payout_cents": 1250,
                             "disputed": 0}
    assert (lines["fb-2"]["payout_cents"], lines["fb-2"]["billable"]) == (0, 0)
    assert (await client.get(f"/api/v1/reports/sub-ids?{q}", headers={"Authorization": f"Bearer {noc}"})).status == 403
    bad = await client.get("/api/v1/reports/sub-ids?from=2026-13-01", headers={"Authorization": f"Bearer {finance}"})
    assert bad.status == 400
    gone = await client.get(f"/api/v1/reports/sub-ids?{q}&publisher_id=9999",
                            headers={"Authorization": f"Bearer {finance}"})
    assert gone.status == 404


async def test_pools_page_without_the_controller(client):
    async def seed(s):
        await attribution_store.create_pool(s, "acme-fb", "HVAC", "Acme", 600)
        await attribution_store.add_pool_number(s, "acme-fb", "+18005550150")

    await client.server.app[core.WRITER].run(seed)
    await login(client, "noc")
    html = await (await client.get("/pools")).text()
    assert 'href="/pools"' in html and "acme-fb" in html and "+18005550150" in html
    assert re.search(r'<td class="leased">—</td>', html) and "not known" in html
    api = await client.get("/api/v1/pools", headers={"Authorization": f"Bearer {await token_for(client, 'noc')}"})
    [pool] = (await api.json())["items"]
    assert (pool["leased_now"], pool["shortages"], pool["campaign"], pool["publisher"]) == (None, 0, "HVAC", "Acme")


async def test_pools_page_shows_leases_and_shortages(db_url):
    """In the controller (the DNI endpoints beside the panel): leases and shortages as they happen."""
    settings = load_settings(env={"PPCSWITCH_DATABASE_URL": db_url})
    app = create_app(settings, telephony=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        async def seed(s):
            for role in ("admin", "noc"):
                await store.create_user(s, role, PASSWORD, role)
            await repo.create_campaign(s, "HVAC")
            await repo.create_publisher(s, "Acme", payout="12.50")
            small = await attribution_store.create_pool(s, "acme-small", "HVAC", "Acme", 600)
            await attribution_store.add_pool_number(s, "acme-small", "+18005550150")
            await attribution_store.create_pool(s, "acme-big", "HVAC", "Acme", 600)
            for n in ("+18005550151", "+18005550152"):
                await attribution_store.add_pool_number(s, "acme-big", n)
            return small.public_key, small.id

        key, small_id = await app[core.WRITER].run(seed)
        app[keys.ATTRIBUTION].pools.replace(  # as the reload loop does on a configuration change
            await _load_pools(app))
        for sub in ("v1", "v2"):  # one number, two visitors: the second reuses the first's live lease
            assert (await client.get(f"/dni/v1/lease?key={key}&sub_id={sub}")).status == 200
        await login(client, "noc")
        html = await (await client.get("/pools")).text()
        row = re.search(rf'<tr id="pool-{small_id}" class="shortage">(.*?)</tr>', html, re.S).group(1)
        assert '<td class="leased">1 (all)</td>' in row and "1: grow this pool" in row
        api = await client.get("/api/v1/pools", headers={"Authorization": f"Bearer {await token_for(client, 'noc')}"})
        pools = {p["name"]: p for p in (await api.json())["items"]}
        assert (pools["acme-small"]["leased_now"], pools["acme-small"]["shortages"]) == (1, 1)
        assert (pools["acme-big"]["leased_now"], pools["acme-big"]["shortages"]) == (0, 0)
    finally:
        await client.close()


async def _load_pools(app):
    async with app[core.SESSIONS]() as s:
        return await attribution_store.load_pools(s)
