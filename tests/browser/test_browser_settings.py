"""The panel's settings and reports in headless Debian Chromium, from the panel alone (a panel on a
real SQLite database, no Asterisk needed): report presets and a chart bar opening its calls, a
billing rule and a re-rating dry run, an invoice download, a period closed, a block-list entry, a webhook, a number pool, a bulk reassign
with its preview, a password change, a user's role and password set by an admin, a user's own time zone; then, with JavaScript off, a release through its
confirmation page and the live-calls page. A second test: the reports' charts by caller's state and
by sub-ID (a bar opens its calls, the CSV of the view) and numbers paused and resumed in bulk through
their preview, with screenshots at 1366 and 800 px."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest

from ppcswitch import app as core
from ppcswitch.billing import ledger
from ppcswitch.storage import repo
from test_browser_panel import ARTIFACTS, chromium
from test_web_reports import _call, _seed
from web_helpers import PASSWORD, start

WIDTHS = (1366, 800)


def _serve(tmp_path, seed):
    """A panel on a real SQLite database, served from its own thread; yields its base URL."""
    url = f"sqlite+aiosqlite:///{tmp_path}/ppcswitch.db"
    loop = asyncio.new_event_loop()
    state: dict = {}
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)

        async def main():
            try:
                client = await start(url)
                await seed(client)
                state["client"] = client
            except BaseException as exc:  # surfaced in the test thread
                state["error"] = exc
            ready.set()

        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=run, name="panel-browser-server", daemon=True)
    thread.start()
    assert ready.wait(60), "the panel did not start"
    if "error" in state:
        raise state["error"]
    client = state["client"]
    yield f"http://127.0.0.1:{client.server.port}"
    asyncio.run_coroutine_threadsafe(client.close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


@pytest.fixture
def panel_url(tmp_path):
    async def seed(client):
        await _seed(client, days=40, count=120)

        async def more(s):
            await repo.create_campaign(s, "Solar")
            for n in ("+18005550111", "+18005550112", "+18005550113"):
                await repo.add_tracking_number(s, n, "HVAC", "Acme")

        await client.server.app[core.WRITER].run(more)

    yield from _serve(tmp_path, seed)


STATES = ("CA", "TX", "NY", "FL", "CA", "CA", "TX", "")  # drawn from in turn: CA most, then TX


@pytest.fixture
def breakdown_url(tmp_path):
    """Calls over 20 days with callers' states and sub-IDs, settled as the controller settles them."""
    async def seed(client):
        app = client.server.app
        rng = random.Random(3)
        now = datetime.now(timezone.utc).replace(microsecond=0)

        async def job(s):
            ids = {"campaign": (await repo.get_campaign(s, "HVAC")).id,
                   "publisher": (await repo.get_publisher(s, "Acme")).id}
            ids["a"] = (await repo.create_buyer(s, "Cool Air", "sip:a@127.0.0.1:5071", revenue="40.00")).id
            for i in range(60):
                rec = _call(i, now - timedelta(seconds=rng.randrange(20 * 86400)), ids, rng.choice((20, 90, 200)), "a")
                rec.caller_state = STATES[i % len(STATES)]
                rec.sub_id = ("fb-spring", "fb-summer", "google-1", "")[i % 4]
                assert await ledger.settle(s, rec)
            for n in range(6):
                await repo.add_tracking_number(s, f"+1800555022{n}", "HVAC", "Acme")

        await app[core.WRITER].run(job)

    yield from _serve(tmp_path, seed)


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"settings-{name}-{width}.png"), full_page=True)
        wide = page.evaluate("""() => [...document.querySelectorAll('main > *')].filter(
            e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '.' + e.className)""")
        assert wide == [], (name, width, wide)
    page.set_viewport_size({"width": 1366, "height": 900})


