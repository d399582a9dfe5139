"""Operator tasks in headless Debian Chromium against a real controller (`ppcswitch serve`) wired to
the sandbox Asterisk, from the panel alone: the account's time zone (typed in lower case) moves the
dashboard's day; a refused campaign link keeps the page and a reload is no 405; a buyer's caps and
weight on one campaign; Pause through its confirmation page; number search ignoring formatting; a
real SIPp call appearing on Live calls and leaving again without a reload (server-sent events), with
its buyer, publisher and elapsed time; the call's routing decision in words; the reports.

Screenshots of the dashboard, reports, call page and live calls at 1366 and 800 px go to artifacts/.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from test_browser_panel import ARTIFACTS, chromium

from ppcswitch.calls import CallRecord
from ppcswitch.storage import db, repo

PASSWORD = "browser test password"
NUMBER = "+18005550100"
LONG = "Nationwide Home Services Partner Network " + "X" * 59  # 100 characters
WIDTHS = (1366, 800)


def _midnight_calls(db_url: str) -> dict[str, int]:
    """Calls a minute either side of midnight in UTC and in New York; how many fall on 'today' in each."""
    from ppcswitch.web import zones

    now = datetime.now(timezone.utc)
    utc_start = zones.day_bounds(now.date(), "UTC")[0]
    ny_today = datetime.now(ZoneInfo("America/New_York")).date()
    ny_start = zones.day_bounds(ny_today, "America/New_York")[0]
    times = [utc_start + timedelta(minutes=1), utc_start - timedelta(minutes=1), ny_start + timedelta(minutes=1),
             ny_start - timedelta(minutes=1)]

    async def go():
        engine = db.make_engine(db_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                await repo.create_buyer(s, LONG, "sip:long@127.0.0.1:5999", revenue="1234.50")
                for i, at in enumerate(times):
                    await repo.save_call(s, CallRecord(
                        linkedid=f"midnight-{i}", tracking_number=NUMBER, caller="+12125550100", caller_valid=True,
                        started_at=at, ended_at=at + timedelta(seconds=30), outcome="not_connected"))
        finally:
            await engine.dispose()

    asyncio.run(go())

    def on(zone):
        start, end = zones.day_bounds(datetime.now(ZoneInfo(zone)).date(), zone)
        return sum(start <= t < end for t in times)

    return {"UTC": on("UTC"), "America/New_York": on("America/New_York")}


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"operator-{name}-{width}.png"), full_page=True)
        # Usable at this width: nothing wider than the window but the scrolling table boxes.
        wide = page.evaluate("""() => [...document.querySelectorAll('main > *')].filter(
            e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '.' + e.className)""")
        assert wide == [], (name, width, wide)
    page.set_viewport_size({"width": 1366, "height": 900})


@pytest.mark.asterisk
def test_operator_tasks_from_the_panel(controller, sipp):
    buyer = sipp.buyer("answer")
    controller.seed([{"name": "Cool Air", "destination": buyer.dest.split("/", 2)[2], "ring_timeout": 5,
                      "min_duration": 1, "revenue": "1250.00", "concurrency_cap": 3}], numbers=(NUMBER,))
    expected = _midnight_calls(controller.db_url)
    made = subprocess.run([sys.executable, "-m", "ppcswitch", "user", "add", "admin", "--role", "admin",
                           "--password-stdin"], env=controller.env, input=PASSWORD + "\n", capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    controller.start()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.set_default_timeout(10_000)
        run(controller, sipp, page, expected)


def _calls_today(page) -> int:
    return int(page.locator("#calls-today").inner_text())


def run(controller, sipp, page, expected) -> None:
    base = f"http://127.0.0.1:{controller.http_port}"
    page.goto(base + "/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")

    # The account's time zone, typed in lower case, moves the dashboard's day.
    assert page.locator("#zone-unset").is_visible() and _calls_today(page) == expected["UTC"]
    page.click("#zone-unset a")
    page.fill("#s-timezone", "america/new_york")
    page.click("text=Save time zone")
    assert page.locator("#flash").inner_text() == "Time zone saved."
    assert page.locator("#account-zone").inner_text() == "America/New_York"
    page.goto(base + "/")
    assert page.locator("#zone-name").inner_text() == "America/New_York"
    assert page.locator("#today").inner_text() == datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    assert _calls_today(page) == expected["America/New_York"] != expected["UTC"]

    # A refused campaign link: the error shows on the campaign's page with its settings; reload is no 405.
    page.goto(base + "/campaigns")
    page.click("text=HVAC")
    campaign_url = page.url
    page.check("#f-repeat_caller")  # (a ZIP prompt would wait for digits SIPp never sends)
    page.click("button[type=submit]")
    assert page.locator("#flash").inner_text() == "Saved."
    page.select_option("#add-buyer", label="Cool Air")
    page.fill("#add-priority", "2")
    page.click("text=Add to campaign")
    assert "already on campaign" in page.locator("#e-link").inner_text()
    assert page.is_checked("#f-repeat_caller") and page.input_value("#add-priority") == "2"
    page.goto(page.url)  # what a reload of the refused page asks for
    assert page.url == campaign_url and page.locator("h1").inner_text().startswith("Campaign: HVAC")

    # Caps and weight of the buyer on this campaign only.
    page.click("a[aria-label^='Caps, weight and rules of Cool Air']")
    page.fill("#l-cap_daily", "x")
    page.click("text=Save")
    assert page.locator("#e-cap_daily").is_visible() and page.input_value("#l-cap_daily") == "x"
    page.fill("#l-cap_daily", "10")
    page.fill("#l-weight", "2")
    page.click("text=Save")
    assert page.locator("#flash").inner_text() == "Saved." and page.input_value("#l-cap_daily") == "10"

    # Pause asks first; the long name is cut, with the full name on hover.
    page.goto(base + "/buyers")
    cell = page.locator(f"td.name[title='{LONG}']")
    assert cell.count() == 1 and cell.bounding_box()["width"] < 400
    page.click(f"a[aria-label='Pause {LONG}']")
    assert "Pause buyer" in page.locator("h1").inner_text()
    page.click("#confirm-no")
    assert page.url.endswith("/buyers")
    page.click(f"a[aria-label='Pause {LONG}']")
    page.click("#confirm-yes")
    assert "Paused" in page.locator("#flash").inner_text()
    page.click(f"button[aria-label='Resume {LONG}']")
    assert page.locator("#flash").inner_text() == "Resumed."

    # Number search ignoring formatting.
    page.goto(base + "/numbers")
    page.fill("input[name=q]", "(800) 555-0100")
    page.click("text=Filter")
    assert page.locator("#numbers a", has_text=NUMBER).count() == 1

    # A real call appears on Live calls and leaves again, without a reload.
    page.goto(base + "/live")
    page.locator("#live-note", has_text="Live:").wait_for()  # the event stream is open
    page.evaluate("window.__notReloaded = true")
    proc = sipp.start_call(NUMBER, caller="+14155550123", seconds=8)
    row = page.locator("#live tr.live-call")
    row.wait_for(timeout=15_000)
    page.locator("#live tr.live-call", has_text="connected").wait_for(timeout=15_000)
    text = row.inner_text()
    assert "Cool Air" in text and "Pub" in text and "HVAC" in text and "+14155550123" in text, text
    time.sleep(2.2)
    elapsed = page.locator("#live td.elapsed").inner_text()
    assert re.fullmatch(r"0:\d\d", elapsed) and elapsed != "0:00", elapsed
    assert page.locator("#live-caps").inner_text().count("Cool Air") == 1
    shoot(page, "live")
    assert page.evaluate("window.__notReloaded") is True
    result = sipp.result(proc)
    assert result.answered, result
    page.locator("#no-live").wait_for(timeout=15_000)
    assert page.evaluate("window.__notReloaded") is True  # it left without a reload too
    controller.wait_calls(1)

    # The call's page: the routing decision in words.
    page.goto(base + "/calls")
    # The caller's state, stored with the call when it settled (415 is California's).
    assert page.locator("#calls tr", has_text="+14155550123").locator("td").nth(3).inner_text() == "CA"
    page.locator("#calls tr", has_text="+14155550123").locator("a").first.click()
    page.wait_for_url(re.compile(r".*/calls/\d+"))
    chosen = page.locator("#routing-table tr.chosen")
    assert chosen.count() == 1 and "Cool Air" in chosen.inner_text()
    assert "Started (America/New_York)" in page.locator("dl.facts").first.inner_text()
    shoot(page, "call")

    page.goto(base + "/reports?preset=7d")
    assert page.locator("#chart-calls").is_visible() and "$" in page.locator("#total-revenue").inner_text()
    # By caller's state: the real call is California's; its bar opens it.
    assert page.locator("#chart-states a").count() == 1
    page.locator("#chart-states a").first.click()
    page.wait_for_url(re.compile(r".*/calls\?.*state=CA.*"))
    assert page.locator("#calls tr", has_text="+14155550123").count() == 1
    page.go_back()
    shoot(page, "reports")
    page.goto(base + "/")
    shoot(page, "dashboard")
