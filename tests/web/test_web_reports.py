"""The Reports page: presets, comparison with the period before, charts per local day and hour, CSV of
each view, drill-down to the calls, and refused adjustments keeping the report. The charts' local days
(daily rollups corrected at each midnight) are checked against the reports' own period totals."""

from __future__ import annotations

import random
import re
from datetime import date, datetime, timedelta, timezone

import pytest

from ppcswitch import app as core
from ppcswitch.billing import ledger, reports
from ppcswitch.calls import Attempt, CallRecord
from ppcswitch.storage import repo
from ppcswitch.web import report_views, zones
from web_helpers import csrf_of, login, start

UTC = timezone.utc


@pytest.fixture
async def client(db_url):
    c = await start(db_url)
    yield c
    await c.close()


def _call(i: int, started: datetime, ids: dict, seconds: int, buyer: str) -> CallRecord:
    answered = started + timedelta(seconds=2)
    return CallRecord(linkedid=f"rep-{i}", tracking_number="+18005550100", caller=f"+1415555{i:04d}",
                      caller_valid=True, started_at=started, ended_at=answered + timedelta(seconds=seconds),
                      outcome="connected", campaign_id=ids["campaign"], publisher_id=ids["publisher"],
                      buyer_id=ids[buyer], answered_at=answered, connected_ms=seconds * 1000, hangup_cause=16,
                      attempts=[Attempt(seq=1, buyer_id=ids[buyer], dial_status="ANSWER", started_at=started,
                                        answered_at=answered, ended_at=answered + timedelta(seconds=seconds))])


async def _seed(client, days: int = 70, count: int = 160) -> dict:
    app = client.server.app
    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)

    async def job(s):
        ids = {"campaign": (await repo.get_campaign(s, "HVAC")).id, "publisher": (await repo.get_publisher(s, "Acme")).id}
        ids["a"] = (await repo.create_buyer(s, "Cool Air", "sip:a@127.0.0.1:5071", revenue="40.00")).id
        ids["b"] = (await repo.create_buyer(s, "Heat Co", "sip:b@127.0.0.1:5072", revenue="1500.00")).id
        for i in range(count):
            started = now - timedelta(seconds=rng.randrange(days * 86400))
            assert await ledger.settle(s, _call(i, started, ids, rng.choice((20, 90, 200)), rng.choice("ab")))
        return ids

    return await app[core.WRITER].run(job)


async def test_local_days_match_the_reports_exact_days(client):
    await _seed(client)
    today = datetime.now(UTC).date()
    async with client.server.app[core.SESSIONS]() as s:
        for zone in ("America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC", "Pacific/Kiritimati"):
            first, last = today - timedelta(days=40), today
            got = await report_views.local_days(s, first, last, zone)
            want = []
            for i in range((last - first).days + 1):
                t = (await reports.period_report(s, reports.period(first + timedelta(days=i), None, zone))).total
                want.append([t.calls, t.billable, t.receivable_cents, t.payable_cents])
            assert got == want, zone
            # The 15-minute path (periods up to a week) bins the same way.
            p = reports.period(first, last, zone)
            over, _ = report_views.slots(await report_views.bucket_rows(s, p.start, p.end), first, last, zone)
            assert [[x.calls, x.billable, x.receivable_cents, x.payable_cents] for x in over] == want, zone
    assert sum(d[0] for d in want) > 50  # the period really has calls


async def test_reports_page_presets_comparison_drilldown_and_csv(client):
    ids = await _seed(client)
    await login(client, "finance")
    html = await (await client.get("/reports?preset=30d&tz=america/new_york")).text()
    assert '<a class="button" href="/reports?preset=30d&amp;tz=America%2FNew_York" aria-current="true">Last 30 days' in html
    for label in ("Today", "Yesterday", "Last 7 days", "Month to date", "Last month"):
        assert f">{label}</a>" in html
    today = zones.today("America/New_York")
    first = today - timedelta(days=29)
    assert f"{first}..{today} America/New_York" in html and "the period before" in html
    assert re.search(r'class="delta[^"]*">[+-]?\d+%|class="delta[^"]*">(new|±0)', html)
    for chart in ("chart-calls", "chart-rate", "chart-revenue", "chart-payout", "chart-margin", "chart-buyers"):
        assert f'id="{chart}"' in html
    # Money with its symbol and separators; a buyer's row links to its calls, and the count agrees.
    row = re.search(r'<tr><td class="name" title="Heat Co"><a href="([^"]+)">Heat Co</a></td>\s*<td class="num">'
                    r'<a href="[^"]+">([\d,]+)</a>', html)
    assert row and "$" in html and re.search(r"\$\d{1,3}(,\d{3})+\.\d\d", html)
    url, calls = row.group(1).replace("&amp;", "&"), int(row.group(2).replace(",", ""))
    assert f"buyer={ids['b']}" in url and "tz=America%2FNew_York" in url
    listed, next_url = 0, url
    while next_url:
        page = await (await client.get(next_url)).text()
        listed += page.count('href="/calls/')
        found = re.search(r'href="(/calls\?[^"]*cursor=[^"]+)"', page)
        next_url = found.group(1).replace("&amp;", "&") if found else ""
    assert listed == calls

    days_csv = await (await client.get("/reports?preset=30d&tz=America/New_York&format=csv&view=days")).text()
    lines = days_csv.strip().splitlines()
    assert lines[0] == "slot,calls,billable,billable_rate,revenue,payout,margin" and len(lines) == 31
    hours_csv = await (await client.get("/reports?preset=7d&tz=America/New_York&format=csv&view=hours")).text()
    assert len(hours_csv.strip().splitlines()) == 25
    summary = await client.get("/reports?preset=30d&format=csv")
    assert summary.headers["Content-Type"].startswith("text/csv")
    one_day = await (await client.get("/reports?preset=today")).text()
    assert "Calls per hour" in one_day and 'id="chart-hours"' in one_day
    no_cmp = await (await client.get("/reports?preset=7d&compare=0")).text()
    assert "the period before" not in no_cmp and "show the comparison" in no_cmp


async def test_refused_adjustment_keeps_the_report_and_the_minus_sign(client):
    await login(client, "finance")
    token = await csrf_of(client, "/reports")
    form = {"csrf": token, "account": "payable", "party": "Acme", "amount": "-12.5x", "reason": "duplicate lead",
            "from": "2026-11-01", "to": "2026-11-30", "tz": "America/Chicago"}
    bad = await client.post("/reports/adjust", data=form)
    html = await bad.text()
    assert bad.status == 400 and "&#39;-12.5x&#39;" in html  # what was typed, minus sign and all
    assert 'name="from" value="2026-11-01"' in html and "2026-11-01..2026-11-30 America/Chicago" in html
    assert 'value="duplicate lead"' in html and 'id="report-buyer"' in html  # tables still shown
    nobody = await client.post("/reports/adjust", data={**form, "amount": "-5", "party": "Nobody"})
    assert nobody.status == 400 and "--" not in re.sub(r"<!--.*?-->", "", await nobody.text()).split('id="adjustment"')[1]
    ok = await client.post("/reports/adjust", data={**form, "amount": "-12.50"})
    text = await ok.text()
    assert ok.status == 200 and "Adjustment of -12.50 booked" in text and "2026-11-01..2026-11-30" in text