def _login(page, base: str, password: str = PASSWORD) -> None:
    page.goto(base + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_settings_and_reports_from_the_panel(panel_url):
    base = panel_url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(10_000)
        _login(page, base)

        # Reports: a preset, then a bar of the calls chart opens the calls of that day.
        page.goto(base + "/reports")
        page.click("nav.presets >> text=Last 30 days")
        assert page.locator("nav.presets a[aria-current=true]").inner_text() == "Last 30 days"
        bars = page.locator("#chart-calls a")
        assert bars.count() == 30
        tallest = max(range(30), key=lambda i: float(bars.nth(i).locator("rect").get_attribute("height")))
        tip = bars.nth(tallest).locator("title").text_content()
        shown = int(tip.split(": ")[1].split(" ")[0].replace(",", ""))
        bars.nth(tallest).click()
        page.wait_for_url(re.compile(r".*/calls\?.*date_from=.*"))
        assert page.locator("#calls tr").count() - 1 == shown > 0

        # Billing: a tiered rule, then a re-rating dry run lists what it would change.
        page.goto(base + "/billing")
        page.click("#rule-form button")  # no campaign or buyer chosen: refused, said why
        assert "choose a campaign" in page.locator("#e-rule").inner_text()
        page.select_option("#rule-scope select[name=campaign]", label="HVAC")
        page.click("#rule-scope button")
        page.fill("#r-tiers", "0:5.00,120:30.00")
        page.select_option("#r-mode", "tiers")
        page.click("text=Save rule")
        assert page.locator("#done").inner_text() == "Rule saved."
        assert "0s: 5.00, 120s: 30.00" in page.locator("#rules-shown").inner_text()
        page.click("text=Show what would change")
        assert "would change" in page.locator("#rerate-summary").inner_text()
        assert page.locator("#rerate-apply").count() == 1

        # An invoice to download, and a period closed through its confirmation page.
        page.select_option("#st-party", "buyer")
        page.select_option("#st-buyer", label="Heat Co")
        with page.expect_download() as got:
            page.click("#statement-form button")
        assert got.value.suggested_filename.startswith("invoice-Heat_Co-")
        page.fill("#close-form input[name=from]", "2026-01-01")
        page.fill("#close-form input[name=to]", "2026-01-31")
        page.click("#close-form button")
        assert page.locator("h1").inner_text().startswith("Close 2026-01-01..2026-01-31")
        page.click("#confirm-yes")
        assert "closed" in page.locator("#done").inner_text()
        assert "admin" in page.locator("#closed-periods").inner_text()

        # Fraud prevention, a webhook, a pool.
        page.goto(base + "/fraud")
        page.fill("#fl-pattern", "+1900")
        page.fill("#fl-note", "premium rate")
        page.click("text=Add to the list")
        assert "+1900" in page.locator("#fraud-lists").inner_text()
        page.goto(base + "/postbacks")
        page.select_option("#pb-owner", label="Cool Air")
        page.fill("#pb-url", "https://crm.example/hook")
        page.click("#postback-form button")
        assert "https://crm.example/hook" in page.locator("#postback-targets").inner_text()
        page.goto(base + "/pools")
        page.fill("#p-name", "Landing page")
        page.fill("#p-lease", "900")
        page.click("text=Create pool")
        page.fill("#pn-number", "(800) 555-0177")
        page.click("text=Add number")
        pool = page.locator("#pools tr", has_text="Landing page")
        assert pool.locator("td").nth(3).inner_text().startswith("1")
        pool.locator("summary").click()
        assert "+18005550177" in pool.inner_text()

        # Bulk reassign with a preview.
        page.goto(base + "/numbers?q=555011")
        page.check("input[aria-label='Select +18005550111']")
        page.check("input[aria-label='Select +18005550112']")
        page.select_option("select[aria-label='New campaign']", label="Solar")
        page.click("#bulk-preview-button")
        assert page.locator("h1").inner_text() == "Assign 2 numbers?"
        page.click("#bulk-apply")
        assert page.locator("#done").inner_text() == "2 numbers reassigned."
        assert page.locator("#numbers tr", has_text="+18005550111").inner_text().count("Solar") == 1

        # A user's own password: the wrong current one is refused, the right one keeps the login.
        page.goto(base + "/account")
        page.fill("#p-current", "not my password")
        page.fill("#p-new", "a brand new password")
        page.fill("#p-again", "a brand new password")
        page.click("#password-form button")
        assert page.locator("#e-current").is_visible()
        page.fill("#p-current", PASSWORD)
        page.fill("#p-new", "a brand new password")
        page.fill("#p-again", "a brand new password")
        page.click("#password-form button")
        assert page.locator("#flash").inner_text() == "Password changed."

        # A user's own time zone, typed in lower case.
        page.goto(base + "/account")
        page.fill("#u-timezone", "asia/tokyo")
        page.click("#user-zone-form button")
        assert page.locator("#zone-name").inner_text() == "Asia/Tokyo"

        # Users: an admin changes a user's role and sets a new password for it; the user logs in with it
        # and has the new role's rights (the billing page needs finance's "reports" permission, which noc lacks).
        page.goto(base + "/users")
        page.select_option("select[aria-label='Role of noc']", "finance")
        page.click("button[aria-label='Change the role of noc']")
        page.wait_for_url(re.compile(r".*/users\?saved=role.*"))
        assert page.locator("select[aria-label='Role of noc']").input_value() == "finance"
        page.fill("input[aria-label='New password for noc']", "the noc's new password")
        page.click("button[aria-label='Set the password of noc']")
        page.wait_for_url(re.compile(r".*/users\?saved=password.*"))
        other = browser.new_context().new_page()
        other.set_default_timeout(10_000)
        other.goto(base + "/login")
        other.fill("input[name=username]", "noc")
        other.fill("input[name=password]", "the noc's new password")
        other.click("button[type=submit]")
        other.wait_for_url(base + "/")
        assert other.goto(base + "/billing").status == 200  # finance's page; noc was refused it
        other.context.close()

        # Without JavaScript: confirmations and live calls still work.
        context = browser.new_context(java_script_enabled=False)
        plain = context.new_page()
        plain.set_default_timeout(10_000)
        _login(plain, base, "a brand new password")
        plain.goto(base + "/numbers?q=0113")
        plain.click("a[aria-label='Release +18005550113']")
        assert plain.locator("h1").inner_text() == "Release +18005550113?"
        plain.click("#confirm-yes")
        assert "Number released" in plain.locator("#flash").inner_text()
        plain.goto(base + "/live")
        assert "No calls in progress" in plain.content()
        context.close()


def _bar_value(bar) -> int:
    return int(bar.locator("title").text_content().rsplit(": ", 1)[1].replace(",", "").replace("$", "").split(".")[0])


def test_reports_by_state_and_sub_id_and_numbers_paused_in_bulk(breakdown_url):
    base = breakdown_url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(10_000)
        _login(page, base)

        # Last 30 days: the calls by caller's state; the tallest bar (California) opens its calls.
        page.goto(base + "/reports")
        page.click("nav.presets >> text=Last 30 days")
        states = page.locator("#chart-states a")
        assert states.count() == 4  # CA, TX, NY, FL; the unknown state is in the table only
        assert states.nth(0).locator("title").text_content().startswith("CA: ")
        ca = _bar_value(states.nth(0))
        assert ca == 60 * 3 // 8  # 3 of every 8 callers are Californian
        assert page.locator("#report-states tr", has_text="unknown").count() == 1
        shoot(page, "reports-breakdowns")
        states.nth(0).click()
        page.wait_for_url(re.compile(r".*/calls\?.*state=CA.*"))
        assert page.locator("#calls tr").count() - 1 == ca
        assert set(page.locator("#calls td:nth-child(4)").all_inner_texts()) == {"CA"}

        # The payout by sub-ID: a bar opens the calls of that sub-ID.
        page.go_back()
        subs = page.locator("#chart-sub-ids a")
        assert subs.count() == 4
        label = subs.nth(0).locator("title").text_content().split(": ")[0]
        sub = label.split(" · ")[1]
        row = page.locator("#sub-id-report tr", has_text=sub if sub != "(none)" else "(none)").first
        calls_of_sub = int(row.locator("td").nth(2).inner_text())
        subs.nth(0).click()
        page.wait_for_url(re.compile(r".*/calls\?.*sub_id=.*"))
        assert page.locator("#calls tr").count() - 1 == calls_of_sub

        # The CSV of the state view.
        page.go_back()
        with page.expect_download() as got:
            page.click("#csv-states")
        rows = list(csv.reader(io.StringIO(open(got.value.path()).read())))
        assert rows[0][:2] == ["state", "calls"] and rows[1][:2] == ["CA", str(ca)]

        # Numbers: tick two, pause them through the preview, then resume one.
        page.goto(base + "/numbers?q=555022")
        page.check("input[aria-label='Select +18005550221']")
        page.check("input[aria-label='Select +18005550222']")
        page.check("#bulk-actions input[value=pause]")
        page.click("#bulk-preview-button")
        assert page.locator("h1").inner_text() == "Pause 2 numbers?"
        assert page.locator("#bulk-preview").inner_text().count("Active → Paused") == 2
        shoot(page, "numbers-pause-preview")
        page.click("#bulk-apply")
        assert page.locator("#done").inner_text() == "2 numbers paused."
        assert page.locator("#numbers .badge.paused").count() == 2
        shoot(page, "numbers-paused")
        page.select_option("select[aria-label=Status]", "paused")
        page.click("form.filters button")
        assert page.locator("#numbers tr").count() - 1 == 2
        page.check("input[aria-label='Select +18005550222']")
        page.check("#bulk-actions input[value=resume]")
        page.click("#bulk-preview-button")
        assert page.locator("h1").inner_text() == "Resume 1 number?"
        page.click("text=Cancel")  # changes nothing
        assert page.locator("#numbers .badge.paused").count() == 2
        page.check("input[aria-label='Select +18005550222']")
        page.check("#bulk-actions input[value=resume]")
        page.click("#bulk-preview-button")
        page.click("#bulk-apply")
        assert page.locator("#done").inner_text() == "1 number resumed."
        assert page.locator("#numbers .badge.paused").count() == 1

        # Both changes are in the audit log.
        page.goto(base + "/audit")
        text = page.locator("main").inner_text()
        assert "number.bulk_pause" in text and "number.bulk_resume" in text
