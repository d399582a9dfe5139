"""The Telnyx number adapter against a local server that follows Telnyx's documented v2 API."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ppcswitch.attribution.providers import ProviderError, TelnyxProvider

KEY = "KEY0123"


def fake_telnyx() -> web.Application:
    owned = {"+12125550111": "1293384261075731499"}
    seen = []

    @web.middleware
    async def auth(request, handler):
        seen.append((request.method, request.path_qs))
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"errors": [{"code": "10009", "title": "Authentication failed",
                                                  "detail": "The API key is invalid."}]}, status=401)
        return await handler(request)

    async def available(request):
        q = request.query
        assert q["filter[country_code]"] == "US" and q["filter[features][]"] == "voice"
        npa, limit = q["filter[national_destination_code]"], int(q["filter[limit]"])
        return web.json_response({"data": [
            {"record_type": "available_phone_number", "phone_number": f"+1{npa}555{i:04d}",
             "cost_information": {"currency": "USD", "monthly_cost": "1.00", "upfront_cost": "1.00"},
             "region_information": [{"region_type": "state", "region_name": "NY"}],
             "features": [{"name": "voice"}]} for i in range(limit)], "metadata": {"total_results": limit}})

    async def orders(request):
        body = await request.json()
        numbers = [p["phone_number"] for p in body["phone_numbers"]]
        if any(not n.startswith("+1") for n in numbers):
            return web.json_response({"errors": [{"code": "10015", "title": "Invalid phone number",
                                                  "detail": "phone_number must be E.164"}]}, status=422)
        for n in numbers:
            owned[n] = str(len(owned) + 1)
        return web.json_response({"data": {"id": "12ade33a-21c0-473b-b055-b3c836e1c292", "record_type": "number_order",
                                           "status": "pending", "connection_id": body.get("connection_id"),
                                           "phone_numbers": [{"id": owned[n], "phone_number": n, "status": "pending"}
                                                             for n in numbers]}})

    async def phone_numbers(request):
        n = request.query.get("filter[phone_number]", "")
        return web.json_response({"data": [{"id": owned[n], "phone_number": n}] if n in owned else []})

    async def delete(request):
        pid = request.match_info["id"]
        for n, i in list(owned.items()):
            if i == pid:
                del owned[n]
                return web.json_response({"data": {"id": pid, "phone_number": n, "status": "deleted"}})
        return web.json_response({"errors": [{"code": "10005", "title": "Resource not found"}]}, status=404)

    app = web.Application(middlewares=[auth])
    app.router.add_get("/v2/available_phone_numbers", available)
    app.router.add_post("/v2/number_orders", orders)
    app.router.add_get("/v2/phone_numbers", phone_numbers)
    app.router.add_delete("/v2/phone_numbers/{id}", delete)
    app["owned"], app["seen"] = owned, seen
    return app


@pytest.fixture
async def telnyx():
    server = TestServer(fake_telnyx())
    await server.start_server()
    yield server
    await server.close()


async def test_search_order_release(telnyx):
    p = TelnyxProvider(KEY, base_url=str(telnyx.make_url("/v2")), connection_id="conn-1")
    found = await p.search("212", limit=3)
    assert [f.number for f in found] == ["+12125550000", "+12125550001", "+12125550002"]
    assert found[0].monthly_cents == 100 and found[0].region == "NY"
    order = await p.order([found[0].number])
    assert order.status == "pending" and order.numbers == ("+12125550000",)
    assert "+12125550000" in telnyx.app["owned"]
    await p.release("+12125550000")
    assert "+12125550000" not in telnyx.app["owned"]


async def test_errors_are_clear(telnyx):
    url = str(telnyx.make_url("/v2"))
    with pytest.raises(ProviderError, match="Authentication failed"):
        await TelnyxProvider("wrong", base_url=url).search("212")
    p = TelnyxProvider(KEY, base_url=url)
    with pytest.raises(ProviderError, match="3 digits"):
        await p.search("21a")
    with pytest.raises(ProviderError, match="E.164"):
        await p.order(["2125550000"])
    with pytest.raises(ProviderError, match="not a number of this Telnyx account"):
        await p.release("+19995550000")
    with pytest.raises(ProviderError, match="unreachable"):
        await TelnyxProvider(KEY, base_url="http://127.0.0.1:9/v2").search("212")


async def test_cli_searches_orders_and_releases(telnyx):
    import asyncio
    import os
    import sys

    env = {**os.environ, "PPCSWITCH_ATTRIBUTION_PROVIDER_API_KEY": KEY,
           "PPCSWITCH_ATTRIBUTION_PROVIDER_URL": str(telnyx.make_url("/v2"))}

    async def cli(*args):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ppcswitch", "provider", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    code, out, _ = await cli("search", "415", "--limit", "2")
    assert code == 0 and "+14155550000  NY  1.00/month" in out
    code, out, _ = await cli("order", "+14155550001")
    assert code == 0 and "pending" in out and "+14155550001" in telnyx.app["owned"]
    code, _, err = await cli("release", "+14155559999")
    assert code == 2 and "not a number of this Telnyx account" in err
