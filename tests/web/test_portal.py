"""Publisher and buyer portals: invites, what each partner sees, disputes, and isolation proved over
every route of the app's route table and every operation of the OpenAPI document."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from sqlalchemy import func, select

from ppcswitch import app as core
from ppcswitch.billing import ledger
from ppcswitch.calls import Attempt, CallRecord
from ppcswitch.storage import models_attribution as ma
from ppcswitch.storage import models_billing as mb
from ppcswitch.storage import models_fraud as mf
from ppcswitch.storage import models_portal as mp
from ppcswitch.storage import repo_routing
from ppcswitch.storage import models_web as w
from ppcswitch.storage import repo
from ppcswitch.web import openapi, portal
from ppcswitch.web import portal_store as ps
from web_helpers import CSRF_RE, PASSWORD, login, start, token_for

UTC = timezone.utc
# Marks of the other partners' data: none may appear in a partner's answers.
RIVAL_CALLER = "+19995557321"


def _rec(linkedid, started, ids, *, publisher, buyer, caller, number, sub_id="", seconds=95):
    answered = started + timedelta(seconds=2)
    return CallRecord(linkedid=linkedid, tracking_number=number, caller=caller, caller_valid=True,
                      started_at=started, ended_at=answered + timedelta(seconds=seconds), outcome="connected",
                      campaign_id=ids["campaign"], publisher_id=ids[publisher], buyer_id=ids[buyer],
                      answered_at=answered, connected_ms=seconds * 1000, hangup_cause=16, sub_id=sub_id,
                      attempts=[Attempt(seq=1, buyer_id=ids[buyer], dial_status="ANSWER", started_at=started,
                                        answered_at=answered, ended_at=answered + timedelta(seconds=seconds))])


async def seed(client) -> dict:
    app = client.server.app
    now = datetime.now(UTC)
    folder = Path(tempfile.mkdtemp(prefix="portal-rec-"))
    (folder / "rival-lid-1.wav").write_bytes(b"RIFF RIVALWAV rival recording")
    (folder / "acme-recent.wav").write_bytes(b"RIFF cool's own recording")
    app[core.SETTINGS].recording.local_directory = str(folder)

    async def job(s):
        ids = {"campaign": (await repo.get_campaign(s, "HVAC")).id}
        ids["acme"] = (await repo.update_publisher(s, "Acme", payout="12.50")).id
        ids["rival"] = (await repo.create_publisher(s, "Rival Media", payout="7.77")).id
        ids["cool"] = (await repo.create_buyer(s, "Cool Air", "sip:a@127.0.0.1:5071", revenue="43.21",
                                               min_duration=60)).id
        ids["heat"] = (await repo.create_buyer(s, "Heat Co", "sip:b@127.0.0.1:5072", revenue="55.55",
                                               min_duration=60)).id
        await repo.add_tracking_number(s, "+18005550100", ids["campaign"], ids["acme"])
        await repo.add_tracking_number(s, "+18005550200", ids["campaign"], ids["rival"])
        await repo.add_tracking_number(s, "+18005550300", ids["campaign"], ids["rival"])
        s.add(ma.NumberPool(name="rival-pool", campaign_id=ids["campaign"], publisher_id=ids["rival"],
                            public_key="pk_rivalkey", lease_seconds=600, shortages=0))
        recs = [
            _rec("acme-recent", now - timedelta(hours=3), ids, publisher="acme", buyer="cool",
                 caller="+14155550123", number="+18005550100", sub_id="acme-sub"),
            _rec("acme-short", now - timedelta(hours=2), ids, publisher="acme", buyer="cool",
                 caller="+14155550124", number="+18005550100", seconds=20),
            _rec("acme-old", now - timedelta(days=40), ids, publisher="acme", buyer="cool",
                 caller="+14155550125", number="+18005550100"),
            _rec("rival-lid-1", now - timedelta(hours=4), ids, publisher="rival", buyer="heat",
                 caller=RIVAL_CALLER, number="+18005550200", sub_id="rival-sub"),
            _rec("rival-lid-2", now - timedelta(days=3), ids, publisher="rival", buyer="heat",
                 caller=RIVAL_CALLER, number="+18005550300", sub_id="rival-sub"),
        ]
        for r in recs:
            settled = await ledger.settle(s, r)
            ids[r.linkedid] = settled.call_id
        # The rivals' own settings: a postback URL, a number request, hours, a recording.
        s.add(ma.PostbackTarget(kind="publisher", owner_id=ids["rival"], url="https://rival.example/pb?c={caller}",
                                secret="rival-secret", partner_managed=True))
        s.add(ma.PostbackOutbox(linkedid="rival-lid-1", event="billed", kind="publisher", owner_id=ids["rival"],
                                url="https://rival.example/pb?c=x", body="{}", status="delivered", attempts=1,
                                next_attempt_at=now, created_at=now))
        s.add(mp.NumberRequest(publisher_id=ids["rival"], campaign_id=ids["campaign"], area_code="646", quantity=2,
                               note="rival-request-note", state="pending", numbers="[]", created_by="x",
                               created_at=now, decided_by="", decision_note=""))
        await repo_routing.set_buyer_rules(s, ids["heat"], {"hours": "mon 07:13-19:47"})
        for lid in ("rival-lid-1", "acme-recent"):
            s.add(mf.CallSignals(linkedid=lid, started_at=now, caller="", recording=f"{lid}.wav"))
        day = ledger.bucket_of(now - timedelta(days=41))
        await ledger.close_period(s, day, day + timedelta(days=7), user="admin")
        return ids

    return await app[core.WRITER].run(job)


async def session_for(client) -> aiohttp.ClientSession:
    """A second browser (its own cookies) on the same server."""
    return aiohttp.ClientSession(base_url=str(client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))


async def invite_and_accept(client, admin_csrf: str, username: str, party: str) -> aiohttp.ClientSession:
    page = await client.post("/partners/invite", data={"csrf": admin_csrf, "username": username, "party": party})
    html = await page.text()
    assert page.status == 200, html
    link = re.search(r'id="invite-link">([^<]+)<', html).group(1)
    token_path = link.split(str(client.make_url("/")).rstrip("/"))[-1]
    browser = await session_for(client)
    form = await browser.get(token_path)
    csrf = CSRF_RE.search(await form.text()).group(1)
    # Passwords that differ are refused, and the link still works.
    bad = await browser.post(token_path, data={"csrf": csrf, "password": PASSWORD, "password_again": "x" + PASSWORD})
    assert bad.status == 400
    done = await browser.post(token_path, data={"csrf": csrf, "password": PASSWORD, "password_again": PASSWORD},
                              allow_redirects=False)
    assert done.status == 302 and done.headers["Location"].startswith("/login")
    again = await browser.get(token_path)  # a link works once
    assert again.status == 410
    login_page = await browser.get("/login")
    csrf = CSRF_RE.search(await login_page.text()).group(1)
    r = await browser.post("/login", data={"csrf": csrf, "username": username, "password": PASSWORD, "next": "/"},
                           allow_redirects=False)
    assert r.status == 302
    home = await browser.get("/", allow_redirects=False)
    assert home.status == 302 and home.headers["Location"] == "/portal"
    return browser


@pytest.fixture
async def world(db_url):
    """Two publishers and two buyers with calls, on SQLite and on PostgreSQL."""
    client = await start(db_url)
    ids = await seed(client)
    await login(client, "admin")
    csrf = CSRF_RE.search(await (await client.get("/partners")).text()).group(1)
    pub = await invite_and_accept(client, csrf, "acme-user", f"publisher:{ids['acme']}")
    buyer = await invite_and_accept(client, csrf, "cool-user", f"buyer:{ids['cool']}")
    yield {"client": client, "ids": ids, "pub": pub, "buyer": buyer, "admin_csrf": csrf}
    await pub.close()
    await buyer.close()
    await client.close()


async def csrf_in(browser, path="/portal") -> str:
    return CSRF_RE.search(await (await browser.get(path)).text()).group(1)


async def test_invite_is_hashed_at_rest_and_expires(sqlite_url):
    client = await start(sqlite_url)
    try:
        ids = await seed(client)
        await login(client, "admin")
        csrf = CSRF_RE.search(await (await client.get("/partners")).text()).group(1)
        html = await (await client.post("/partners/invite", data={"csrf": csrf, "username": "late",
                                                                  "party": f"buyer:{ids['heat']}"})).text()
        token = re.search(r"/invite/(inv_[A-Za-z0-9_-]+)", html).group(1)
        app = client.server.app
        async with app[core.SESSIONS]() as s:
            from ppcswitch.storage import models_portal as mp

            rows = list(await s.scalars(select(mp.Invite)))
            assert len(rows) == 1 and rows[0].token_hash != token and token not in rows[0].token_hash
            user = await s.scalar(select(w.User).where(w.User.username == "late"))
            assert user.role == "buyer" and user.buyer_id == ids["heat"] and user.password_hash == "!invited"

        async def expire(s):
            row = await s.scalar(select(mp.Invite))
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)

        await app[core.WRITER].run(expire)
        browser = await session_for(client)
        try:
            page = await browser.get(f"/invite/{token}")
            assert page.status == 410 and "does not work" in await page.text()
            # An invited user without a password cannot log in.
            lp = await browser.get("/login")
            r = await browser.post("/login", data={"csrf": CSRF_RE.search(await lp.text()).group(1),
                                                   "username": "late", "password": "!invited", "next": "/"})
            assert r.status == 401
        finally:
            await browser.close()
        # The invite was audited; a staff role cannot be invited and a bad party is refused.
        bad = await client.post("/partners/invite", data={"csrf": csrf, "username": "x", "party": "admin:1"})
        assert bad.status == 400
        async with app[core.SESSIONS]() as s:
            actions = set(await s.scalars(select(w.AuditEntry.action)))
        assert "partner.invite" in actions
    finally:
        await client.close()


async def test_publisher_sees_its_own_calls_payout_and_never_revenue(world):
    pub, ids = world["pub"], world["ids"]
    home = await (await pub.get("/portal")).text()
    assert "+18005550100" in home and "+18005550200" not in home
    calls = await pub.get("/portal/calls")
    html = await calls.text()
    assert calls.status == 200
    assert "acme-sub" in html and "$12.50" in html and "43.21" not in html and "Cool Air" not in html
    assert "•••0123" in html and "+14155550123" not in html  # masked by default
    assert "Shorter than the minimum" in html or "minimum" in html.lower()  # the reason in words
    csv_text = await (await pub.get("/portal/calls.csv")).text()
    header = csv_text.splitlines()[0]
    assert header == "started_at,tracking_number,caller,sub_id,duration_s,billable,reason,payout"
    assert len(csv_text.splitlines()) == 4 and "43.21" not in csv_text
    # The operator lets Acme see callers in full and the buyer's name.
    client = world["client"]
    r = await client.post("/partners/access", data={"csrf": world["admin_csrf"], "party": f"publisher:{ids['acme']}",
                                                    "caller_display": "full", "show_buyer_name": "1"},
                          allow_redirects=False)
    assert r.status == 302
    html = await (await pub.get("/portal/calls")).text()
    assert "+14155550123" in html and "Cool Air" in html
    report = await (await pub.get("/portal/report.csv?from=" + (datetime.now(UTC) - timedelta(days=45)).date().isoformat()
                                   + "&to=" + datetime.now(UTC).date().isoformat())).text()
    total = report.splitlines()[-1].split(",")
    assert total[0] == "total" and total[1] == "3" and total[-1] == "25.00"  # two billable calls at 12.50
    days = {"from": (datetime.now(UTC) - timedelta(days=45)).date().isoformat(), "to": datetime.now(UTC).date().isoformat()}
    by_sub = await (await pub.get("/portal/report.csv", params={**days, "by": "sub_id"})).text()
    assert by_sub.splitlines()[0] == "sub_id,calls,billable,connected_s,payout"
    assert "acme-sub,1,1,95,12.50" in by_sub.splitlines() and "rival" not in by_sub
    by_number = await (await pub.get("/portal/report", params={**days, "by": "number"})).text()
    assert "+18005550100" in by_number and "8005550200" not in by_number
    by_campaign = await (await pub.get("/portal/report.csv", params={**days, "by": "campaign"})).text()
    assert "HVAC,3,2,210,25.00" in by_campaign.splitlines()
    refused = await world["buyer"].get("/portal/report", params={**days, "by": "sub_id"})
    assert refused.status == 400
    stmts = await (await pub.get("/portal/statements")).text()
    period_id = re.search(r'/portal/statements/(\d+)"', stmts).group(1)
    st = await (await pub.get(f"/portal/statements/{period_id}?format=csv")).text()
    assert st.splitlines()[-1].startswith("total") and "12.50" in st  # the old call's payout


async def test_dispute_workflow_and_window(world):
    buyer, client, ids = world["buyer"], world["client"], world["ids"]
    page = await (await buyer.get(f"/portal/calls/{ids['acme-recent']}")).text()
    assert "$43.21" in page and 'id="dispute-form"' in page and "12.50" not in page
    csrf = await csrf_in(buyer)
    # Past the window: refused, with the reason.
    old = await buyer.post(f"/portal/calls/{ids['acme-old']}/dispute",
                           data={"csrf": csrf, "reason_code": "not_a_customer", "note": "late"})
    assert old.status == 400 and "dispute window of 30 days" in await old.text()
    # Not billable: refused.
    short = await buyer.post(f"/portal/calls/{ids['acme-short']}/dispute",
                             data={"csrf": csrf, "reason_code": "poor_quality", "note": ""})
    assert short.status == 400
    # Another buyer's call: not found.
    other = await buyer.post(f"/portal/calls/{ids['rival-lid-1']}/dispute",
                             data={"csrf": csrf, "reason_code": "other", "note": "x"})
    assert other.status == 404
    ok = await buyer.post(f"/portal/calls/{ids['acme-recent']}/dispute",
                          data={"csrf": csrf, "reason_code": "not_a_customer", "note": "robocall"},
                          allow_redirects=False)
    assert ok.status == 302
    disputes = await (await buyer.get("/portal/disputes")).text()
    assert "pending" in disputes and "robocall" in disputes
    app = client.server.app
    async with app[core.SESSIONS]() as s:
        entries = await s.scalar(select(func.count()).select_from(mb.LedgerEntry).where(mb.LedgerEntry.kind == "dispute"))
    assert entries == 0  # nothing moves before the operator decides
    billing = await (await client.get("/billing")).text()
    assert "1 pending" in billing and 'href="/disputes"' in billing
    admin = await (await client.get("/disputes")).text()
    dispute_id = re.search(r"/disputes/(\d+)/accept", admin).group(1)
    token = CSRF_RE.search(admin).group(1)
    rej = await client.post(f"/disputes/{dispute_id}/reject", data={"csrf": token, "note": ""})
    assert rej.status == 400 and "say why" in await rej.text()
    acc = await client.post(f"/disputes/{dispute_id}/accept", data={"csrf": token, "note": "confirmed"},
                            allow_redirects=False)
    assert acc.status == 302
    async with app[core.SESSIONS]() as s:
        rows = list(await s.scalars(select(mb.LedgerEntry).where(mb.LedgerEntry.kind == "dispute")))
        outbox = list(await s.scalars(select(ma.PostbackOutbox).where(ma.PostbackOutbox.event == "reversed")))
    # The revenue is reversed, and the payout with it (by default the publisher is paid when the buyer pays).
    assert sorted((e.account, e.amount_cents) for e in rows) == [(ledger.PAYABLE, -1250), (ledger.RECEIVABLE, -4321)]
    assert outbox == [] or all(o.linkedid == "acme-recent" for o in outbox)
    page = await (await buyer.get(f"/portal/calls/{ids['acme-recent']}")).text()
    assert "accepted" in page and "$0.00" in page
    current = await (await buyer.get("/portal/statements/current?format=csv")).text()
    lines = current.splitlines()
    assert any(",dispute,acme-recent," in x and "-43.21" in x for x in lines)
    assert lines[-1].split(",")[5] == "0.00"  # the call's 43.21 and its reversal (the old call: a closed period)
    # The publisher's statement shows the reversal of its payout too.
    pub_current = await (await world["pub"].get("/portal/statements/current?format=csv")).text()
    assert any(",dispute,acme-recent," in x and "-12.50" in x for x in pub_current.splitlines())
    assert pub_current.splitlines()[-1].split(",")[5] == "0.00"
    async with app[core.SESSIONS]() as s:
        actions = [a for a in await s.scalars(select(w.AuditEntry.action).order_by(w.AuditEntry.id))]
    assert "portal.dispute" in actions and "dispute.accept" in actions


async def test_buyer_pause_within_bounds(world):
    buyer, client, ids = world["buyer"], world["client"], world["ids"]
    csrf = await csrf_in(buyer)
    r = await buyer.post("/portal/availability", data={"csrf": csrf, "paused": "1"}, allow_redirects=False)
    assert r.status == 302
    async with client.server.app[core.SESSIONS]() as s:
        assert (await repo.get_buyer(s, ids["cool"])).paused and not (await repo.get_buyer(s, ids["heat"])).paused
    await client.post("/partners/access", data={"csrf": world["admin_csrf"], "party": f"buyer:{ids['cool']}",
                                                "caller_display": "hidden"})
    r = await buyer.post("/portal/availability", data={"csrf": csrf, "paused": "0"})
    assert r.status == 403
    html = await (await buyer.get("/portal/calls")).text()
    assert "0123" not in html  # caller hidden


def _markers(role: str) -> list[str]:
    common = ["Rival Media", "Heat Co", "rival-sub", "8005550200", "8005550300", "rival-lid", "7.77", "55.55",
              "9995557321", "pk_rivalkey", "rival-pool", "rival.example", "rival-secret", "rival-request-note",
              "07:13", "RIVALWAV"]
    if role == "publisher":
        return common + ["43.21", "Cool Air"]  # never revenue; the buyer's name hidden by default
    return common + ["12.50", "Acme", "acme-sub"]  # never payout nor the publisher


def _fill(pattern: str, values: dict) -> list[str]:
    """Every way to fill the route's placeholders with the other partner's (and operator) ids."""
    names = re.findall(r"{(\w+)}", pattern)
    if not names:
        return [pattern]
    out = []
    for candidate in values["ids"]:
        path = pattern
        for n in names:
            path = path.replace("{" + n + "}", str(values.get(n, candidate)))
        out.append(path)
    return sorted(set(out))


def _unecho(body: str, query: dict) -> str:
    """The answer without the search terms the request itself sent (a filter form shows what was typed)."""
    for v in query.values():
        if len(str(v)) > 3:
            body = body.replace(str(v), "")
    return body


OTHER_QUERY = {"publisher": "", "buyer": "", "publisher_id": "", "buyer_id": "", "sub_id": "rival-sub",
               "caller": "999", "number": "8005550200", "q": "Rival"}


async def test_isolation_every_route_and_operation(world):
    """Each partner requests every route of the route table and every OpenAPI operation with the other
    partner's ids, in lists, detail pages, search, CSV and downloads: nothing of theirs comes back, and no
    operator page or operation answers."""
    client, ids = world["client"], world["ids"]
    app = client.server.app
    other_ids = [ids["rival-lid-1"], ids["rival-lid-2"], ids["rival"], ids["heat"], 1, 2]
    values = {"ids": other_ids, "number": "+18005550200", "linkedid": "rival-lid-1", "code": "1234",
              "token": "inv_" + "x" * 43, "buyer_id": ids["heat"], "filename": "x"}
    query = {**OTHER_QUERY, "publisher": ids["rival"], "buyer": ids["heat"], "publisher_id": ids["rival"],
             "buyer_id": ids["heat"]}
    routes = sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                     if r.resource is not None and r.method != "HEAD" and r.method != "*"})
    assert len(routes) > 60
    r = await client.post("/partners/access", data={"csrf": world["admin_csrf"], "party": f"buyer:{ids['cool']}",
                                                    "caller_display": "last4", "allow_pause": "1", "recordings": "1"},
                          allow_redirects=False)
    assert r.status == 302  # the buyer hears its own recordings: another's stays out of reach
    async with app[core.SESSIONS]() as s:
        users = {u.username: u for u in await s.scalars(select(w.User))}
        tokens = {}
    for role, browser, username in (("publisher", world["pub"], "acme-user"), ("buyer", world["buyer"], "cool-user")):
        marks = _markers(role)
        csrf = await csrf_in(browser)
        answered = 0
        for method, pattern in routes:
            if pattern.startswith(("/static", "/dni/", "/invite/", "/login", "/logout", "/healthz", "/metrics",
                                   "/favicon")):
                continue
            if pattern.startswith("/api/"):
                continue  # with the token below
            for path in _fill(pattern, values):
                if method == "GET":
                    r = await browser.get(path, params=query, allow_redirects=False)
                else:
                    r = await browser.request(method, path, data={"csrf": csrf, "note": "x", "reason_code": "other",
                                                                  "paused": "0", "name": "n"},
                                              allow_redirects=False)
                body = _unecho(await r.text(), query)
                allowed = (method, pattern) in portal.PARTNER_ROUTES
                if not allowed:
                    assert r.status in (403, 404, 405), f"{role}: {method} {path} answered {r.status}"
                    if r.status == 302:
                        assert r.headers["Location"] == "/portal"
                else:
                    answered += 1
                for m in marks:
                    assert m not in body, f"{role}: {method} {path} shows {m!r}"
        assert answered > 10
        # The API with the partner's own token (made on its account page).
        page = await browser.post("/portal/tokens", data={"csrf": csrf, "name": "t"})
        token = re.search(r'id="new-token">([^<]+)<', await page.text()).group(1)
        api = await session_for(client)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            doc = openapi.document()
            for path_t, item in doc["paths"].items():
                for method, op in item.items():
                    if method == "parameters":
                        continue
                    for path in _fill(path_t, values):
                        params = {}
                        for prm in list(item.get("parameters", [])) + list(op.get("parameters", [])):
                            if prm["in"] == "query" and prm["name"] in query:
                                params[prm["name"]] = str(query[prm["name"]])
                        body = {"reason_code": "other", "note": "x"} if "dispute" in path else {"paused": False}
                        r = await api.request(method.upper(), "/api/v1" + path, params=params, headers=headers,
                                              json=body if method in ("post", "put", "patch") else None)
                        text = _unecho(await r.text(), params)
                        if not path_t.startswith("/portal/"):
                            assert r.status == 403, f"{role} token: {method} {path} answered {r.status}"
                        for m in marks:
                            assert m not in text, f"{role} token: {method} {path} shows {m!r}"
            # Its own data does come back.
            mine = await (await api.get("/api/v1/portal/calls", headers=headers)).json()
            assert len(mine["items"]) == 3
            assert all(("payout" in c) == (role == "publisher") and ("revenue" in c) == (role == "buyer")
                       for c in mine["items"])
        finally:
            await api.close()
    # Staff roles do not reach the portal (it is a partner's), and still reach their panel.
    r = await client.get("/portal")
    assert r.status == 403
    async with app[core.SESSIONS]() as s:
        portal_actions = set(await s.scalars(select(w.AuditEntry.action).where(w.AuditEntry.via.like("portal%"))))
    assert {"portal.invite.accept", "portal.token.create"} <= portal_actions


async def test_pool_snippet_and_the_api_of_a_partner(world):
    client, ids, pub, buyer = world["client"], world["ids"], world["pub"], world["buyer"]

    async def pool(s):
        s.add(ma.NumberPool(name="acme-pool", campaign_id=ids["campaign"], publisher_id=ids["acme"],
                            public_key="pk_acmekey", lease_seconds=900, shortages=0))

    await client.server.app[core.WRITER].run(pool)
    home = await (await pub.get("/portal")).text()
    assert 'data-key="pk_acmekey"' in home and "/dni/v1/dni.js" in home and "pk_rivalkey" not in home
    # A buyer's token: its calls, a dispute refused past the window (422 with the reason), one accepted as pending.
    csrf = await csrf_in(buyer, "/portal/account")
    page = await buyer.post("/portal/tokens", data={"csrf": csrf, "name": "crm"})
    token = re.search(r'id="new-token">([^<]+)<', await page.text()).group(1)
    api = await session_for(client)
    h = {"Authorization": f"Bearer {token}"}
    try:
        me = await (await api.get("/api/v1/portal/me", headers=h)).json()
        assert me["party"] == {"kind": "buyer", "id": ids["cool"], "name": "Cool Air"}
        late = await api.post(f"/api/v1/portal/calls/{ids['acme-old']}/dispute", headers=h,
                              json={"reason_code": "duplicate"})
        assert late.status == 422 and "dispute window" in (await late.json())["error"]["message"]
        other = await api.post(f"/api/v1/portal/calls/{ids['rival-lid-1']}/dispute", headers=h,
                               json={"reason_code": "duplicate"})
        assert other.status == 404
        ok = await api.post(f"/api/v1/portal/calls/{ids['acme-recent']}/dispute", headers=h,
                            json={"reason_code": "duplicate", "note": "same caller yesterday"})
        assert ok.status == 201 and (await ok.json())["state"] == "pending"
        again = await api.post(f"/api/v1/portal/calls/{ids['acme-recent']}/dispute", headers=h,
                               json={"reason_code": "duplicate"})
        assert again.status == 422
        staff = await api.get("/api/v1/buyers", headers=h)
        assert staff.status == 403
        paused = await api.put("/api/v1/portal/availability", headers=h, json={"paused": True})
        assert paused.status == 200 and (await paused.json()) == {"paused": True}
        # The operator decides through the API too (a partner token may not).
        assert (await api.get("/api/v1/disputes", headers=h)).status == 403
        admin = {"Authorization": f"Bearer {await token_for(client, 'finance')}"}
        [pending] = (await (await api.get("/api/v1/disputes?state=pending", headers=admin)).json())["items"]
        noc = {"Authorization": f"Bearer {await token_for(client, 'noc')}"}
        assert (await api.post(f"/api/v1/disputes/{pending['id']}/accept", headers=noc, json={})).status == 403
        r = await api.post(f"/api/v1/disputes/{pending['id']}/reject", headers=admin, json={"note": "same caller, new need"})
        assert r.status == 200 and (await r.json())["state"] == "rejected"
        again = await api.post(f"/api/v1/disputes/{pending['id']}/accept", headers=admin, json={})
        assert again.status == 400
        mine = (await (await api.get("/api/v1/portal/disputes", headers=h)).json())["items"]
        assert mine[0]["state"] == "rejected" and mine[0]["decision_note"] == "same caller, new need"
    finally:
        await api.close()
    async with client.server.app[core.SESSIONS]() as s:
        rows = list(await s.execute(select(w.AuditEntry.via, w.AuditEntry.action).where(w.AuditEntry.username == "cool-user")))
    assert ("portal-api", "portal.dispute") in rows and ("portal-api", "portal.pause") in rows


async def _audited(app, username: str) -> list[tuple[str, str]]:
    async with app[core.SESSIONS]() as s:
        return list(await s.execute(select(w.AuditEntry.via, w.AuditEntry.action).where(
            w.AuditEntry.username == username)))


async def _token(browser) -> str:
    csrf = await csrf_in(browser, "/portal/account")
    page = await browser.post("/portal/tokens", data={"csrf": csrf, "name": "t"})
    return re.search(r'id="new-token">([^<]+)<', await page.text()).group(1)


async def test_publisher_owns_its_postback_signed_and_as_it_sees_callers(world):
    """A publisher sets its own postback URL: refused toward this host or a private network, its secret
    shown once, sent for its own calls only, signed with that secret, the caller masked as the operator
    shows callers to it and no buyer id; renewed and removed through the API."""
    from ppcswitch.attribution import postback
    from ppcswitch.attribution import store as astore

    pub, client, ids = world["pub"], world["client"], world["ids"]
    app = client.server.app
    csrf = await csrf_in(pub, "/portal/postback")
    bad = await pub.post("/portal/postback", data={"csrf": csrf, "url": "http://127.0.0.1:5432/x"})
    assert bad.status == 400 and "not this host" in await bad.text()
    page = await pub.post("/portal/postback", data={"csrf": csrf, "url": "https://hooks.acme.example/pb?c={caller}&p={payout}"})
    html = await page.text()
    assert page.status == 200
    secret = re.search(r'id="new-secret">([^<]+)<', html).group(1)
    # A new call of Acme's, and one of Rival's: Acme's postback hears of its own only.
    now = datetime.now(UTC)

    async def calls(s):
        for lid, publisher, buyer, caller in (("acme-new", "acme", "cool", "+14155550199"),
                                              ("rival-new", "rival", "heat", RIVAL_CALLER)):
            rec = _rec(lid, now - timedelta(minutes=5), ids, publisher=publisher, buyer=buyer, caller=caller,
                       number="+18005550100" if publisher == "acme" else "+18005550200")
            await ledger.settle(s, rec)
            await astore.enqueue_for_call(s, rec)  # as the pipeline does, in the settling transaction

    await app[core.WRITER].run(calls)
    async with app[core.SESSIONS]() as s:
        rows = list(await s.scalars(select(ma.PostbackOutbox).where(ma.PostbackOutbox.kind == "publisher",
                                                                    ma.PostbackOutbox.owner_id == ids["acme"])))
        due = {row.linkedid: key for row, key in await astore.due(s)}
    assert [r.linkedid for r in rows] == ["acme-new"]
    [row] = rows
    body = json.loads(row.body)
    assert body["caller"] == "•••0199" and body["buyer_id"] is None and body["payout"] == "12.50"
    assert row.url == "https://hooks.acme.example/pb?c=%E2%80%A2%E2%80%A2%E2%80%A20199&p=12.50"
    assert due["acme-new"] == secret  # signed as every postback, with the publisher's secret
    sig = postback.sign(secret, "1700000000", row.body.encode())
    assert postback.verify(secret, "1700000000", row.body.encode(), sig)
    page = await (await pub.get("/portal/postback")).text()
    assert "acme-new" in page and "rival-new" not in page and "new-secret" not in page

    async def reverse(s):  # as an accepted dispute does: the reversal is masked the same way
        return await astore.enqueue_reversal(s, "acme-new", -4321, -1250)

    assert await app[core.WRITER].run(reverse) == 1
    async with app[core.SESSIONS]() as s:
        rev = await s.scalar(select(ma.PostbackOutbox).where(ma.PostbackOutbox.event == "reversed",
                                                             ma.PostbackOutbox.kind == "publisher"))
    body = json.loads(rev.body)
    assert body["caller"] == "•••0199" and body["buyer_id"] is None and body["payout"] == "-12.50"
    # The API: the URL and deliveries, a new secret, then removal.
    h = {"Authorization": f"Bearer {await _token(pub)}"}
    api = await session_for(client)
    try:
        got = await (await api.get("/api/v1/portal/postback", headers=h)).json()
        assert got["url"].startswith("https://hooks.acme.example/") and "secret" not in got
        assert [(d["call"], d["event"]) for d in got["deliveries"]] == [("acme-new", "reversed"), ("acme-new", "billed")]
        renewed = await (await api.put("/api/v1/portal/postback", headers=h,
                                       json={"url": "https://hooks.acme.example/v2", "new_secret": True})).json()
        assert renewed["secret"] and renewed["secret"] != secret
        assert (await api.delete("/api/v1/portal/postback", headers=h)).status == 204
        assert (await api.delete("/api/v1/portal/postback", headers=h)).status == 404
        buyer_h = {"Authorization": f"Bearer {await _token(world['buyer'])}"}
        assert (await api.get("/api/v1/portal/postback", headers=buyer_h)).status == 403
    finally:
        await api.close()
    audited = await _audited(app, "acme-user")
    assert ("portal", "portal.postback.set") in audited and ("portal-api", "portal.postback.delete") in audited


async def test_number_requests_up_to_the_limit_filled_by_the_operator_or_at_once(world):
    pub, client, ids = world["pub"], world["client"], world["ids"]
    app, admin = client.server.app, world["admin_csrf"]
    csrf = await csrf_in(pub)
    form = {"csrf": csrf, "campaign": str(ids["campaign"]), "area_code": "212", "quantity": "2", "note": "Manhattan"}
    # No limit set: requests are not taken.
    r = await pub.post("/portal/number-requests", data=form)
    assert r.status == 400 and "does not take number requests" in await r.text()
    r = await client.post("/partners/access", data={"csrf": admin, "party": f"publisher:{ids['acme']}",
                                                    "caller_display": "last4", "number_limit": "3"},
                          allow_redirects=False)
    assert r.status == 302
    over = await pub.post("/portal/number-requests", data={**form, "quantity": "3"})
    assert over.status == 400 and "at most 2 now" in await over.text()  # holds 1 of 3
    ok = await pub.post("/portal/number-requests", data=form, allow_redirects=False)
    assert ok.status == 302 and "saved=requested" in ok.headers["Location"]
    home = await (await pub.get("/portal")).text()
    assert "pending" in home and "646" not in home  # its own request; not Rival's
    # The operator fills it from spare numbers of 212 (too few first: refused with the reason).
    admin_page = await (await client.get("/number-requests")).text()
    assert "Manhattan" in admin_page and "rival-request-note" in admin_page
    async with app[core.SESSIONS]() as s:
        request_id = await s.scalar(select(mp.NumberRequest.id).where(mp.NumberRequest.note == "Manhattan"))
    assert f"/number-requests/{request_id}/approve" in admin_page
    await client.post("/number-requests/spare", data={"csrf": admin, "numbers": "+12125550123\n+13125550100"})
    few = await client.post(f"/number-requests/{request_id}/approve", data={"csrf": admin, "note": ""})
    assert few.status == 400 and "only 1 spare number in area code 212" in await few.text()
    await client.post("/number-requests/spare", data={"csrf": admin, "numbers": "(212) 555-0124, 212-555-0125"})
    done = await client.post(f"/number-requests/{request_id}/approve", data={"csrf": admin, "note": ""},
                             allow_redirects=False)
    assert done.status == 302
    home = await (await pub.get("/portal")).text()
    assert "+12125550123" in home and "+12125550124" in home and "filled" in home
    async with app[core.SESSIONS]() as s:
        mine = set(await s.scalars(select(w.AuditEntry.action).where(w.AuditEntry.username == "admin")))
        from ppcswitch.storage import models as t

        numbers = {n.number: n.publisher_id for n in await s.scalars(select(t.TrackingNumber))}
    assert numbers["+12125550123"] == ids["acme"] and "numbers.request.fill" in mine
    # At the limit now (3 held); with the limit raised and "fill at once", a request is filled on the spot.
    r = await pub.post("/portal/number-requests", data={**form, "quantity": "1"})
    assert r.status == 400 and "at most 0 now" in await r.text()
    await client.post("/partners/access", data={"csrf": admin, "party": f"publisher:{ids['acme']}",
                                                "caller_display": "last4", "number_limit": "5",
                                                "auto_fill_numbers": "1"})
    h = {"Authorization": f"Bearer {await _token(pub)}"}
    api = await session_for(client)
    try:
        made = await api.post("/api/v1/portal/number-requests", headers=h,
                              json={"campaign_id": ids["campaign"], "area_code": "212", "quantity": 1})
        got = await made.json()
        assert made.status == 201 and got["state"] == "filled" and got["numbers"] == ["+12125550125"]
        # None spare left in 212: pending; the operator rejects it with a note the publisher sees.
        pending = await (await api.post("/api/v1/portal/number-requests", headers=h,
                                        json={"campaign_id": ids["campaign"], "area_code": "212", "quantity": 1})).json()
        assert pending["state"] == "pending"
        over = await api.post("/api/v1/portal/number-requests", headers=h,
                              json={"campaign_id": ids["campaign"], "area_code": "212", "quantity": 2})
        assert over.status == 422
        op = {"Authorization": f"Bearer {await token_for(client, 'admin')}"}
        r = await api.post(f"/api/v1/number-requests/{pending['id']}/reject", headers=op, json={"note": "none left"})
        assert r.status == 200 and (await r.json())["state"] == "rejected"
        listed = await (await api.get("/api/v1/portal/number-requests", headers=h)).json()
        assert listed["limit"] == 5 and listed["held"] == 4
        assert [x["state"] for x in listed["items"]] == ["rejected", "filled", "filled"]
        assert all(x["note"] != "rival-request-note" for x in listed["items"])
    finally:
        await api.close()
    audited = await _audited(app, "acme-user")
    assert ("portal", "portal.numbers.request") in audited and ("portal-api", "portal.numbers.request") in audited


async def test_buyer_edits_its_hours_and_caps_within_the_bounds(world):
    buyer, client, ids = world["buyer"], world["client"], world["ids"]
    app, admin = client.server.app, world["admin_csrf"]
    csrf = await csrf_in(buyer, "/portal/schedule")
    form = {"csrf": csrf, "hours": "mon-fri 09:00-17:00", "concurrency": "3", "cap_hourly": "", "cap_daily": "40",
            "cap_monthly": ""}
    r = await buyer.post("/portal/schedule", data=form)
    assert r.status == 403  # the operator has not let it
    r = await client.post("/partners/access", data={
        "csrf": admin, "party": f"buyer:{ids['cool']}", "caller_display": "last4", "allow_pause": "1",
        "edit_rules": "1", "hours_bound": "mon-fri 08:00-20:00", "max_cap_daily": "50", "max_concurrency": "5"},
        allow_redirects=False)
    assert r.status == 302
    page = await (await buyer.get("/portal/schedule")).text()
    assert "Within mon-fri 08:00-20:00" in page and "at most 50" in page
    outside = await buyer.post("/portal/schedule", data={**form, "hours": "mon-sat 09:00-17:00"})
    assert outside.status == 400 and "within the hours the operator allows" in await outside.text()
    too_many = await buyer.post("/portal/schedule", data={**form, "cap_daily": "60"})
    assert too_many.status == 400 and "at most 50" in await too_many.text()
    uncapped = await buyer.post("/portal/schedule", data={**form, "cap_daily": ""})
    assert uncapped.status == 400
    ok = await buyer.post("/portal/schedule", data=form, allow_redirects=False)
    assert ok.status == 302
    async with app[core.SESSIONS]() as s:
        rules = await repo_routing.get_buyer_rules(s, ids["cool"])
        cool, heat = await repo.get_buyer(s, ids["cool"]), await repo_routing.get_buyer_rules(s, ids["heat"])
    assert rules["hours"] == "mon-fri 09:00-17:00" and rules["cap_daily"] == 40 and cool.concurrency_cap == 3
    assert heat == {"hours": "mon 07:13-19:47"}  # the other buyer's untouched
    h = {"Authorization": f"Bearer {await _token(buyer)}"}
    api = await session_for(client)
    try:
        got = await (await api.patch("/api/v1/portal/schedule", headers=h, json={"cap_daily": 45})).json()
        assert got["cap_daily"] == 45 and got["hours"] == "mon-fri 09:00-17:00" and got["bounds"]["cap_daily"] == 50
        bad = await api.patch("/api/v1/portal/schedule", headers=h, json={"concurrency": 6})
        assert bad.status == 400
        pub_h = {"Authorization": f"Bearer {await _token(world['pub'])}"}
        assert (await api.patch("/api/v1/portal/schedule", headers=pub_h, json={"cap_daily": 1})).status == 403
    finally:
        await api.close()
    audited = await _audited(app, "cool-user")
    assert ("portal", "portal.rules") in audited and ("portal-api", "portal.rules") in audited


async def test_recordings_and_what_each_campaign_shows(world):
    buyer, pub, client, ids = world["buyer"], world["pub"], world["client"], world["ids"]
    app, admin = client.server.app, world["admin_csrf"]
    own = f"/portal/calls/{ids['acme-recent']}/recording"
    assert (await buyer.get(own)).status == 404  # recordings off by default
    page = await (await buyer.get(f"/portal/calls/{ids['acme-recent']}")).text()
    assert "recording-audio" not in page
    await client.post("/partners/access", data={"csrf": admin, "party": f"buyer:{ids['cool']}",
                                                "caller_display": "full", "allow_pause": "1", "recordings": "1"})
    page = await (await buyer.get(f"/portal/calls/{ids['acme-recent']}")).text()
    assert 'id="recording-audio"' in page and "+14155550123" in page
    got = await buyer.get(own + "?download=1")
    assert got.status == 200 and await got.read() == b"RIFF cool's own recording"
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert (await buyer.get(f"/portal/calls/{ids['rival-lid-1']}/recording")).status == 404
    assert (await pub.get(own)).status == 404  # recordings are the buyer's
    calls = await (await buyer.get("/portal/calls")).text()
    assert "Listen…" in calls
    # The campaign decides over the partner: caller hidden, no recordings; the buyer's name to publishers.
    r = await client.post("/partners/campaign-access", data={"csrf": admin, "campaign": str(ids["campaign"]),
                                                             "caller_display": "hidden", "show_buyer_name": "1",
                                                             "recordings": "0"}, allow_redirects=False)
    assert r.status == 302
    assert (await buyer.get(own)).status == 404
    page = await (await buyer.get(f"/portal/calls/{ids['acme-recent']}")).text()
    assert "0123" not in page and "recording-audio" not in page
    pub_calls = await (await pub.get("/portal/calls")).text()
    assert "Cool Air" in pub_calls and "0123" not in pub_calls
    current = await (await buyer.get("/portal/statements/current?format=csv")).text()
    assert "0123" not in current
    h = {"Authorization": f"Bearer {await _token(buyer)}"}
    api = await session_for(client)
    try:
        assert (await api.get(f"/api/v1/portal/calls/{ids['acme-recent']}/recording", headers=h)).status == 404
        # Back to the partner's own choice: the API plays it.
        await client.post("/partners/campaign-access", data={"csrf": admin, "campaign": str(ids["campaign"]),
                                                             "caller_display": "", "show_buyer_name": "",
                                                             "recordings": ""})
        got = await api.get(f"/api/v1/portal/calls/{ids['acme-recent']}/recording", headers=h)
        assert got.status == 200 and got.headers["Content-Type"] == "audio/wav"
        one = await (await api.get(f"/api/v1/portal/calls/{ids['acme-recent']}", headers=h)).json()
        assert one["caller"] == "+14155550123" and one["recording"] is True
    finally:
        await api.close()
    assert "Cool Air" not in await (await pub.get("/portal/calls")).text()  # the publisher's default again
    audited = await _audited(app, "cool-user")
    assert ("portal", "portal.recording") in audited and ("portal-api", "portal.recording") in audited
    async with app[core.SESSIONS]() as s:
        ops = set(await s.scalars(select(w.AuditEntry.action).where(w.AuditEntry.username == "admin")))
    assert {"partner.access", "partner.campaign_access"} <= ops


async def test_operator_sets_what_partners_see_through_the_api(world):
    client, ids = world["client"], world["ids"]
    api = await session_for(client)
    admin = {"Authorization": f"Bearer {await token_for(client, 'admin')}"}
    noc = {"Authorization": f"Bearer {await token_for(client, 'noc')}"}
    try:
        got = await (await api.get("/api/v1/portal-access", headers=noc)).json()
        acme = next(p for p in got["partners"] if p["party"] == "publisher" and p["party_id"] == ids["acme"])
        assert acme["caller_display"] == "last4" and acme["number_limit"] == 0 and not acme["show_buyer_name"]
        assert (await api.put(f"/api/v1/portal-access/buyer/{ids['cool']}", headers=noc,
                              json={"recordings": True})).status == 403
        r = await api.put(f"/api/v1/portal-access/buyer/{ids['cool']}", headers=admin,
                          json={"recordings": True, "edit_rules": True, "max_cap_daily": 20, "hours_bound": "mon 09:00-17:00"})
        out = await r.json()
        assert r.status == 200 and out["recordings"] and out["max_cap_daily"] == 20 and out["allow_pause"]
        bad = await api.put(f"/api/v1/portal-access/buyer/{ids['cool']}", headers=admin, json={"hours_bound": "mon 9"})
        assert bad.status == 400
        r = await api.put(f"/api/v1/portal-access/campaigns/{ids['campaign']}", headers=admin,
                          json={"caller_display": "full", "show_buyer_name": None, "recordings": False})
        assert r.status == 200 and (await r.json())["caller_display"] == "full"
        html = await (await world["pub"].get("/portal/calls")).text()
        assert "+14155550123" in html  # the campaign shows callers in full
    finally:
        await api.close()
    async with client.server.app[core.SESSIONS]() as s:
        rows = set(await s.execute(select(w.AuditEntry.via, w.AuditEntry.action).where(w.AuditEntry.username == "admin")))
    assert ("api", "partner.access") in rows and ("api", "partner.campaign_access") in rows


async def test_an_accepted_dispute_shows_as_reversed_on_both_portals(world):
    buyer, pub, client, ids = world["buyer"], world["pub"], world["client"], world["ids"]
    csrf = await csrf_in(buyer)
    await buyer.post(f"/portal/calls/{ids['acme-recent']}/dispute",
                     data={"csrf": csrf, "reason_code": "duplicate", "note": ""})
    assert 'class="reversed"' not in await (await pub.get("/portal/calls")).text()
    admin = await (await client.get("/disputes")).text()
    dispute_id = re.search(r"/disputes/(\d+)/accept", admin).group(1)
    await client.post(f"/disputes/{dispute_id}/accept", data={"csrf": CSRF_RE.search(admin).group(1), "note": "ok"})
    for who, gone in ((pub, "$0.00"), (buyer, "$0.00")):
        page = await (await who.get(f"/portal/calls/{ids['acme-recent']}")).text()
        assert 'id="reversed"' in page and gone in page
        listed = await (await who.get("/portal/calls")).text()
        assert listed.count('class="reversed"') == 1
