"""REST API /api/v1 through aiohttp's test client: token auth and scopes, errors, pagination,
objects, number import and assignment, calls, and the OpenAPI document covering every route."""

from __future__ import annotations

import pytest

from ppcswitch import app as core
from ppcswitch.storage import repo
from ppcswitch.web import openapi
from web_helpers import call_record, start, token_for


@pytest.fixture
async def api(db_url):
    c = await start(db_url)
    tokens = {role: await token_for(c, role) for role in ("admin", "finance", "noc")}

    async def call(method: str, path: str, role: str = "admin", **kw):
        resp = await c.request(method, "/api/v1" + path, headers={"Authorization": f"Bearer {tokens[role]}"}, **kw)
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body

    call.client = c
    yield call
    await c.close()


def is_error(body, code: str, field=None) -> bool:
    e = body["error"]
    return e["code"] == code and isinstance(e["message"], str) and e["field"] == field and isinstance(e["status"], int)


async def test_token_required_and_role_scopes(api):
    c = api.client
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        resp = await c.get("/api/v1/buyers", headers=headers)
        assert resp.status == 401 and is_error(await resp.json(), "unauthenticated")
    assert (await api("GET", "/buyers", "noc"))[0] == 200
    for role in ("noc", "finance"):
        status, body = await api("POST", "/buyers", role, json={"name": "X", "destination": "sip:a@1.2.3.4"})
        assert status == 403 and is_error(body, "forbidden")
    status, _ = await api("POST", "/live-calls/x/hangup", "noc")
    assert status == 403


async def test_buyer_crud_validation_pagination(api):
    status, body = await api("POST", "/buyers", json={"name": "Cool Air", "destination": "sip:+15550001111@203.0.113.10",
                                                      "revenue": "40.00", "concurrency_cap": 5})
    assert status == 201 and body["revenue_cents"] == 4000 and body["concurrency_cap"] == 5
    bid = body["id"]
    status, body = await api("POST", "/buyers", json={"name": "Bad", "destination": "sip:x@evil;transport=tcp"})
    assert status == 400 and is_error(body, "invalid", "destination")
    status, body = await api("POST", "/buyers", json={"name": "Bad", "destination": "sip:a@b.c", "colour": "red"})
    assert status == 400 and is_error(body, "invalid", "colour")
    status, body = await api("POST", "/buyers", data="not json")
    assert status == 400 and is_error(body, "invalid", "body")
    status, body = await api("PATCH", f"/buyers/{bid}", json={"paused": True, "revenue": "41.50"})
    assert status == 200 and body["paused"] and body["revenue"] == "41.50"
    status, body = await api("PATCH", f"/buyers/{bid}", json={"paused": "yes"})
    assert status == 400 and body["error"]["field"] == "paused"
    for i in range(3):
        await api("POST", "/buyers", json={"name": f"B{i}", "destination": f"sip:b{i}@127.0.0.1"})
    status, body = await api("GET", "/buyers?limit=2&offset=1", "noc")
    assert status == 200 and body["total"] == 4 and len(body["items"]) == 2 and body["offset"] == 1
    assert (await api("GET", "/buyers?limit=0"))[0] == 400
    status, body = await api("GET", "/buyers/424242")
    assert status == 404 and is_error(body, "not_found", "buyer")
    assert (await api("GET", "/buyers/99999999999999"))[0] == 404


async def test_campaign_buyers_and_numbers(api):
    _, k = await api("GET", "/campaigns?q=HVAC")
    cid = k["items"][0]["id"]
    _, p = await api("GET", "/publishers")
    pid = p["items"][0]["id"]
    _, b = await api("POST", "/buyers", json={"name": "B", "destination": "sip:b@127.0.0.1"})
    status, body = await api("PUT", f"/campaigns/{cid}/buyers/{b['id']}", json={"priority": 3})
    assert status == 200 and body == {"buyer_id": b["id"], "priority": 3}
    await api("PUT", f"/campaigns/{cid}/buyers/{b['id']}", json={"priority": 1})
    _, links = await api("GET", f"/campaigns/{cid}/buyers")
    assert links["items"] == [{"buyer_id": b["id"], "priority": 1}]
    assert (await api("DELETE", f"/campaigns/{cid}/buyers/{b['id']}"))[0] == 204
    assert (await api("DELETE", f"/campaigns/{cid}/buyers/{b['id']}"))[0] == 400

    status, body = await api("POST", "/numbers", json={"number": "+18005550101", "campaign_id": cid,
                                                        "publisher_id": pid})
    assert status == 201 and body["number"] == "+18005550101"
    status, body = await api("POST", "/numbers", json={"number": "555", "campaign_id": cid, "publisher_id": pid})
    assert status == 400 and body["error"]["field"] == "number"
    csv_bad = "number,campaign,publisher\n+18005550102,HVAC,Acme\n+18005550101,HVAC,Acme\n"
    status, body = await api("POST", "/numbers/import", json={"csv": csv_bad})
    assert status == 422 and body["errors"] == [
        {"line": 3, "field": "number", "message": "+18005550101 is already a tracking number"}]
    assert (await api("GET", "/numbers"))[1]["total"] == 1  # nothing imported
    status, body = await api("POST", "/numbers/import", json={"csv": csv_bad.replace("0101", "0103"), "dry_run": True})
    assert status == 200 and body == {"imported": 0, "valid_rows": 2, "dry_run": True}
    status, body = await api("POST", "/numbers/import", json={"csv": csv_bad.replace("0101", "0103")})
    assert status == 200 and body["imported"] == 2
    _, p2 = await api("POST", "/publishers", json={"name": "Beta", "payout": "2.00"})
    status, body = await api("PATCH", "/numbers/+18005550103", json={"publisher_id": p2["id"]})
    assert status == 200 and body["publisher_id"] == p2["id"]
    status, body = await api("PATCH", "/numbers/+18005550103", json={"publisher_id": 999999})
    assert status == 404 and body["error"]["field"] == "publisher"
    assert (await api("DELETE", "/numbers/+18005550103"))[0] == 204
    assert (await api("GET", "/numbers/+18005550103"))[0] == 404
    _, listing = await api("GET", f"/numbers?campaign_id={cid}", "noc")
    assert [n["number"] for n in listing["items"]] == ["+18005550101", "+18005550102"]


