"""The panel as an operator uses it (aiohttp test client on a real database): the account's and each
user's time zone moving the dashboard's day and every time shown; zone names in any case; the campaign
page keeping its settings when a buyer link is refused; confirmation pages of destructive actions;
"saved" messages; styled error pages; the account page (password, own tokens); role changes."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ppcswitch import app as core
from ppcswitch.storage import repo, repo_routing
from ppcswitch.web import store, zones
from web_helpers import PASSWORD, call_record, csrf_of, login, start


@pytest.fixture
async def client(db_url):
    c = await start(db_url)
    yield c
    await c.close()


@pytest.fixture
async def sqlite_client(sqlite_url):
    c = await start(sqlite_url)
    yield c
    await c.close()


def _calls_today(html: str) -> int:
    return int(re.search(r'id="calls-today"><a [^>]*>(\d+)<', html).group(1))


def _expected(times: list[datetime], zone: str) -> int:
    start, end = zones.day_bounds(datetime.now(ZoneInfo(zone)).date(), zone)
    return sum(start <= t < end for t in times)


async def test_account_zone_moves_the_dashboard_day_and_times(client):
    app = client.server.app
    now = datetime.now(timezone.utc)
    utc_start = zones.day_bounds(now.date(), "UTC")[0]
    ny_start = zones.day_bounds(datetime.now(ZoneInfo("America/New_York")).date(), "America/New_York")[0]
    # Calls a minute either side of midnight in UTC and in New York: the two zones count different days.
    times = [utc_start + timedelta(minutes=1), utc_start - timedelta(minutes=1),
             ny_start + timedelta(minutes=1), ny_start - timedelta(minutes=1)]
    assert _expected(times, "UTC") != _expected(times, "America/New_York")

    async def seed(s):
        for i, at in enumerate(times):
            await repo.save_call(s, call_record(i, started=at))

    await app[core.WRITER].run(seed)
    await login(client, "admin")
    html = await (await client.get("/")).text()
    assert _calls_today(html) == _expected(times, "UTC") and 'id="zone-unset"' in html  # not chosen yet
    assert '<span id="zone-name"' in html and ">UTC</span>" in html

    token = await csrf_of(client, "/settings")
    bad = await client.post("/settings", data={"csrf": token, "timezone": "Mars/Olympus_Mons"})
    text = await bad.text()
    assert bad.status == 400 and "unknown time zone &#39;Mars/Olympus_Mons&#39;" in text
    assert 'value="Mars/Olympus_Mons"' in text  # what was typed is kept
    assert '<datalist id="zone-names">' in text and '<option value="America/New_York">' in text
    ok = await client.post("/settings", data={"csrf": token, "timezone": "america/new_york"})
    assert ok.status == 200 and "Time zone saved." in await ok.text() and ok.url.path == "/settings"
    html = await (await client.get("/")).text()
    assert _calls_today(html) == _expected(times, "America/New_York") and 'id="zone-unset"' not in html
    assert "America/New_York" in html
    ny_today = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    assert f'<span id="today">{ny_today}</span>' in html

    # The call log's days are New York days, its times New York times.
    calls = await (await client.get(f"/calls?date_from={ny_today}&date_to={ny_today}")).text()
    assert calls.count('href="/calls/') == _expected(times, "America/New_York")
    assert "Started (America/New_York)" in calls
    shown = (ny_start + timedelta(minutes=1)).astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M:%S")
    assert shown in calls

    # A user's own zone overrides the account's, for that user only.
    await client.post("/logout", data={"csrf": token})
    await login(client, "noc")
    token = await csrf_of(client, "/account")
    resp = await client.post("/account/timezone", data={"csrf": token, "timezone": "ASIA/TOKYO"})
    assert resp.status == 200 and "Time zone saved." in await resp.text()
    async with app[core.SESSIONS]() as s:
        assert (await store.user_by_name(s, "noc")).timezone == "Asia/Tokyo"
    html = await (await client.get("/")).text()
    assert _calls_today(html) == _expected(times, "Asia/Tokyo") and "Asia/Tokyo" in html

    # The API: the token owner's zone by default, any case in ?tz=, unknown zones refused clearly.
    from web_helpers import token_for

    secret = await token_for(client, "admin")
    auth = {"Authorization": f"Bearer {secret}"}
    body = await (await client.get("/api/v1/summary", headers=auth)).json()
    assert body["timezone"] == "America/New_York" and body["calls"] == _expected(times, "America/New_York")
    body = await (await client.get("/api/v1/summary?tz=utc", headers=auth)).json()
    assert body["timezone"] == "UTC" and body["calls"] == _expected(times, "UTC")
    bad = await client.get("/api/v1/summary?tz=Nowhere/Land", headers=auth)
    assert bad.status == 400 and (await bad.json())["error"]["field"] == "tz"


async def test_zone_names_in_any_case_everywhere(sqlite_client):
    client = sqlite_client
    await login(client, "admin")
    token = await csrf_of(client, "/buyers/new")
    form = {"csrf": token, "name": "Zone Buyer", "destination": "sip:zb@127.0.0.1:5071", "revenue": "40.00",
            "ring_timeout": "20", "concurrency_cap": "", "min_duration": "60"}
    blank = await (await client.get("/buyers/new")).text()
    assert 'placeholder="UTC (default)"' in blank and 'id="zone-default">UTC (default)' in blank
    assert 'list="zone-names"' in blank
    bad = await client.post("/buyers/new", data={**form, "timezone": "America/Nowhere"})
    assert bad.status == 400 and 'id="e-timezone"' in await bad.text()
    ok = await client.post("/buyers/new", data={**form, "timezone": "america/chicago"}, allow_redirects=False)
    assert ok.status == 302
    buyer_id = int(ok.headers["Location"].split("/")[2].split("?")[0])
    async with client.server.app[core.SESSIONS]() as s:
        assert (await repo_routing.get_buyer_rules(s, buyer_id))["timezone"] == "America/Chicago"
    page = await (await client.get(ok.headers["Location"])).text()
    assert 'value="America/Chicago"' in page and 'id="flash">Saved.' in page
    # What `ppcswitch buyer rules --set timezone=...` calls: any case too, stored canonically.
    stored = await client.server.app[core.WRITER].run(
        lambda s: repo_routing.set_buyer_rules(s, buyer_id, {"timezone": "europe/PARIS"}))
    assert stored["timezone"] == "Europe/Paris"
    report = await client.get("/reports?from=2026-11-01&to=2026-11-30&tz=europe/berlin")
    assert report.status == 200 and "Europe/Berlin" in await report.text()
    bad = await client.get("/reports?from=2026-11-01&to=2026-11-30&tz=Europe/Atlantis")
    assert bad.status == 400 and "unknown time zone" in await bad.text()


async def test_campaign_page_keeps_its_settings_when_a_link_is_refused(sqlite_client):
    client = sqlite_client
    app = client.server.app

    async def seed(s):
        campaign = await repo.get_campaign(s, "HVAC")
        await repo_routing.set_campaign_routing(s, campaign.id, zip_prompt=True, whisper="custom/hvac")
        buyer = await repo.create_buyer(s, "B" * 100, "sip:b1@127.0.0.1:5071")
        await repo.add_campaign_buyer(s, campaign.id, buyer.id, 1)
        return campaign.id, buyer.id

    campaign_id, buyer_id = await app[core.WRITER].run(seed)
    await login(client, "admin")
    token = await csrf_of(client)
    url = f"/campaigns/{campaign_id}/buyers"
    again = await client.post(url, data={"csrf": token, "op": "add", "buyer_id": buyer_id, "priority": "3"})
    html = await again.text()
    assert again.status == 400 and "already on campaign" in html
    assert 'id="f-zip_prompt" name="zip_prompt" value="1" checked' in html  # settings as stored, not blanked
    assert 'value="custom/hvac"' in html
    assert f'action="/campaigns/{campaign_id}"' in html  # the settings form posts to the campaign, not here
    assert 'id="add-priority" name="priority" value="3"' in html  # the refused form's values are kept
    zero = await client.post(url, data={"csrf": token, "op": "priority", "buyer_id": buyer_id, "priority": "0"})
    html = await zero.text()
    assert zero.status == 400 and 'id="e-link"' in html and 'value="0"' in html
    reload = await client.get(url, allow_redirects=False)  # a reload of the refused page
    assert reload.status == 302 and reload.headers["Location"] == f"/campaigns/{campaign_id}"
    # Long names are cut with the full name on hover; row buttons say which row they act on.
    assert f'title="{"B" * 100}"' in html and f'aria-label="Remove {"B" * 100} from this campaign"' in html
    ok = await client.post(url, data={"csrf": token, "op": "priority", "buyer_id": buyer_id, "priority": "2"})
    assert ok.status == 200 and "Priority saved." in await ok.text()


async def test_destructive_actions_ask_first(sqlite_client):
    client = sqlite_client
    app = client.server.app

    async def seed(s):
        await repo.add_tracking_number(s, "+18005550801", "HVAC", "Acme")
        return (await repo.create_buyer(s, "Cool Air", "sip:b1@127.0.0.1:5071", revenue="1234.50")).id

    buyer_id = await app[core.WRITER].run(seed)
    await login(client, "admin")
    listing = await (await client.get("/numbers")).text()
    assert 'href="/numbers/%2B18005550801/release" aria-label="Release +18005550801"' in listing
    confirm = await client.get("/numbers/%2B18005550801/release")
    html = await confirm.text()
    assert confirm.status == 200 and "Release +18005550801?" in html and "no longer be routed" in html
    token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    async with app[core.SESSIONS]() as s:
        assert (await store.list_numbers(s))[1] == 1
    done = await client.post("/numbers/%2B18005550801/release", data={"csrf": token})
    assert done.status == 200 and "Number released" in await done.text()
    async with app[core.SESSIONS]() as s:
        assert (await store.list_numbers(s))[1] == 0

    buyers = await (await client.get("/buyers")).text()
    assert f'href="/buyers/{buyer_id}/pause" aria-label="Pause Cool Air"' in buyers
    assert '<td class="num">$1,234.50</td>' in buyers  # currency, thousands separator, right-aligned
    page = await (await client.get(f"/buyers/{buyer_id}/pause")).text()
    assert "Pause buyer Cool Air?" in page and 'name="paused" value="1"' in page
    resp = await client.post(f"/buyers/{buyer_id}/pause", data={"csrf": token, "paused": "1"})
    assert "Paused" in await resp.text()

    users = await (await client.get("/users")).text()
    noc_id = re.search(r'id="user-(\d+)"><td class="name" title="noc"', users).group(1)
    page = await (await client.get(f"/users/{noc_id}/disable")).text()
    assert "Disable noc?" in page and "logged out everywhere" in page
    page = await client.get("/live/lid-x/hangup")
    assert page.status == 200 and "Hang up the call?" in await page.text()


async def test_styled_error_pages_skip_link_and_current_page(sqlite_client):
    client = sqlite_client
    await login(client, "noc")
    missing = await client.get("/no/such/page")
    html = await missing.text()
    assert missing.status == 404 and "Page not found" in html and '<nav aria-label="Main">' in html
    assert missing.headers["Content-Type"].startswith("text/html")
    wrong = await client.get("/logout")
    assert wrong.status == 405 and "Not here" in await wrong.text()
    calls = await (await client.get("/calls")).text()
    assert '<a class="skip" href="#main">Skip to content</a>' in calls and '<main id="main"' in calls
    assert '<a href="/calls" aria-current="page">Call log</a>' in calls
    api = await client.get("/api/v1/nothing")
    assert api.status in (401, 404) and api.headers["Content-Type"].startswith("application/json")


async def test_own_account_password_tokens_and_roles(sqlite_client):
    client = sqlite_client
    app = client.server.app
    await login(client, "finance")
    token = await csrf_of(client, "/account")
    bad = await client.post("/account/password", data={"csrf": token, "current": "wrong", "password": "x" * 12,
                                                       "password_again": "x" * 12})
    assert bad.status == 400 and "is not your current password" in await bad.text()
    new = "a new password 123"
    ok = await client.post("/account/password", data={"csrf": token, "current": PASSWORD, "password": new,
                                                      "password_again": new})
    assert ok.status == 200 and "Password changed." in await ok.text()  # still logged in
    made = await client.post("/tokens", data={"csrf": token, "name": "crm"})
    html = await made.text()
    secret = re.search(r'id="new-token">(ppc_[^<]+)<', html).group(1)
    assert made.url.path == "/account"
    again = await (await client.get("/account")).text()
    assert secret not in again and 'id="new-token"' not in again  # a reload makes and shows no token
    own_id = re.search(r'href="/tokens/(\d+)/revoke"', again).group(1)
    assert (await client.get(f"/tokens/{own_id}/revoke")).status == 200
    revoked = await client.post(f"/tokens/{own_id}/revoke", data={"csrf": token})
    assert revoked.status == 200 and "Token revoked." in await revoked.text()
    assert (await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {secret}"})).status == 401
    await client.post("/logout", data={"csrf": token})
    assert (await login(client, "finance", new)).status == 302

    await login(client, "admin")
    token = await csrf_of(client, "/users")
    users = await (await client.get("/users")).text()
    ids = dict((n, i) for i, n in re.findall(r'id="user-(\d+)"><td class="name" title="([^"]+)"', users))
    resp = await client.post(f"/users/{ids['noc']}/role", data={"csrf": token, "role": "finance"})
    assert resp.status == 200 and "Role changed." in await resp.text()
    async with app[core.SESSIONS]() as s:
        assert (await store.user_by_name(s, "noc")).role == "finance"
    self_demote = await client.post(f"/users/{ids['admin']}/role", data={"csrf": token, "role": "noc"})
    assert self_demote.status == 400 and "only admin" in await self_demote.text()
    reset = await client.post(f"/users/{ids['noc']}/password", data={"csrf": token, "password": "short"})
    assert reset.status == 400 and "at least 10 characters" in await reset.text()


async def test_campaign_link_caps_weight_and_priority(sqlite_client):
    client = sqlite_client
    app = client.server.app

    async def seed(s):
        campaign = await repo.get_campaign(s, "HVAC")
        buyer = await repo.create_buyer(s, "Link Buyer", "sip:lb@127.0.0.1:5071")
        await repo_routing.set_buyer_rules(s, buyer.id, {"cap_daily": 50, "timezone": "America/Denver"})
        await repo.add_campaign_buyer(s, campaign.id, buyer.id, 2)
        return campaign.id, buyer.id

    campaign_id, buyer_id = await app[core.WRITER].run(seed)
    await login(client, "admin")
    url = f"/campaigns/{campaign_id}/buyers/{buyer_id}"
    campaign_page = await (await client.get(f"/campaigns/{campaign_id}")).text()
    assert f'href="{url}"' in campaign_page
    page = await client.get(url)
    html = await page.text()
    assert page.status == 200 and "buyer's own: 50" in html and 'id="l-priority" name="priority" value="2"' in html
    for key in ("cap_hourly", "budget_daily", "weight", "states_allowed"):  # the rules module's keys
        assert f'name="{key}"' in html
    token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    form = {"csrf": token, "priority": "3", "cap_daily": "10", "weight": "4", "states_allowed": "ca, tx"}
    bad = await client.post(url, data={**form, "cap_daily": "ten"})
    text = await bad.text()
    assert bad.status == 400 and 'id="e-cap_daily"' in text and 'value="ten"' in text and 'value="ca, tx"' in text
    async with app[core.SESSIONS]() as s:
        assert await repo_routing.get_buyer_rules(s, buyer_id, campaign_id) == {}  # nothing half-saved
    ok = await client.post(url, data=form)
    assert ok.status == 200 and "Saved." in await ok.text()
    async with app[core.SESSIONS]() as s:
        assert await repo_routing.get_buyer_rules(s, buyer_id, campaign_id) == {
            "cap_daily": 10, "weight": 4, "states_allowed": ["CA", "TX"]}
        [(link, _b)] = await store.campaign_buyers(s, campaign_id)
        assert link.priority == 3
    assert (await client.get(f"/campaigns/{campaign_id}/buyers/999")).status == 404


async def test_call_page_explains_routing_and_billing_in_words(sqlite_client):
    client = sqlite_client
    app = client.server.app

    async def seed(s):
        b1 = await repo.create_buyer(s, "Cool Air", "sip:b1@127.0.0.1:5071")
        b2 = await repo.create_buyer(s, "West Coast HVAC", "sip:b2@127.0.0.1:5072")
        b3 = await repo.create_buyer(s, "Night Owl", "sip:b3@127.0.0.1:5073")
        record = call_record(1, billable=False, buyer_id=b1.id)
        await repo.save_call(s, record)
        await repo_routing.save_trace(s, record.linkedid, {
            "status": "route", "caller_state": "CA", "area_code": "415", "zip": "", "candidates": [b1.id],
            "skipped": [[b2.id, "state_not_allowed:CA"], [b3.id, "closed:schedule"]], "sticky_buyer": None,
            "bids": [], "attempts": [b1.id], "winner": b1.id})
        return b2.id

    b2 = await app[core.WRITER].run(seed)
    await login(client, "noc")
    calls = await (await client.get("/calls")).text()
    call_id = re.search(r'href="/calls/(\d+)"', calls).group(1)
    html = await (await client.get(f"/calls/{call_id}")).text()
    table = html[html.index('id="routing-table"'):html.index("</table>", html.index('id="routing-table"'))]
    rows = re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", table, re.S)
    assert len(rows) == 3
    assert "Cool Air" in rows[0] and "chosen" in rows[0]
    assert f'href="/buyers/{b2}">West Coast HVAC' in rows[1]
    assert "Caller&#39;s state CA is not in the buyer&#39;s allowed states" in rows[1]
    assert "Closed: outside the buyer&#39;s open hours" in rows[2]
    assert "Connected 47 s, under the 60 s minimum" in html  # the billing reason in words, code kept
    assert "<code>duration_below_minimum:47&lt;60</code>" in html
    assert '"skipped"' in html  # the stored JSON is still there, folded away


async def test_search_ignores_number_formatting(sqlite_client):
    client = sqlite_client
    app = client.server.app

    async def seed(s):
        await repo.add_tracking_number(s, "+18005550801", "HVAC", "Acme")
        await repo.add_tracking_number(s, "+14155550199", "HVAC", "Acme")
        await repo.save_call(s, call_record(1, caller="+14155550199"))
        await repo.save_call(s, call_record(2, caller="+12125550100"))

    await app[core.WRITER].run(seed)
    await login(client, "noc")
    for typed, found in (("800-555-0801", ["+18005550801"]), ("(415) 555-0199", ["+14155550199"]),
                         ("415", ["+14155550199"]), ("+1 800 555", ["+18005550801"])):
        html = await (await client.get("/numbers", params={"q": typed})).text()
        assert re.findall(r'<a href="/numbers/[^"]+">([^<]+)</a>', html) == found, typed
    for typed, count in (("415", 1), ("(415) 555-0199", 1), ("1-415-555", 1), ("+1 212", 1), ("+1", 2), ("646", 0)):
        html = await (await client.get("/calls", params={"caller": typed})).text()
        assert html.count('href="/calls/') == count, typed
    from web_helpers import token_for

    secret = await token_for(client, "noc")
    body = await (await client.get("/api/v1/numbers", params={"q": "(800) 555-0801"},
                                   headers={"Authorization": f"Bearer {secret}"})).json()
    assert [n["number"] for n in body["items"]] == ["+18005550801"]


async def test_bulk_number_actions_with_a_preview(sqlite_client):
    client = sqlite_client
    app = client.server.app

    async def seed(s):
        await repo.create_campaign(s, "Solar")
        for n in ("+18005550111", "+18005550112", "+18005550113"):
            await repo.add_tracking_number(s, n, "HVAC", "Acme")
        return (await repo.get_campaign(s, "Solar")).id

    solar = await app[core.WRITER].run(seed)
    await login(client, "admin")
    listing = await (await client.get("/numbers")).text()
    assert 'aria-label="Select +18005550111"' in listing and 'id="bulk-form"' in listing
    token = re.search(r'name="csrf" value="([^"]+)"', listing).group(1)
    picked = [("numbers", "+18005550111"), ("numbers", "+18005550112")]
    preview = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "assign"), ("campaign", str(solar)),
                                                       ("publisher", ""), *picked])
    html = await preview.text()
    assert preview.status == 200 and "Assign 2 numbers?" in html and html.count("→ <strong>Solar</strong>") == 2
    async with app[core.SESSIONS]() as s:
        assert {r.campaign_id for r in (await store.list_numbers(s))[0]} != {solar}  # nothing changed yet
    done = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "assign"), ("campaign", str(solar)),
                                                    ("publisher", ""), ("step", "apply"), *picked])
    assert done.status == 200 and "2 numbers reassigned." in await done.text()
    async with app[core.SESSIONS]() as s:
        rows = {r.number: r.campaign_id for r in (await store.list_numbers(s))[0]}
    assert rows["+18005550111"] == rows["+18005550112"] == solar != rows["+18005550113"]
    # One unknown number among them: nothing is released.
    bad = await client.post("/numbers/bulk", data=[("csrf", token), ("action", "release"), ("step", "apply"),
                                                   ("numbers", "+18005550113"), ("numbers", "+18005559999")])
    assert bad.status == 400 and "is not a tracking number" in await bad.text()
    async with app[core.SESSIONS]() as s:
        assert (await store.list_numbers(s))[1] == 3
    none = await client.post("/numbers/bulk", data={"csrf": token, "action": "release"})
    assert none.status == 400 and "tick at least one number" in await none.text()
