"""Shared helpers of the panel and API tests: an app on a real database, users, logins."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ppcswitch.app import create_app
from ppcswitch import app as core
from ppcswitch.calls import Attempt, CallRecord
from ppcswitch.config import load_settings
from ppcswitch.storage import repo
from ppcswitch.web import store

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def make_app(db_url: str) -> web.Application:
    return create_app(load_settings(env={"PPCSWITCH_DATABASE_URL": db_url}), telephony=False, attribution_service=False)


async def start(db_url: str, **server_args) -> TestClient:
    """The app on a test server; `server_args` go to aiohttp's request handler (e.g. max_line_size)."""
    client = TestClient(TestServer(make_app(db_url), **server_args))
    await client.start_server()
    app = client.server.app

    async def seed(s):
        for role in ("admin", "finance", "noc"):
            await store.create_user(s, role, PASSWORD, role)
        await repo.create_campaign(s, "HVAC")
        await repo.create_publisher(s, "Acme", payout="12.50")

    await app[core.WRITER].run(seed)
    return client


async def login(client: TestClient, username: str, password: str = PASSWORD, next_: str = "/"):
    page = await client.get("/login")
    token = CSRF_RE.search(await page.text()).group(1)
    return await client.post("/login", data={"csrf": token, "username": username, "password": password,
                                             "next": next_}, allow_redirects=False)


async def csrf_of(client: TestClient, path: str = "/") -> str:
    return CSRF_RE.search(await (await client.get(path)).text()).group(1)


async def token_for(client: TestClient, username: str, role: str | None = None) -> str:
    async def job(s):
        user = await store.user_by_name(s, username)
        return (await store.create_token(s, user, f"{username}-test", role))[1]

    return await client.server.app[core.WRITER].run(job)


def call_record(i: int, *, started: datetime | None = None, billable: bool = True, buyer_id=None,
                campaign_id=None, publisher_id=None, caller: str = "+14155550123") -> CallRecord:
    started = started or datetime.now(timezone.utc) - timedelta(minutes=i)
    return CallRecord(linkedid=f"lid-{i}", tracking_number="+18005550100", caller=caller, caller_valid=True,
                      started_at=started, ended_at=started + timedelta(seconds=90), outcome="connected",
                      campaign_id=campaign_id, publisher_id=publisher_id, buyer_id=buyer_id,
                      answered_at=started + timedelta(seconds=5), connected_ms=85000, hangup_cause=16,
                      billable=billable, billing_reasons=[] if billable else ["duration_below_minimum:47<60"],
                      revenue_cents=4000 if billable else 0, payout_cents=1250 if billable else 0,
                      attempts=[Attempt(seq=1, buyer_id=buyer_id, dial_status="ANSWER", started_at=started,
                                        answered_at=started + timedelta(seconds=5),
                                        ended_at=started + timedelta(seconds=90))])
