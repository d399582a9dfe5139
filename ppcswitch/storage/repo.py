"""Queries and writes on an AsyncSession.

Functions here never commit: writes run as Writer jobs, which own the
transaction. Every configuration write bumps config_version in that same
transaction, so a controller polling config_version() sees each change once,
complete. References to campaigns, publishers and buyers are `int` (id) or
`str` (name).
"""

from __future__ import annotations

import json
import logging

from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, selectinload

from ppcswitch import calls as c
from ppcswitch.config import RoutingSettings
from ppcswitch.routing import model as m
from ppcswitch.storage import breakdowns
from ppcswitch.storage import models as t
from ppcswitch.storage import validate as v
from ppcswitch.storage.validate import ValidationError

log = logging.getLogger(__name__)
Ref = int | str


# --- configuration version -------------------------------------------------

async def config_version(session: AsyncSession) -> int:
    return int((await session.scalar(select(t.ConfigVersion.version).where(t.ConfigVersion.id == 1))) or 0)


async def bump_config_version(session: AsyncSession) -> None:
    result = await session.execute(
        update(t.ConfigVersion).where(t.ConfigVersion.id == 1).values(version=t.ConfigVersion.version + 1))
    if result.rowcount == 0:  # the migration inserts the row; this covers a hand-made schema
        session.add(t.ConfigVersion(id=1, version=1))
        await session.flush()


# --- routing snapshot ------------------------------------------------------

def dial_target(destination: str, routing: RoutingSettings) -> str:
    """Dial() target of a validated buyer destination: always PJSIP/..."""
    destination = v.destination(destination)
    if destination.startswith("pjsip:"):
        return f"PJSIP/{destination[6:]}"
    return f"PJSIP/{v.endpoint_name(routing.buyer_endpoint)}/{destination}"


async def _rows(session: AsyncSession, model: type) -> list:
    # Plain rows, not ORM objects: the session's identity map would hand back stale objects on a retry.
    return list((await session.execute(select(model.__table__))).all())


async def read_network(session: AsyncSession, routing: RoutingSettings, version: int) -> m.Network:
    buyers: dict[int, m.Buyer] = {}
    for b in await _rows(session, t.Buyer):
        try:
            target = dial_target(b.destination, routing)
        except ValidationError as exc:
            # Only a write bypassing validation gets here; such a buyer is never dialled.
            log.error("buyer %r (id %d) left out of routing: %s", b.name, b.id, exc)
            continue
        buyers[b.id] = m.Buyer(id=b.id, name=b.name, dial_target=target, ring_timeout=b.ring_timeout,
                               concurrency_cap=b.concurrency_cap, paused=b.paused,
                               min_duration=b.min_duration, revenue_cents=b.revenue_cents)
    links: dict[int, list] = {}
    for link in await _rows(session, t.CampaignBuyer):
        if link.buyer_id in buyers:
            links.setdefault(link.campaign_id, []).append(link)
    campaigns = {
        k.id: m.Campaign(id=k.id, name=k.name, paused=k.paused, buyers=tuple(
            m.CampaignBuyer(buyer_id=link.buyer_id, priority=link.priority)
            for link in sorted(links.get(k.id, []), key=lambda link: (link.priority, link.buyer_id))))
        for k in await _rows(session, t.Campaign)
    }
    publishers = {p.id: m.Publisher(id=p.id, name=p.name, payout_cents=p.payout_cents, paused=p.paused)
                  for p in await _rows(session, t.Publisher)}
    numbers = {n.number: m.TrackingNumber(number=n.number, campaign_id=n.campaign_id, publisher_id=n.publisher_id,
                                          ask_code=n.ask_publisher_code, paused=n.paused)
               for n in await _rows(session, t.TrackingNumber)}
    fallback = next((b.id for b in buyers.values() if routing.fallback_buyer and b.name == routing.fallback_buyer),
                    None)
    return m.Network(buyers=buyers, publishers=publishers, campaigns=campaigns, numbers=numbers,
                     fallback_buyer_id=fallback, version=version)


# --- configuration writes --------------------------------------------------

async def _get(session: AsyncSession, model: type, ref: Ref, what: str):
    if isinstance(ref, int) and not isinstance(ref, bool):
        row = await session.get(model, ref)
        shown = f"id {ref}"
    else:
        row = await session.scalar(select(model).where(model.name == v.name(ref, what)))
        shown = f"named {str(ref).strip()!r}"
    if row is None:
        raise ValidationError(what, f"no {what} {shown}")
    return row


