"""Fraud storage on SQLite and PostgreSQL: lists, campaign settings, signals, the quality report,
and a publisher crossing the flagged-rate threshold: alerted, and paused (with an audit entry) when configured."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ppcswitch import keys
from ppcswitch.storage import snapshot
from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.config import load_settings
from ppcswitch.fraud import lists, runtime, store
from ppcswitch.fraud.service import FraudService
from ppcswitch.metrics import Metrics
from ppcswitch.routing.service import Router
from ppcswitch.storage import models as t
from ppcswitch.storage import models_fraud as f
from ppcswitch.storage import models_web as w
from ppcswitch.storage import repo
from ppcswitch.storage.validate import ValidationError

NOW = datetime.now(UTC).replace(microsecond=0)


async def _network(session):
    await repo.create_campaign(session, "HVAC")
    await repo.create_publisher(session, "Shady", payout="5.00")
    await repo.create_buyer(session, "A", "sip:a@127.0.0.1:5070", revenue="20.00", min_duration=60)
    await repo.add_campaign_buyer(session, "HVAC", "A", 1)
    await repo.add_tracking_number(session, "+18005550100", "HVAC", "Shady")
    await session.commit()


async def test_lists_and_campaign_settings(session):
    await _network(session)
    await store.add_entry(session, "block", "+1 415 555")
    await store.add_entry(session, "block", "+1415555")  # the same entry twice: stored once
    await store.add_entry(session, "allow", "+14155550123", "HVAC", note="our own test line")
    with pytest.raises(ValidationError, match="E.164"):
        await store.add_entry(session, "block", "415555")
    with pytest.raises(ValidationError, match="kind"):
        await store.add_entry(session, "maybe", "+1415")
    await session.commit()
    entries = await store.list_entries(session)
    assert entries == [lists.ListEntry("block", "+1415555", None), lists.ListEntry("allow", "+14155550123", 1)]
    assert await store.remove_entry(session, "block", "+1415555") == 1
    row = await store.set_campaign(session, "HVAC", challenge=True, block_score=80)
    assert (row.challenge, row.record, row.block_score) == (True, False, 80)
    with pytest.raises(ValidationError, match="block_score"):
        await store.set_campaign(session, "HVAC", block_score=101)
    assert (await store.campaign_settings(session))[1].challenge is True


async def test_signals_stored_once_and_the_quality_report(session):
    await _network(session)
    base = dict(started_at=NOW, caller="+14155550123", publisher_id=1, campaign_id=1, buyer_id=1, connected=True,
                score=50, flagged=True, flags=["repeat_caller_publishers", "attestation_none"],
                explanation=[{"signal": "repeat_caller_publishers", "points": 35, "detail": ""}], attestation="",
                near_threshold=True, caller_talk_ms=0, buyer_talk_ms=1200, challenge="", recording="")
    await store.save_signals(session, dict(base, linkedid="1"))
    await store.save_signals(session, dict(base, linkedid="1", score=99))  # replay: unchanged
    await store.save_signals(session, dict(base, linkedid="2", score=0, flagged=False, flags=[], attestation="A",
                                           near_threshold=False))
    await session.commit()
    got = await store.get_signals(session, "1")
    assert got["score"] == 50 and got["flags"][0] == "repeat_caller_publishers" and got["attestation"] == "none"
    [row] = await store.publisher_quality(session, NOW - timedelta(days=1))
    assert row == {"publisher_id": 1, "calls": 2, "flagged": 1, "flagged_rate": 0.5, "connected": 2,
                   "near_threshold": 1, "threshold_share": 0.5, "repeat_callers": 1, "repeat_rate": 0.5,
                   "attestation": {"A": 1, "B": 0, "C": 0, "none": 1}}


def _record(i: int, caller: str) -> CallRecord:
    return CallRecord(linkedid=f"c{i}", tracking_number="+18005550100", caller=caller, caller_valid=True,
                      started_at=NOW, ended_at=NOW + timedelta(seconds=90), outcome=Outcome.CONNECTED,
                      publisher_id=1, campaign_id=1, buyer_id=1, answered_at=NOW, connected_ms=90_000,
                      attempts=[Attempt(1, 1, "ANSWER")])


@pytest.mark.parametrize("auto_pause", [True, False])
async def test_publisher_crossing_the_flagged_rate_is_alerted_and_paused_when_configured(
        sessionmaker, writer, auto_pause):
    async with sessionmaker() as s:
        await _network(s)
        network = await snapshot.load_network(s, load_settings(env={}).routing)
    settings = load_settings(env={"PPCSWITCH_FRAUD_ALERT_MIN_CALLS": "4", "PPCSWITCH_FRAUD_ALERT_FLAGGED_RATE": "0.5",
                                  "PPCSWITCH_FRAUD_AUTO_PAUSE": str(auto_pause).lower()})
    router = Router(network)
    app = {keys.FRAUD: FraudService(settings.fraud), "router": router, "writer": writer, "metrics": Metrics(),
           "settings": settings}
    stored = []
    hook = runtime.wrap(app, stored.append, lambda: type("T", (), {"signals": {}})(), "router", "writer", "metrics",
                        "settings")
    # Two good callers, then two from an unassigned range (flagged: 40 points each, flag_score 40).
    for i, caller in enumerate(["+14155550123", "+12125550123", "+15555550100", "+15555550101"]):
        hook(_record(i, caller))
    await writer.run(lambda s: asyncio.sleep(0))  # every job queued before this one has run
    assert [r.quality_score for r in stored] == [0, 0, 40, 40]
    async with sessionmaker() as s:
        [alert] = list(await s.scalars(select(f.FraudAlert)))
        assert (alert.kind, alert.subject_id, alert.bad, alert.total, alert.threshold_permille) == (
            "publisher_flagged_rate", 1, 2, 4, 500)
        assert alert.paused is auto_pause
        assert (await s.get(t.Publisher, 1)).paused is auto_pause
        audit = list(await s.scalars(select(w.AuditEntry).where(w.AuditEntry.action == "publisher.auto_pause")))
        assert len(audit) == (1 if auto_pause else 0)
        assert len(list(await s.scalars(select(f.CallSignals)))) == 4
    assert "alert:publisher_flagged_rate" in app["metrics"].render().decode()
