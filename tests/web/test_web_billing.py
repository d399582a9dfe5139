"""Billing from the panel: conversion rules with the CLI's checks, a statement and an invoice to
download, re-rating (dry run, then applied as ledger corrections that the reports then show), and
closing a period through its confirmation page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from ppcswitch import app as core
from ppcswitch.billing import ledger
from ppcswitch.storage import repo
from test_web_reports import _call
from web_helpers import csrf_of, login, start


@pytest.fixture
async def client(sqlite_url):
    c = await start(sqlite_url)
    yield c
    await c.close()


async def test_rules_statements_rerate_and_close(client):
    app = client.server.app
    started = datetime.now(timezone.utc) - timedelta(days=2)

    async def seed(s):
        ids = {"campaign": (await repo.get_campaign(s, "HVAC")).id, "publisher": (await repo.get_publisher(s, "Acme")).id}
        ids["a"] = (await repo.create_buyer(s, "Cool Air", "sip:a@127.0.0.1:5071", revenue="40.00",
                                            min_duration=60)).id
        for i, seconds in enumerate((70, 100, 200)):
            await ledger.settle(s, _call(i, started + timedelta(minutes=i), ids, seconds, "a"))
        return ids

    ids = await app[core.WRITER].run(seed)
    await login(client, "finance")
    page = await (await client.get("/billing")).text()
    assert 'id="statement-form"' in page and 'id="rule-form"' in page and ">Billing</a>" in page
    token = await csrf_of(client, "/billing")

    # A rule with a bad value is refused with the CLI's message and what was typed kept.
    scope = {"csrf": token, "side": "revenue", "campaign": str(ids["campaign"]), "party": ""}
    bad = await client.post("/billing/rules", data={**scope, "min_duration": "90", "tiers": "0:10.00,zz"})
    html = await bad.text()
    assert bad.status == 400 and 'id="e-rule"' in html and 'value="0:10.00,zz"' in html
    pct = await client.post("/billing/rules", data={**scope, "mode": "percent", "percent": "25"})
    assert pct.status == 400 and "percent mode is for the payout side" in await pct.text()
    anywhere = await client.post("/billing/rules", data={**scope, "campaign": "", "min_duration": "90"})
    assert anywhere.status == 400 and "choose a campaign" in await anywhere.text()
    ok = await client.post("/billing/rules", data={**scope, "min_duration": "90", "mode": "tiers",
                                                    "tiers": "0:10.00,150:25.00", "unique_days": "7"})
    assert ok.status == 200 and "Rule saved." in await ok.text()
    async with app[core.SESSIONS]() as s:
        revenue, _ = await ledger.rules_for(s, ids["campaign"], ids["a"], ids["publisher"])
    assert revenue.min_duration == 90 and revenue.mode == "tiers" and revenue.unique_days == 7

    # Re-rate: a dry run lists the changes, nothing is booked; applying books them.
    day = started.date().isoformat()
    dry = await (await client.get(f"/billing/rerate?from={day}&to={day}&tz=UTC")).text()
    assert 'id="rerate-changes"' in dry and "3 calls checked, 3 would change" in dry
    assert "$120.00" in await (await client.get(f"/reports?from={day}&to={day}&tz=UTC")).text()  # not booked
    applied = await client.post("/billing/rerate", data={"csrf": token, "from": day, "to": day, "tz": "UTC"})
    text = await applied.text()
    assert applied.status == 200 and "3 of 3 calls changed" in text
    report = await (await client.get(f"/reports?from={day}&to={day}&tz=UTC")).text()
    # 70 s: under the new 90 s minimum (0.00); 100 s: 10.00; 200 s: 25.00 -> 35.00 receivable.
    assert re.search(r'id="total-revenue">\$35\.00<', report), report[report.find("total-revenue") - 50:][:200]

    # Statement (publisher) and invoice (buyer) downloads.
    st = await client.get(f"/billing/statement?party=publisher&publisher={ids['publisher']}&from={day}&to={day}&tz=UTC")
    assert st.status == 200 and "attachment" in st.headers["Content-Disposition"] and "Statement for Acme" in await st.text()
    inv = await client.get(f"/billing/statement?party=buyer&buyer={ids['a']}&from={day}&to={day}&tz=UTC&format=csv")
    assert inv.status == 200 and inv.headers["Content-Type"].startswith("text/csv")
    none = await client.get(f"/billing/statement?party=buyer&buyer=&from={day}&to={day}")
    assert none.status == 400 and 'id="e-statement"' in await none.text()

    # Closing a period asks first; then nothing more can be booked in it.
    confirm = await (await client.get(f"/billing/close?from={day}&to={day}&tz=UTC")).text()
    assert "cannot be reopened" in confirm and 'action="/billing/close"' in confirm
    future = await client.post("/billing/close", data={"csrf": token, "from": "2999-01-01", "to": "2999-01-01",
                                                       "tz": "UTC"})
    assert future.status == 400 and "has not ended yet" in await future.text()
    closed = await client.post("/billing/close", data={"csrf": token, "from": day, "to": day, "tz": "UTC"})
    assert closed.status == 200 and "closed." in await closed.text()
    assert "finance" in (await (await client.get("/billing")).text()).split('id="closed-periods"')[1][:600]
