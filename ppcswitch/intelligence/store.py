"""Call intelligence storage: the transcription queue (rows of `transcripts` by status), results,
phrase rules, search, the QC view and retention.

Functions take a session and never commit (a Writer job or the caller's transaction).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ppcswitch.billing.reports import Period
from ppcswitch.intelligence import rules as pr
from ppcswitch.storage import models as t
from ppcswitch.storage import models_billing as b
from ppcswitch.storage import models_fraud as f
from ppcswitch.storage import repo
from ppcswitch.storage.models_intelligence import DONE, FAILED, PENDING, RUNNING, SKIPPED, PhraseRule, Transcript
from ppcswitch.storage.validate import ValidationError

RERATE_USER = "intelligence"
_INSERTS: dict[str, Any] = {}


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- the queue -------------------------------------------------------------------

def enqueue_sync(session: Session, linkedid: str, started_at: datetime, campaign_id: int | None,
                 publisher_id: int | None, recording: str, status: str = PENDING, error: str = "") -> None:
    """One row per recorded call (a replayed call changes nothing)."""
    dialect = session.get_bind().dialect.name
    stmt = _INSERTS.get(dialect)
    if stmt is None:
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        stmt = _INSERTS[dialect] = insert(Transcript.__table__).on_conflict_do_nothing(index_elements=["linkedid"])
    now = _now()
    session.connection().execute(stmt, dict(
        linkedid=linkedid, started_at=started_at, campaign_id=campaign_id, publisher_id=publisher_id,
        recording=recording, status=status, enqueued_at=now, next_try_at=now, attempts=0, error=error[:300],
        engine="", segments="[]", text="", redactions=0, audio_ms=0, cpu_ms=0, caller_speech_ms=0,
        buyer_speech_ms=0, dispositions="[]", score_reasons="[]"))


async def enqueue(session: AsyncSession, *args, **kwargs) -> None:
    await session.run_sync(lambda s: enqueue_sync(s, *args, **kwargs))


async def requeue_running(session: AsyncSession) -> int:
    """At start: jobs a stopped controller was working on go back to the queue."""
    res = await session.execute(update(Transcript).where(Transcript.status == RUNNING).values(status=PENDING))
    return res.rowcount or 0


async def due(session: AsyncSession, limit: int, now: datetime | None = None) -> list[Transcript]:
    now = now or _now()
    return list(await session.scalars(select(Transcript).where(
        Transcript.status == PENDING, Transcript.next_try_at <= now).order_by(Transcript.id).limit(limit)))


async def mark_running(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(update(Transcript).where(Transcript.id.in_(ids), Transcript.status == PENDING)
                          .values(status=RUNNING))


async def retry_later(session: AsyncSession, job_id: int, error: str, max_attempts: int, retry_seconds: float,
                      final: bool = False) -> str:
    row = await session.get(Transcript, job_id)
    if row is None:
        return ""
    row.attempts += 1
    row.error = error[:300]
    if final or row.attempts >= max_attempts:
        row.status = FAILED
    else:
        row.status = PENDING
        row.next_try_at = _now() + timedelta(seconds=min(3600.0, retry_seconds * 2 ** (row.attempts - 1)))
    await session.flush()
    return row.status


async def queue_stats(session: AsyncSession) -> tuple[int, datetime | None]:
    """(calls waiting or being transcribed, when the oldest of them was queued)."""
    n, oldest = (await session.execute(select(func.count(), func.min(Transcript.enqueued_at))
                                       .where(Transcript.status.in_((PENDING, RUNNING))))).one()
    if isinstance(oldest, str):  # SQLite aggregate: no type processing
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=timezone.utc)
    elif oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=timezone.utc)
    return int(n or 0), oldest


# --- results ---------------------------------------------------------------------

def lines_text(segments: list[dict]) -> str:
    return "\n".join(f"{s['side']}: {s['text']}" for s in segments)


async def fraud_of(session: AsyncSession, linkedid: str) -> tuple[int | None, list[str]]:
    row = (await session.execute(select(f.CallSignals.score, f.CallSignals.flags)
                                 .where(f.CallSignals.linkedid == linkedid))).first()
    return (row[0], json.loads(row[1] or "[]")) if row else (None, [])


async def save_result(session: AsyncSession, job_id: int, result: dict, hits: list[pr.Hit], score: pr.AiScore,
                      now: datetime | None = None) -> dict:
    """Store the transcript, give the call's billing decision its AI score and dispositions, and
    re-rate the call with the same rules engine (differences booked through the ledger).

    A call not settled yet (it waits for an earlier call of its caller, or its record is still in the
    writer's queue) gets its facts later, from `rate_settled` (the runtime runs it every minute)."""
    now = now or _now()
    row = await session.get(Transcript, job_id)
    if row is None:
        return {}
    names = [h.disposition for h in hits]
    row.status, row.error, row.engine, row.transcribed_at = DONE, result.get("error", "")[:300], result["engine"][:100], now
    row.attempts += 1
    row.segments = json.dumps(result["segments"])
    row.text = lines_text(result["segments"])
    row.redactions, row.audio_ms, row.cpu_ms = result["redactions"], result["audio_ms"], result["cpu_ms"]
    row.caller_speech_ms, row.buyer_speech_ms = result["caller_speech_ms"], result["buyer_speech_ms"]
    row.dispositions = json.dumps(names)
    row.ai_score, row.score_reasons = score.value, json.dumps(score.reasons)
    await session.flush()
    decision = await session.scalar(select(b.BillingDecision).where(b.BillingDecision.linkedid == row.linkedid))
    if decision is None:
        return {"linkedid": row.linkedid, "unrated": True}
    return {"linkedid": row.linkedid, "rerated": await _rate(session, decision, score.value, names, now)}


async def _rate(session: AsyncSession, decision: b.BillingDecision, ai_score: int, names: list[str], now: datetime):
    from ppcswitch.billing.rerate import rerate

    decision.ai_score, decision.dispositions = ai_score, json.dumps(names)
    await session.flush()
    at = decision.started_at
    res = await rerate(session, Period(at, at + timedelta(microseconds=1)), apply=True, user=RERATE_USER,
                       now=now, linkedids=[decision.linkedid])
    change = res.changes[0] if res.changes else None
    if change is not None and (change.revenue_delta_cents < 0 or change.payout_delta_cents < 0):
        # Money taken back: whoever was told "billed" hears "reversed", as after a dispute (same transaction).
        from ppcswitch.attribution import store as attribution_store

        await attribution_store.enqueue_reversal(session, decision.linkedid, min(0, change.revenue_delta_cents),
                                                 min(0, change.payout_delta_cents))
    return change


async def rate_settled(session: AsyncSession, since: datetime, now: datetime | None = None) -> list:
    """Transcripts stored before their call was settled: the call's decision gets the AI score and
    dispositions now, and the call is re-rated. Returns the changes booked."""
    now = now or _now()
    rows = (await session.execute(
        select(Transcript.ai_score, Transcript.dispositions, b.BillingDecision)
        .join(b.BillingDecision, b.BillingDecision.linkedid == Transcript.linkedid)
        .where(Transcript.status == DONE, Transcript.ai_score.is_not(None), Transcript.started_at >= since,
               b.BillingDecision.ai_score.is_(None)).limit(500))).all()
    out = []
    for ai_score, names, decision in rows:
        changed = await _rate(session, decision, ai_score, json.loads(names or "[]"), now)
        if changed is not None:
            out.append(changed)
    return out


# --- reading -----------------------------------------------------------------------

def transcript_dict(row: Transcript | None) -> dict | None:
    if row is None:
        return None
    return {"linkedid": row.linkedid, "status": row.status, "error": row.error, "attempts": row.attempts,
            "engine": row.engine, "transcribed_at": row.transcribed_at, "enqueued_at": row.enqueued_at,
            "segments": json.loads(row.segments or "[]"), "redactions": row.redactions,
            "audio_seconds": row.audio_ms / 1000, "cpu_seconds": row.cpu_ms / 1000,
            "caller_speech_seconds": row.caller_speech_ms / 1000, "buyer_speech_seconds": row.buyer_speech_ms / 1000,
            "dispositions": json.loads(row.dispositions or "[]"), "ai_score": row.ai_score,
            "score_reasons": json.loads(row.score_reasons or "[]"), "recording": row.recording}


async def get_transcript(session: AsyncSession, linkedid: str) -> dict | None:
    return transcript_dict(await session.scalar(select(Transcript).where(Transcript.linkedid == linkedid)))


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(session: AsyncSession, q: str = "", *, disposition: str = "", max_score: int | None = None,
                 publisher_id: int | None = None, sub_id: str | None = None, limit: int = 50, offset: int = 0
                 ) -> tuple[list[dict], int]:
    """Transcribed calls whose text has every word of `q` (and the other filters), newest first."""
    conds = [Transcript.status == DONE]
    for word in pr.normalise(q).split()[:8]:
        conds.append(func.lower(Transcript.text).like(f"%{_like(word)}%", escape="\\"))
    if disposition:
        conds.append(Transcript.dispositions.like(f'%"{_like(disposition)}"%', escape="\\"))
    if max_score is not None:
        conds.append(Transcript.ai_score <= max_score)
    if publisher_id is not None:
        conds.append(Transcript.publisher_id == publisher_id)
    if sub_id is not None:
        conds.append(t.Call.sub_id == sub_id)
    where = and_(*conds)
    base = select(Transcript, t.Call.id, t.Call.sub_id, t.Call.campaign_id, t.Call.billable) \
        .join(t.Call, t.Call.linkedid == Transcript.linkedid, isouter=True).where(where)
    total = int(await session.scalar(select(func.count()).select_from(base.subquery())) or 0)
    rows = await session.execute(base.order_by(Transcript.started_at.desc(), Transcript.id.desc())
                                 .limit(limit).offset(offset))
    words = pr.normalise(q).split()
    out = []
    for tr, call_id, sub, campaign_id, billable in rows:
        segments = json.loads(tr.segments or "[]")
        match = next((s for s in segments if all(w in pr.normalise(s["text"]) for w in words)), None) if words else None
        out.append({"call_id": call_id, "linkedid": tr.linkedid, "started_at": tr.started_at,
                    "publisher_id": tr.publisher_id, "campaign_id": campaign_id, "sub_id": sub or "",
                    "ai_score": tr.ai_score, "dispositions": json.loads(tr.dispositions or "[]"),
                    "billable": billable, "match": match or (segments[0] if segments else None)})
    return out, total


BANDS = ((0, 19), (20, 39), (40, 59), (60, 79), (80, 100))


async def qc(session: AsyncSession, since: datetime, low_score: int) -> list[dict]:
    """Per publisher and sub-ID: transcribed calls, average score, score bands, dispositions, low scores."""
    sub = func.coalesce(t.Call.sub_id, "")
    q = select(Transcript.publisher_id, sub, func.count(), func.avg(Transcript.ai_score),
               func.sum(case((Transcript.ai_score < low_score, 1), else_=0)),
               *[func.sum(case((and_(Transcript.ai_score >= lo, Transcript.ai_score <= hi), 1), else_=0))
                 for lo, hi in BANDS]) \
        .join(t.Call, t.Call.linkedid == Transcript.linkedid, isouter=True) \
        .where(Transcript.status == DONE, Transcript.started_at >= since) \
        .group_by(Transcript.publisher_id, sub).order_by(Transcript.publisher_id, sub)
    out = []
    for pub, sub_id, n, avg, low, *bands in await session.execute(q):
        out.append({"publisher_id": pub, "sub_id": sub_id or "", "calls": int(n), "avg_score":
                    round(float(avg), 1) if avg is not None else None, "low": int(low or 0),
                    "bands": [int(x or 0) for x in bands], "dispositions": {}})
    by_key = {(r["publisher_id"], r["sub_id"]): r for r in out}
    rows = await session.execute(select(Transcript.publisher_id, sub, Transcript.dispositions)
                                 .join(t.Call, t.Call.linkedid == Transcript.linkedid, isouter=True)
                                 .where(Transcript.status == DONE, Transcript.started_at >= since,
                                        Transcript.dispositions != "[]"))
    for pub, sub_id, names in rows:
        r = by_key.get((pub, sub_id or ""))
        if r is not None:
            for name in json.loads(names):
                r["dispositions"][name] = r["dispositions"].get(name, 0) + 1
    return out


async def queue_rows(session: AsyncSession, statuses=(PENDING, RUNNING, FAILED, SKIPPED), limit: int = 50):
    return list(await session.scalars(select(Transcript).where(Transcript.status.in_(statuses))
                                      .order_by(Transcript.id.desc()).limit(limit)))


# --- phrase rules ------------------------------------------------------------------

async def _campaign_id(session: AsyncSession, campaign) -> int | None:
    return (await repo.get_campaign(session, campaign)).id if campaign not in (None, "") else None


async def set_phrase(session: AsyncSession, disposition: str, phrase: str, side: str = pr.ANY, campaign=None,
                     enabled: bool = True) -> PhraseRule:
    try:
        disposition, phrase, side = pr.check_rule(disposition, phrase, side)
    except pr.PhraseError as exc:
        raise ValidationError("phrase", str(exc)) from None
    cid = await _campaign_id(session, campaign)
    row = await session.scalar(select(PhraseRule).where(
        PhraseRule.campaign_id.is_(None) if cid is None else PhraseRule.campaign_id == cid,
        PhraseRule.disposition == disposition, PhraseRule.phrase == phrase, PhraseRule.side == side))
    if row is None:
        row = PhraseRule(campaign_id=cid, disposition=disposition, phrase=phrase, side=side)
        session.add(row)
    row.enabled = 1 if enabled else 0
    await session.flush()
    return row


async def remove_phrase(session: AsyncSession, disposition: str, phrase: str, side: str = pr.ANY,
                        campaign=None) -> int:
    try:
        disposition, phrase, side = pr.check_rule(disposition, phrase, side)
    except pr.PhraseError as exc:
        raise ValidationError("phrase", str(exc)) from None
    cid = await _campaign_id(session, campaign)
    res = await session.execute(delete(PhraseRule).where(
        PhraseRule.campaign_id.is_(None) if cid is None else PhraseRule.campaign_id == cid,
        PhraseRule.disposition == disposition, PhraseRule.phrase == phrase, PhraseRule.side == side))
    return res.rowcount or 0


async def phrase_rows(session: AsyncSession) -> list[pr.PhraseRule]:
    rows = await session.scalars(select(PhraseRule).order_by(PhraseRule.id))
    return [pr.PhraseRule(r.disposition, r.phrase, r.side, bool(r.enabled), r.campaign_id) for r in rows]


async def rules_for_campaign(session: AsyncSession, campaign_id: int | None) -> list[pr.PhraseRule]:
    return pr.effective(await phrase_rows(session), campaign_id)


# --- retention ---------------------------------------------------------------------

async def delete_expired(session: AsyncSession, before: datetime) -> int:
    """Transcripts of calls started before `before` (not those still queued)."""
    res = await session.execute(delete(Transcript).where(Transcript.started_at < before,
                                                         Transcript.status.in_((DONE, FAILED, SKIPPED))))
    return res.rowcount or 0


__all__ = ["DONE", "FAILED", "PENDING", "RUNNING", "SKIPPED", "or_"]
