"""Database reads and writes of the partner portals, always scoped to one party.

Every read here takes the partner's party ("publisher" or "buyer") and its id and
filters on it in SQL: nothing of another partner's can come back, whatever ids a
request carries. Money shown per call is the ledger's (a call's receivable or
payable entries summed), so a disputed call shows its reversal.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ppcswitch.billing import ledger, reports
from ppcswitch.money import format_cents
from ppcswitch.storage import models as t
from ppcswitch.storage import models_attribution as a
from ppcswitch.storage import models_billing as b
from ppcswitch.storage import models_portal as p
from ppcswitch.storage import models_web as w
from ppcswitch.storage import repo
from ppcswitch.storage.models import utcnow
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import security, store

INVITE_PREFIX = "inv_"
MAX_REPORT_DAYS = 92


@dataclass(frozen=True)
class Party:
    kind: str  # publisher | buyer
    id: int
    name: str

    @property
    def column(self):
        return t.Call.publisher_id if self.kind == "publisher" else t.Call.buyer_id

    @property
    def account(self) -> str:
        return ledger.PAYABLE if self.kind == "publisher" else ledger.RECEIVABLE


async def party_of(session: AsyncSession, user: w.User) -> Party | None:
    """The publisher or buyer a partner user belongs to (None for staff or a party since deleted)."""
    if user.role == "publisher" and user.publisher_id:
        row = await session.get(t.Publisher, user.publisher_id)
    elif user.role == "buyer" and user.buyer_id:
        row = await session.get(t.Buyer, user.buyer_id)
    else:
        return None
    return None if row is None else Party(user.role, row.id, row.name)


# --- what the operator lets a partner see -------------------------------------------------

@dataclass(frozen=True)
class Access:
    caller_display: str = "last4"
    show_buyer_name: bool = False
    allow_pause: bool = True
    recordings: bool = False  # a buyer hears its calls' recordings
    number_limit: int = 0  # a publisher holds and asks for at most this many numbers (0: no requests)
    auto_fill_numbers: bool = False  # requests filled from the spare numbers at once
    edit_rules: bool = False  # a buyer edits its own hours and caps, within the bounds below
    hours_bound: str = ""  # the buyer's hours must lie within these ('' = any)
    max_concurrency: int | None = None  # None: no upper bound (the buyer may also set none)
    max_cap_hourly: int | None = None
    max_cap_daily: int | None = None
    max_cap_monthly: int | None = None


ACCESS_FIELDS = tuple(Access.__dataclass_fields__)
BOUNDS = ("max_concurrency", "max_cap_hourly", "max_cap_daily", "max_cap_monthly")


def _access(row) -> Access:
    return Access(**{k: getattr(row, k) for k in ACCESS_FIELDS})


async def access_of(session: AsyncSession, kind: str, party_id: int) -> Access:
    row = await session.scalar(select(p.PartnerAccess).where(p.PartnerAccess.party == kind,
                                                             p.PartnerAccess.party_id == party_id))
    return Access() if row is None else _access(row)


async def all_access(session: AsyncSession) -> dict[tuple[str, int], Access]:
    return {(r.party, r.party_id): _access(r) for r in await session.scalars(select(p.PartnerAccess))}


def _bound(value, field: str) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValidationError(field, "must be a whole number (or empty: no bound)") from None
    if not 0 <= n <= 10**9:
        raise ValidationError(field, "must be 0 to 1000000000")
    return n


async def set_access(session: AsyncSession, kind: str, party_id: int, **changes) -> Access:
    """Change what one partner sees and may do (only the fields given)."""
    from ppcswitch.routing.rules import RulesError, parse_hours

    if kind not in ("publisher", "buyer"):
        raise ValidationError("party", "must be publisher or buyer")
    unknown = sorted(set(changes) - set(ACCESS_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], "is not a setting of a partner")
    if "caller_display" in changes and changes["caller_display"] not in p.CALLER_DISPLAY:
        raise ValidationError("caller_display", f"must be one of {', '.join(p.CALLER_DISPLAY)}")
    if "number_limit" in changes:
        changes["number_limit"] = _bound(changes["number_limit"], "number_limit") or 0
        if changes["number_limit"] > 10000:
            raise ValidationError("number_limit", "must be 0 to 10000")
    for key in BOUNDS:
        if key in changes:
            changes[key] = _bound(changes[key], key)
    if "hours_bound" in changes:
        changes["hours_bound"] = str(changes["hours_bound"] or "").strip()
        try:
            parse_hours(changes["hours_bound"], "hours_bound")
        except RulesError as exc:
            raise ValidationError("hours_bound", str(exc).split(": ", 1)[1]) from None
    for key in ("show_buyer_name", "allow_pause", "recordings", "auto_fill_numbers", "edit_rules"):
        if key in changes:
            changes[key] = bool(changes[key])
    model = t.Publisher if kind == "publisher" else t.Buyer
    if await session.get(model, party_id) is None:
        raise ValidationError("party", f"no {kind} with id {party_id}")
    row = await session.scalar(select(p.PartnerAccess).where(p.PartnerAccess.party == kind,
                                                             p.PartnerAccess.party_id == party_id))
    if row is None:
        row = p.PartnerAccess(party=kind, party_id=party_id, **{k: getattr(Access(), k) for k in ACCESS_FIELDS})
        session.add(row)
    for key, value in changes.items():
        setattr(row, key, value)
    await session.flush()
    return await access_of(session, kind, party_id)


# What a campaign shows partners: a value set there wins over the partner's own for its calls.
CAMPAIGN_FIELDS = ("caller_display", "show_buyer_name", "recordings")


async def campaign_access(session: AsyncSession) -> dict[int, dict]:
    return {r.campaign_id: {k: getattr(r, k) for k in CAMPAIGN_FIELDS}
            for r in await session.scalars(select(p.CampaignAccess))}


async def set_campaign_access(session: AsyncSession, campaign_id: int, *, caller_display: str | None,
                              show_buyer_name: bool | None, recordings: bool | None) -> dict:
    if caller_display is not None and caller_display not in p.CALLER_DISPLAY:
        raise ValidationError("caller_display", f"must be one of {', '.join(p.CALLER_DISPLAY)} or empty")
    if await session.get(t.Campaign, campaign_id) is None:
        raise ValidationError("campaign", f"no campaign with id {campaign_id}")
    row = await session.get(p.CampaignAccess, campaign_id)
    if row is None:
        row = p.CampaignAccess(campaign_id=campaign_id)
        session.add(row)
    row.caller_display, row.show_buyer_name, row.recordings = caller_display, show_buyer_name, recordings
    await session.flush()
    return {k: getattr(row, k) for k in CAMPAIGN_FIELDS}


def effective(acc: Access, over: dict | None) -> Access:
    """A partner's access on one campaign's calls."""
    if not over:
        return acc
    return dataclasses.replace(acc, **{k: v for k, v in over.items() if v is not None})


async def access_by_campaign(session: AsyncSession, who: "Party", campaign_ids) -> tuple[Access, dict]:
    """The partner's own access, and its access on each of these campaigns' calls."""
    acc = await access_of(session, who.kind, who.id)
    ids = sorted({c for c in campaign_ids if c})
    over = {} if not ids else {r.campaign_id: {k: getattr(r, k) for k in CAMPAIGN_FIELDS} for r in
                                await session.scalars(select(p.CampaignAccess).where(p.CampaignAccess.campaign_id.in_(ids)))}
    return acc, {c: effective(acc, over.get(c)) for c in ids}


def show_caller(caller: str, display: str) -> str:
    return p.mask_caller(caller, display)


# --- partner users and invites ----------------------------------------------------------

async def invite(session: AsyncSession, *, username: str, kind: str, party_id: int, by: str, hours: float
                 ) -> tuple[w.User, str]:
    """A new partner user without a usable password and its one-time link token (returned once)."""
    username = security.check_username(username)
    if kind not in ("publisher", "buyer"):
        raise ValidationError("role", "must be publisher or buyer")
    model = t.Publisher if kind == "publisher" else t.Buyer
    if await session.get(model, party_id) is None:
        raise ValidationError("party", f"no {kind} with id {party_id}")
    if await store.user_by_name(session, username) is not None:
        raise ValidationError("username", f"a user named {username!r} already exists")
    user = w.User(username=username, password_hash="!invited", role=kind, disabled=False,
                  publisher_id=party_id if kind == "publisher" else None,
                  buyer_id=party_id if kind == "buyer" else None)
    session.add(user)
    await session.flush()
    token = await _new_invite(session, user, by, hours)
    return user, token


async def _new_invite(session: AsyncSession, user: w.User, by: str, hours: float) -> str:
    token = security.new_secret(INVITE_PREFIX)
    now = utcnow()
    session.add(p.Invite(token_hash=security.digest(token), user_id=user.id, created_by=by, created_at=now,
                         expires_at=now + timedelta(hours=hours)))
    await session.flush()
    return token


async def reinvite(session: AsyncSession, user_id: int, *, by: str, hours: float) -> tuple[w.User, str]:
    """A fresh link for a partner user (earlier unused links stop working)."""
    user = await session.get(w.User, user_id)
    if user is None or not security.is_partner(user.role):
        raise ValidationError("user", f"no partner user with id {user_id}")
    for old in await session.scalars(select(p.Invite).where(p.Invite.user_id == user.id, p.Invite.used_at.is_(None))):
        old.used_at = utcnow()  # spent
    return user, await _new_invite(session, user, by, hours)


async def invite_user(session: AsyncSession, token: str) -> tuple[p.Invite, w.User] | None:
    """The live (unused, unexpired) invite of `token` and its user."""
    if not token.startswith(INVITE_PREFIX):
        return None
    row = (await session.execute(select(p.Invite, w.User).join(w.User, w.User.id == p.Invite.user_id).where(
        p.Invite.token_hash == security.digest(token), p.Invite.used_at.is_(None),
        p.Invite.expires_at > utcnow(), w.User.disabled.is_(False)))).first()
    return None if row is None else (row[0], row[1])


async def accept_invite(session: AsyncSession, token: str, password: str) -> w.User:
    found = await invite_user(session, token)
    if found is None:
        raise ValidationError("invite", "this invitation link is unknown, already used or expired; "
                                        "ask the operator for a new one")
    inv, user = found
    user.password_hash = security.hash_password(security.check_password(password))
    inv.used_at = utcnow()
    await session.flush()
    return user


async def partner_users(session: AsyncSession) -> list[tuple[w.User, p.Invite | None]]:
    """Every partner user with its latest invite."""
    users = list(await session.scalars(select(w.User).where(w.User.role.in_(w.PARTNER_ROLES)).order_by(w.User.username)))
    latest: dict[int, p.Invite] = {}
    for inv in await session.scalars(select(p.Invite).order_by(p.Invite.id)):
        latest[inv.user_id] = inv
    return [(u, latest.get(u.id)) for u in users]


# --- calls ---------------------------------------------------------------------------------

@dataclass
class CallQuery:
    date_from: date | None = None
    date_to: date | None = None
    sub_id: str | None = None
    number: str = ""  # a tracking number's digits (prefix)
    billable: bool | None = None
    zone: str = "UTC"


def _call_conditions(party: Party, q: CallQuery) -> list:
    from ppcswitch.web import zones

    c = [party.column == party.id]
    if q.date_from:
        c.append(t.Call.started_at >= zones.day_bounds(q.date_from, q.zone)[0])
    if q.date_to:
        c.append(t.Call.started_at < zones.day_bounds(q.date_to, q.zone)[1])
    if q.sub_id is not None:
        c.append(t.Call.sub_id == q.sub_id)
    if q.number:
        c.append(t.Call.tracking_number.like("%" + store._like(q.number) + "%", escape="\\"))
    if q.billable is not None:
        c.append(t.Call.billable.is_(q.billable))
    return c


async def list_calls(session: AsyncSession, party: Party, q: CallQuery, limit: int = 50, cursor: str = ""
                     ) -> tuple[list[t.Call], str]:
    sel = select(t.Call).where(*_call_conditions(party, q))
    if cursor:
        at, ident = store.decode_cursor(cursor)
        sel = sel.where(or_(t.Call.started_at < at, and_(t.Call.started_at == at, t.Call.id < ident)))
    rows = list(await session.scalars(sel.order_by(t.Call.started_at.desc(), t.Call.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (store.encode_cursor(rows[-1]) if more and rows else "")


async def get_call(session: AsyncSession, party: Party, call_id: int) -> t.Call | None:
    return await session.scalar(select(t.Call).where(t.Call.id == call_id, party.column == party.id))


async def ledger_amounts(session: AsyncSession, party: Party, call_ids: list[int]) -> dict[int, int]:
    """The party's own side of each call's money in the ledger (payable or receivable)."""
    if not call_ids:
        return {}
    rows = await session.execute(
        select(b.LedgerEntry.call_id, func.sum(b.LedgerEntry.amount_cents))
        .where(b.LedgerEntry.call_id.in_(call_ids), b.LedgerEntry.account == party.account)
        .group_by(b.LedgerEntry.call_id))
    return {int(cid): int(total or 0) for cid, total in rows.all()}


async def reversed_calls(session: AsyncSession, party: Party, call_ids: list[int]) -> set[int]:
    """Which of these calls had the party's money reversed by an accepted dispute."""
    if not call_ids:
        return set()
    return set(await session.scalars(select(b.LedgerEntry.call_id).where(
        b.LedgerEntry.call_id.in_(call_ids), b.LedgerEntry.account == party.account,
        b.LedgerEntry.kind == "dispute").distinct()))


