"""The API as an integrator meets it: 409 for a name or number taken, strict JSON types with clear
errors, names where the CSV uses names, PATCH of some rules keeping the rest, a buyer's rules on one
campaign, unknown query parameters refused, and a description on every operation."""

from __future__ import annotations

import pytest

from ppcswitch.web import openapi
from web_helpers import start, token_for


@pytest.fixture
async def api(sqlite_url):
    c = await start(sqlite_url)
    token = await token_for(c, "admin")

    async def call(method: str, path: str, **kw):
        resp = await c.request(method, "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}, **kw)
        return resp.status, (await resp.json() if resp.content_type == "application/json" else None)

    yield call
    await c.close()


async def test_conflicts_types_names_patch_and_link_rules(api):
    status, buyer = await api("POST", "/buyers", json={"name": "Cool Air", "destination": "sip:a@127.0.0.1:5071"})
    assert status == 201
    status, body = await api("POST", "/buyers", json={"name": "Cool Air", "destination": "sip:b@127.0.0.1:5072"})
    assert status == 409 and body["error"]["code"] == "conflict" and body["error"]["field"] == "name"
    status, body = await api("POST", "/publishers", json={"name": "Acme"})
    assert status == 409
    for field, value in (("concurrency_cap", "4"), ("ring_timeout", True), ("revenue", 40), ("name", 7)):
        status, body = await api("PATCH", f"/buyers/{buyer['id']}", json={field: value})
        assert status == 400 and body["error"]["field"] == field, (field, body)
    assert "decimal amount as a string" in (await api("PATCH", f"/buyers/{buyer['id']}",
                                                       json={"revenue": 40}))[1]["error"]["message"]

    # Tracking numbers by name, as in the CSV; a number taken is a conflict.
    status, body = await api("POST", "/numbers", json={"number": "(800) 555-0199", "campaign": "HVAC",
                                                        "publisher": "Acme"})
    assert status == 201 and body["number"] == "+18005550199"
    status, body = await api("POST", "/numbers", json={"number": "+18005550199", "campaign": "HVAC",
                                                        "publisher": "Acme"})
    assert status == 409 and body["error"]["field"] == "number"
    status, body = await api("POST", "/numbers", json={"number": "+18005550198", "campaign": "HVAC",
                                                        "campaign_id": 1, "publisher": "Acme"})
    assert status == 400 and "not both" in body["error"]["message"]
    status, body = await api("PATCH", "/numbers/+18005550199", json={"publisher": "Nobody"})
    assert status == 404 and body["error"]["field"] == "publisher"

    # PATCH changes only what is sent; PUT replaces.
    rules = f"/buyers/{buyer['id']}/rules"
    status, body = await api("PUT", rules, json={"timezone": "america/new_york", "hours": "mon-fri 09:00-17:00",
                                                 "cap_daily": 25, "states_allowed": ["ca", "tx"]})
    assert status == 200 and body["timezone"] == "America/New_York" and body["states_allowed"] == ["CA", "TX"]
    status, body = await api("PATCH", rules, json={"hours": "mon-sun 08:00-20:00", "cap_daily": None})
    assert status == 200 and body == {"timezone": "America/New_York", "hours": "mon-sun 08:00-20:00",
                                      "states_allowed": ["CA", "TX"]}
    status, body = await api("PATCH", rules, json={"hours": {}})
    assert status == 400 and body["error"]["field"] == "hours"
    status, body = await api("PATCH", rules, json={"cap_daily": -1})
    assert status == 400 and body["error"]["field"] == "cap_daily"
    assert (await api("GET", rules))[1]["hours"] == "mon-sun 08:00-20:00"  # the refused PATCH changed nothing

    # The buyer's rules on one campaign.
    campaign = (await api("GET", "/campaigns?q=HVAC"))[1]["items"][0]["id"]
    link = f"/campaigns/{campaign}/buyers/{buyer['id']}/rules"
    assert (await api("GET", link))[0] == 404  # not on the campaign yet
    assert (await api("PUT", f"/campaigns/{campaign}/buyers/{buyer['id']}", json={"priority": 2}))[0] == 200
    status, body = await api("PUT", link, json={"cap_daily": 10, "weight": 3})
    assert status == 200 and body == {"cap_daily": 10, "weight": 3}
    status, body = await api("PATCH", link, json={"weight": None})
    assert status == 200 and body == {"cap_daily": 10}
    assert (await api("GET", rules))[1].get("cap_daily") is None  # the buyer's own rules untouched

    # Unknown query parameters are refused, not ignored.
    status, body = await api("GET", "/calls?billabel=yes")
    assert status == 400 and body["error"]["field"] == "billabel"
    assert (await api("GET", "/calls?billable=yes&tz=utc"))[0] == 200


def test_every_operation_has_a_description():
    doc = openapi.document()
    ops = [op for item in doc["paths"].values() for method, op in item.items() if method != "parameters"]
    assert len(ops) > 40
    for op in ops:
        assert len(op.get("description", "")) > 20 and not op["description"].endswith(".."), op["operationId"]
        if any(m in op["operationId"] for m in ("create", "set", "patch", "import", "assign")):
            assert "409" in op["responses"], op["operationId"]
    assert doc["components"]["schemas"]["Rules"]["properties"]["cap_daily"]["type"] == "integer"
