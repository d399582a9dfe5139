"""IVR publisher codes without Asterisk: the routing decision (code, retry, default publisher), the
attribution on the record, what RTB buyers are told, storage on SQLite and PostgreSQL, the API, the
panel's number form and the prompt setting. The calls themselves: tests/telephony/test_publisher_codes_e2e.py."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import aiohttp
import pytest

from ppcswitch.storage import snapshot
from ppcswitch import app as core
from ppcswitch import channel_vars as cv
from ppcswitch.attribution import codes
from ppcswitch.attribution.service import Attribution
from ppcswitch.calls import CallRecord
from ppcswitch.config import AttributionSettings, ConfigError, load_settings
from ppcswitch.routing.model import (Buyer, Campaign, CampaignBuyer, Network, Publisher, PublisherCode, RtbBuyer,
                                     TrackingNumber)
from ppcswitch.routing.service import Router
from ppcswitch.rtb.auction import Auctioneer, ping_payload
from ppcswitch.storage import repo
from web_helpers import csrf_of, login, start, token_for

SHARED, OWN = "+18005550100", "+18005550111"
CALLER = "+14155550123"


def network(**kw) -> Network:
    return Network(
        buyers={1: Buyer(1, "A", "PJSIP/ppcswitch-buyer/sip:a@127.0.0.1:5071")},
        publishers={7: Publisher(7, "House", payout_cents=500), 8: Publisher(8, "Acme", payout_cents=1200),
                    9: Publisher(9, "Paused", paused=True)},
        campaigns={5: Campaign(5, "HVAC", buyers=(CampaignBuyer(1, 1),), **kw)},
        numbers={SHARED: TrackingNumber(SHARED, 5, 7, ask_code=True), OWN: TrackingNumber(OWN, 5, 7)},
        publisher_codes={"456": PublisherCode("456", 8, "radio-1"), "4711": PublisherCode("4711", 8),
                         "77": PublisherCode("77", 9), "12": PublisherCode("12", 7, "house-sub")},
        code_digits=4,
    )


def test_a_number_that_asks_gets_the_prompt_then_routes_as_the_codes_publisher():
    r = Router(network())
    r.code_prompt = "custom/enter-code"
    v = r.first("L1", r.facts(SHARED, CALLER))
    assert v == {cv.ROUTE_STATUS: "CODE", cv.CAMPAIGN_ID: "5", cv.PUBLISHER_ID: "7",
                 cv.CODE_PROMPT: "custom/enter-code", cv.CODE_DIGITS: "4"}
    v = r.with_code("L1", "456")
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.PUBLISHER_ID] == "8" and v[cv.BUYER_ID] == "1"
    call = r.routes.get("L1")
    assert call.decision.publisher_id == 8 and call.facts.sub_id == "radio-1"
    from ppcswitch.routing.service import trace_of

    trace = trace_of(call, 1)
    assert trace["publisher_code"] == "456" and trace["code_publisher_id"] == 8
    # A number that does not ask routes at once, and its trace has no code in it.
    v = r.first("L2", r.facts(OWN, CALLER))
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.PUBLISHER_ID] == "7"
    assert "publisher_code" not in trace_of(r.routes.get("L2"), 1)


async def test_a_wrong_code_is_asked_again_once_then_the_number_keeps_its_publisher():
    r = Router(network())
    r.first("L1", r.facts(SHARED, CALLER))
    v, outcome = await r.with_code_async("L1", "999")
    assert outcome.status == "retry" and v[cv.ROUTE_STATUS] == "CODE"
    assert v[cv.CODE_PROMPT] == "please-try-again&beep"
    v, outcome = await r.with_code_async("L1", "998")
    assert outcome.status == "unknown" and outcome.digits == "998" and outcome.code is None
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.PUBLISHER_ID] == "7"
    assert r.routes.get("L1").facts.publisher_code == "998"
    # Nothing keyed twice: the same, with status none; a good code on the retry is taken.
    r.first("L2", r.facts(SHARED, CALLER))
    assert (await r.with_code_async("L2", ""))[1].status == "retry"
    v, outcome = await r.with_code_async("L2", "")
    assert outcome.status == "none" and v[cv.PUBLISHER_ID] == "7"
    r.first("L3", r.facts(SHARED, CALLER))
    await r.with_code_async("L3", "1")
    v, outcome = await r.with_code_async("L3", "4711")
    assert outcome.status == "matched" and outcome.other_publisher and v[cv.PUBLISHER_ID] == "8"


def test_only_digits_reach_the_lookup_and_unknown_calls_get_nothing():
    r = Router(network())
    r.first("L1", r.facts(SHARED, CALLER))
    v = r.with_code("L1", "4;5#6")  # the dialplan FILTERs already; the controller keeps digits only too
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.PUBLISHER_ID] == "8"
    assert r.with_code("nope", "456") == {}


def test_a_paused_publishers_code_refuses_the_call_and_zip_comes_after_the_code():
    r = Router(network())
    r.first("L1", r.facts(SHARED, CALLER))
    assert r.with_code("L1", "77") == {cv.ROUTE_STATUS: "REJECT", cv.HANGUP_CAUSE: "21"}
    assert r.routes.get("L1").decision.reject_reason == "publisher_paused"
    z = Router(network(zip_prompt=True))
    assert z.first("L2", z.facts(SHARED, CALLER))[cv.ROUTE_STATUS] == "CODE"
    assert z.with_code("L2", "456")[cv.ROUTE_STATUS] == "ZIP"
    v = z.with_zip("L2", "12345")
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.PUBLISHER_ID] == "8"
    assert z.routes.get("L2").facts.zip_code == "12345"


def _record(linkedid: str, publisher_id: int) -> CallRecord:
    now = datetime.now(UTC)
    return CallRecord(linkedid, SHARED, CALLER, True, now, now, "connected", publisher_id, 5, 1)


async def test_the_record_carries_the_code_and_a_sub_id_code_sets_the_sub_id():
    a = Attribution(AttributionSettings())
    r = Router(network())
    # A SIP header's sub-ID and click ID came with the number's own publisher (House, 7).
    a.on_call("L1", SHARED, {"sub_id": "hdr-1", "click_id": "c-1"})
    known = a.values_of("L1")
    r.first("L1", r.facts(SHARED, CALLER, known["sub_id"], known["click_id"]))
    _, outcome = await r.with_code_async("L1", "456")  # Acme's sub-ID code
    a.on_code("L1", outcome)
    rec = _record("L1", 8)
    a.stamp(rec)
    assert (rec.sub_id, rec.click_id) == ("radio-1", "")  # the header's values stay with House
    assert rec.attribution == {"ivr_code": "456", "ivr_code_status": "matched", "source": "ivr"}
    # House's own code keeps the header's click ID and takes the code's sub-ID.
    a.on_call("L2", SHARED, {"sub_id": "hdr-2", "click_id": "c-2"})
    r.first("L2", r.facts(SHARED, CALLER, "hdr-2", "c-2"))
    _, outcome = await r.with_code_async("L2", "12")
    a.on_code("L2", outcome)
    rec = _record("L2", 7)
    a.stamp(rec)
    assert (rec.sub_id, rec.click_id) == ("house-sub", "c-2")
    # A wrong code twice: the record says what was keyed.
    r.first("L3", r.facts(SHARED, CALLER))
    await r.with_code_async("L3", "3")
    _, outcome = await r.with_code_async("L3", "39")
    a.on_code("L3", outcome)
    rec = _record("L3", 7)
    a.stamp(rec)
    assert rec.sub_id == "" and rec.attribution == {"ivr_code": "39", "ivr_code_status": "unknown"}


def test_the_ping_carries_the_calls_attribution_only_when_it_has_some():
    r = Router(network())
    facts = r.facts(OWN, CALLER, "fb-123", "abc")
    body = ping_payload("L1", facts, "HVAC", 7, share_caller=False)
    assert body["sub_id"] == "fb-123" and body["click_id"] == "abc" and body["publisher_id"] == 7
    assert "caller" not in body
    bare = ping_payload("L2", r.facts(OWN, CALLER), "HVAC", 7, share_caller=False)
    assert "sub_id" not in bare and "click_id" not in bare


async def test_an_rtb_buyer_is_pinged_with_the_code_publisher_and_sub_id():
    from test_rtb import bid, start_server

    runner, base, seen = await start_server({"bidder": bid("25.00")})
    try:
        net = network()
        net.buyers[2] = Buyer(2, "Bidder", "PJSIP/ppcswitch-buyer/sip:bidder@127.0.0.1:5072",
                              rtb=RtbBuyer(f"{base}/bidder", timeout=0.5))
        net.campaigns[5] = Campaign(5, "HVAC", buyers=(CampaignBuyer(1, 1), CampaignBuyer(2, 1)))
        async with aiohttp.ClientSession() as http:
            r = Router(net, rng=random.Random(1))
            r.rtb = Auctioneer(http)
            # A pool/header attribution known before routing is in the first ping.
            v = await r.first_async("L1", r.facts(OWN, CALLER, "fb-123", "abc"))
            assert v[cv.BUYER_ID] == "2"
            # At a number that asks: no ping before the code; then as Acme's sub-ID radio-1.
            assert (await r.first_async("L2", r.facts(SHARED, CALLER, "hdr", "c-9")))[cv.ROUTE_STATUS] == "CODE"
            assert len(seen) == 1
            v, _ = await r.with_code_async("L2", "456")
            assert v[cv.BUYER_ID] == "2" and v[cv.PUBLISHER_ID] == "8"
        pings = [body for name, body in seen if name == "bidder"]
        assert [(p["publisher_id"], p.get("sub_id"), p.get("click_id")) for p in pings] == [
            (7, "fb-123", "abc"), (8, "radio-1", None)]
    finally:
        await runner.cleanup()


def test_the_prompt_setting_takes_sound_names_only(tmp_path):
    assert load_settings(env={}).attribution.code_prompt == "beep"
    ok = load_settings(env={"PPCSWITCH_ATTRIBUTION_CODE_PROMPT": "custom/partner-code&beep"})
    assert ok.attribution.code_prompt == "custom/partner-code&beep"
    for bad in ("beep,1", "${EXTEN}", "../etc/x", "beep&", "/tmp/x"):
        with pytest.raises(ConfigError, match="attribution.code_prompt"):
            load_settings(env={"PPCSWITCH_ATTRIBUTION_CODE_PROMPT": bad})


# --- storage, API, panel ------------------------------------------------------------------------

async def test_codes_and_the_number_option_reach_the_routing_snapshot(writer, sessionmaker):
    from ppcswitch.config import RoutingSettings
    from ppcswitch.storage.validate import ValidationError

    async def seed(s):
        await repo.create_campaign(s, "HVAC")
        await repo.create_publisher(s, "House")
        await repo.create_publisher(s, "Acme", payout="12.00")
        await repo.add_tracking_number(s, SHARED, "HVAC", "House")
        await codes.set_code(s, "4711", "Acme")
        await codes.set_code(s, "456", "Acme", "radio-1")
        await codes.set_number_asks(s, "(800) 555-0100", True)

    await writer.run(seed)
    for bad, field in ((lambda s: codes.set_code(s, "12a", "Acme"), "code"),
                       (lambda s: codes.set_code(s, "123456789", "Acme"), "code"),
                       (lambda s: codes.set_code(s, "1", "Acme", "a b"), "sub_id"),
                       (lambda s: codes.set_code(s, "1", "Nobody"), "publisher"),
                       (lambda s: codes.remove_code(s, "999"), "code"),
                       (lambda s: codes.set_number_asks(s, "+18005550199", True), "number")):
        with pytest.raises(ValidationError) as exc:
            await writer.run(bad)
        assert exc.value.field == field
    async with sessionmaker() as s:
        net = await snapshot.load_network(s, RoutingSettings())
        listed = await codes.list_codes(s)
    acme = next(p.id for p in net.publishers.values() if p.name == "Acme")
    assert net.numbers[SHARED].ask_code is True and net.code_digits == 4
    assert net.publisher_codes["456"] == PublisherCode("456", acme, "radio-1")
    assert [(c["code"], c["publisher"], c["sub_id"]) for c in listed] == [("456", "Acme", "radio-1"),
                                                                         ("4711", "Acme", "")]
    # Pointing a code elsewhere replaces it; removing it takes it out of the next snapshot.
    await writer.run(lambda s: codes.set_code(s, "4711", "House", "x-1"))
    await writer.run(lambda s: codes.remove_code(s, "456"))
    async with sessionmaker() as s:
        net = await snapshot.load_network(s, RoutingSettings())
    assert list(net.publisher_codes) == ["4711"] and net.publisher_codes["4711"].sub_id == "x-1"


@pytest.fixture
async def client(db_url):
    c = await start(db_url)
    yield c
    await c.close()


async def test_api_sets_the_number_option_and_codes(client):
    token = await token_for(client, "admin")

    async def api(method, path, **kw):
        resp = await client.request(method, "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}, **kw)
        return resp.status, (await resp.json() if resp.content_type == "application/json" else None)

    _, k = await api("GET", "/campaigns")
    _, p = await api("GET", "/publishers")
    cid, pid = k["items"][0]["id"], p["items"][0]["id"]
    status, body = await api("POST", "/numbers", json={"number": SHARED, "campaign_id": cid, "publisher_id": pid,
                                                        "ask_publisher_code": True})
    assert status == 201 and body["ask_publisher_code"] is True
    status, body = await api("PATCH", f"/numbers/{SHARED}", json={"ask_publisher_code": "yes"})
    assert status == 400 and body["error"]["field"] == "ask_publisher_code"
    status, body = await api("PATCH", f"/numbers/{SHARED}", json={"ask_publisher_code": False})
    assert status == 200 and body["ask_publisher_code"] is False
    status, body = await api("PUT", "/publisher-codes/4711", json={"publisher_id": pid, "sub_id": "radio-1"})
    assert status == 200 and body == {"code": "4711", "publisher_id": pid, "publisher": "Acme", "sub_id": "radio-1"}
    status, body = await api("PUT", "/publisher-codes/47x", json={"publisher_id": pid})
    assert status == 400 and body["error"]["field"] == "code"
    status, body = await api("PUT", "/publisher-codes/1", json={"publisher_id": 424242})
    assert status == 404
    assert (await api("GET", "/publisher-codes"))[1]["items"] == [
        {"code": "4711", "publisher_id": pid, "publisher": "Acme", "sub_id": "radio-1"}]
    assert (await api("DELETE", "/publisher-codes/4711"))[0] == 204
    assert (await api("DELETE", "/publisher-codes/4711"))[0] == 404


async def test_the_number_form_has_the_ask_for_a_code_checkbox(client):
    await login(client, "admin")
    token = await csrf_of(client, "/numbers/new")
    async with client.server.app[core.SESSIONS]() as s:
        from ppcswitch.web import store

        cid = next(iter(await store.names(s, "campaign")))
        pid = next(iter(await store.names(s, "publisher")))
    resp = await client.post("/numbers/new", data={"csrf": token, "number": SHARED, "campaign": str(cid),
                                                   "publisher": str(pid), "ask_publisher_code": "1"},
                             allow_redirects=False)
    assert resp.status == 302
    page = await (await client.get(f"/numbers/{SHARED}")).text()
    assert 'name="ask_publisher_code" value="1" checked' in page
    resp = await client.post(f"/numbers/{SHARED}", data={"csrf": token, "number": SHARED, "campaign": str(cid),
                                                         "publisher": str(pid)}, allow_redirects=False)
    assert resp.status == 302
    async with client.server.app[core.SESSIONS]() as s:
        from ppcswitch.web import store

        assert (await store.get_number(s, SHARED)).ask_publisher_code is False
