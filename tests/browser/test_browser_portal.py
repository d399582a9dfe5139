"""Partner portals in headless Debian Chromium against a real controller wired to the sandbox Asterisk:
an operator invites a buyer and a publisher user; each sets its password from the one-time link; a real
SIPp call is billed; the buyer finds it on its portal (caller masked, revenue, never payout) and disputes
it; nothing moves until the operator accepts it on Disputes; then the ledger's reversal shows on the
buyer's invoice and the publisher's statement (to the cent), the signed "reversed" webhook and postback
arrive, and the operator's own invoice download agrees. Screenshots of both portals go to artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from test_browser_panel import ARTIFACTS, chromium
from test_postback_e2e import SECRET, FlakyReceiver

from ppcswitch.attribution import postback, store
from ppcswitch.storage import db

PASSWORD = "browser test password"
PARTNER_PASSWORD = "partner password 42"
NUMBER = "+18005550100"
CALLER = "+14155550123"


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for width in (1366, 800):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"portal-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1366, "height": 900})


def set_targets(controller, url: str) -> None:
    async def go():
        engine = db.make_engine(controller.db_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                await store.set_target(s, "publisher", "Pub", url + "/pub?payout={payout}", SECRET)
                await store.set_target(s, "buyer", "Cool Air", url + "/buyer", SECRET)
        finally:
            await engine.dispose()

    asyncio.run(go())


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def invite(page, base: str, username: str, party_label: str) -> str:
    page.goto(base + "/partners")
    page.fill("#i-username", username)
    page.select_option("#i-party", label=party_label)
    page.click("text=Make the invitation link")
    return page.locator("#invite-link").inner_text()


def accept(page, link: str, base: str, username: str) -> None:
    page.goto(link)
    page.fill("#i-pass", PARTNER_PASSWORD)
    page.fill("#i-again", PARTNER_PASSWORD)
    page.click("text=Set password")
    page.wait_for_url(re.compile(r".*/login.*"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PARTNER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/portal")


def _cells(page, selector: str) -> list[str]:
    return [x.strip() for x in page.locator(selector).all_inner_texts()]


@pytest.mark.asterisk
def test_buyer_disputes_a_real_call_and_the_operator_accepts(controller, sipp):
    receiver = FlakyReceiver(failures=0)
    try:
        buyer = sipp.buyer("answer")
        controller.seed([{"name": "Cool Air", "destination": buyer.dest.split("/", 2)[2], "ring_timeout": 5,
                          "min_duration": 1, "revenue": "40.00"}], publisher_payout="12.50", numbers=(NUMBER,))
        set_targets(controller, f"http://127.0.0.1:{receiver.port}")
        controller.env["PPCSWITCH_ATTRIBUTION_POSTBACK_RETRY_MIN"] = "1"
        made = subprocess.run([sys.executable, "-m", "ppcswitch", "user", "add", "admin", "--role", "admin",
                               "--password-stdin"], env=controller.env, input=PASSWORD + "\n", capture_output=True,
                              text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        controller.start()
        assert sipp.call(NUMBER, caller=CALLER, seconds=3).answered
        [call] = controller.wait_calls(1)
        assert call["billable"] and call["revenue_cents"] == 4000 and call["payout_cents"] == 1250
        receiver.wait(2)  # the "billed" webhook and postback
        ids = controller.ids()  # (before the browser: its sync API runs an event loop)
        with chromium() as browser:
            run(controller, browser, call, receiver, ids)
    finally:
        receiver.close()


def run(controller, browser, call, receiver, ids) -> None:
    base = f"http://127.0.0.1:{controller.http_port}"
    op = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    op.set_default_timeout(10_000)
    log_in(op, base, "admin", PASSWORD)
    buyer_link = invite(op, base, "coolair-ops", "Cool Air")
    shoot(op, "operator-partners")
    pub_link = invite(op, base, "pub-ops", "Pub")
    assert "/invite/inv_" in buyer_link and buyer_link != pub_link

    # The buyer sets its password from the link, and finds the call.
    bp = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    bp.set_default_timeout(10_000)
    accept(bp, buyer_link, base, "coolair-ops")
    assert "Taking calls." in bp.locator("#state").inner_text()
    shoot(bp, "buyer-home")
    bp.goto(base + "/calls")  # an operator page: refused
    assert "Not allowed" in bp.locator("h1").inner_text()
    bp.goto(base + "/portal/calls")
    row = bp.locator("#calls tr", has_text="•••0123")
    assert row.count() == 1 and CALLER not in bp.content() and "12.50" not in bp.content()
    assert "$40.00" in row.inner_text()
    shoot(bp, "buyer-calls")
    row.locator("a").first.click()
    bp.wait_for_url(re.compile(r".*/portal/calls/\d+"))
    assert bp.locator("#amount").inner_text() == "$40.00"
    bp.select_option("#reason_code", "not_a_customer")
    bp.fill("#note", "robocall, caller never spoke")
    shoot(bp, "buyer-call")
    bp.click("#dispute-form button")
    bp.wait_for_load_state()
    assert bp.locator("#flash").count() == 1, bp.locator("main").inner_text()
    assert "Dispute sent" in bp.locator("#flash").inner_text()
    assert "pending" in bp.locator("#dispute-state").inner_text()
    bp.goto(base + "/portal/disputes")
    assert "pending" in bp.locator("#disputes").inner_text()
    shoot(bp, "buyer-disputes")
    assert len(receiver.requests) == 2  # nothing reversed before the operator decides

    # The operator accepts it.
    op.goto(base + "/disputes")
    assert "robocall" in op.locator("#disputes").inner_text() and "Cool Air" in op.locator("#disputes").inner_text()
    shoot(op, "operator-disputes")
    op.fill("input[aria-label='note on accepting']", "listened: no customer")
    op.click("text=Accept: reverse the revenue")
    op.goto(base + "/disputes?state=accepted")
    assert "$40.00 reversed" in op.locator("#disputes").inner_text()

    # The signed "reversed" webhook (revenue) and postback (payout: paid only when the buyer pays).
    receiver.wait(4)
    reversed_ = {}
    for path, headers, body in receiver.requests[2:]:
        assert postback.verify(SECRET, headers["X-Ppcswitch-Timestamp"], body, headers["X-Ppcswitch-Signature"])
        sent = json.loads(body)
        assert sent["event"] == "reversed" and sent["call_id"] == call["linkedid"]
        reversed_[path.split("?")[0]] = sent
    assert reversed_["/buyer"]["revenue"] == "-40.00" and reversed_["/pub"]["payout"] == "-12.50"

    # The buyer's invoice of the open period: the call and its reversal, to the cent.
    bp.goto(base + "/portal/disputes")
    assert "accepted" in bp.locator("#disputes").inner_text() and "$40.00" in bp.locator("#disputes").inner_text()
    bp.goto(base + "/portal/statements/current")
    text = bp.locator("#statement").inner_text()
    assert "$40.00" in text and "-$40.00" in text
    assert bp.locator("#statement-total").inner_text().split() == ["Total", "$0.00"]
    shoot(bp, "buyer-invoice")

    # The publisher sees its payout reversed too, never the revenue nor the buyer.
    pp = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    pp.set_default_timeout(10_000)
    accept(pp, pub_link, base, "pub-ops")
    assert NUMBER in pp.locator("#numbers").inner_text()
    shoot(pp, "publisher-home")
    pp.goto(base + "/portal/calls")
    assert "40.00" not in pp.content() and "Cool Air" not in pp.content()
    assert "$0.00" in pp.locator("#calls").inner_text()  # 12.50 paid, then reversed
    shoot(pp, "publisher-calls")
    pp.goto(base + "/portal/report")
    assert pp.locator("#total").inner_text().split()[:3] == ["Total", "1", "1"]
    shoot(pp, "publisher-report")
    pp.goto(base + "/portal/statements/current")
    text = pp.locator("#statement").inner_text()
    assert "$12.50" in text and "-$12.50" in text
    assert pp.locator("#statement-total").inner_text().split() == ["Total", "$0.00"]
    shoot(pp, "publisher-statement")

    # The operator's own invoice for today agrees.
    today = datetime.now(timezone.utc).date().isoformat()
    resp = op.request.get(base + f"/billing/statement?party=buyer&buyer={ids['Cool Air']}&from={today}&to={today}"
                                 f"&tz=UTC&format=csv")
    lines = resp.text().strip().splitlines()
    assert lines[-1].split(",")[5] == "0.00" and any("dispute" in x and "-40.00" in x for x in lines)


# --- each partner task in the browser, on the panel alone (a real SQLite database, no Asterisk) ---------

@pytest.fixture
def portal_world(tmp_path):
    """The portal tests' two publishers and two buyers with calls, served from a thread; `run(fn)` runs
    `fn(session)` as a writer job on the server's loop."""
    import threading

    from test_portal import seed
    from web_helpers import start

    from ppcswitch import app as core

    url = f"sqlite+aiosqlite:///{tmp_path}/ppcswitch.db"
    loop = asyncio.new_event_loop()
    state: dict = {}
    ready = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)

        async def main():
            try:
                client = await start(url)
                state["ids"] = await seed(client)
                state["client"] = client
            except BaseException as exc:  # surfaced in the test thread
                state["error"] = exc
            ready.set()

        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=serve, name="portal-browser-server", daemon=True)
    thread.start()
    assert ready.wait(60), "the panel did not start"
    if "error" in state:
        raise state["error"]
    client = state["client"]

    def run(fn):
        return asyncio.run_coroutine_threadsafe(client.server.app[core.WRITER].run(fn), loop).result(30)

    yield f"http://127.0.0.1:{client.server.port}", state["ids"], run
    asyncio.run_coroutine_threadsafe(client.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


def test_partner_tasks_in_the_browser(portal_world):
    """The operator sets what each partner does and sees on Partners; the publisher sets its own postback
    and asks for numbers, which the operator fills on Number requests; the buyer edits its hours and caps
    within the bounds, pauses and resumes, and hears and downloads a recording; a campaign's setting
    then hides the caller and the recording."""
    from sqlalchemy import select

    from web_helpers import PASSWORD as ADMIN_PASSWORD

    from ppcswitch.storage import models as t
    from ppcswitch.storage import repo_routing

    base, ids, run = portal_world
    with chromium() as browser:
        op = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
        op.set_default_timeout(10_000)
        log_in(op, base, "admin", ADMIN_PASSWORD)
        pub_link = invite(op, base, "acme-ops", "Acme")
        buyer_link = invite(op, base, "cool-ops", "Cool Air")

        # What each partner may do: Acme asks for up to 3 numbers; Cool Air hears recordings and sets its
        # own hours within mon-fri 08:00-20:00 and at most 50 calls a day.
        op.goto(base + "/partners")
        row = op.locator("#access-publisher tr", has_text="Acme")
        row.locator("input[name=number_limit]").fill("3")
        row.locator("button").click()
        op.wait_for_url(re.compile(r".*/partners\?saved=1.*"))
        row = op.locator("#access-buyer tr", has_text="Cool Air")
        row.locator("input[name=recordings]").check()
        row.locator("input[name=edit_rules]").check()
        row.locator("input[name=hours_bound]").fill("mon-fri 08:00-20:00")
        row.locator("input[name=max_cap_daily]").fill("50")
        row.locator("button").click()
        op.wait_for_url(re.compile(r".*/partners\?saved=1.*"))
        shoot(op, "operator-access")
        assert op.locator("#access-buyer tr", has_text="Cool Air").locator("input[name=max_cap_daily]").input_value() == "50"

        # The publisher: its own postback, then a request for two numbers in 212.
        pp = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
        pp.set_default_timeout(10_000)
        accept(pp, pub_link, base, "acme-ops")
        pp.click("nav >> text=Postback")
        pp.fill("#pb-url", "http://10.0.0.7/pb")
        pp.click("text=Save the postback")
        assert "not this host nor a private network" in pp.locator("#e-url").inner_text()
        pp.fill("#pb-url", "https://hooks.acme.example/pb?click={click_id}&payout={payout}")
        pp.click("text=Save the postback")
        secret = pp.locator("#new-secret").inner_text()
        assert len(secret) > 20 and "hooks.acme.example" in pp.locator("#postback-state").inner_text()
        shoot(pp, "publisher-postback")
        pp.goto(base + "/portal/postback")
        assert pp.locator("#new-secret").count() == 0  # shown once
        pp.goto(base + "/portal")
        pp.fill("#r-area", "212")
        pp.fill("#r-quantity", "3")
        pp.click("text=Ask for the numbers")
        assert "at most 2 now" in pp.locator("main").inner_text()
        pp.fill("#r-quantity", "2")
        pp.fill("#r-note", "Manhattan landing page")
        pp.click("text=Ask for the numbers")
        assert "Request sent" in pp.locator("#flash").inner_text()
        assert "pending" in pp.locator("#number-requests").inner_text()

        # The operator holds spare numbers and fills the request.
        op.goto(base + "/partners")
        assert "2 pending" in op.locator("#requests-link").inner_text()  # Acme's and Rival's
        op.click("#requests-link")
        op.fill("#spare-numbers", "+12125550123\n+12125550124\n+13125550100")
        op.click("text=Add spare numbers")
        assert "3 numbers added" in op.locator("#spare-added").inner_text()
        assert "212: 2" in op.locator("#spare-counts").inner_text()
        shoot(op, "operator-number-requests")
        op.locator("#requests tr", has_text="Manhattan").locator("button", has_text="Fill").click()
        op.goto(base + "/number-requests?state=filled")
        assert "+12125550123" in op.locator("#requests").inner_text()
        pp.goto(base + "/portal")
        numbers = pp.locator("#numbers").inner_text()
        assert "+12125550123" in numbers and "+12125550124" in numbers and "+18005550100" in numbers
        assert "filled" in pp.locator("#number-requests").inner_text()
        assert "that is your limit of 3" in pp.locator("#at-limit").inner_text()  # no form past the limit
        shoot(pp, "publisher-numbers")
        # A pool of its own: the DNI snippet ready to paste (not another publisher's).
        async def pool(s):
            from ppcswitch.storage import models_attribution as ma

            s.add(ma.NumberPool(name="acme-pool", campaign_id=ids["campaign"], publisher_id=ids["acme"],
                                public_key="pk_acmekey", lease_seconds=900, shortages=0))

        run(pool)
        pp.reload()
        snippet = pp.locator("textarea[id^=snippet-]").input_value()
        assert 'data-key="pk_acmekey"' in snippet and "/dni/v1/dni.js" in snippet
        assert "pk_rivalkey" not in pp.content()
        # Its own time zone: times on its pages in it.
        pp.click("nav >> text=Account")
        pp.fill("#u-timezone", "America/New_York")
        pp.click("text=Save time zone")
        pp.click("nav >> text=Calls")
        assert "America/New_York" in pp.locator("#calls tr").first.inner_text()
        # Its report by sub-ID and its calls, each downloaded as CSV: its own, payout only.
        from datetime import timedelta

        pp.goto(base + "/portal/report")
        pp.fill("input[name=from]", (datetime.now(timezone.utc) - timedelta(days=45)).date().isoformat())
        pp.select_option("select[name=by]", "sub_id")
        pp.click("text=Show")
        assert "acme-sub" in pp.locator("#report").inner_text()
        with pp.expect_download() as got:
            pp.click("text=Download CSV")
        lines = open(got.value.path(), encoding="utf-8").read().splitlines()
        assert lines[0] == "sub_id,calls,billable,connected_s,payout" and "acme-sub,1,1,95,12.50" in lines
        assert not any("rival" in x for x in lines)
        pp.goto(base + "/portal/calls")
        with pp.expect_download() as got:
            pp.click("text=Download CSV")
        lines = open(got.value.path(), encoding="utf-8").read().splitlines()
        assert lines[0].endswith(",payout") and len(lines) == 4 and not any("43.21" in x for x in lines)

        # The buyer: hours and caps within the bounds, pause and resume, a recording.
        bp = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True).new_page()
        bp.set_default_timeout(10_000)
        accept(bp, buyer_link, base, "cool-ops")
        bp.click("nav >> text=Hours and caps")
        bp.fill("#s-hours", "mon-sat 09:00-17:00")
        bp.fill("#s-cap_daily", "40")
        bp.click("text=Save hours and caps")
        assert "within the hours the operator allows" in bp.locator("#e-hours").inner_text()
        bp.fill("#s-hours", "mon-fri 09:00-17:00")
        bp.fill("#s-cap_daily", "60")
        bp.click("text=Save hours and caps")
        assert "at most 50" in bp.locator("#e-cap_daily").inner_text()
        bp.fill("#s-cap_daily", "40")
        bp.click("text=Save hours and caps")
        assert "Saved" in bp.locator("#flash").inner_text()
        assert bp.locator("#s-hours").input_value() == "mon-fri 09:00-17:00"
        shoot(bp, "buyer-schedule")
        # Its own API token, shown once.
        bp.click("nav >> text=Account")
        bp.fill("#t-name", "crm")
        bp.click("text=Create a token")
        assert bp.locator("#new-token").inner_text().startswith("ppc_")
        bp.reload()
        assert bp.locator("#new-token").count() == 0 and "crm" in bp.locator("#own-tokens").inner_text()

        async def rules(s):
            return await repo_routing.get_buyer_rules(s, ids["cool"]), await repo_routing.get_buyer_rules(s, ids["heat"])

        mine, other = run(rules)
        assert mine["hours"] == "mon-fri 09:00-17:00" and mine["cap_daily"] == 40
        assert other == {"hours": "mon 07:13-19:47"}
        bp.goto(base + "/portal")
        bp.click("text=Pause: stop sending me calls")
        assert "Paused" in bp.locator("#state").inner_text()
        bp.click("text=Resume: take calls again")
        assert "Taking calls." in bp.locator("#state").inner_text()
        assert "at most 40 calls a day" in bp.locator("#rules-summary").inner_text()
        shoot(bp, "buyer-availability")

        async def paused(s):
            return (await s.get(t.Buyer, ids["cool"])).paused

        assert run(paused) is False
        bp.goto(base + "/portal/calls")
        row = bp.locator("#calls tr", has_text="•••0123")
        row.locator("text=Listen…").click()
        bp.wait_for_url(re.compile(r".*/portal/calls/\d+"))
        src = bp.locator("#recording-audio").get_attribute("src")
        assert src == f"/portal/calls/{ids['acme-recent']}/recording"
        with bp.expect_download() as got:
            bp.click("#recording-download")
        path = got.value.path()
        assert open(path, "rb").read() == b"RIFF cool's own recording"
        shoot(bp, "buyer-call-recording")
        bp.goto(base + f"/portal/calls/{ids['rival-lid-1']}/recording")
        assert "Page not found (404)" in bp.locator("body").inner_text()  # another buyer's call

        # A campaign's setting wins: callers hidden and no recordings on HVAC's calls.
        op.goto(base + "/partners#campaigns")
        row = op.locator("#access-campaign tr", has_text="HVAC")
        row.locator("select[name=caller_display]").select_option("hidden")
        row.locator("select[name=recordings]").select_option("0")
        row.locator("button").click()
        op.wait_for_url(re.compile(r".*/partners\?saved=1.*"))
        bp.goto(base + f"/portal/calls/{ids['acme-recent']}")
        assert bp.locator("#caller").count() == 0 and bp.locator("#recording-audio").count() == 0
        bp.goto(base + "/portal/calls")
        assert "0123" not in bp.locator("#calls").inner_text() and "Listen…" not in bp.content()

    async def audit(s):
        from ppcswitch.storage import models_web as w

        return set(await s.execute(select(w.AuditEntry.username, w.AuditEntry.action)))

    done = run(audit)
    for who, action in (("acme-ops", "portal.postback.set"), ("acme-ops", "portal.numbers.request"),
                        ("cool-ops", "portal.rules"), ("cool-ops", "portal.pause"), ("cool-ops", "portal.resume"),
                        ("cool-ops", "portal.recording"), ("admin", "numbers.request.fill"),
                        ("admin", "partner.campaign_access"), ("admin", "numbers.spare")):
        assert (who, action) in done, (who, action)
