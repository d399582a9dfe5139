"""Attribution storage: pools, postback targets, the outbox and its log, the sub-ID report."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ppcswitch.attribution.pools import Pool
from ppcswitch.money import format_cents
from ppcswitch.storage import breakdowns
from ppcswitch.storage import models as t
from ppcswitch.storage import models_attribution as m
from ppcswitch.storage.models_portal import partner_payload_sync
from ppcswitch.storage import repo
from ppcswitch.storage import validate as v
from ppcswitch.storage.validate import ValidationError


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- pools -----------------------------------------------------------------

async def create_pool(session: AsyncSession, name: str, campaign, publisher, lease_seconds: int) -> m.NumberPool:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError("name", "a pool needs a name of 1 to 100 characters")
    if not 10 <= int(lease_seconds) <= 86400:
        raise ValidationError("lease_seconds", "a lease lasts 10 seconds to 1 day")
    if await session.scalar(select(m.NumberPool.id).where(m.NumberPool.name == name)) is not None:
        raise ValidationError("name", f"pool {name!r} exists")
    k, p = await repo.get_campaign(session, campaign), await repo.get_publisher(session, publisher)
    row = m.NumberPool(name=name, campaign_id=k.id, publisher_id=p.id, public_key="pk_" + secrets.token_urlsafe(18),
                       lease_seconds=int(lease_seconds), shortages=0)
    session.add(row)
    await session.flush()
    await repo.bump_config_version(session)
    return row


async def add_pool_number(session: AsyncSession, pool_name: str, number: str, *, region: str = "US") -> str:
    """Put a number in a pool (adding it as a tracking number of the pool's campaign/publisher if new)."""
    pool = await session.scalar(select(m.NumberPool).where(m.NumberPool.name == pool_name))
    if pool is None:
        raise ValidationError("pool", f"no pool {pool_name!r}")
    e164 = v.phone(number, region)
    tn = await session.scalar(select(t.TrackingNumber).where(t.TrackingNumber.number == e164))
    if tn is None:
        tn = await repo.add_tracking_number(session, e164, pool.campaign_id, pool.publisher_id, region=region)
    elif (tn.campaign_id, tn.publisher_id) != (pool.campaign_id, pool.publisher_id):
        raise ValidationError("number", f"{e164} belongs to another campaign or publisher than pool {pool.name!r}")
    if await session.scalar(select(m.PoolNumber.id).where(m.PoolNumber.tracking_number_id == tn.id)) is not None:
        raise ValidationError("number", f"{e164} is already in a pool")
    session.add(m.PoolNumber(pool_id=pool.id, tracking_number_id=tn.id))
    await session.flush()
    await repo.bump_config_version(session)
    return e164


async def load_pools(session: AsyncSession) -> list[Pool]:
    rows = (await session.execute(
        select(m.NumberPool, t.TrackingNumber.number)
        .outerjoin(m.PoolNumber, m.PoolNumber.pool_id == m.NumberPool.id)
        .outerjoin(t.TrackingNumber, t.TrackingNumber.id == m.PoolNumber.tracking_number_id)
        .order_by(m.NumberPool.id, m.PoolNumber.id))).all()
    pools: dict[int, tuple[m.NumberPool, list[str]]] = {}
    for pool, number in rows:
        pools.setdefault(pool.id, (pool, []))[1].extend([number] if number else [])
    return [Pool(p.id, p.name, p.campaign_id, p.publisher_id, p.public_key, p.lease_seconds, tuple(ns))
            for p, ns in pools.values()]


async def list_pools(session: AsyncSession) -> list[dict]:
    out = []
    for pool in await load_pools(session):
        row = await session.get(m.NumberPool, pool.id)
        out.append({"id": pool.id, "name": pool.name, "campaign_id": pool.campaign_id, "publisher_id": pool.publisher_id,
                    "key": pool.key, "lease_seconds": pool.lease_seconds, "numbers": list(pool.numbers),
                    "shortages": row.shortages})
    return out


async def add_shortages(session: AsyncSession, counts: dict[int, int]) -> None:
    for pool_id, n in counts.items():
        await session.execute(update(m.NumberPool).where(m.NumberPool.id == pool_id)
                              .values(shortages=m.NumberPool.shortages + n))


# --- postbacks -------------------------------------------------------------

async def set_target(session: AsyncSession, kind: str, owner, url: str, secret: str = "") -> str:
    """A publisher's postback URL template or a buyer's webhook; returns the HMAC secret."""
    if kind not in ("publisher", "buyer"):
        raise ValidationError("kind", "publisher or buyer")
    url = (url or "").strip()
    if not url.startswith(("http://", "https://")) or len(url) > 2000:
        raise ValidationError("url", "an http:// or https:// URL of at most 2000 characters")
    owner_row = await (repo.get_publisher if kind == "publisher" else repo.get_buyer)(session, owner)
    secret = secret or secrets.token_urlsafe(24)
    row = await session.scalar(select(m.PostbackTarget).where(
        m.PostbackTarget.kind == kind, m.PostbackTarget.owner_id == owner_row.id))
    if row is None:
        session.add(m.PostbackTarget(kind=kind, owner_id=owner_row.id, url=url, secret=secret))
    else:
        row.url, row.secret = url, secret
    await session.flush()
    return secret


_TARGETS = select(m.PostbackTarget.__table__).where(
    m.PostbackTarget.kind.in_(bindparam("kinds", expanding=True)),
    m.PostbackTarget.owner_id.in_(bindparam("owners", expanding=True)))
_QUEUED = select(m.PostbackOutbox.id).where(
    m.PostbackOutbox.linkedid == bindparam("linkedid"), m.PostbackOutbox.event == bindparam("event"),
    m.PostbackOutbox.kind == bindparam("kind"), m.PostbackOutbox.owner_id == bindparam("owner_id"))
_QUEUE = m.PostbackOutbox.__table__.insert()


def enqueue_for_call_sync(session: Session, record, event: str = "billed") -> int:
    """Outbox rows for a call's publisher postback and buyer webhook, in the caller's transaction."""
    from ppcswitch.attribution.postback import payload, render_url

    owners = [("publisher", record.publisher_id), ("buyer", record.buyer_id)]
    owners = [(k, i) for k, i in owners if i]
    if not owners:
        return 0
    conn = session.connection()  # Core statements built once: this runs for every finished call
    targets = conn.execute(_TARGETS, {"kinds": [k for k, _ in owners], "owners": [i for _, i in owners]}).all()
    now, n = _now(), 0
    for target in targets:
        if (target.kind, target.owner_id) not in owners:
            continue
        body = payload(record, event, target.kind)
        if target.partner_managed:  # set up by the partner itself: only what it may see
            body = partner_payload_sync(conn, body, target.kind, target.owner_id, record.campaign_id)
        key = dict(linkedid=record.linkedid, event=event, kind=target.kind, owner_id=target.owner_id)
        if conn.execute(_QUEUED, key).first() is not None:
            continue
        conn.execute(_QUEUE, dict(key, url=render_url(target.url, body), body=json.dumps(body, sort_keys=True),
                                  status="pending", attempts=0, next_attempt_at=now, created_at=now))
        n += 1
    return n


def enqueue_for_calls_sync(session: Session, records: list, event: str = "billed") -> int:
    """enqueue_for_call_sync for many calls: their targets read in one query; calls with none
    (most networks have few targets) cost nothing more."""
    owners = {(k, i) for record in records for k, i in (("publisher", record.publisher_id), ("buyer", record.buyer_id))
              if i}
    if not owners:
        return 0
    conn = session.connection()
    targets = {(t.kind, t.owner_id) for t in conn.execute(_TARGETS, {"kinds": sorted({k for k, _ in owners}),
                                                                       "owners": sorted({i for _, i in owners})})}
    n = 0
    for record in records:
        if {("publisher", record.publisher_id), ("buyer", record.buyer_id)} & targets:
            n += enqueue_for_call_sync(session, record, event)
    return n


enqueue_for_call_sync.many = enqueue_for_calls_sync  # type: ignore[attr-defined]  (ppcswitch.pipeline)


async def enqueue_for_call(session: AsyncSession, record, event: str = "billed") -> int:
    return await session.run_sync(enqueue_for_call_sync, record, event)


async def enqueue_reversal(session: AsyncSession, linkedid: str, revenue_cents: int, payout_cents: int) -> int:
    """A dispute reversed this call: "reversed" outbox rows, in the dispute's transaction.

    `revenue_cents` / `payout_cents` are the amounts the dispute booked (negative; 0 when that side was
    not reversed). Only targets that were given the call's "billed" notification hear of it, and the
    publisher only when its payout was taken back too (revshare): otherwise it is still paid.
    """
    from ppcswitch.attribution.postback import payload, render_url

    amounts = {"buyer": revenue_cents, "publisher": payout_cents}
    billed = (await session.execute(select(m.PostbackOutbox.kind, m.PostbackOutbox.owner_id).where(
        m.PostbackOutbox.linkedid == linkedid, m.PostbackOutbox.event == "billed"))).all()
    owners = [(kind, owner) for kind, owner in billed if amounts.get(kind)]
    record = await repo.get_call(session, linkedid) if owners else None
    if record is None:
        return 0
    now, n = _now(), 0
    for kind, owner in owners:
        target = await session.scalar(select(m.PostbackTarget).where(
            m.PostbackTarget.kind == kind, m.PostbackTarget.owner_id == owner))
        exists = await session.scalar(select(m.PostbackOutbox.id).where(
            m.PostbackOutbox.linkedid == linkedid, m.PostbackOutbox.event == "reversed",
            m.PostbackOutbox.kind == kind, m.PostbackOutbox.owner_id == owner))
        if target is None or exists is not None:
            continue
        body = payload(record, "reversed", kind)
        if target.partner_managed:
            body = await session.run_sync(lambda ss, b=body: partner_payload_sync(
                ss.connection(), b, kind, owner, record.campaign_id))
        # What the dispute took back, signed as in the ledger: a receiver summing amounts nets to zero.
        body["billable"] = False
        body["payout" if kind == "publisher" else "revenue"] = format_cents(amounts[kind])
        session.add(m.PostbackOutbox(linkedid=linkedid, event="reversed", kind=kind, owner_id=owner,
                                     url=render_url(target.url, body), body=json.dumps(body, sort_keys=True),
                                     status="pending", attempts=0, next_attempt_at=now, created_at=now))
        n += 1
    await session.flush()
    return n


async def due(session: AsyncSession, limit: int = 50) -> list[tuple[m.PostbackOutbox, str]]:
    """Pending deliveries whose time has come, with the secret to sign them."""
    rows = (await session.execute(
        select(m.PostbackOutbox, m.PostbackTarget.secret)
        .join(m.PostbackTarget, and_(m.PostbackTarget.kind == m.PostbackOutbox.kind,
                                     m.PostbackTarget.owner_id == m.PostbackOutbox.owner_id))
        .where(m.PostbackOutbox.status == "pending", m.PostbackOutbox.next_attempt_at <= _now())
        .order_by(m.PostbackOutbox.next_attempt_at, m.PostbackOutbox.id).limit(limit))).all()
    return [(row, secret) for row, secret in rows]


async def record_attempt(session: AsyncSession, outbox_id: int, status_code: int | None, error: str, ms: int,
                         delivered: bool, retry_at: datetime | None) -> None:
    """One attempt in the log; the row is delivered, rescheduled, or failed (retry_at None)."""
    row = await session.get(m.PostbackOutbox, outbox_id)
    if row is None or row.status != "pending":
        return
    now = _now()
    session.add(m.PostbackAttempt(outbox_id=outbox_id, at=now, status_code=status_code, error=error[:300], ms=ms))
    row.attempts += 1
    row.last_error = error[:300]
    if delivered:
        row.status, row.delivered_at = "delivered", now
    elif retry_at is None:
        row.status = "failed"
    else:
        row.next_attempt_at = retry_at
    await session.flush()


async def resend(session: AsyncSession, outbox_id: int) -> m.PostbackOutbox:
    """Manual re-send: deliver this notification again now (even if delivered or failed)."""
    row = await session.get(m.PostbackOutbox, outbox_id)
    if row is None:
        raise ValidationError("id", f"no postback {outbox_id}")
    row.status, row.next_attempt_at, row.delivered_at = "pending", _now(), None
    await session.flush()
    return row


async def get_notification(session: AsyncSession, outbox_id: int) -> m.PostbackOutbox | None:
    return await session.get(m.PostbackOutbox, outbox_id)


async def delivery_log(session: AsyncSession, linkedid: str) -> list[dict]:
    """A call's notifications, oldest first, each with its attempts (times as datetimes)."""
    rows = (await session.scalars(select(m.PostbackOutbox).where(m.PostbackOutbox.linkedid == linkedid)
                                  .order_by(m.PostbackOutbox.id))).all()
    attempts: dict[int, list] = {row.id: [] for row in rows}
    if rows:
        for a in await session.scalars(select(m.PostbackAttempt).where(m.PostbackAttempt.outbox_id.in_(attempts))
                                       .order_by(m.PostbackAttempt.id)):
            attempts[a.outbox_id].append({"at": a.at, "status_code": a.status_code, "error": a.error, "ms": a.ms})
    return [{"id": row.id, "event": row.event, "kind": row.kind, "owner_id": row.owner_id, "url": row.url,
             "status": row.status, "created_at": row.created_at, "delivered_at": row.delivered_at,
             # When the controller tries next (pending only); a failed row waits for a manual re-send.
             "next_attempt_at": row.next_attempt_at if row.status == "pending" else None,
             "last_error": row.last_error, "attempts": attempts[row.id]} for row in rows]


async def log_for_call(session: AsyncSession, linkedid: str) -> list[dict]:
    """delivery_log with ISO times (JSON)."""
    def iso(value):
        return value.isoformat() if isinstance(value, datetime) else value

    return [{**{k: iso(v) for k, v in row.items() if k != "attempts"},
             "attempts": [{k: iso(v) for k, v in a.items()} for a in row["attempts"]]}
            for row in await delivery_log(session, linkedid)]


# --- reports ---------------------------------------------------------------

async def sub_id_report(session: AsyncSession, publisher_id: int | None, start: datetime, end: datetime) -> list[dict]:
    """Calls, billable calls, conversion rate and payout per publisher and sub-ID in [start, end).

    A disputed call is no longer a conversion, and a payout the dispute took back is subtracted.
    Whole UTC days come from the daily sub-ID rollup kept at settlement, the partial days at the
    edges from the calls (storage.breakdowns), so 30 days read a few thousand rows."""
    rows = await breakdowns.totals(session, breakdowns.SUB_ID, start, end, publisher_id)
    out = []
    for (pub, sub), x in sorted(rows.items()):
        calls, billable = x["calls"], x["billable"]
        if not calls and not x["disputed"] and not x["payout_cents"]:
            continue
        out.append({"publisher_id": pub or None, "sub_id": sub, "calls": calls, "billable": billable,
                    "conversion_rate": round(billable / calls, 4) if calls else 0.0,
                    "payout_cents": x["payout_cents"], "disputed": x["disputed"]})
    return out


def days_ago(days: int) -> datetime:
    return _now() - timedelta(days=days)