async def disputes_of_calls(session: AsyncSession, party: Party, call_ids: list[int]) -> dict[int, p.Dispute]:
    if party.kind != "buyer" or not call_ids:
        return {}
    rows = await session.scalars(select(p.Dispute).where(p.Dispute.call_id.in_(call_ids),
                                                         p.Dispute.buyer_id == party.id))
    return {d.call_id: d for d in rows}


def reasons_of(call: t.Call) -> list[str]:
    try:
        value = json.loads(call.billing_reasons or "[]")
    except ValueError:
        return []
    return [str(x) for x in value] if isinstance(value, list) else []


# --- the report by day ------------------------------------------------------------------------

async def report_by_day(session: AsyncSession, party: Party, first: date, last: date, zone: str) -> list[dict]:
    """Calls, billable calls, seconds and the party's money per local day (money: ledger entries booked that day)."""
    from ppcswitch.web import zones

    if last < first:
        raise ValidationError("to", f"the period ends ({last}) before it starts ({first})")
    if (last - first).days + 1 > MAX_REPORT_DAYS:
        raise ValidationError("to", f"at most {MAX_REPORT_DAYS} days at a time")
    start, end = zones.day_bounds(first, zone)[0], zones.day_bounds(last, zone)[1]
    z = ZoneInfo(zone)
    days: dict[date, dict] = {}
    d = first
    while d <= last:
        days[d] = {"day": d, "calls": 0, "billable": 0, "seconds": 0, "amount_cents": 0}
        d += timedelta(days=1)
    calls = await session.execute(select(t.Call.started_at, t.Call.billable, t.Call.connected_ms).where(
        party.column == party.id, t.Call.started_at >= start, t.Call.started_at < end))
    for at, billable, ms in calls.all():
        row = days.get(at.astimezone(z).date())
        if row is not None:
            row["calls"] += 1
            row["billable"] += 1 if billable else 0
            row["seconds"] += int(ms or 0) // 1000
    col = b.LedgerEntry.publisher_id if party.kind == "publisher" else b.LedgerEntry.buyer_id
    money = await session.execute(select(b.LedgerEntry.booked_at, b.LedgerEntry.amount_cents).where(
        col == party.id, b.LedgerEntry.account == party.account, b.LedgerEntry.booked_at >= start,
        b.LedgerEntry.booked_at < end))
    for at, cents in money.all():
        row = days.get(at.astimezone(z).date())
        if row is not None:
            row["amount_cents"] += int(cents or 0)
    return list(days.values())


