"""Database reads and writes of the panel and the API.

Writes are Writer jobs (they never commit; the writer owns the transaction).
Call-log reads use keyset pagination on (started_at, id), which stays fast
however deep one pages in millions of calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from ppcswitch.storage import models as t
from ppcswitch.storage import models_web as w
from ppcswitch.storage import repo
from ppcswitch.storage.models import utcnow
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import numbers_import, security

SESSION_SECONDS_DEFAULT = 12 * 3600


# --- users, sessions, tokens, audit -----------------------------------------

async def user_by_name(session: AsyncSession, username: str) -> w.User | None:
    return await session.scalar(select(w.User).where(w.User.username == username))


async def create_user(session: AsyncSession, username: str, password: str, role: str) -> w.User:
    username = security.check_username(username)
    role = security.check_role(role)
    password = security.check_password(password)
    if await user_by_name(session, username) is not None:
        raise ValidationError("username", f"a user named {username!r} already exists")
    row = w.User(username=username, password_hash=security.hash_password(password), role=role, disabled=False)
    session.add(row)
    await session.flush()
    return row


async def set_password(session: AsyncSession, username: str, password: str) -> w.User:
    row = await user_by_name(session, username)
    if row is None:
        raise ValidationError("username", f"no user named {username!r}")
    row.password_hash = security.hash_password(security.check_password(password))
    await session.execute(delete(w.WebSession).where(w.WebSession.user_id == row.id))
    await session.flush()
    return row


async def set_user_disabled(session: AsyncSession, user_id: int, disabled: bool) -> w.User:
    """Disable (log out everywhere; tokens stop working) or enable a user."""
    row = await session.get(w.User, user_id)
    if row is None:
        raise ValidationError("user", f"no user with id {user_id}")
    row.disabled = bool(disabled)
    if disabled:
        await session.execute(delete(w.WebSession).where(w.WebSession.user_id == row.id))
    await session.flush()
    return row


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(w.User)) or 0)


async def list_users(session: AsyncSession) -> list[w.User]:
    return list(await session.scalars(select(w.User).order_by(w.User.username)))


async def create_session(session: AsyncSession, user_id: int, seconds: float) -> tuple[str, str]:
    """A new login session; returns (session id for the cookie, CSRF token). Only a digest is stored."""
    sid, csrf = security.new_secret(), security.new_secret()
    now = utcnow()
    session.add(w.WebSession(id_hash=security.digest(sid), user_id=user_id, csrf_token=csrf, created_at=now,
                             expires_at=now + timedelta(seconds=seconds)))
    # Expired sessions are dropped here, so the table never grows without bound.
    await session.execute(delete(w.WebSession).where(w.WebSession.expires_at < now))
    await session.flush()
    return sid, csrf


async def session_user(session: AsyncSession, sid: str) -> tuple[w.User, str] | None:
    """(user, CSRF token) of a live session id, or None."""
    row = (await session.execute(
        select(w.User, w.WebSession.csrf_token).join(w.WebSession, w.WebSession.user_id == w.User.id)
        .where(w.WebSession.id_hash == security.digest(sid), w.WebSession.expires_at > utcnow(),
               w.User.disabled.is_(False)))).first()
    return None if row is None else (row[0], row[1])


async def end_session(session: AsyncSession, sid: str) -> None:
    await session.execute(delete(w.WebSession).where(w.WebSession.id_hash == security.digest(sid)))


async def create_token(session: AsyncSession, user: w.User, name: str, role: str | None = None
                       ) -> tuple[w.ApiToken, str]:
    """A new API token for `user`; the token itself is returned once and never stored."""
    from ppcswitch.storage.validate import name as check_name

    role = role or user.role
    if not security.is_partner(role):
        role = security.check_role(role)
    if not security.role_within(role, user.role):
        raise ValidationError("role", f"a {user.role} user cannot create a {role} token")
    secret = security.new_secret(security.TOKEN_PREFIX)
    row = w.ApiToken(user_id=user.id, name=check_name(name), token_hash=security.digest(secret),
                     prefix=secret[:10], role=role, revoked=False)
    session.add(row)
    await session.flush()
    return row, secret


async def token_user(session: AsyncSession, secret: str) -> tuple[w.User, w.ApiToken] | None:
    row = (await session.execute(
        select(w.User, w.ApiToken).join(w.ApiToken, w.ApiToken.user_id == w.User.id)
        .where(w.ApiToken.token_hash == security.digest(secret), w.ApiToken.revoked.is_(False),
               w.User.disabled.is_(False)))).first()
    return None if row is None else (row[0], row[1])


async def list_tokens(session: AsyncSession) -> list[tuple[w.ApiToken, str]]:
    rows = await session.execute(select(w.ApiToken, w.User.username).join(w.User, w.User.id == w.ApiToken.user_id)
                                 .order_by(w.ApiToken.id))
    return [(r[0], r[1]) for r in rows]


async def revoke_token(session: AsyncSession, token_id: int) -> w.ApiToken:
    row = await session.get(w.ApiToken, token_id)
    if row is None:
        raise ValidationError("token", f"no token with id {token_id}")
    row.revoked = True
    await session.flush()
    return row


def audit(session: AsyncSession, username: str, via: str, action: str, target: str = "", detail=None) -> None:
    session.add(w.AuditEntry(at=utcnow(), username=username, via=via, action=action, target=str(target)[:200],
                             detail=json.dumps(detail or {}, sort_keys=True, default=str)[:10000]))


async def list_audit(session: AsyncSession, limit: int = 200, before_id: int | None = None) -> list[w.AuditEntry]:
    q = select(w.AuditEntry).order_by(w.AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(w.AuditEntry.id < before_id)
    return list(await session.scalars(q))


# --- network objects ---------------------------------------------------------

MODELS = {"buyer": t.Buyer, "publisher": t.Publisher, "campaign": t.Campaign}


async def list_objects(session: AsyncSession, kind: str, q: str = "", limit: int = 50, offset: int = 0
                       ) -> tuple[list, int]:
    model = MODELS[kind]
    where = model.name.ilike(f"%{_like(q)}%", escape="\\") if q else True
    total = int(await session.scalar(select(func.count()).select_from(model).where(where)) or 0)
    rows = list(await session.scalars(select(model).where(where).order_by(model.name).limit(limit).offset(offset)))
    return rows, total


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def names(session: AsyncSession, kind: str) -> dict[int, str]:
    model = MODELS[kind]
    return {r.id: r.name for r in await session.execute(select(model.id, model.name))}


async def campaign_buyers(session: AsyncSession, campaign_id: int) -> list[tuple[t.CampaignBuyer, t.Buyer]]:
    rows = await session.execute(select(t.CampaignBuyer, t.Buyer).join(t.Buyer, t.Buyer.id == t.CampaignBuyer.buyer_id)
                                 .where(t.CampaignBuyer.campaign_id == campaign_id)
                                 .order_by(t.CampaignBuyer.priority, t.Buyer.id))
    return [(r[0], r[1]) for r in rows]


async def list_numbers(session: AsyncSession, q: str = "", campaign_id: int | None = None,
                       publisher_id: int | None = None, limit: int = 50, offset: int = 0,
                       paused: bool | None = None) -> tuple[list[t.TrackingNumber], int]:
    conds = [] if paused is None else [t.TrackingNumber.paused.is_(paused)]
    if q:
        conds.append(t.TrackingNumber.number.like(f"%{_like(q)}%", escape="\\"))
    if campaign_id is not None:
        conds.append(t.TrackingNumber.campaign_id == campaign_id)
    if publisher_id is not None:
        conds.append(t.TrackingNumber.publisher_id == publisher_id)
    where = and_(True, *conds)
    total = int(await session.scalar(select(func.count()).select_from(t.TrackingNumber).where(where)) or 0)
    rows = list(await session.scalars(select(t.TrackingNumber).where(where).order_by(t.TrackingNumber.number)
                                      .limit(limit).offset(offset)))
    return rows, total


async def get_number(session: AsyncSession, number: str) -> t.TrackingNumber:
    row = await session.scalar(select(t.TrackingNumber).where(t.TrackingNumber.number == number))
    if row is None:
        raise ValidationError("number", f"{number} is not a tracking number")
    return row


async def update_number(session: AsyncSession, number: str, campaign=None, publisher=None) -> t.TrackingNumber:
    """Assign a tracking number to another campaign and/or publisher."""
    row = await get_number(session, number)
    if campaign is not None:
        row.campaign_id = (await repo.get_campaign(session, campaign)).id
    if publisher is not None:
        row.publisher_id = (await repo.get_publisher(session, publisher)).id
    await session.flush()
    await repo.bump_config_version(session)
    return row


async def set_numbers_paused(session: AsyncSession, numbers: list[str], paused: bool) -> int:
    """Pause (calls refused as number_paused) or resume tracking numbers; how many changed."""
    changed = 0
    for number in numbers:
        row = await get_number(session, number)
        if row.paused != paused:
            row.paused, changed = paused, changed + 1
    await session.flush()
    if changed:
        await repo.bump_config_version(session)
    return changed


async def _import_lookups(session: AsyncSession) -> tuple[dict[str, int], dict[str, int], set[str]]:
    campaigns = {r.name: r.id for r in await session.execute(select(t.Campaign.id, t.Campaign.name))}
    publishers = {r.name: r.id for r in await session.execute(select(t.Publisher.id, t.Publisher.name))}
    existing = set(await session.scalars(select(t.TrackingNumber.number)))
    return campaigns, publishers, existing


async def check_numbers_csv(session: AsyncSession, text: str, region: str) -> numbers_import.Checked:
    return numbers_import.check(text, *await _import_lookups(session), region)


async def import_numbers_csv(session: AsyncSession, text: str, region: str) -> numbers_import.Checked:
    """Writer job: every row or none (raises ImportRejected listing each bad row)."""
    checked = numbers_import.check(text, *await _import_lookups(session), region)
    if checked.errors:
        raise numbers_import.ImportRejected(checked)
    now = utcnow()
    values = [{"number": r.number, "campaign_id": r.campaign_id, "publisher_id": r.publisher_id, "created_at": now}
              for r in checked.rows]
    for i in range(0, len(values), 2000):  # executemany in chunks keeps statements a sane size
        await session.execute(insert(t.TrackingNumber), values[i:i + 2000])
    await repo.bump_config_version(session)
    return checked


# --- calls ---------------------------------------------------------------------

UNKNOWN_STATE = "unknown"  # the call-log filter for calls whose caller's state is not known
NO_SUB_ID = "(none)"  # the call-log filter for calls without a sub-ID


@dataclass
class CallFilter:
    date_from: date | None = None  # local days (zone below), inclusive
    date_to: date | None = None
    campaign_id: int | None = None
    publisher_id: int | None = None
    buyer_id: int | None = None
    billable: bool | None = None
    caller: str = ""  # a prefix of the caller (E.164)
    outcome: str = ""
    zone: str = "UTC"  # the days above are local days of this zone
    hour: int | None = None  # a local hour (0-23) of date_from
    state: str = ""  # the caller's state (two letters), or UNKNOWN_STATE
    sub_id: str | None = None  # a sub-ID, "" for calls without one

    def conditions(self) -> list:
        from ppcswitch.web import zones

        c = []
        if self.date_from and self.hour is not None:  # one local hour of that day (a drill-down)
            hours = zones.hour_bounds(self.date_from, self.zone)
            found = [i for i, (_, label) in enumerate(hours) if int(label) == self.hour]
            if not found:
                return [t.Call.id < 0]  # that hour does not exist (the spring-forward gap)
            first, last = found[0], found[-1]
            end = hours[last + 1][0] if last + 1 < len(hours) else zones.day_bounds(self.date_from, self.zone)[1]
            c += [t.Call.started_at >= hours[first][0], t.Call.started_at < end]
        if self.date_from:
            c.append(t.Call.started_at >= zones.day_bounds(self.date_from, self.zone)[0])
        if self.date_to:
            c.append(t.Call.started_at < zones.day_bounds(self.date_to, self.zone)[1])
        for col, value in ((t.Call.campaign_id, self.campaign_id), (t.Call.publisher_id, self.publisher_id),
                           (t.Call.buyer_id, self.buyer_id)):
            if value is not None:
                c.append(col == value)
        if self.billable is not None:
            c.append(t.Call.billable.is_(self.billable))
        if self.caller:
            c.append(t.Call.caller.like(_like(self.caller) + "%", escape="\\"))
        if self.outcome:
            c.append(t.Call.outcome == self.outcome)
        if self.state == UNKNOWN_STATE:
            c.append(func.coalesce(t.Call.caller_state, "") == "")
        elif self.state:
            c.append(t.Call.caller_state == self.state)
        if self.sub_id is not None:
            c.append(t.Call.sub_id == self.sub_id)
        return c


def _day_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def encode_cursor(row: t.Call) -> str:
    return f"{row.started_at.strftime('%Y%m%dT%H%M%S.%f')}_{row.id}"


def decode_cursor(text: str) -> tuple[datetime, int]:
    try:
        stamp, _, ident = text.partition("_")
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc), int(ident)
    except ValueError:
        raise ValidationError("cursor", "is not a cursor this server handed out") from None


RARE_CALLER = 5000


def _caller_prefix(session: AsyncSession, prefix: str):
    """A condition the ix_calls_caller index serves: a range in SQLite, LIKE (text_pattern_ops) in PostgreSQL."""
    if session.get_bind().dialect.name == "sqlite":
        return and_(t.Call.caller >= prefix, t.Call.caller < prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return t.Call.caller.like(_like(prefix) + "%", escape="\\")


async def list_calls(session: AsyncSession, flt: CallFilter, limit: int = 50, cursor: str = ""
                     ) -> tuple[list[t.Call], str]:
    """Newest first; returns the calls and the cursor of the next (older) page ("" at the end)."""
    q = select(t.Call).where(*flt.conditions())
    if flt.caller:
        # A rare caller would make the newest-first scan read every call: look its calls up by the
        # caller index instead. A common prefix finds its page quickly in the newest-first scan.
        ids = list(await session.scalars(select(t.Call.id).where(_caller_prefix(session, flt.caller))
                                         .limit(RARE_CALLER)))
        if not ids:
            return [], ""
        if len(ids) < RARE_CALLER:
            q = q.where(t.Call.id.in_(ids))
    if cursor:
        at, ident = decode_cursor(cursor)
        q = q.where(or_(t.Call.started_at < at, and_(t.Call.started_at == at, t.Call.id < ident)))
    rows = list(await session.scalars(q.order_by(t.Call.started_at.desc(), t.Call.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else "")


async def call_with_attempts(session: AsyncSession, call_id: int) -> t.Call | None:
    return await session.scalar(select(t.Call).where(t.Call.id == call_id).options(selectinload(t.Call.attempts)))


async def call_by_linkedid(session: AsyncSession, linkedid: str) -> t.Call | None:
    return await session.scalar(select(t.Call).where(t.Call.linkedid == linkedid)
                                .options(selectinload(t.Call.attempts)))


async def day_summary(session: AsyncSession, day: date, zone: str = "UTC") -> dict:
    """Totals of one local day in `zone` and calls per local hour (one aggregate query, range on the
    started_at index). A daylight-saving day has 23 or 25 hours."""
    from ppcswitch.web import zones

    bounds = zones.hour_bounds(day, zone)
    start, end = zones.day_bounds(day, zone)
    edges = [b for b, _ in bounds[1:]] + [end]
    cols = [func.count().label("calls"),
            func.coalesce(func.sum(case((t.Call.billable.is_(True), 1), else_=0)), 0).label("billable"),
            func.coalesce(func.sum(t.Call.revenue_cents), 0).label("revenue"),
            func.coalesce(func.sum(t.Call.payout_cents), 0).label("payout")]
    cols += [func.coalesce(func.sum(case((t.Call.started_at < edge, 1), else_=0)), 0) for edge in edges]
    row = (await session.execute(select(*cols).where(t.Call.started_at >= start, t.Call.started_at < end))).one()
    cumulative = [int(x) for x in row[4:]]
    per_hour = [cumulative[0]] + [cumulative[h] - cumulative[h - 1] for h in range(1, len(cumulative))]
    calls, billable, revenue, payout = (int(x) for x in row[:4])
    return {"calls": calls, "billable": billable, "billable_rate": (billable / calls if calls else 0.0),
            "revenue_cents": revenue, "payout_cents": payout, "margin_cents": revenue - payout,
            "per_hour": per_hour, "hour_labels": [label for _, label in bounds], "timezone": zone,
            "start": start, "end": end}