async def test_calls_cursor_filters_and_single_call(api):
    async def seed(s):
        for i in range(7):
            await repo.save_call(s, call_record(i, billable=i < 3))

    await api.client.server.app[core.WRITER].run(seed)
    status, body = await api("GET", "/calls?limit=5", "noc")
    assert status == 200 and len(body["items"]) == 5 and body["next_cursor"]
    status, body2 = await api("GET", f"/calls?limit=5&cursor={body['next_cursor']}", "noc")
    assert len(body2["items"]) == 2 and body2["next_cursor"] is None
    assert {c["linkedid"] for c in body["items"] + body2["items"]} == {f"lid-{i}" for i in range(7)}
    _, billable = await api("GET", "/calls?billable=yes")
    assert len(billable["items"]) == 3
    status, body = await api("GET", "/calls?date_from=tomorrow")
    assert status == 400 and body["error"]["field"] == "date_from"
    status, body = await api("GET", "/calls?cursor=garbage")
    assert status == 400 and body["error"]["field"] == "cursor"
    status, body = await api("GET", "/calls/lid-1", "finance")
    assert status == 200 and body["attempts"][0]["dial_status"] == "ANSWER"
    assert (await api("GET", "/calls/none"))[0] == 404
    status, body = await api("GET", "/summary")
    assert status == 200 and body["calls"] == 7 and body["billable"] == 3 and sum(body["per_hour"]) == 7
    assert body["margin_cents"] == 3 * (4000 - 1250)


async def test_openapi_documents_every_route(api):
    resp = await api.client.get("/api/v1/openapi.json")  # public: no token needed
    doc = await resp.json()
    documented = {(m.upper(), "/api/v1" + path) for path, ops in doc["paths"].items() for m in ops
                  if m in ("get", "post", "put", "patch", "delete")}
    routes = {(r.method, r.resource.canonical) for r in api.client.server.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/v1/")
              and r.method != "HEAD" and not r.resource.canonical.endswith("openapi.json")}
    assert routes == documented
    assert doc == openapi.document()


async def test_buyer_rules_and_reports(api):
    _, b = await api("POST", "/buyers", json={"name": "B", "destination": "sip:b@127.0.0.1"})
    status, body = await api("PUT", f"/buyers/{b['id']}/rules", json={"hours": "mon-fri 09:00-17:00", "cap_daily": 5})
    assert status == 200 and body == {"hours": "mon-fri 09:00-17:00", "cap_daily": 5}
    status, body = await api("PUT", f"/buyers/{b['id']}/rules", json={"hours": "someday"})
    assert status == 400 and body["error"]["field"] == "hours"
    assert (await api("GET", f"/buyers/{b['id']}/rules", "noc"))[1] == {"hours": "mon-fri 09:00-17:00", "cap_daily": 5}
    assert (await api("PUT", f"/buyers/{b['id']}/rules", "finance", json={}))[0] == 403
    status, body = await api("GET", "/reports?from=2026-01-01&to=2026-01-31", "finance")
    assert status == 200 and body["total"]["calls"] == 0 and body["currency"]
    assert (await api("GET", "/reports", "noc"))[0] == 403
    status, body = await api("GET", "/reports?tz=Mars/Base", "admin")
    assert status == 400 and body["error"]["field"] == "tz"


async def test_buyer_rtb_and_campaign_call_flow(api):
    _, b = await api("POST", "/buyers", json={"name": "B", "destination": "sip:b@127.0.0.1"})
    url = f"/buyers/{b['id']}/rtb"
    assert (await api("GET", url))[1]["ping_url"] == ""
    status, body = await api("PUT", url, json={"ping_url": "https://rtb.example/ping", "floor": "20", "timeout_ms": 250})
    assert status == 200 and body == {"ping_url": "https://rtb.example/ping", "post_url": "", "timeout_ms": 250,
                                      "floor": "20.00", "share_caller": False}
    status, body = await api("PUT", url, json={"ping_url": "gopher://x"})
    assert status == 400 and body["error"]["field"] == "ping_url"
    assert (await api("PUT", url, json={"ping_url": ""}))[1]["ping_url"] == ""
    _, k = await api("GET", "/campaigns")
    url = f"/campaigns/{k['items'][0]['id']}/routing"
    status, body = await api("PATCH", url, json={"zip_prompt": True, "rtb_budget_ms": 600})
    assert status == 200 and body == {"zip_prompt": True, "repeat_caller": False, "whisper": "", "rtb_budget_ms": 600}
    status, body = await api("PATCH", url, json={"whisper": "../x"})
    assert status == 400 and body["error"]["field"] == "whisper"
    assert (await api("PATCH", url, "noc", json={"zip_prompt": False}))[0] == 403


async def test_token_of_a_demoted_user_loses_its_rights(api):
    from ppcswitch.web import store

    async def demote(s):
        (await store.user_by_name(s, "admin")).role = "noc"

    assert (await api("POST", "/campaigns", json={"name": "K1"}))[0] == 201
    await api.client.server.app[core.WRITER].run(demote)
    status, body = await api("POST", "/campaigns", json={"name": "K2"})
    assert status == 403 and body["error"]["code"] == "forbidden"