GROUPS = {"number": t.Call.tracking_number, "sub_id": t.Call.sub_id, "campaign": t.Call.campaign_id}


async def report_by(session: AsyncSession, party: Party, first: date, last: date, zone: str, by: str) -> list[dict]:
    """Calls started in the local days, per tracking number, sub-ID or campaign, with the party's money
    booked for those calls (reversals included)."""
    from ppcswitch.web import zones

    if by not in GROUPS or (by == "sub_id" and party.kind != "publisher"):
        raise ValidationError("by", "must be day, number, campaign" + (" or sub_id" if party.kind == "publisher" else ""))
    if last < first:
        raise ValidationError("to", f"the period ends ({last}) before it starts ({first})")
    if (last - first).days + 1 > MAX_REPORT_DAYS:
        raise ValidationError("to", f"at most {MAX_REPORT_DAYS} days at a time")
    start, end = zones.day_bounds(first, zone)[0], zones.day_bounds(last, zone)[1]
    key = GROUPS[by]
    where = [party.column == party.id, t.Call.started_at >= start, t.Call.started_at < end]
    counts = await session.execute(
        select(key, func.count(), func.sum(case((t.Call.billable.is_(True), 1), else_=0)), func.coalesce(func.sum(t.Call.connected_ms), 0))
        .where(*where).group_by(key))
    money = dict((await session.execute(
        select(key, func.sum(b.LedgerEntry.amount_cents)).join(b.LedgerEntry, b.LedgerEntry.call_id == t.Call.id)
        .where(*where, b.LedgerEntry.account == party.account).group_by(key))).all())
    names = {}
    if by == "campaign":
        names = {i: n for i, n in (await session.execute(select(t.Campaign.id, t.Campaign.name))).all()}
    rows = [{"key": names.get(k, k) if by == "campaign" else (k or ""), "calls": int(c), "billable": int(bl or 0),
             "seconds": int(ms or 0) // 1000, "amount_cents": int(money.get(k) or 0)} for k, c, bl, ms in counts.all()]
    return sorted(rows, key=lambda r: (-r["calls"], str(r["key"])))


# --- statements --------------------------------------------------------------------------------

async def closed_periods(session: AsyncSession) -> list[b.ClosedPeriod]:
    return list(await session.scalars(select(b.ClosedPeriod).order_by(b.ClosedPeriod.start_at.desc())))


async def statement(session: AsyncSession, party: Party, period_id: int, zone: str, currency: str
                    ) -> reports.Statement:
    """The party's statement of one closed period, or (period_id 0) of the open one so far: from the end
    of the last closed period to now (to the next 15-minute boundary)."""
    if period_id == 0:
        last = await session.scalar(select(func.max(b.ClosedPeriod.end_at)))
        now = datetime.now(timezone.utc)
        if last is None:  # nothing closed yet: from the party's first entry
            col = b.LedgerEntry.publisher_id if party.kind == "publisher" else b.LedgerEntry.buyer_id
            first = await session.scalar(select(func.min(b.LedgerEntry.booked_at)).where(
                col == party.id, b.LedgerEntry.account == party.account))
            last = ledger.bucket_of(first or now)
        start = last
        end = ledger.bucket_of(now) + ledger.BUCKET
        label = f"since {start.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone} (open, so far)"
        return await reports.statement(session, party.kind, party.id, reports.Period(start, end, zone, label), currency)
    row = await session.get(b.ClosedPeriod, period_id)
    if row is None:
        raise ValidationError("period", f"no closed period with id {period_id}")
    label = f"{row.start_at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M}..{row.end_at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"
    per = reports.Period(row.start_at, row.end_at, zone, label)
    return await reports.statement(session, party.kind, party.id, per, currency)


# --- numbers and pools (publishers) -----------------------------------------------------------------

async def numbers_of(session: AsyncSession, party: Party) -> list[tuple[t.TrackingNumber, str]]:
    rows = await session.execute(select(t.TrackingNumber, t.Campaign.name)
                                 .join(t.Campaign, t.Campaign.id == t.TrackingNumber.campaign_id)
                                 .where(t.TrackingNumber.publisher_id == party.id).order_by(t.TrackingNumber.number))
    return [(r[0], r[1]) for r in rows.all()]


async def pools_of(session: AsyncSession, party: Party) -> list[tuple[a.NumberPool, str, int]]:
    pools = list((await session.execute(
        select(a.NumberPool, t.Campaign.name).join(t.Campaign, t.Campaign.id == a.NumberPool.campaign_id)
        .where(a.NumberPool.publisher_id == party.id).order_by(a.NumberPool.name))).all())
    counts = dict((await session.execute(select(a.PoolNumber.pool_id, func.count()).group_by(a.PoolNumber.pool_id))).all())
    return [(pool, name, int(counts.get(pool.id, 0))) for pool, name in pools]


# --- disputes --------------------------------------------------------------------------------------

class DisputeRefused(ValidationError):
    pass


async def open_dispute(session: AsyncSession, party: Party, call_id: int, *, reason_code: str, note: str,
                       user: str, window_days: int, now: datetime | None = None) -> p.Dispute:
    """A buyer disputes one of its billable calls: pending until an operator decides."""
    now = now or datetime.now(timezone.utc)
    if party.kind != "buyer":
        raise ValidationError("call", "only buyers dispute calls")
    call = await get_call(session, party, call_id)
    if call is None:
        raise ValidationError("call", f"no call with id {call_id}")
    if reason_code not in p.DISPUTE_REASONS:
        raise ValidationError("reason_code", f"must be one of {', '.join(p.DISPUTE_REASONS)}")
    note = (note or "").strip()
    if reason_code == "other" and not note:
        raise ValidationError("note", "say what is wrong with the call")
    if len(note) > 1000:
        raise ValidationError("note", "must be at most 1000 characters")
    existing = await session.scalar(select(p.Dispute).where(p.Dispute.call_id == call.id))
    if existing is not None:
        raise DisputeRefused("call", f"this call was already disputed ({existing.state})")
    owed = (await ledger_amounts(session, party, [call.id])).get(call.id, 0)
    if not call.billable or owed <= 0:
        raise DisputeRefused("call", "only a billable call you were charged for can be disputed")
    closes = call.started_at + timedelta(days=window_days)
    if now > closes:
        raise DisputeRefused("call", f"the dispute window of {window_days} days for this call closed on "
                                     f"{closes:%Y-%m-%d %H:%M} UTC")
    row = p.Dispute(call_id=call.id, linkedid=call.linkedid, buyer_id=party.id, reason_code=reason_code, note=note,
                    state="pending", created_by=user, created_at=now, decided_by="", decision_note="",
                    reversed_cents=0)
    session.add(row)
    await session.flush()
    return row


async def list_disputes(session: AsyncSession, buyer_id: int | None = None, state: str = "") -> list[p.Dispute]:
    q = select(p.Dispute).order_by(p.Dispute.id.desc()).limit(500)
    if buyer_id is not None:
        q = q.where(p.Dispute.buyer_id == buyer_id)
    if state:
        q = q.where(p.Dispute.state == state)
    return list(await session.scalars(q))


async def pending_disputes(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(p.Dispute).where(p.Dispute.state == "pending"))
               or 0)


async def _pending(session: AsyncSession, model, ident: int, field: str, what: str):
    """A dispute or number request still waiting for an operator's decision."""
    row = await session.get(model, ident)
    if row is None:
        raise ValidationError(field, f"no {what} with id {ident}")
    if row.state != "pending":
        raise ValidationError(field, f"this {what} was already {row.state}")
    return row


async def decide_dispute(session: AsyncSession, dispute_id: int, *, accept: bool, note: str, user: str,
                         now: datetime | None = None) -> p.Dispute:
    """An operator accepts (the ledger reverses the call's revenue, and payout where it depends on the
    buyer paying; the signed reversal postback is queued) or rejects (a note is required) a dispute."""
    now = now or datetime.now(timezone.utc)
    row = await _pending(session, p.Dispute, dispute_id, "dispute", "dispute")
    note = (note or "").strip()[:1000]
    if not accept and not note:
        raise ValidationError("note", "say why the dispute is rejected")
    if accept:
        # The buyer filed within the window; the ledger checks the window against now, so it is given
        # the window that covers the time of the decision.
        call = await session.get(t.Call, row.call_id)
        started = call.started_at if call is not None else row.created_at
        window = max(1, math.ceil((now - started).total_seconds() / 86400) + 1)
        reason = f"dispute {row.reason_code}: {row.note}".strip().rstrip(":")
        booked = await ledger.dispute(session, row.linkedid, user=user, reason=reason, window_days=window, now=now)
        row.reversed_cents = -sum(e.amount_cents for e in booked if e.account == ledger.RECEIVABLE)
    row.state = "accepted" if accept else "rejected"
    row.decided_by, row.decided_at, row.decision_note = user, now, note
    await session.flush()
    return row


# --- a buyer's availability -----------------------------------------------------------------------

async def set_paused(session: AsyncSession, party: Party, paused: bool) -> t.Buyer:
    if party.kind != "buyer":
        raise ValidationError("paused", "only buyers pause themselves")
    if not (await access_of(session, "buyer", party.id)).allow_pause:
        raise ValidationError("paused", "the operator does not let you pause or resume yourself; ask them")
    return await repo.update_buyer(session, party.id, paused=bool(paused))


# --- recordings (buyers) ---------------------------------------------------------------------------

async def recording_name(session: AsyncSession, party: Party, call_id: int) -> str:
    """The recording file name of one of the buyer's own calls, where the campaign recorded it and the
    operator lets this buyer hear it on that campaign ('' otherwise)."""
    from ppcswitch.storage import models_fraud as f

    if party.kind != "buyer":
        return ""
    call = await get_call(session, party, call_id)
    if call is None:
        return ""
    _acc, per = await access_by_campaign(session, party, [call.campaign_id])
    if not per.get(call.campaign_id, _acc).recordings:
        return ""
    return await session.scalar(select(f.CallSignals.recording).where(f.CallSignals.linkedid == call.linkedid)) or ""


async def recorded_calls(session: AsyncSession, party: Party, calls: list[t.Call]) -> set[int]:
    """Which of these (the buyer's own) calls have a recording it may hear."""
    from ppcswitch.storage import models_fraud as f

    if party.kind != "buyer" or not calls:
        return set()
    acc, per = await access_by_campaign(session, party, [c.campaign_id for c in calls])
    allowed = [c for c in calls if per.get(c.campaign_id, acc).recordings]
    if not allowed:
        return set()
    named = {lid for lid, name in (await session.execute(select(f.CallSignals.linkedid, f.CallSignals.recording).where(
        f.CallSignals.linkedid.in_([c.linkedid for c in allowed])))).all() if name}
    return {c.id for c in allowed if c.linkedid in named}


# --- number requests (publishers) and the operator's spare numbers -----------------------------------

async def campaigns_of(session: AsyncSession, party: Party) -> list[tuple[int, str]]:
    """The campaigns a publisher works on (those of its numbers and pools): where it may ask for more."""
    ids = set(await session.scalars(select(t.TrackingNumber.campaign_id).where(t.TrackingNumber.publisher_id == party.id)))
    ids |= set(await session.scalars(select(a.NumberPool.campaign_id).where(a.NumberPool.publisher_id == party.id)))
    if not ids:
        return []
    return [(i, n) for i, n in (await session.execute(select(t.Campaign.id, t.Campaign.name).where(
        t.Campaign.id.in_(ids)).order_by(t.Campaign.name))).all()]


async def numbers_held(session: AsyncSession, party: Party) -> int:
    return int(await session.scalar(select(func.count()).select_from(t.TrackingNumber).where(
        t.TrackingNumber.publisher_id == party.id)) or 0)


async def numbers_asked(session: AsyncSession, party: Party) -> int:
    return int(await session.scalar(select(func.coalesce(func.sum(p.NumberRequest.quantity), 0)).where(
        p.NumberRequest.publisher_id == party.id, p.NumberRequest.state == "pending")) or 0)


def _area_code(value: str) -> str:
    value = (value or "").strip()
    if not re.fullmatch(r"[2-9]\d\d", value):
        raise ValidationError("area_code", "must be a 3-digit area code, such as 212")
    return value


async def spare_in(session: AsyncSession, area_code: str, limit: int) -> list[p.SpareNumber]:
    return list(await session.scalars(select(p.SpareNumber).where(p.SpareNumber.number.like(f"+1{area_code}%"))
                                      .order_by(p.SpareNumber.id).limit(limit)))


async def spare_counts(session: AsyncSession) -> dict[str, int]:
    out: dict[str, int] = {}
    for number in await session.scalars(select(p.SpareNumber.number)):
        key = number[2:5] if number.startswith("+1") else number[:4]
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


async def add_spare(session: AsyncSession, text: str, user: str) -> list[str]:
    """Spare numbers (one per line or comma-separated, read in the US) the operator holds for requests."""
    from ppcswitch.storage import validate as v

    added = []
    for raw in [x.strip() for x in re.split(r"[,;\n]+", text or "") if x.strip()]:
        e164 = v.phone(raw, "US")
        if await session.scalar(select(t.TrackingNumber.id).where(t.TrackingNumber.number == e164)) is not None:
            raise ValidationError("numbers", f"{e164} is already a tracking number")
        if await session.scalar(select(p.SpareNumber.id).where(p.SpareNumber.number == e164)) is None and e164 not in added:
            session.add(p.SpareNumber(number=e164, added_by=user, added_at=utcnow()))
            added.append(e164)
    if not added and not (text or "").strip():
        raise ValidationError("numbers", "type the numbers to hold, one per line")
    await session.flush()
    return added


async def _fill(session: AsyncSession, row: p.NumberRequest, by: str, now: datetime) -> list[str]:
    spares = await spare_in(session, row.area_code, row.quantity)
    if len(spares) < row.quantity:
        raise ValidationError("numbers", f"only {len(spares)} spare number{'s' if len(spares) != 1 else ''} in area "
                                         f"code {row.area_code}; {row.quantity} asked for")
    given = []
    for spare in spares:
        await repo.add_tracking_number(session, spare.number, row.campaign_id, row.publisher_id)
        given.append(spare.number)
        await session.delete(spare)
    row.state, row.numbers, row.decided_by, row.decided_at = "filled", json.dumps(given), by, now
    await session.flush()
    return given


async def request_numbers(session: AsyncSession, party: Party, *, campaign_id: int, area_code: str, quantity,
                          note: str, user: str, now: datetime | None = None) -> p.NumberRequest:
    """A publisher asks for numbers on one of its campaigns, up to the operator's limit; filled at once
    from the spare numbers when the operator allows it and there are enough, else pending."""
    now = now or datetime.now(timezone.utc)
    if party.kind != "publisher":
        raise ValidationError("quantity", "only publishers ask for numbers")
    acc = await access_of(session, "publisher", party.id)
    area_code = _area_code(area_code)
    try:
        quantity = int(str(quantity).strip())
    except ValueError:
        raise ValidationError("quantity", "must be a whole number") from None
    if not 1 <= quantity <= 100:
        raise ValidationError("quantity", "must be 1 to 100")
    if campaign_id not in {i for i, _ in await campaigns_of(session, party)}:
        raise ValidationError("campaign", "choose one of your campaigns")
    note = (note or "").strip()
    if len(note) > 500:
        raise ValidationError("note", "must be at most 500 characters")
    held, asked = await numbers_held(session, party), await numbers_asked(session, party)
    if acc.number_limit <= 0:
        raise NumberRefused("quantity", "the operator does not take number requests from you; ask them")
    if held + asked + quantity > acc.number_limit:
        room = max(0, acc.number_limit - held - asked)
        raise NumberRefused("quantity", f"your limit is {acc.number_limit} numbers: you hold {held} and asked for "
                                        f"{asked} more, so at most {room} now")
    row = p.NumberRequest(publisher_id=party.id, campaign_id=campaign_id, area_code=area_code, quantity=quantity,
                          note=note, state="pending", numbers="[]", created_by=user, created_at=now, decided_by="",
                          decision_note="")
    session.add(row)
    await session.flush()
    if acc.auto_fill_numbers and len(await spare_in(session, area_code, quantity)) >= quantity:
        await _fill(session, row, "auto", now)
    return row


class NumberRefused(ValidationError):
    pass


async def list_number_requests(session: AsyncSession, publisher_id: int | None = None, state: str = ""
                               ) -> list[p.NumberRequest]:
    q = select(p.NumberRequest).order_by(p.NumberRequest.id.desc()).limit(500)
    if publisher_id is not None:
        q = q.where(p.NumberRequest.publisher_id == publisher_id)
    if state:
        q = q.where(p.NumberRequest.state == state)
    return list(await session.scalars(q))


async def decide_number_request(session: AsyncSession, request_id: int, *, approve: bool, note: str, user: str,
                                now: datetime | None = None) -> p.NumberRequest:
    """An operator fills a pending request from the spare numbers of its area code, or rejects it (a note)."""
    now = now or datetime.now(timezone.utc)
    row = await _pending(session, p.NumberRequest, request_id, "request", "number request")
    note = (note or "").strip()[:1000]
    if approve:
        await _fill(session, row, user, now)
    else:
        if not note:
            raise ValidationError("note", "say why the request is rejected")
        row.state, row.decided_by, row.decided_at = "rejected", user, now
    row.decision_note = note
    await session.flush()
    return row


# An operator's decision on a pending row, the same from the panel and the API: (decide, audit entry).
DECISIONS = {
    "dispute": (p.Dispute, lambda s, ident, yes, note, user: decide_dispute(s, ident, accept=yes, note=note, user=user),
                lambda row, yes, note: ("dispute.accept" if yes else "dispute.reject", f"call {row.linkedid}",
                                        {"dispute": row.id, "note": note, "reversed": format_cents(row.reversed_cents)})),
    "numbers": (p.NumberRequest,
                lambda s, ident, yes, note, user: decide_number_request(s, ident, approve=yes, note=note, user=user),
                lambda row, yes, note: ("numbers.request." + ("fill" if yes else "reject"), f"request {row.id}",
                                        {"publisher_id": row.publisher_id, "numbers": request_numbers_of(row),
                                         "note": note})),
}


async def decide(session: AsyncSession, kind: str, ident: int, *, yes: bool, note: str, user: str, via: str):
    """Accept/fill (yes) or reject one pending dispute or number request, with its audit entry; a row
    that does not exist raises LookupError."""
    model, fn, audit_of = DECISIONS[kind]
    if await session.get(model, ident) is None:
        raise LookupError(ident)
    row = await fn(session, ident, yes, note, user)
    store.audit(session, user, via, *audit_of(row, yes, note))
    return row


def request_numbers_of(row: p.NumberRequest) -> list[str]:
    try:
        return [str(x) for x in json.loads(row.numbers or "[]")]
    except ValueError:
        return []


# --- a buyer's own hours and caps, within the operator's bounds --------------------------------------

RULE_FIELDS = ("hours", "concurrency", "cap_hourly", "cap_daily", "cap_monthly")
BOUND_OF = {"concurrency": "max_concurrency", "cap_hourly": "max_cap_hourly", "cap_daily": "max_cap_daily",
            "cap_monthly": "max_cap_monthly"}


async def own_rules(session: AsyncSession, party: Party) -> dict:
    from ppcswitch.storage import repo_routing

    rules = await repo_routing.get_buyer_rules(session, party.id)
    buyer = await session.get(t.Buyer, party.id)
    return {"timezone": rules.get("timezone") or "UTC", "hours": rules.get("hours") or "",
            "concurrency": buyer.concurrency_cap if buyer else None, "cap_hourly": rules.get("cap_hourly"),
            "cap_daily": rules.get("cap_daily"), "cap_monthly": rules.get("cap_monthly")}


def _minutes(week) -> list[set[int]]:
    if week is None:
        return [set(range(1440)) for _ in range(7)]
    return [{m for lo, hi in day for m in range(lo, hi)} for day in week]


def hours_within(hours: str, bound: str) -> bool:
    """Whether every minute open in `hours` is open in `bound` ('' = always open)."""
    from ppcswitch.routing.rules import parse_hours

    if not bound.strip():
        return True
    mine, allowed = _minutes(parse_hours(hours)), _minutes(parse_hours(bound))
    return all(m <= b for m, b in zip(mine, allowed))


async def set_own_rules(session: AsyncSession, party: Party, values: dict) -> dict:
    """A buyer changes its own hours and caps (only the fields given; '' / None removes a cap), each
    within the bound the operator set; returns them as stored."""
    from ppcswitch.routing.rules import RulesError, parse_hours
    from ppcswitch.storage import repo_routing

    if party.kind != "buyer":
        raise RulesRefused("hours", "only buyers set their hours and caps")
    acc = await access_of(session, "buyer", party.id)
    if not acc.edit_rules:
        raise RulesRefused("hours", "the operator sets your hours and caps; ask them")
    unknown = sorted(set(values) - set(RULE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"is not one of {', '.join(RULE_FIELDS)}")
    clean: dict = {}
    if "hours" in values:
        hours = str(values["hours"] or "").strip()
        if len(hours) > 500:
            raise ValidationError("hours", "must be at most 500 characters")
        try:
            parse_hours(hours)
        except RulesError as exc:
            raise ValidationError("hours", str(exc).split(": ", 1)[1]) from None
        if not hours_within(hours, acc.hours_bound):
            raise ValidationError("hours", f"must lie within the hours the operator allows: {acc.hours_bound}"
                                  + ("" if hours else " (empty means always open)"))
        clean["hours"] = hours or None
    for key, bound_key in BOUND_OF.items():
        if key not in values:
            continue
        value = values[key]
        if isinstance(value, bool):
            raise ValidationError(key, "must be a whole number or empty (no cap)")
        n = _bound(value, key)
        most = getattr(acc, bound_key)
        if most is not None and (n is None or n > most):
            raise ValidationError(key, f"must be at most {most} (the operator's bound)")
        clean[key] = n
    rules = {k: v for k, v in clean.items() if k not in ("concurrency",)}
    if rules:
        await repo_routing.set_buyer_rules(session, party.id, rules)
    if "concurrency" in clean:
        await repo.update_buyer(session, party.id, concurrency_cap=clean["concurrency"])
    return await own_rules(session, party)


class RulesRefused(ValidationError):
    pass


# --- a publisher's own postback target ---------------------------------------------------------------

async def own_target(session: AsyncSession, party: Party) -> a.PostbackTarget | None:
    if party.kind != "publisher":
        return None
    return await session.scalar(select(a.PostbackTarget).where(a.PostbackTarget.kind == "publisher",
                                                              a.PostbackTarget.owner_id == party.id))


def check_partner_url(url: str, private_ok: bool) -> str:
    """An http(s) URL a partner may have notifications sent to: not to this host nor a private
    network (unless http.partner_private_urls)."""
    from urllib.parse import urlsplit

    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000 or any(c.isspace() for c in url):
        raise ValidationError("url", "must be an http:// or https:// URL of at most 2000 characters")
    host = parts.hostname.lower().rstrip(".")
    if not private_ok:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if host == "localhost" or host.endswith(".localhost") or (ip is not None and not ip.is_global):
            raise ValidationError("url", "must be an address on the internet (not this host nor a private network)")
    return url


async def set_own_target(session: AsyncSession, party: Party, url: str, *, new_secret: bool, private_ok: bool
                         ) -> tuple[a.PostbackTarget, str]:
    """Save the publisher's postback URL template; returns the target and its secret when new or
    renewed ('' when it stays). Signed as the operator's are; sent for the publisher's own calls only."""
    import secrets

    if party.kind != "publisher":
        raise ValidationError("url", "only publishers have postback targets here")
    url = check_partner_url(url, private_ok)
    row = await own_target(session, party)
    secret = ""
    if row is None:
        secret = secrets.token_urlsafe(24)
        row = a.PostbackTarget(kind="publisher", owner_id=party.id, url=url, secret=secret, partner_managed=True)
        session.add(row)
    else:
        row.url, row.partner_managed = url, True
        if new_secret:
            secret = row.secret = secrets.token_urlsafe(24)
    await session.flush()
    return row, secret


async def delete_own_target(session: AsyncSession, party: Party) -> bool:
    row = await own_target(session, party)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True


async def own_deliveries(session: AsyncSession, party: Party, limit: int = 50) -> list[a.PostbackOutbox]:
    """The publisher's latest postbacks (its own calls only), newest first."""
    if party.kind != "publisher":
        return []
    return list(await session.scalars(select(a.PostbackOutbox).where(
        a.PostbackOutbox.kind == "publisher", a.PostbackOutbox.owner_id == party.id)
        .order_by(a.PostbackOutbox.id.desc()).limit(limit)))
