"""Fraud storage: lists, campaign settings, per-call signals, alerts, the per-publisher quality report.

Functions take an AsyncSession and never commit (the caller's transaction, or a Writer job).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ppcswitch.fraud import lists
from ppcswitch.fraud.alerts import Alert, BUYER_UNANSWERED
from ppcswitch.fraud.lists import CampaignScreening
from ppcswitch.storage import models_fraud as f
from ppcswitch.storage import repo
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import store as web_store


# --- lists and campaign settings ------------------------------------------------

async def add_entry(session: AsyncSession, kind: str, pattern: str, campaign=None, note: str = "") -> f.FraudListEntry:
    if kind not in lists.KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(lists.KINDS)}")
    try:
        pattern = lists.clean_pattern(pattern)
    except lists.ListError as exc:
        raise ValidationError("pattern", str(exc)) from None
    campaign_id = (await repo.get_campaign(session, campaign)).id if campaign not in (None, "") else None
    existing = await session.scalar(select(f.FraudListEntry).where(
        f.FraudListEntry.kind == kind, f.FraudListEntry.pattern == pattern,
        f.FraudListEntry.campaign_id.is_(None) if campaign_id is None else f.FraudListEntry.campaign_id == campaign_id))
    if existing is not None:
        return existing
    row = f.FraudListEntry(kind=kind, pattern=pattern, campaign_id=campaign_id, note=(note or "")[:200])
    session.add(row)
    await session.flush()
    return row


async def remove_entry(session: AsyncSession, kind: str, pattern: str, campaign=None) -> int:
    try:
        pattern = lists.clean_pattern(pattern)
    except lists.ListError as exc:
        raise ValidationError("pattern", str(exc)) from None
    campaign_id = (await repo.get_campaign(session, campaign)).id if campaign not in (None, "") else None
    result = await session.execute(delete(f.FraudListEntry).where(
        f.FraudListEntry.kind == kind, f.FraudListEntry.pattern == pattern,
        f.FraudListEntry.campaign_id.is_(None) if campaign_id is None else f.FraudListEntry.campaign_id == campaign_id))
    return result.rowcount or 0


async def list_entries(session: AsyncSession) -> list[lists.ListEntry]:
    rows = await session.scalars(select(f.FraudListEntry).order_by(f.FraudListEntry.id))
    return [lists.ListEntry(r.kind, r.pattern, r.campaign_id) for r in rows]


async def set_campaign(session: AsyncSession, campaign, *, challenge: bool | None = None, record: bool | None = None,
                       block_score: int | None | str = "unset") -> f.CampaignFraud:
    c = await repo.get_campaign(session, campaign)
    row = await session.get(f.CampaignFraud, c.id)
    if row is None:
        row = f.CampaignFraud(campaign_id=c.id, challenge=False, record=False, block_score=None)
        session.add(row)
    if challenge is not None:
        row.challenge = bool(challenge)
    if record is not None:
        row.record = bool(record)
    if block_score != "unset":
        if block_score is not None and not (isinstance(block_score, int) and 0 < block_score <= 100):
            raise ValidationError("block_score", "a whole number from 1 to 100, or none")
        row.block_score = block_score
    await session.flush()
    return row


async def campaign_settings(session: AsyncSession) -> dict[int, CampaignScreening]:
    rows = await session.scalars(select(f.CampaignFraud))
    return {r.campaign_id: CampaignScreening(r.challenge, r.record, r.block_score) for r in rows}


# --- per call --------------------------------------------------------------------

_SIGNALS_INSERTS: dict[str, Any] = {}


def save_signals_sync(session: Session, row: dict) -> None:
    dialect = session.get_bind().dialect.name
    stmt = _SIGNALS_INSERTS.get(dialect)
    if stmt is None:  # a replayed record is stored once (linkedid is unique)
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        stmt = _SIGNALS_INSERTS[dialect] = insert(f.CallSignals.__table__).on_conflict_do_nothing(
            index_elements=["linkedid"])
    session.connection().execute(stmt, dict(row, flags=json.dumps(row["flags"]),
                                            explanation=json.dumps(row["explanation"])))


def save_signals_many_sync(session: Session, rows: list[dict]) -> list[None]:
    """save_signals_sync for many calls, one multi-row statement per shape of row (writer bulk jobs)."""
    if not rows:
        return []
    save_signals_sync(session, rows[0])  # builds the statement; the rest in bulk
    stmt = _SIGNALS_INSERTS[session.get_bind().dialect.name]
    shapes: dict[tuple, list[dict]] = {}
    for row in rows[1:]:
        shapes.setdefault(tuple(sorted(row)), []).append(
            dict(row, flags=json.dumps(row["flags"]), explanation=json.dumps(row["explanation"])))
    for params in shapes.values():
        session.connection().execute(stmt, params)
    return [None] * len(rows)


async def save_signals(session: AsyncSession, row: dict) -> None:
    await session.run_sync(save_signals_sync, row)


def signals_dict(row: f.CallSignals | None) -> dict | None:
    if row is None:
        return None
    return {"score": row.score, "flagged": row.flagged, "flags": json.loads(row.flags or "[]"),
            "explanation": json.loads(row.explanation or "[]"), "attestation": row.attestation or "none",
            "near_threshold": row.near_threshold, "caller_talk_ms": row.caller_talk_ms,
            "buyer_talk_ms": row.buyer_talk_ms, "challenge": row.challenge, "recording": row.recording}


async def get_signals(session: AsyncSession, linkedid: str) -> dict | None:
    return signals_dict(await session.scalar(select(f.CallSignals).where(f.CallSignals.linkedid == linkedid)))


async def recent_callers(session: AsyncSession, since: datetime) -> list[tuple[str, datetime, int | None]]:
    rows = await session.execute(select(f.CallSignals.caller, f.CallSignals.started_at, f.CallSignals.publisher_id)
                                 .where(f.CallSignals.started_at >= since).order_by(f.CallSignals.started_at))
    return [(c, s, p) for c, s, p in rows]


# --- alerts ------------------------------------------------------------------------

async def save_alert(session: AsyncSession, alert: Alert, pause: bool) -> f.FraudAlert:
    """Store an alert; with `pause`, pause its publisher (or buyer) with an audit entry."""
    paused = False
    if pause:
        if alert.kind == BUYER_UNANSWERED:
            await repo.set_buyer_paused(session, alert.subject_id, True)
        else:
            await repo.set_publisher_paused(session, alert.subject_id, True)
        paused = True
        web_store.audit(session, "ppcswitch", "fraud", f"{'buyer' if alert.kind == BUYER_UNANSWERED else 'publisher'}.auto_pause",
                        alert.subject_id, {"alert": alert.kind, "bad": alert.bad, "total": alert.total,
                                           "threshold": alert.threshold})
    row = f.FraudAlert(at=datetime.now(timezone.utc), kind=alert.kind, subject_id=alert.subject_id, bad=alert.bad,
                       total=alert.total, threshold_permille=round(alert.threshold * 1000), paused=paused)
    session.add(row)
    await session.flush()
    return row


async def open_alerts(session: AsyncSession, limit: int = 20) -> list[f.FraudAlert]:
    return list(await session.scalars(select(f.FraudAlert).where(f.FraudAlert.acknowledged.is_(False))
                                      .order_by(f.FraudAlert.id.desc()).limit(limit)))


# --- quality report ----------------------------------------------------------------

async def publisher_quality(session: AsyncSession, since: datetime | None = None) -> list[dict]:
    """Per publisher: calls, flagged rate, attestation mix, threshold clustering, duplicate (repeat) rate."""
    since = since or datetime.now(timezone.utc) - timedelta(days=7)
    s = f.CallSignals
    repeat = func.sum(case((s.flags.like('%"repeat_caller_publishers"%'), 1), else_=0))
    q = select(s.publisher_id, func.count(), func.sum(case((s.flagged, 1), else_=0)),
               func.sum(case((s.connected, 1), else_=0)), func.sum(case((s.near_threshold, 1), else_=0)), repeat,
               *[func.sum(case((s.attestation == lvl, 1), else_=0)) for lvl in ("A", "B", "C", "")]) \
        .where(s.started_at >= since).group_by(s.publisher_id).order_by(s.publisher_id)
    out = []
    for pub, calls, flagged, connected, near, rep, a, b, c, none in await session.execute(q):
        calls, connected = int(calls or 0), int(connected or 0)
        out.append({"publisher_id": pub, "calls": calls, "flagged": int(flagged or 0),
                    "flagged_rate": round(int(flagged or 0) / calls, 4) if calls else 0.0,
                    "connected": connected, "near_threshold": int(near or 0),
                    "threshold_share": round(int(near or 0) / connected, 4) if connected else 0.0,
                    "repeat_callers": int(rep or 0), "repeat_rate": round(int(rep or 0) / calls, 4) if calls else 0.0,
                    "attestation": {"A": int(a or 0), "B": int(b or 0), "C": int(c or 0), "none": int(none or 0)}})
    return out


async def expired_recordings(session: AsyncSession, before: datetime) -> list[tuple[int, str]]:
    rows = await session.execute(select(f.CallSignals.id, f.CallSignals.recording)
                                 .where(f.CallSignals.recording != "", f.CallSignals.started_at < before))
    return [(i, r) for i, r in rows]


async def forget_recordings(session: AsyncSession, ids: list[int]) -> None:
    for i in ids:
        row = await session.get(f.CallSignals, i)
        if row is not None:
            row.recording = ""
    await session.flush()
