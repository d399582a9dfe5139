"""The panel's time zones: the account's (one stored setting, default `billing.report_timezone`) and
each user's own override (web_users.timezone). Every time the panel shows is in the viewer's zone,
with the zone named; the dashboard's "today" and the reports' days are that zone's days.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from ppcswitch import keys
from ppcswitch import timezones
from ppcswitch.storage import models_web as w
from ppcswitch.storage.models import utcnow
from ppcswitch.storage.validate import ValidationError

KEY = "timezone"
CACHE_SECONDS = 5.0  # another controller (or the CLI) changing the setting is seen this soon


def check(name: str, field: str = "timezone") -> str:
    """The canonical IANA name of a zone typed in any case; a clear error for an unknown one."""
    found = timezones.canonical(name)
    if found is None:
        raise ValidationError(field, f"unknown time zone {str(name).strip()[:64]!r}: pick a name from the list, "
                                     "such as America/New_York or UTC")
    return found


def canonical_rules(data):
    """A routing-rules object with its `timezone` spelled canonically ("america/new_york" ->
    America/New_York); an unknown name is left for the rules module to refuse with its message."""
    if isinstance(data, dict) and isinstance(data.get("timezone"), str) and data["timezone"].strip():
        found = timezones.canonical(data["timezone"])
        if found:
            return {**data, "timezone": found}
    return data


async def stored_account_zone(session: AsyncSession) -> str | None:
    row = await session.get(w.Setting, KEY)
    return row.value if row is not None and row.value else None


async def set_account_zone(session: AsyncSession, name: str, username: str) -> str:
    """Writer job: the account's time zone (canonical name)."""
    zone = check(name)
    row = await session.get(w.Setting, KEY)
    if row is None:
        session.add(w.Setting(key=KEY, value=zone, updated_at=utcnow(), updated_by=username))
    else:
        row.value, row.updated_at, row.updated_by = zone, utcnow(), username
    await session.flush()
    return zone


async def set_user_zone(session: AsyncSession, user_id: int, name: str) -> str | None:
    """Writer job: a user's own zone; "" goes back to the account's."""
    zone = check(name) if name.strip() else None
    row = await session.get(w.User, user_id)
    if row is None:
        raise ValidationError("user", f"no user with id {user_id}")
    row.timezone = zone
    await session.flush()
    return zone


def default_zone(app: web.Application) -> str:
    return timezones.canonical(app[keys.SETTINGS].billing.report_timezone) or "UTC"


async def account_zone(app: web.Application) -> tuple[str, bool]:
    """(the account's zone, whether an admin chose it) — cached a few seconds."""
    cache = app.get(keys.ACCOUNT_ZONE, {})  # set up by ppcswitch.web.setup
    now = time.monotonic()
    if cache.get("until", 0) > now:
        return cache["zone"], cache["chosen"]
    async with app[keys.SESSIONS]() as s:
        stored = await stored_account_zone(s)
    zone = timezones.canonical(stored) if stored else None
    cache.update(zone=zone or default_zone(app), chosen=zone is not None, until=now + CACHE_SECONDS)
    return cache["zone"], cache["chosen"]


def forget(app: web.Application) -> None:
    cache = app.get(keys.ACCOUNT_ZONE)
    if cache is not None:
        cache.clear()


async def request_zone(request: web.Request) -> str:
    """The zone the viewer sees times in: their own, else the account's."""
    user = request.get("user")
    own = timezones.canonical(getattr(user, "timezone", None)) if user is not None else None
    if own:
        return own
    return (await account_zone(request.app))[0]


def today(zone: str) -> date:
    return datetime.now(ZoneInfo(zone)).date()


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """[start, end) of a local day, as aware UTC (23 or 25 hours on a daylight-saving change)."""
    z = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=z).astimezone(timezone.utc)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=z).astimezone(timezone.utc)
    return start, end


def hour_bounds(day: date, zone: str) -> list[tuple[datetime, str]]:
    """Start (UTC) and local label ("00".."23") of each local hour of the day."""
    start, end = day_bounds(day, zone)
    z, out, at = ZoneInfo(zone), [], start
    while at < end:
        out.append((at, at.astimezone(z).strftime("%H")))
        at += timedelta(hours=1)
    return out


def local(value: datetime | None, zone: str | ZoneInfo) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone))
