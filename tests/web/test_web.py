"""Admin panel views through aiohttp's test client, on SQLite and PostgreSQL: login, sessions,
throttling, CSRF, roles, forms with validation, number import, call log, users, audit."""

from __future__ import annotations

import re

import aiohttp
import pytest

from ppcswitch import app as core
from ppcswitch.storage import repo
from ppcswitch.web import SECURITY_HEADERS, store
from web_helpers import PASSWORD, call_record, csrf_of, login, start


@pytest.fixture
async def client(db_url):
    c = await start(db_url)
    yield c
    await c.close()


async def count(client, kind: str) -> int:
    async with client.server.app[core.SESSIONS]() as s:
        return (await store.list_objects(s, kind))[1] if kind != "number" else (await store.list_numbers(s))[1]


async def test_login_logout_and_security_headers(client):
    page = await client.get("/login")
    assert page.status == 200
    for k, v in SECURITY_HEADERS.items():
        assert page.headers[k] == v
    assert (await client.get("/", allow_redirects=False)).headers["Location"].startswith("/login?next=")
    resp = await login(client, "admin", next_="/buyers")
    assert resp.status == 302 and resp.headers["Location"] == "/buyers"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    dash = await client.get("/")
    assert dash.status == 200 and "Today" in await dash.text() and dash.headers["Cache-Control"] == "no-store"
    token = await csrf_of(client)
    assert (await client.post("/logout", data={"csrf": token}, allow_redirects=False)).status == 302
    assert (await client.get("/", allow_redirects=False)).status == 302


async def test_wrong_password_is_throttled_and_open_redirect_refused(client):
    for _ in range(5):
        assert (await login(client, "admin", "wrong password!")).status == 401
    assert (await login(client, "admin")).status == 429  # even the right password waits now
    resp = await login(client, "noc", next_="//evil.example/")
    assert resp.headers["Location"] == "/"


async def test_login_form_needs_its_csrf_token(client):
    resp = await client.post("/login", data={"username": "admin", "password": PASSWORD}, allow_redirects=False)
    assert resp.status == 403 and "ppc_session" not in resp.cookies


@pytest.mark.parametrize("path", ["/", "/buyers", "/publishers", "/campaigns", "/numbers", "/calls", "/calls.csv",
                                  "/live", "/account", "/buyers?q=x&page=2", "/calls?billable=yes&caller=%2B1"])
async def test_every_page_renders_for_noc(client, path):
    await login(client, "noc")
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()


async def test_role_denials(client):
    await login(client, "noc")
    token = await csrf_of(client)
    for path in ("/users", "/audit", "/reports", "/buyers/new", "/numbers/import", "/numbers/new"):
        assert (await client.get(path)).status == 403, path
    resp = await client.post("/buyers/new", data={"csrf": token, "name": "X", "destination": "sip:a@1.2.3.4"})
    assert resp.status == 403 and await count(client, "buyer") == 0
    await client.post("/logout", data={"csrf": token})
    await login(client, "finance")
    assert (await client.get("/reports")).status == 200
    assert (await client.get("/reports?format=csv")).headers["Content-Type"].startswith("text/csv")
    assert (await client.get("/users")).status == 403
    token = await csrf_of(client)
    assert (await client.post("/publishers/new", data={"csrf": token, "name": "P"})).status == 403


async def test_csrf_rejected_and_nothing_saved(client):
    await login(client, "admin")
    for data in ({"name": "X", "destination": "sip:a@1.2.3.4"},
                 {"csrf": "forged", "name": "X", "destination": "sip:a@1.2.3.4"}):
        resp = await client.post("/buyers/new", data=data)
        assert resp.status == 403 and "security token" in await resp.text()
    assert await count(client, "buyer") == 0
    assert (await client.post("/logout", data={}, allow_redirects=False)).status == 403  # logout is a form too