async def get_campaign(session: AsyncSession, ref: Ref) -> t.Campaign:
    return await _get(session, t.Campaign, ref, "campaign")


async def get_publisher(session: AsyncSession, ref: Ref) -> t.Publisher:
    return await _get(session, t.Publisher, ref, "publisher")


async def get_buyer(session: AsyncSession, ref: Ref) -> t.Buyer:
    return await _get(session, t.Buyer, ref, "buyer")


async def _unique_name(session: AsyncSession, model: type, name: str, what: str, own_id: int | None = None) -> str:
    name = v.name(name)
    other = await session.scalar(select(model.id).where(model.name == name))
    if other is not None and other != own_id:
        raise ValidationError("name", f"a {what} named {name!r} already exists")
    return name


async def _added(session: AsyncSession, row):
    session.add(row)
    await session.flush()
    await bump_config_version(session)
    return row


async def create_campaign(session: AsyncSession, name: str, *, paused: bool = False) -> t.Campaign:
    name = await _unique_name(session, t.Campaign, name, "campaign")
    return await _added(session, t.Campaign(name=name, paused=bool(paused)))


async def create_publisher(session: AsyncSession, name: str, *, payout: str = "0", paused: bool = False
                           ) -> t.Publisher:
    """`payout` is a decimal amount such as "12.50" (stored as cents)."""
    name = await _unique_name(session, t.Publisher, name, "publisher")
    return await _added(session, t.Publisher(name=name, payout_cents=v.money(payout, "payout"), paused=bool(paused)))


async def create_buyer(session: AsyncSession, name: str, destination: str, *, revenue: str = "0",
                       ring_timeout: int | str = 30, concurrency_cap: int | str | None = None,
                       min_duration: int | str = 60, paused: bool = False) -> t.Buyer:
    """`revenue` is a decimal amount such as "40.00" (stored as cents)."""
    row = t.Buyer(name=await _unique_name(session, t.Buyer, name, "buyer"),
                  destination=v.destination(destination), revenue_cents=v.money(revenue, "revenue"),
                  ring_timeout=v.ring_timeout(ring_timeout), concurrency_cap=v.concurrency_cap(concurrency_cap),
                  min_duration=v.min_duration(min_duration), paused=bool(paused))
    return await _added(session, row)


UNSET = object()


async def update_buyer(session: AsyncSession, ref: Ref, *, name=UNSET, destination=UNSET, revenue=UNSET,
                       ring_timeout=UNSET, concurrency_cap=UNSET, min_duration=UNSET, paused=UNSET) -> t.Buyer:
    """Change the given fields only (concurrency_cap=None removes the cap)."""
    row = await get_buyer(session, ref)
    if name is not UNSET:
        row.name = await _unique_name(session, t.Buyer, name, "buyer", own_id=row.id)
    if destination is not UNSET:
        row.destination = v.destination(destination)
    if revenue is not UNSET:
        row.revenue_cents = v.money(revenue, "revenue")
    if ring_timeout is not UNSET:
        row.ring_timeout = v.ring_timeout(ring_timeout)
    if concurrency_cap is not UNSET:
        row.concurrency_cap = v.concurrency_cap(concurrency_cap)
    if min_duration is not UNSET:
        row.min_duration = v.min_duration(min_duration)
    if paused is not UNSET:
        row.paused = bool(paused)
    await session.flush()
    await bump_config_version(session)
    return row


async def update_publisher(session: AsyncSession, ref: Ref, *, name=UNSET, payout=UNSET, paused=UNSET
                           ) -> t.Publisher:
    row = await get_publisher(session, ref)
    if name is not UNSET:
        row.name = await _unique_name(session, t.Publisher, name, "publisher", own_id=row.id)
    if payout is not UNSET:
        row.payout_cents = v.money(payout, "payout")
    if paused is not UNSET:
        row.paused = bool(paused)
    await session.flush()
    await bump_config_version(session)
    return row


async def update_campaign(session: AsyncSession, ref: Ref, *, name=UNSET, paused=UNSET) -> t.Campaign:
    row = await get_campaign(session, ref)
    if name is not UNSET:
        row.name = await _unique_name(session, t.Campaign, name, "campaign", own_id=row.id)
    if paused is not UNSET:
        row.paused = bool(paused)
    await session.flush()
    await bump_config_version(session)
    return row


