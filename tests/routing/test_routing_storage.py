"""Routing rules, RTB settings, campaign options and traces in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ppcswitch.calls import CallRecord
from ppcswitch.config import RoutingSettings
from ppcswitch.routing.service import Router
from ppcswitch.storage import repo, repo_routing, snapshot
from ppcswitch.storage.validate import ValidationError


async def seed(session):
    await repo.create_campaign(session, "HVAC")
    await repo.create_publisher(session, "Pub")
    await repo.create_buyer(session, "A", "sip:a@127.0.0.1:5071", revenue="40.00")
    await repo.create_buyer(session, "B", "sip:b@127.0.0.1:5072")
    await repo.add_campaign_buyer(session, "HVAC", "A", 1)
    await repo.add_campaign_buyer(session, "HVAC", "B", 2)
    await repo.add_tracking_number(session, "+18005550100", "HVAC", "Pub")


async def test_rules_overrides_rtb_and_options_reach_the_snapshot(session):
    await seed(session)
    v0 = await repo.config_version(session)
    await repo_routing.set_buyer_rules(session, "A", {"timezone": "America/Chicago", "hours": "mon-fri 09:00-17:00",
                                                      "states_allowed": ["tx", "OK"], "cap_daily": 20,
                                                      "budget_daily": "800.00"})
    await repo_routing.set_buyer_rules(session, "A", {"cap_daily": 5, "weight": 3, "priority": 3}, campaign="HVAC")
    await repo_routing.set_buyer_rtb(session, "B", "http://127.0.0.1:9000/ping", post_url="http://127.0.0.1:9000/post",
                                     timeout_ms=250, floor="10.00")
    await repo_routing.set_campaign_routing(session, "HVAC", zip_prompt=True, repeat_caller=True,
                                            whisper="custom/hvac-whisper", rtb_budget_ms=800)
    assert await repo.config_version(session) == v0 + 4  # every write is seen by a running controller
    net = await snapshot.load_network(session, RoutingSettings())
    ids = {b.name: b.id for b in net.buyers.values()}
    a = net.buyers[ids["A"]]
    assert a.rules.timezone == "America/Chicago" and a.rules.cap_daily == 20
    assert a.rules.states_allowed == {"TX", "OK"} and a.rules.budget_daily_cents == 80000
    campaign = next(iter(net.campaigns.values()))
    link = campaign.links[ids["A"]]
    assert link.rules.cap_daily == 5 and link.rules.weight == 3 and link.rules.timezone == "America/Chicago"
    assert [b.buyer_id for b in campaign.buyers] == [ids["B"], ids["A"]]  # the link's priority 3 moved A last
    b = net.buyers[ids["B"]]
    assert b.rtb.ping_url.endswith("/ping") and b.rtb.timeout == 0.25 and b.rtb.floor_cents == 1000
    assert campaign.zip_prompt and campaign.repeat_caller and campaign.whisper == "custom/hvac-whisper"
    assert campaign.rtb_budget == 0.8
    # Removing a rule: None drops it.
    assert "cap_daily" not in await repo_routing.set_buyer_rules(session, "A", {"cap_daily": None})
    assert await repo_routing.get_buyer_rules(session, "A", "HVAC") == {"cap_daily": 5, "weight": 3, "priority": 3}


@pytest.mark.parametrize("call,field", [
    (lambda s: repo_routing.set_buyer_rules(s, "A", {"hours": "mon 9-5"}), "hours"),
    (lambda s: repo_routing.set_buyer_rules(s, "A", {"timezone": "Nowhere/City"}), "timezone"),
    (lambda s: repo_routing.set_buyer_rules(s, "A", {"bogus": 1}), "bogus"),
    (lambda s: repo_routing.set_buyer_rules(s, "Nobody", {}), "buyer"),
    (lambda s: repo_routing.set_buyer_rtb(s, "B", "ftp://x/"), "ping_url"),
    (lambda s: repo_routing.set_buyer_rtb(s, "B", "http://x/", timeout_ms="0"), "timeout_ms"),
    (lambda s: repo_routing.set_campaign_routing(s, "HVAC", whisper="x,Dial(evil)"), "whisper"),
    (lambda s: repo_routing.set_campaign_routing(s, "HVAC", rtb_budget_ms="9"), "rtb_budget_ms"),
])
async def test_bad_rule_input_is_refused_and_changes_nothing(session, call, field):
    await seed(session)
    v0 = await repo.config_version(session)
    with pytest.raises(ValidationError) as exc:
        await call(session)
    assert exc.value.field == field
    assert await repo.config_version(session) == v0


async def test_counters_rebuilt_from_stored_calls_and_traces_read_back(session):
    await seed(session)
    await repo_routing.set_buyer_rules(session, "A", {"cap_daily": 2, "duplicate_days": 30})
    net = await snapshot.load_network(session, RoutingSettings())
    a = next(b.id for b in net.buyers.values() if b.name == "A")
    now = datetime.now(UTC)
    for i, caller in enumerate(("+14155550001", "+14155550002")):
        t0 = now - timedelta(minutes=10 + i)
        await repo.save_call(session, CallRecord(f"L{i}", "+18005550100", caller, True, t0, t0 + timedelta(seconds=90),
                                                 "connected", buyer_id=a, answered_at=t0 + timedelta(seconds=5),
                                                 connected_ms=85_000, revenue_cents=4000))
    await repo_routing.save_trace(session, "L0", {"winner": a, "skipped": []})
    assert await repo_routing.save_trace(session, "L0", {"winner": 0}) is False  # stored once
    assert (await repo_routing.get_trace(session, "L0"))["winner"] == a
    assert await repo_routing.get_traces(session, ["L0", "L1"]) == {"L0": {"winner": a, "skipped": []}}

    router = Router(net, rng=random.Random(1))
    assert await repo_routing.load_history(session, router) == 2
    v = router.first("N1", router.facts("+18005550100", "+14155550009"))
    assert router.routes.get("N1").decision.trace == [(a, "cap_daily:2")]  # the restart kept the count
    assert router.counters.total[a] == 2 and router.counters.last_delivery("+14155550001", a) is not None
    assert v["PPC_BUYER_ID"] != str(a)