async def test_buyer_create_validation_edit_pause(client):
    await login(client, "admin")
    token = await csrf_of(client, "/buyers/new")
    form = {"csrf": token, "name": "Cool Air", "destination": "sip:+15550001111@203.0.113.10:5060",
            "revenue": "40.00", "ring_timeout": "20", "concurrency_cap": "5", "min_duration": "90",
            "hours": "mon-fri 09:00-17:00", "cap_daily": "25", "timezone": "America/New_York"}
    bad = await client.post("/buyers/new", data={**form, "destination": "sip:x@evil;transport=tcp"})
    html = await bad.text()
    assert bad.status == 400
    assert re.search(r'id="e-destination">[^<]*not an accepted destination', html)
    assert 'value="Cool Air"' in html  # what was typed is kept
    bad = await client.post("/buyers/new", data={**form, "hours": "someday 25:00"})
    assert bad.status == 400 and 'id="e-hours"' in await bad.text()
    assert await count(client, "buyer") == 0  # the buyer was not half-saved without its schedule
    ok = await client.post("/buyers/new", data=form, allow_redirects=False)
    assert ok.status == 302
    page = await client.get(ok.headers["Location"])
    html = await page.text()
    assert 'value="mon-fri 09:00-17:00"' in html and 'value="25"' in html and 'value="40.00"' in html
    buyer_id = int(ok.headers["Location"].split("/")[2].split("?")[0])
    resp = await client.post(f"/buyers/{buyer_id}", data={**form, "revenue": "41.5", "cap_daily": ""},
                             allow_redirects=False)
    assert resp.status == 302
    async with client.server.app[core.SESSIONS]() as s:
        b = await repo.get_buyer(s, buyer_id)
        assert b.revenue_cents == 4150 and b.concurrency_cap == 5
    await client.post(f"/buyers/{buyer_id}/pause", data={"csrf": token, "paused": "1"})
    async with client.server.app[core.SESSIONS]() as s:
        assert (await repo.get_buyer(s, buyer_id)).paused
    listing = await (await client.get("/buyers?q=cool")).text()
    assert "Cool Air" in listing and "paused" in listing
    assert (await client.get("/buyers/999999")).status == 404
    assert (await client.get("/buyers/abc")).status == 404


async def test_publisher_and_campaign_routing(client):
    await login(client, "admin")
    token = await csrf_of(client)
    resp = await client.post("/publishers/new", data={"csrf": token, "name": "Acme", "payout": "1"})
    assert resp.status == 400 and "already exists" in await resp.text()
    resp = await client.post("/publishers/new", data={"csrf": token, "name": "Beta", "payout": "1.234"})
    assert resp.status == 400 and 'id="e-payout"' in await resp.text()
    async def mk(s):
        return (await repo.create_buyer(s, "B1", "sip:b1@127.0.0.1:5071")).id
    buyer_id = await client.server.app[core.WRITER].run(mk)
    async with client.server.app[core.SESSIONS]() as s:
        campaign_id = (await repo.get_campaign(s, "HVAC")).id
    url = f"/campaigns/{campaign_id}/buyers"
    assert (await client.post(url, data={"csrf": token, "op": "add", "buyer_id": buyer_id, "priority": "3"},
                              allow_redirects=False)).status == 302
    again = await client.post(url, data={"csrf": token, "op": "add", "buyer_id": buyer_id, "priority": "3"})
    assert again.status == 400 and "already on campaign" in await again.text()
    await client.post(url, data={"csrf": token, "op": "priority", "buyer_id": buyer_id, "priority": "2"})
    async with client.server.app[core.SESSIONS]() as s:
        [(link, _b)] = await store.campaign_buyers(s, campaign_id)
        assert link.priority == 2
    await client.post(url, data={"csrf": token, "op": "remove", "buyer_id": buyer_id})
    async with client.server.app[core.SESSIONS]() as s:
        assert await store.campaign_buyers(s, campaign_id) == []


CSV_OK = "number,campaign,publisher\n+18005550101,HVAC,Acme\n(800) 555-0102,HVAC,Acme\n"


async def test_numbers_add_import_release(client):
    await login(client, "admin")
    token = await csrf_of(client, "/numbers/import")
    async with client.server.app[core.SESSIONS]() as s:
        campaign_id, publisher_id = (await repo.get_campaign(s, "HVAC")).id, (await repo.get_publisher(s, "Acme")).id
    bad = await client.post("/numbers/new", data={"csrf": token, "number": "12", "campaign": campaign_id,
                                                  "publisher": publisher_id})
    assert bad.status == 400 and "not a phone number" in await bad.text() or "valid phone" in await bad.text()
    csv_bad = CSV_OK + "+18005550103,HVAC,Nobody\n"
    preview = await client.post("/numbers/import", data={"csrf": token, "text": csv_bad, "action": "preview"})
    html = await preview.text()
    assert preview.status == 400 and "<td>4</td><td>publisher</td>" in html and "do-import" not in html
    forced = await client.post("/numbers/import", data={"csrf": token, "text": csv_bad, "action": "import"})
    assert forced.status == 400 and await count(client, "number") == 0  # all or nothing
    preview = await client.post("/numbers/import", data={"csrf": token, "text": CSV_OK, "action": "preview"})
    assert preview.status == 200 and "2 rows are ready" in await preview.text()
    done = await client.post("/numbers/import", data={"csrf": token, "text": CSV_OK, "action": "import"})
    assert "Imported 2 tracking numbers" in await done.text() and await count(client, "number") == 2
    again = await client.post("/numbers/import", data={"csrf": token, "text": CSV_OK, "action": "preview"})
    assert "already a tracking number" in await again.text()
    ok = await client.post("/numbers/new", data={"csrf": token, "number": "+18005550104", "campaign": campaign_id,
                                                 "publisher": publisher_id}, allow_redirects=False)
    assert ok.status == 302
    assert (await client.get("/numbers/%2B18005550104")).status == 200
    assert (await client.post("/numbers/%2B18005550104/release", data={"csrf": token},
                              allow_redirects=False)).status == 302
    assert await count(client, "number") == 2
    assert "+18005550101" in await (await client.get("/numbers?q=0101")).text()