async def set_buyer_paused(session: AsyncSession, ref: Ref, paused: bool) -> t.Buyer:
    return await update_buyer(session, ref, paused=paused)


async def set_publisher_paused(session: AsyncSession, ref: Ref, paused: bool) -> t.Publisher:
    return await update_publisher(session, ref, paused=paused)


async def set_campaign_paused(session: AsyncSession, ref: Ref, paused: bool) -> t.Campaign:
    return await update_campaign(session, ref, paused=paused)


async def add_campaign_buyer(session: AsyncSession, campaign: Ref, buyer: Ref, priority: int | str = 1
                             ) -> t.CampaignBuyer:
    """Let `buyer` take calls of `campaign`; lower priority is tried first."""
    k, b, prio = await get_campaign(session, campaign), await get_buyer(session, buyer), v.priority(priority)
    existing = await session.scalar(select(t.CampaignBuyer).where(
        t.CampaignBuyer.campaign_id == k.id, t.CampaignBuyer.buyer_id == b.id))
    if existing is not None:
        raise ValidationError("buyer", f"buyer {b.name!r} is already on campaign {k.name!r}")
    return await _added(session, t.CampaignBuyer(campaign_id=k.id, buyer_id=b.id, priority=prio))


async def set_campaign_buyer_priority(session: AsyncSession, campaign: Ref, buyer: Ref, priority: int | str
                                      ) -> t.CampaignBuyer:
    link = await _campaign_link(session, campaign, buyer)
    link.priority = v.priority(priority)
    await session.flush()
    await bump_config_version(session)
    return link


async def remove_campaign_buyer(session: AsyncSession, campaign: Ref, buyer: Ref) -> None:
    await session.delete(await _campaign_link(session, campaign, buyer))
    await session.flush()
    await bump_config_version(session)


async def _campaign_link(session: AsyncSession, campaign: Ref, buyer: Ref) -> t.CampaignBuyer:
    k, b = await get_campaign(session, campaign), await get_buyer(session, buyer)
    link = await session.scalar(select(t.CampaignBuyer).where(
        t.CampaignBuyer.campaign_id == k.id, t.CampaignBuyer.buyer_id == b.id))
    if link is None:
        raise ValidationError("buyer", f"buyer {b.name!r} is not on campaign {k.name!r}")
    return link


async def add_tracking_number(session: AsyncSession, number: str, campaign: Ref, publisher: Ref,
                              *, region: str = "US") -> t.TrackingNumber:
    """Route calls to `number` (read in `region` when national) to `campaign`, credited to `publisher`."""
    e164 = v.phone(number, region)
    k, p = await get_campaign(session, campaign), await get_publisher(session, publisher)
    existing = await session.scalar(select(t.TrackingNumber).where(t.TrackingNumber.number == e164))
    if existing is not None:
        raise ValidationError("number", f"{e164} is already a tracking number")
    return await _added(session, t.TrackingNumber(number=e164, campaign_id=k.id, publisher_id=p.id))


async def remove_tracking_number(session: AsyncSession, number: str, *, region: str = "US") -> None:
    e164 = v.phone(number, region)
    row = await session.scalar(select(t.TrackingNumber).where(t.TrackingNumber.number == e164))
    if row is None:
        raise ValidationError("number", f"{e164} is not a tracking number")
    await session.delete(row)
    await session.flush()
    await bump_config_version(session)


# --- calls -----------------------------------------------------------------

_CALL_FIELDS = ("linkedid", "tracking_number", "caller", "caller_valid", "started_at", "ended_at", "outcome",
                "publisher_id", "campaign_id", "buyer_id", "answered_at", "connected_ms", "hangup_cause",
                "hangup_cause_text", "reject_reason", "billable", "revenue_cents", "payout_cents",
                "quality_score", "sub_id", "click_id", "caller_state")
_ATTEMPT_FIELDS = ("seq", "buyer_id", "dial_status", "started_at", "answered_at", "ended_at")


_CALL_COLUMNS = _CALL_FIELDS + ("billing_reasons", "attribution")
_ATTEMPT_INSERT = t.CallAttempt.__table__.insert()
_CALL_INSERTS: dict[str, Any] = {}


