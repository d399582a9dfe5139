"""The public lease endpoint on a real database (SQLite and PostgreSQL): keys, exhaustion, rate limits."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from ppcswitch.app import create_app
from ppcswitch import keys
from ppcswitch.attribution import service, store
from ppcswitch.config import load_settings
from ppcswitch.storage import repo
from ppcswitch import app as core

NUMS = ["+18005550150", "+18005550151"]


async def start(db_url, **env):
    settings = load_settings(env={"PPCSWITCH_DATABASE_URL": db_url, "PPCSWITCH_ROUTING_RELOAD_INTERVAL": "0.1", **env})
    client = TestClient(TestServer(create_app(settings, telephony=False)))
    await client.start_server()
    app = client.server.app

    async def seed(s):
        await repo.create_campaign(s, "HVAC")
        await repo.create_publisher(s, "Acme", payout="12.50")
        pool = await store.create_pool(s, "acme-fb", "HVAC", "Acme", lease_seconds=60)
        for n in NUMS:
            await store.add_pool_number(s, "acme-fb", n)
        return pool.public_key

    key = await app[core.WRITER].run(seed)
    for _ in range(50):  # the reload loop picks the pool up
        if app[keys.ATTRIBUTION].pools.pool_for_key(key):
            break
        await asyncio.sleep(0.05)
    return client, key


async def test_lease_swaps_numbers_reuses_the_oldest_and_counts_shortages(db_url):
    client, key = await start(db_url, PPCSWITCH_ATTRIBUTION_LEASE_BURST_PER_CLIENT="100")
    try:
        app = client.server.app
        got = []
        for sub in ("a", "b", "c"):
            r = await client.get("/dni/v1/lease", params={"key": key, "sub_id": sub, "click_id": "x${EXTEN}"})
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
            got.append(await r.json())
        assert {g["number"] for g in got[:2]} == set(NUMS) and got[2]["number"] == got[0]["number"]
        assert got[0]["display"] == "(800) 555-0150"
        lease = app[keys.ATTRIBUTION].pools.attribution(got[2]["number"], app[keys.ATTRIBUTION].clock())
        assert lease.values == {"sub_id": "c", "click_id": "xEXTEN"}  # cleaned
        # Renewal keeps the visitor's number, no new shortage.
        r = await client.get("/dni/v1/lease", params={"key": key, "token": got[1]["token"]})
        assert (await r.json())["number"] == got[1]["number"]
        for _ in range(60):  # the shortage reaches the pool's row (pool page: ppcswitch pool list)
            async with app[core.SESSIONS]() as s:
                pools = await store.list_pools(s)
            if pools[0]["shortages"] == 1:
                break
            await asyncio.sleep(0.05)
        assert pools[0]["shortages"] == 1 and pools[0]["numbers"] == NUMS
        assert b'ppcswitch_pool_shortages_total{pool="acme-fb"} 1.0' in app[core.METRICS].render()
        js = await client.get("/dni/v1/dni.js")
        assert js.status == 200 and js.content_type == "application/javascript"
    finally:
        await client.close()


async def test_unknown_keys_are_refused_and_clients_and_publishers_are_rate_limited(db_url):
    client, key = await start(db_url, PPCSWITCH_ATTRIBUTION_LEASE_RATE_PER_CLIENT="0.001",
                              PPCSWITCH_ATTRIBUTION_LEASE_BURST_PER_CLIENT="3",
                              PPCSWITCH_ATTRIBUTION_LEASE_RATE_PER_PUBLISHER="0.001",
                              PPCSWITCH_ATTRIBUTION_LEASE_BURST_PER_PUBLISHER="5")
    try:
        r = await client.get("/dni/v1/lease", params={"key": "pk_nope"})
        assert r.status == 403 and (await r.json())["error"]["code"] == "unknown_key"
        codes = [(await client.get("/dni/v1/lease", params={"key": key})).status for _ in range(3)]
        assert codes == [200, 200, 429]  # 1 + 2 of this address's burst of 3
        # Other addresses: the publisher's burst of 5 runs out (3 leases so far... 2 from here).
        att = client.server.app[keys.ATTRIBUTION]
        att.per_client = type(att.per_client)(1000, 1000)  # lift the per-address limit
        codes = [(await client.get("/dni/v1/lease", params={"key": key})).status for _ in range(4)]
        assert codes == [200, 200, 200, 429]
    finally:
        await client.close()
