"""`python -m ppcswitch` storage commands, run as real subprocesses on a temp SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ppcswitch.storage import snapshot
from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.config import RoutingSettings
from ppcswitch.storage import repo
from ppcswitch.storage.db import make_engine, make_sessionmaker, upgrade

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/data/ppcswitch.db"

    def run(*args: str, expect: int | None = 0, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PPCSWITCH_")}
        environ.update(PPCSWITCH_DATABASE_URL=url, PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        environ.update(env)
        proc = subprocess.run([sys.executable, "-m", "ppcswitch", *args], capture_output=True, text=True,
                              env=environ, cwd=ROOT, timeout=60)
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (args, proc.stdout, proc.stderr)
        return proc

    run.url = url
    return run


async def _with_session(url: str, fn):
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await fn(session)
    finally:
        await engine.dispose()


def query(url: str, fn):
    return asyncio.run(_with_session(url, fn))


def network(url: str):
    return query(url, lambda s: snapshot.load_network(s, RoutingSettings()))


def test_build_a_network(cli):
    from ppcswitch.storage.db import head_revision

    assert f"revision {head_revision()}" in cli("db", "upgrade").stdout
    assert "campaign 'HVAC' created" in cli("campaign", "add", "HVAC").stdout
    assert "payout 12.50" in cli("publisher", "add", "Acme Leads", "--payout", "12.5").stdout
    out = cli("buyer", "add", "Buyer A", "--destination", "sip:buyer-a@127.0.0.1:5071", "--revenue", "40.00",
              "--cap", "3", "--ring-timeout", "15", "--min-duration", "90").stdout
    assert "revenue 40.00" in out
    cli("buyer", "add", "Buyer B", "--destination", "pjsip:buyer-b", "--paused")
    cli("campaign", "add-buyer", "HVAC", "Buyer B")
    cli("campaign", "add-buyer", "HVAC", "Buyer A", "--priority", "2")
    assert "+18005550100" in cli("number", "add", "(800) 555-0100", "--campaign", "HVAC",
                                 "--publisher", "Acme Leads").stdout
    assert "paused" in cli("buyer", "pause", "Buyer A").stdout
    assert "resumed" in cli("buyer", "resume", "Buyer B").stdout

    net = network(cli.url)
    buyers = {b.name: b for b in net.buyers.values()}
    a, b = buyers["Buyer A"], buyers["Buyer B"]
    assert (a.dial_target, a.revenue_cents, a.concurrency_cap, a.ring_timeout, a.min_duration, a.paused) == (
        "PJSIP/ppcswitch-buyer/sip:buyer-a@127.0.0.1:5071", 4000, 3, 15, 90, True)
    assert (b.dial_target, b.paused) == ("PJSIP/buyer-b", False)
    (hvac,) = net.campaigns.values()
    assert [(cb.buyer_id, cb.priority) for cb in hvac.buyers] == [(b.id, 1), (a.id, 2)]
    (pub,) = net.publishers.values()
    assert pub.payout_cents == 1250
    assert net.numbers["+18005550100"].campaign_id == hvac.id
    assert net.version == 9  # one bump per command


@pytest.mark.parametrize("args, message", [
    (["publisher", "add", "P", "--payout", "12.345"], "payout: has more than 2 decimal places"),
    (["publisher", "add", "P", "--payout", "abc"], "payout: is not a decimal amount"),
    (["publisher", "add", "P", "--payout", "NaN"], "payout: must be a finite amount"),
    (["buyer", "add", "B", "--destination", "sip:b@h", "--revenue", "-40"], "revenue: must not be negative"),
    (["buyer", "add", "B", "--destination", "sip:a@b,tT"], "destination: is not an accepted destination"),
    (["buyer", "add", "B", "--destination", "sip:a@b&PJSIP/x"], "destination: is not an accepted destination"),
    (["buyer", "add", "B", "--destination", "sip:b@h", "--cap", "0"], "concurrency_cap: must be from 1 to 10000"),
    (["buyer", "add", "B", "--destination", "sip:b@h", "--ring-timeout", "x"], "ring_timeout: must be a whole"),
    (["buyer", "pause", "Nobody"], "buyer: no buyer named 'Nobody'"),
    (["campaign", "add", ""], "name: must not be empty"),
    (["campaign", "add", "HVAC"], "name: a campaign named 'HVAC' already exists"),
    (["campaign", "add-buyer", "Nope", "A"], "campaign: no campaign named 'Nope'"),
    (["campaign", "add-buyer", "HVAC", "A", "--priority", "0"], "priority: must be from 1 to 1000"),
    (["number", "add", "+18005550111", "--campaign", "Nope", "--publisher", "P0"], "campaign: no campaign named"),
    (["number", "add", "+15555550100", "--campaign", "HVAC", "--publisher", "P0"], "number: is not a valid phone"),
    (["calls", "list", "--limit", "0"], "limit: must be from 1"),
])
def test_bad_input_exits_2(cli, args, message):
    async def setup(session):
        await repo.create_campaign(session, "HVAC")
        await repo.create_publisher(session, "P0")
        await repo.create_buyer(session, "A", "pjsip:a")
        await session.commit()

    asyncio.run(upgrade(cli.url))
    query(cli.url, setup)
    before = network(cli.url).version
    proc = cli(*args, expect=2)
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1  # one clear line
    assert network(cli.url).version == before


def test_argparse_errors_exit_2(cli):
    proc = cli("buyer", "add", "B", expect=2)
    assert "--destination" in proc.stderr


def test_database_errors_exit_1(cli):
    proc = cli("campaign", "add", "X", expect=1, PPCSWITCH_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:1/x")
    assert "database error" in proc.stderr
    proc = cli("campaign", "add", "X", expect=1, PPCSWITCH_DATABASE_AUTO_MIGRATE="false")
    assert "database error" in proc.stderr and "no such table" in proc.stderr


def test_calls_list(cli):
    assert cli("calls", "list", "--json").stdout.strip() == "[]"
    assert "no calls" in cli("calls", "list").stdout
    t0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    records = [
        CallRecord("1709294400.7", "+18005550100", "+12025550123", True, t0, t0 + timedelta(seconds=95),
                   Outcome.CONNECTED, publisher_id=1, campaign_id=1, buyer_id=2, answered_at=t0 + timedelta(seconds=5),
                   connected_ms=90_500, hangup_cause=16, hangup_cause_text="Normal Clearing", billable=True,
                   revenue_cents=4000, payout_cents=1250,
                   attempts=[Attempt(1, 2, "ANSWER", t0, t0 + timedelta(seconds=5), t0 + timedelta(seconds=95))]),
        CallRecord("1709294500.9", "+18005550100", "anonymous", False, t0 + timedelta(minutes=5),
                   t0 + timedelta(minutes=5, seconds=1), Outcome.REJECTED, reject_reason="anonymous caller",
                   billing_reasons=["not connected"]),
    ]

    async def save(session):
        for r in records:
            await repo.save_call(session, r)
        await session.commit()

    asyncio.run(upgrade(cli.url))
    query(cli.url, save)
    data = json.loads(cli("calls", "list", "--json").stdout)
    assert [d["linkedid"] for d in data] == ["1709294500.9", "1709294400.7"]  # newest first
    # Every record field, plus the routing trace the CLI adds alongside.
    assert set(data[0]) - {"routing"} == {f.name for f in dataclasses.fields(CallRecord)}
    first = data[1]
    assert datetime.fromisoformat(first["started_at"]) == t0
    assert first["started_at"].endswith("+00:00")
    assert (first["revenue_cents"], first["payout_cents"], first["connected_ms"]) == (4000, 1250, 90_500)
    assert first["attempts"] == [{"seq": 1, "buyer_id": 2, "dial_status": "ANSWER",
                                  "started_at": t0.isoformat(), "answered_at": (t0 + timedelta(seconds=5)).isoformat(),
                                  "ended_at": (t0 + timedelta(seconds=95)).isoformat()}]
    assert data[0]["billing_reasons"] == ["not connected"] and data[0]["answered_at"] is None
    assert len(json.loads(cli("calls", "list", "--json", "--limit", "1").stdout)) == 1
    text = cli("calls", "list").stdout
    assert "1709294400.7" in text and "rev 40.00 pay 12.50" in text


def test_demo_seed_is_idempotent(cli):
    out = cli("demo", "seed").stdout
    assert "created" in out
    net = network(cli.url)
    assert "nothing changed" in cli("demo", "seed").stdout
    assert network(cli.url) == net

    buyers = {b.name: b for b in net.buyers.values()}
    a, b = buyers["Buyer A"], buyers["Buyer B"]
    assert (a.dial_target, a.revenue_cents, a.min_duration, a.ring_timeout, a.concurrency_cap) == (
        "PJSIP/ppcswitch-buyer/sip:buyer-a@127.0.0.1:5071", 4000, 60, 15, 10)
    assert (b.dial_target, b.revenue_cents, b.min_duration, b.ring_timeout, b.concurrency_cap) == (
        "PJSIP/ppcswitch-buyer/sip:buyer-b@127.0.0.1:5072", 3500, 60, 15, None)
    (hvac,) = net.campaigns.values()
    assert hvac.name == "HVAC"
    assert [(cb.buyer_id, cb.priority) for cb in hvac.buyers] == [(a.id, 1), (b.id, 2)]
    (pub,) = net.publishers.values()
    assert (pub.name, pub.payout_cents) == ("Demo Publisher", 1000)
    assert net.numbers["+18005550100"].campaign_id == hvac.id
    assert net.numbers["+18005550100"].publisher_id == pub.id


def test_demo_seed_completes_a_partial_network(cli):
    cli("buyer", "add", "Buyer B", "--destination", "pjsip:custom-b")  # kept as it is
    cli("demo", "seed")
    buyers = {b.name: b for b in network(cli.url).buyers.values()}
    assert buyers["Buyer B"].dial_target == "PJSIP/custom-b"
    assert "Buyer A" in buyers