def _call_insert(dialect: str):
    """INSERT ... ON CONFLICT (linkedid) DO NOTHING RETURNING id on the table (Core), built once: a
    statement built per call, and the ORM's insert path, cost more than the write itself."""
    stmt = _CALL_INSERTS.get(dialect)
    if stmt is None:
        table = t.Call.__table__
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        # ON CONFLICT DO NOTHING: two saves racing on one linkedid can't both insert or fail.
        stmt = insert(table).values({f: bindparam(f) for f in _CALL_COLUMNS})
        stmt = _CALL_INSERTS[dialect] = stmt.on_conflict_do_nothing(index_elements=["linkedid"]).returning(table.c.id)
    return stmt


def insert_call(session: Session, record: c.CallRecord) -> int | None:
    """Store a finished call and its attempts (sync Session: a writer SyncJob); its id, or None (and
    no change) if its linkedid is already stored."""
    values = {f: getattr(record, f) for f in _CALL_FIELDS}
    values["billing_reasons"] = json.dumps(list(record.billing_reasons))
    values["attribution"] = json.dumps(record.attribution or {}, sort_keys=True)
    conn = session.connection()
    call_id = conn.execute(_call_insert(session.get_bind().dialect.name), values).scalar()
    if call_id is None:
        return None
    if record.attempts:
        conn.execute(_ATTEMPT_INSERT,
                        [dict({f: getattr(a, f) for f in _ATTEMPT_FIELDS}, call_id=call_id)
                         for a in sorted(record.attempts, key=lambda a: a.seq)])
    breakdowns.stored_sync(session, record)  # daily totals by sub-ID and caller's state, same transaction
    return call_id


_CALL_BULK_INSERTS: dict[str, Any] = {}


def insert_calls(session: Session, records: list[c.CallRecord]) -> list[int | None]:
    """insert_call for many calls (distinct linkedids) in two statements: the calls in multi-row
    INSERTs, then every attempt; the id of each call, None (and no change) for a linkedid already stored."""
    if not records:
        return []
    dialect = session.get_bind().dialect.name
    stmt = _CALL_BULK_INSERTS.get(dialect)
    if stmt is None:  # RETURNING the linkedid too: rows skipped by the conflict return nothing
        table = t.Call.__table__
        stmt = _CALL_BULK_INSERTS[dialect] = _call_insert(dialect).returning(table.c.linkedid)
    rows = []
    for record in records:
        values = {f: getattr(record, f) for f in _CALL_FIELDS}
        values["billing_reasons"] = json.dumps(list(record.billing_reasons))
        values["attribution"] = json.dumps(record.attribution or {}, sort_keys=True)
        rows.append(values)
    conn = session.connection()
    ids = {linkedid: call_id for call_id, linkedid in conn.execute(stmt, rows)}
    out = [ids.get(record.linkedid) for record in records]
    attempts = [dict({f: getattr(a, f) for f in _ATTEMPT_FIELDS}, call_id=call_id)
                for record, call_id in zip(records, out) if call_id is not None
                for a in sorted(record.attempts, key=lambda a: a.seq)]
    if attempts:
        conn.execute(_ATTEMPT_INSERT, attempts)
    # Daily totals by sub-ID and caller's state, same transaction (as insert_call).
    breakdowns.stored_many_sync(session, [record for record, call_id in zip(records, out) if call_id is not None])
    return out


async def save_call(session: AsyncSession, record: c.CallRecord) -> bool:
    """Store a finished call and its attempts; False (and no change) if its linkedid is already stored."""
    return await session.run_sync(insert_call, record) is not None


def _record(row: t.Call) -> c.CallRecord:
    record = c.CallRecord(**{f: getattr(row, f) for f in _CALL_FIELDS})
    record.billing_reasons = list(json.loads(row.billing_reasons or "[]"))
    record.attribution = dict(json.loads(row.attribution or "{}"))
    record.attempts = [c.Attempt(**{f: getattr(a, f) for f in _ATTEMPT_FIELDS}) for a in row.attempts]
    return record


async def get_call(session: AsyncSession, linkedid: str) -> c.CallRecord | None:
    row = await session.scalar(
        select(t.Call).where(t.Call.linkedid == linkedid).options(selectinload(t.Call.attempts)))
    return None if row is None else _record(row)


async def list_calls(session: AsyncSession, limit: int = 100, offset: int = 0) -> list[c.CallRecord]:
    """Newest first."""
    rows = await session.scalars(select(t.Call).options(selectinload(t.Call.attempts))
                                 .order_by(t.Call.started_at.desc(), t.Call.id.desc()).limit(limit).offset(offset))
    return [_record(row) for row in rows]


async def count_calls(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(t.Call)) or 0)
