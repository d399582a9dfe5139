"""IVR publisher codes: storage, the routing snapshot's part, and `ppcswitch code ...`.

A tracking number shared by several publishers can ask callers for a publisher
code (`ppcswitch code ask +18005550100 on`). The caller keys one at a prompt;
the call is then that publisher's, routed and paid as such, and with a sub-ID
code also attributed to that sub-ID. A wrong or missing code is asked for once
more; then the call stays with the number's own publisher (a caller is never
refused for a code they forgot). Codes are 1 to 8 digits, unique network-wide.

Like repo.py: functions never commit (writes run as Writer jobs) and every
write bumps config_version, so a running controller applies it on its next reload.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ppcswitch.attribution.clean import clean
from ppcswitch.routing import model as m
from ppcswitch.storage import models as t
from ppcswitch.storage import models_codes as c
from ppcswitch.storage.repo import Ref, bump_config_version, get_publisher
from ppcswitch.storage.validate import ValidationError, phone


def check_code(value: object) -> str:
    code = str(value if value is not None else "").strip()
    if not code.isascii() or not code.isdigit() or not 1 <= len(code) <= m.MAX_CODE_DIGITS:
        raise ValidationError("code", f"expected 1 to {m.MAX_CODE_DIGITS} digits (what a caller keys), got {value!r}")
    return code


def check_sub_id(value: object) -> str:
    text = str(value or "").strip()
    sub_id = clean(text)
    if sub_id != text:
        raise ValidationError("sub_id", f"at most 64 letters, digits and ._~- please, got {value!r}")
    return sub_id


async def set_code(session: AsyncSession, code: object, publisher: Ref, sub_id: object = "") -> c.PublisherCode:
    """Add a code, or point an existing one at another publisher / sub-ID."""
    code = check_code(code)
    sub = check_sub_id(sub_id)
    p = await get_publisher(session, publisher)
    row = await session.scalar(select(c.PublisherCode).where(c.PublisherCode.code == code))
    if row is None:
        row = c.PublisherCode(code=code, publisher_id=p.id, sub_id=sub)
        session.add(row)
    else:
        row.publisher_id, row.sub_id = p.id, sub
    await session.flush()
    await bump_config_version(session)
    return row


async def remove_code(session: AsyncSession, code: object) -> None:
    code = check_code(code)
    row = await session.scalar(select(c.PublisherCode).where(c.PublisherCode.code == code))
    if row is None:
        raise ValidationError("code", f"no publisher code {code}")
    await session.delete(row)
    await session.flush()
    await bump_config_version(session)


async def list_codes(session: AsyncSession) -> list[dict]:
    q = (select(c.PublisherCode.code, c.PublisherCode.publisher_id, t.Publisher.name, c.PublisherCode.sub_id)
         .join(t.Publisher, t.Publisher.id == c.PublisherCode.publisher_id).order_by(c.PublisherCode.code))
    return [{"code": code, "publisher_id": pid, "publisher": name, "sub_id": sub}
            for code, pid, name, sub in (await session.execute(q)).all()]


async def set_number_asks(session: AsyncSession, number: str, ask: bool, *, region: str = "US") -> t.TrackingNumber:
    """Make a tracking number ask its callers for a publisher code (or stop asking)."""
    e164 = phone(number, region)
    row = await session.scalar(select(t.TrackingNumber).where(t.TrackingNumber.number == e164))
    if row is None:
        raise ValidationError("number", f"{e164} is not a tracking number")
    row.ask_publisher_code = bool(ask)
    await session.flush()
    await bump_config_version(session)
    return row


async def with_codes(session: AsyncSession, network: m.Network) -> m.Network:
    """The routing snapshot with the publisher codes of publishers it knows."""
    rows = (await session.execute(select(c.PublisherCode.__table__))).all()
    codes = {r.code: m.PublisherCode(r.code, r.publisher_id, r.sub_id)
             for r in rows if r.publisher_id in network.publishers}
    digits = max((len(k) for k in codes), default=m.MAX_CODE_DIGITS)
    return dataclasses.replace(network, publisher_codes=codes, code_digits=digits)