async def test_import_ten_thousand_numbers(client):
    await login(client, "admin")
    token = await csrf_of(client, "/numbers/import")
    text = "number,campaign,publisher\n" + "".join(f"+1212555{i:04d},HVAC,Acme\n" for i in range(10000))
    done = await client.post("/numbers/import", data={"csrf": token, "text": text, "action": "import"})
    assert "Imported 10000 tracking numbers" in await done.text()
    assert await count(client, "number") == 10000


async def test_call_log_filters_pages_csv_and_call_page(client):
    app = client.server.app

    async def seed(s):
        for i in range(60):
            await repo.save_call(s, call_record(i, billable=i % 2 == 0, caller=f"+1415555{i:04d}"))

    await app[core.WRITER].run(seed)
    await login(client, "noc")
    first = await (await client.get("/calls")).text()
    assert first.count('href="/calls/') == 50 and "Older" in first
    nxt = re.search(r'href="(/calls\?cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = await (await client.get(nxt)).text()
    assert second.count('href="/calls/') == 10 and "Older" not in second
    billable = await (await client.get("/calls?billable=no&caller=%2B14155550001")).text()
    assert billable.count('href="/calls/') == 1
    bad = await (await client.get("/calls?date_from=yesterday&cursor=zzz")).text()
    assert "use YYYY-MM-DD" in bad and "not a cursor" in bad
    csv_text = await (await client.get("/calls.csv?billable=yes")).text()
    assert len(csv_text.strip().splitlines()) == 31 and csv_text.startswith("linkedid,")
    call_id = re.search(r'href="/calls/(\d+)"', first).group(1)
    page = await client.get(f"/calls/{call_id}")
    html = await page.text()
    assert page.status == 200 and 'id="routing-trace"' in html and "ANSWER" in html
    assert (await client.get("/calls/999999")).status == 404


async def test_users_tokens_and_audit(client):
    await login(client, "admin")
    token = await csrf_of(client, "/users")
    short = await client.post("/users", data={"csrf": token, "username": "eve", "password": "short", "role": "noc"})
    assert short.status == 400 and "at least 10 characters" in await short.text()
    ok = await client.post("/users", data={"csrf": token, "username": "eve", "password": PASSWORD, "role": "noc"},
                           allow_redirects=False)
    assert ok.status == 302
    made = await client.post("/tokens", data={"csrf": token, "name": "crm", "role": "finance"})
    secret = re.search(r'id="new-token">(ppc_[^<]+)<', await made.text()).group(1)
    api = await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {secret}"})
    assert api.status == 200
    async with client.server.app[core.SESSIONS]() as s:
        [(tok, _owner)] = await store.list_tokens(s)
        assert tok.token_hash != secret and secret not in tok.token_hash  # only a digest is kept
    await client.post(f"/tokens/{tok.id}/revoke", data={"csrf": token})
    assert (await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {secret}"})).status == 401
    audit = await (await client.get("/audit")).text()
    for action in ("user.create", "token.create", "token.revoke", "login"):
        assert action in audit
    assert PASSWORD not in audit
    await client.post("/logout", data={"csrf": token})
    await login(client, "noc")
    token = await csrf_of(client, "/account")
    own = await client.post("/tokens", data={"csrf": token, "name": "mine", "role": "admin"})
    assert own.status == 400 and "cannot create a admin token" in await own.text()  # no escalation


async def test_live_page_and_hangup_without_asterisk(client):
    await login(client, "noc")
    token = await csrf_of(client, "/live")
    assert (await client.post("/live/lid-1/hangup", data={"csrf": token})).status == 403
    await client.post("/logout", data={"csrf": token})
    await login(client, "admin")
    token = await csrf_of(client, "/live")
    resp = await client.post("/live/lid-1/hangup", data={"csrf": token})
    assert resp.status == 200 and "no such live call" in await resp.text()


async def test_caller_filter_rare_and_common_prefixes(client, monkeypatch):
    async def seed(s):
        for i in range(5):
            await repo.save_call(s, call_record(i, caller=f"+1415555000{i}"))
        await repo.save_call(s, call_record(9, caller="+442071234567"))

    await client.server.app[core.WRITER].run(seed)
    await login(client, "noc")
    for rare_limit in (5000, 2):  # looked up by the caller index / found by the newest-first scan
        monkeypatch.setattr(store, "RARE_CALLER", rare_limit)
        assert (await (await client.get("/calls?caller=%2B1415")).text()).count('href="/calls/') == 5
        assert (await (await client.get("/calls?caller=%2B44")).text()).count('href="/calls/') == 1
        assert (await (await client.get("/calls?caller=%2B33")).text()).count('href="/calls/') == 0


async def test_buyer_bidding_and_campaign_call_flow(client):
    await login(client, "admin")
    token = await csrf_of(client, "/buyers/new")
    form = {"csrf": token, "name": "Bidder", "destination": "sip:bid@127.0.0.1:5090", "revenue": "0",
            "ring_timeout": "20", "min_duration": "60", "ping_url": "ftp://x", "timeout_ms": "300", "floor": "20"}
    bad = await client.post("/buyers/new", data=form)
    assert bad.status == 400 and 'id="e-ping_url"' in await bad.text() and await count(client, "buyer") == 0
    ok = await client.post("/buyers/new", data={**form, "ping_url": "https://rtb.example/ping", "share_caller": "1"},
                           allow_redirects=False)
    html = await (await client.get(ok.headers["Location"])).text()
    assert 'value="https://rtb.example/ping"' in html and 'value="20.00"' in html
    assert re.search(r'name="share_caller" value="1" checked', html)
    async with client.server.app[core.SESSIONS]() as s:
        campaign_id = (await repo.get_campaign(s, "HVAC")).id
    form = {"csrf": token, "name": "HVAC", "zip_prompt": "1", "whisper": "custom/hvac", "rtb_budget_ms": "800"}
    bad = await client.post(f"/campaigns/{campaign_id}", data={**form, "whisper": "../../etc/passwd"})
    assert bad.status == 400 and 'id="e-whisper"' in await bad.text()
    assert (await client.post(f"/campaigns/{campaign_id}", data=form, allow_redirects=False)).status == 302
    html = await (await client.get(f"/campaigns/{campaign_id}")).text()
    assert re.search(r'name="zip_prompt" value="1" checked', html) and 'value="custom/hvac"' in html
    assert not re.search(r'name="repeat_caller" value="1" checked', html)


async def test_finance_books_an_adjustment(client):
    await login(client, "finance")
    token = await csrf_of(client, "/reports")
    form = {"csrf": token, "account": "payable", "party": "Acme", "amount": "-12.50", "reason": "duplicate lead"}
    bad = await client.post("/reports/adjust", data={**form, "amount": "12.345"})
    assert bad.status == 400 and 'id="e-amount"' in await bad.text()
    ok = await client.post("/reports/adjust", data=form)
    assert ok.status == 200 and "Adjustment of -12.50 booked" in await ok.text()
    await client.post("/logout", data={"csrf": token})
    await login(client, "noc")
    token = await csrf_of(client)
    assert (await client.post("/reports/adjust", data={**form, "csrf": token})).status == 403
    await client.post("/logout", data={"csrf": token})
    await login(client, "admin")
    assert "ledger.adjust" in await (await client.get("/audit")).text()


async def test_disabled_user_is_logged_out_and_its_tokens_stop(client):
    from web_helpers import token_for

    secret = await token_for(client, "noc")
    # A second browser, logged in as noc, on the same server.
    noc = aiohttp.ClientSession(base_url=str(client.server.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        await login(noc, "noc")
        assert (await noc.get("/", allow_redirects=False)).status == 200
        await login(client, "admin")
        token = await csrf_of(client, "/users")
        async with client.server.app[core.SESSIONS]() as s:
            noc_id, admin_id = (await store.user_by_name(s, "noc")).id, (await store.user_by_name(s, "admin")).id
        self_off = await client.post(f"/users/{admin_id}/disable", data={"csrf": token, "disabled": "1"})
        assert self_off.status == 400 and "cannot disable yourself" in await self_off.text()
        await client.post(f"/users/{noc_id}/disable", data={"csrf": token, "disabled": "1"})
        assert (await noc.get("/", allow_redirects=False)).status == 302
        assert (await login(noc, "noc")).status == 401
        assert (await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {secret}"})).status == 401
        await client.post(f"/users/{noc_id}/disable", data={"csrf": token, "disabled": "0"})
        assert (await login(noc, "noc")).status == 302
    finally:
        await noc.close()
