"""Network settings from the panel that were CLI-only: block/allow lists and each campaign's fraud
settings, postback and webhook targets, number pools — with the CLI's checks and nothing half-saved."""

from __future__ import annotations

import re

import pytest

from ppcswitch import app as core
from ppcswitch.attribution import store as attribution_store
from ppcswitch.fraud import store as fraud_store
from ppcswitch.storage import repo
from web_helpers import csrf_of, login, start


@pytest.fixture
async def client(sqlite_url):
    c = await start(sqlite_url)
    yield c
    await c.close()


async def test_fraud_postbacks_and_pools_from_the_panel(client):
    app = client.server.app

    async def seed(s):
        return (await repo.get_campaign(s, "HVAC")).id, (await repo.get_publisher(s, "Acme")).id, \
            (await repo.create_buyer(s, "Cool Air", "sip:a@127.0.0.1:5071")).id

    campaign, publisher, buyer = await app[core.WRITER].run(seed)
    await login(client, "noc")
    page = await (await client.get("/fraud")).text()
    assert 'id="fraud-lists"' in page and 'id="fraud-list-add"' not in page  # read-only for noc
    token = await csrf_of(client)
    assert (await client.post("/fraud/lists", data={"csrf": token, "kind": "block", "pattern": "+1900"})).status == 403
    await client.post("/logout", data={"csrf": token})

    await login(client, "admin")
    token = await csrf_of(client, "/fraud")
    bad = await client.post("/fraud/lists", data={"csrf": token, "kind": "block", "pattern": "not a number"})
    assert bad.status == 400 and 'id="e-list"' in await bad.text()
    ok = await client.post("/fraud/lists", data={"csrf": token, "kind": "block", "pattern": "+1900",
                                                 "campaign": str(campaign), "note": "premium"})
    assert ok.status == 200 and "Saved." in await ok.text()
    async with app[core.SESSIONS]() as s:
        [entry] = await fraud_store.list_entries(s)
    assert (entry.kind, entry.pattern, entry.campaign_id) == ("block", "+1900", campaign)
    removed = await client.post("/fraud/lists/remove", data={"csrf": token, "kind": "block", "pattern": "+1900",
                                                             "campaign": str(campaign)})
    assert removed.status == 200
    async with app[core.SESSIONS]() as s:
        assert await fraud_store.list_entries(s) == []

    score = await client.post(f"/fraud/campaigns/{campaign}", data={"csrf": token, "challenge": "1",
                                                                     "block_score": "150"})
    html = await score.text()
    assert score.status == 400 and "1 to 100" in html and 'value="150"' in html
    ok = await client.post(f"/fraud/campaigns/{campaign}", data={"csrf": token, "challenge": "1", "block_score": "80"})
    assert ok.status == 200
    async with app[core.SESSIONS]() as s:
        settings = (await fraud_store.campaign_settings(s))[campaign]
    assert settings.challenge and not settings.record and settings.block_score == 80

    bad = await client.post("/postbacks", data={"csrf": token, "owner": f"publisher:{publisher}", "url": "ftp://x"})
    text = await bad.text()
    assert bad.status == 400 and 'id="e-url"' in text and 'value="ftp://x"' in text
    ok = await client.post("/postbacks", data={"csrf": token, "owner": f"buyer:{buyer}",
                                               "url": "https://crm.example/hook", "secret": "s3cret-value"})
    assert ok.status == 200 and "https://crm.example/hook" in await ok.text()
    from sqlalchemy import select

    from ppcswitch.storage import models_attribution as ma

    async with app[core.SESSIONS]() as s:
        [target] = list(await s.scalars(select(ma.PostbackTarget)))
    assert (target.kind, target.owner_id, target.secret) == ("buyer", buyer, "s3cret-value")
    audit = await (await client.get("/audit")).text()
    assert "postback.set" in audit and "s3cret-value" not in audit  # the secret is not in the audit log

    bad = await client.post("/pools", data={"csrf": token, "name": "Site", "campaign": str(campaign),
                                            "publisher": str(publisher), "lease_seconds": "5"})
    assert bad.status == 400 and 'id="e-pool"' in await bad.text()
    ok = await client.post("/pools", data={"csrf": token, "name": "Site", "campaign": str(campaign),
                                           "publisher": str(publisher), "lease_seconds": "900"})
    assert ok.status == 200
    added = await client.post("/pools/numbers", data={"csrf": token, "pool": "Site", "number": "(800) 555-0123"})
    assert added.status == 200 and "+18005550123" in await added.text()
    async with app[core.SESSIONS]() as s:
        [pool] = await attribution_store.list_pools(s)
    assert pool["numbers"] == ["+18005550123"] and pool["lease_seconds"] == 900
    settings_page = await (await client.get("/settings")).text()
    assert all(re.search(f'href="{p}"', settings_page) for p in ("/fraud", "/postbacks", "/pools", "/billing"))
