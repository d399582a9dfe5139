"""The panel in headless Debian Chromium, driving a real controller (`ppcswitch serve`) wired to the
sandbox Asterisk: log in, create a buyer with a schedule and a cap, put it on the campaign, import
numbers from CSV (a bad row first: error shown, nothing imported), place a real SIP call with SIPp
to an imported number, and find the call with its routing trace in the call log.

Screenshots of the dashboard and the call page are kept in artifacts/.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PASSWORD = "browser test password"
NUMBER = "+18005550177"


@contextlib.contextmanager
def chromium():
    """Debian's Chromium, headless. Opened after the asyncio set-up (playwright's sync API runs a loop)."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (Debian package chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()


@pytest.mark.asterisk
def test_panel_end_to_end_with_a_real_call(controller, sipp):
    buyer = sipp.buyer("answer")
    controller.seed([], numbers=())  # campaign HVAC and publisher Pub only: the rest is done in the browser
    made = subprocess.run([sys.executable, "-m", "ppcswitch", "user", "add", "admin", "--role", "admin",
                           "--password-stdin"], env=controller.env, input=PASSWORD + "\n", capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    controller.start()
    with chromium() as browser:
        run_in_browser(controller, sipp, buyer, browser.new_page())


def run_in_browser(controller, sipp, buyer, page) -> None:
    base = f"http://127.0.0.1:{controller.http_port}"
    page.set_default_timeout(10_000)

    # Log in (the first page redirects to the login form).
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == base + "/", page.content()

    # A buyer with a weekly schedule and caps; a bad value first is shown next to its field.
    page.goto(base + "/buyers/new")
    page.fill("#f-name", "Browser Buyer")
    page.fill("#f-destination", buyer.dest.split("/", 2)[2])
    page.fill("#f-revenue", "40.00")
    page.fill("#f-ring_timeout", "5")
    page.fill("#f-concurrency_cap", "2")
    page.fill("#f-min_duration", "2")
    page.fill("#f-hours", "mon-sun 25:00-26:00")
    page.fill("#f-cap_daily", "10")
    page.click("button[type=submit]")
    assert page.locator("#e-hours").is_visible()
    page.fill("#f-hours", "mon-sun 00:00-24:00")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/buyers/\d+\?saved=1"))
    assert page.input_value("#f-hours") == "mon-sun 00:00-24:00" and page.input_value("#f-cap_daily") == "10"

    # Put it on campaign HVAC.
    page.goto(base + "/campaigns")
    page.click("text=HVAC")
    page.select_option("#add-buyer", label="Browser Buyer")
    page.click("text=Add to campaign")
    page.wait_for_url(re.compile(r".*/campaigns/\d+\?saved=1"))
    assert page.locator("td a", has_text="Browser Buyer").count() == 1

    # CSV import: one bad row -> its line is shown and nothing is imported; fixed -> imported.
    page.goto(base + "/numbers/import")
    bad = f"number,campaign,publisher\n{NUMBER},HVAC,Pub\n+18005550178,HVAC,Nobody\n"
    page.fill("#f-text", bad)
    page.click("button[value=preview]")
    errors = page.locator("#row-errors")
    assert "no publisher named 'Nobody'" in errors.inner_text() and "3" in errors.locator("td").first.inner_text()
    assert page.locator("#do-import").count() == 0
    page.goto(base + "/numbers")
    assert "No tracking numbers found" in page.content()
    page.goto(base + "/numbers/import")
    page.fill("#f-text", bad.replace("Nobody", "Pub"))
    page.click("button[value=preview]")
    assert "2 rows are ready" in page.locator("#preview-ok").inner_text()
    page.click("#do-import")
    assert "Imported 2 tracking numbers" in page.locator("#import-result").inner_text()

    # A real call to an imported number: routed to the buyer created above (no restart).
    result = sipp.call(NUMBER, caller="+14155550123", seconds=3)
    assert result.answered, result
    [call] = controller.wait_calls(1)
    assert call["billable"] and call["revenue_cents"] == 4000, call

    page.goto(base + "/calls")
    row = page.locator("#calls tr", has_text=NUMBER)
    assert row.count() == 1 and "Browser Buyer" in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(re.compile(r".*/calls/\d+"))
    trace = page.locator("#routing-trace").inner_text()
    assert "Browser Buyer" in trace and "ANSWER" in trace
    assert page.locator("#billable").inner_text() == "yes"
    decision = page.locator("#routing-decision").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "panel-call.png"), full_page=True)
    page.goto(base + "/")
    assert page.locator("#calls-today").inner_text() == "1"
    page.screenshot(path=str(ARTIFACTS / "panel-dashboard.png"), full_page=True)
    assert '"winner"' in decision and '"candidates"' in decision  # the stored routing decision
