"""Routing rules, RTB settings and routing traces: reads, validated writes, the snapshot's extras.

Like repo.py: functions never commit (writes run as Writer jobs) and every
configuration write bumps config_version, so a running controller applies it
on its next reload. Bad input raises ValidationError naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Mapping
from urllib.parse import urlsplit

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ppcswitch.money import MoneyError, parse_cents
from ppcswitch.routing import model as m
from ppcswitch.routing.rules import RulesError, merged, normalize, parse_rules
from ppcswitch.storage import models as t
from ppcswitch.storage import models_routing as r
from ppcswitch.storage.repo import Ref, bump_config_version, get_buyer, get_campaign
from ppcswitch.storage.validate import ValidationError

_UNSET = object()


# --- rules -------------------------------------------------------------------

async def _rules_row(session: AsyncSession, buyer_id: int, campaign_id: int | None) -> r.BuyerRules | None:
    cond = r.BuyerRules.campaign_id.is_(None) if campaign_id is None else r.BuyerRules.campaign_id == campaign_id
    return await session.scalar(select(r.BuyerRules).where(r.BuyerRules.buyer_id == buyer_id, cond))


async def get_buyer_rules(session: AsyncSession, buyer: Ref, campaign: Ref | None = None) -> dict[str, Any]:
    """The stored rules of a buyer, or of its link to `campaign` (the overrides only)."""
    b = await get_buyer(session, buyer)
    k = await get_campaign(session, campaign) if campaign is not None else None
    row = await _rules_row(session, b.id, k.id if k else None)
    return json.loads(row.rules) if row else {}


async def set_buyer_rules(session: AsyncSession, buyer: Ref, changes: Mapping[str, Any], campaign: Ref | None = None,
                          *, replace: bool = False) -> dict[str, Any]:
    """Change some rules (a None or '' value removes that rule); returns the rules now stored.

    With `campaign`, the changes are overrides for that campaign link only."""
    b = await get_buyer(session, buyer)
    k = await get_campaign(session, campaign) if campaign is not None else None
    if k is not None and await session.scalar(select(t.CampaignBuyer.id).where(
            t.CampaignBuyer.campaign_id == k.id, t.CampaignBuyer.buyer_id == b.id)) is None:
        raise ValidationError("buyer", f"buyer {b.name!r} is not on campaign {k.name!r}")
    row = await _rules_row(session, b.id, k.id if k else None)
    current = {} if replace or row is None else json.loads(row.rules)
    current.update(changes)
    try:
        clean = normalize(current)
        if k is not None:  # the overrides must also make sense on top of the buyer's own rules
            base = await _rules_row(session, b.id, None)
            merged(json.loads(base.rules) if base else {}, clean)
    except RulesError as exc:
        raise ValidationError(exc.key, str(exc).split(": ", 1)[1]) from None
    if row is None:
        row = r.BuyerRules(buyer_id=b.id, campaign_id=k.id if k else None, rules="{}")
        session.add(row)
    row.rules = json.dumps(clean, sort_keys=True, default=str)
    await session.flush()
    await bump_config_version(session)
    return clean


# --- RTB ------------------------------------------------------------------------

def _http_url(value: str, field: str, required: bool = True) -> str:
    value = (value or "").strip()
    if not value and not required:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 500:
        raise ValidationError(field, f"expected an http(s):// URL, got {value!r}")
    return value


async def set_buyer_rtb(session: AsyncSession, buyer: Ref, ping_url: str, *, post_url: str = "",
                        timeout_ms: int | str = 300, floor: str = "0", share_caller: bool = False) -> r.BuyerRtb:
    """Reach `buyer` by real-time bidding: ping `ping_url` for a bid, post the outcome to `post_url`."""
    b = await get_buyer(session, buyer)
    try:
        timeout = int(str(timeout_ms).strip())
    except ValueError:
        raise ValidationError("timeout_ms", f"expected milliseconds, got {timeout_ms!r}") from None
    if not 10 <= timeout <= 10_000:
        raise ValidationError("timeout_ms", f"{timeout} is out of range 10..10000")
    try:
        floor_cents = parse_cents(str(floor))
    except MoneyError as exc:
        raise ValidationError("floor", str(exc)) from None
    row = await session.get(r.BuyerRtb, b.id) or r.BuyerRtb(buyer_id=b.id)
    row.ping_url, row.post_url = _http_url(ping_url, "ping_url"), _http_url(post_url, "post_url", required=False)
    row.timeout_ms, row.floor_cents, row.share_caller = timeout, floor_cents, bool(share_caller)
    session.add(row)
    await session.flush()
    await bump_config_version(session)
    return row


async def remove_buyer_rtb(session: AsyncSession, buyer: Ref) -> None:
    b = await get_buyer(session, buyer)
    row = await session.get(r.BuyerRtb, b.id)
    if row is not None:
        await session.delete(row)
        await session.flush()
        await bump_config_version(session)


# --- campaign options -----------------------------------------------------------------

async def set_campaign_routing(session: AsyncSession, campaign: Ref, *, zip_prompt=_UNSET, repeat_caller=_UNSET,
                               whisper=_UNSET, rtb_budget_ms=_UNSET) -> r.CampaignRouting:
    """ZIP prompt, repeat-caller routing, buyer whisper (an Asterisk sound name) and RTB budget."""
    k = await get_campaign(session, campaign)
    row = await session.get(r.CampaignRouting, k.id)
    if row is None:
        row = r.CampaignRouting(campaign_id=k.id, zip_prompt=False, repeat_caller=False, whisper="", rtb_budget_ms=1000)
        session.add(row)
    if zip_prompt is not _UNSET:
        row.zip_prompt = bool(zip_prompt)
    if repeat_caller is not _UNSET:
        row.repeat_caller = bool(repeat_caller)
    if whisper is not _UNSET:
        w = (whisper or "").strip()
        # An Asterisk sound name: nothing that could reach the dialplan as syntax.
        if w and (len(w) > 100 or not all(ch.isalnum() or ch in "/_-" for ch in w) or ".." in w or w.startswith("/")):
            raise ValidationError("whisper", f"expected a sound name such as custom/hvac-whisper, got {whisper!r}")
        row.whisper = w
    if rtb_budget_ms is not _UNSET:
        try:
            budget = int(str(rtb_budget_ms).strip())
        except ValueError:
            raise ValidationError("rtb_budget_ms", f"expected milliseconds, got {rtb_budget_ms!r}") from None
        if not 50 <= budget <= 10_000:
            raise ValidationError("rtb_budget_ms", f"{budget} is out of range 50..10000")
        row.rtb_budget_ms = budget
    await session.flush()
    await bump_config_version(session)
    return row


async def get_campaign_routing(session: AsyncSession, campaign: Ref) -> dict[str, Any]:
    k = await get_campaign(session, campaign)
    row = await session.get(r.CampaignRouting, k.id)
    if row is None:
        return {"zip_prompt": False, "repeat_caller": False, "whisper": "", "rtb_budget_ms": 1000}
    return {"zip_prompt": row.zip_prompt, "repeat_caller": row.repeat_caller, "whisper": row.whisper,
            "rtb_budget_ms": row.rtb_budget_ms}


# --- the snapshot --------------------------------------------------------------------

async def with_routing(session: AsyncSession, network: m.Network) -> m.Network:
    """The network with every buyer's rules, link overrides, RTB settings and campaign options."""
    buyer_rules: dict[int, dict] = {}
    link_rules: dict[tuple[int, int], dict] = {}
    for row in (await session.execute(select(r.BuyerRules.__table__))).all():
        data = json.loads(row.rules or "{}")
        if row.campaign_id is None:
            buyer_rules[row.buyer_id] = data
        else:
            link_rules[(row.campaign_id, row.buyer_id)] = data
    rtb = {row.buyer_id: m.RtbBuyer(ping_url=row.ping_url, post_url=row.post_url, timeout=row.timeout_ms / 1000,
                                    floor_cents=row.floor_cents, share_caller=row.share_caller)
           for row in (await session.execute(select(r.BuyerRtb.__table__))).all()}
    options = {row.campaign_id: row for row in (await session.execute(select(r.CampaignRouting.__table__))).all()}

    def rules_of(data_base: dict, data_link: dict | None = None):
        try:
            return merged(data_base, data_link) if data_link is not None else parse_rules(data_base)
        except RulesError:  # only a write bypassing validation gets here; keep the buyer, without its rules
            return parse_rules({})

    buyers = {bid: dataclasses.replace(b, rules=rules_of(buyer_rules.get(bid, {})), rtb=rtb.get(bid))
              for bid, b in network.buyers.items()}
    campaigns = {}
    for cid, c in network.campaigns.items():
        links = []
        for link in c.buyers:
            rules = rules_of(buyer_rules.get(link.buyer_id, {}), link_rules.get((cid, link.buyer_id), {}))
            prio = rules.priority if rules.priority is not None else link.priority
            links.append(m.CampaignBuyer(link.buyer_id, prio, rules))
        opt = options.get(cid)
        campaigns[cid] = dataclasses.replace(
            c, buyers=tuple(links), zip_prompt=bool(opt and opt.zip_prompt), repeat_caller=bool(opt and opt.repeat_caller),
            whisper=opt.whisper if opt else "", rtb_budget=(opt.rtb_budget_ms if opt else 1000) / 1000)
    return dataclasses.replace(network, buyers=buyers, campaigns=campaigns)


# --- history for the counters -----------------------------------------------------------

async def deliveries_since(session: AsyncSession, since: datetime) -> list[tuple]:
    """(buyer_id, answered_at, caller, caller_valid, revenue_cents) of connected calls since `since`."""
    rows = await session.execute(
        select(t.Call.buyer_id, t.Call.answered_at, t.Call.caller, t.Call.caller_valid, t.Call.revenue_cents)
        .where(and_(t.Call.buyer_id.is_not(None), t.Call.answered_at.is_not(None), t.Call.started_at >= since))
        .order_by(t.Call.started_at))
    return [tuple(row) for row in rows]


async def delivered_totals(session: AsyncSession) -> dict[int, int]:
    """Connected calls per buyer, ever (total caps)."""
    rows = await session.execute(select(t.Call.buyer_id, func.count()).where(
        t.Call.buyer_id.is_not(None), t.Call.answered_at.is_not(None)).group_by(t.Call.buyer_id))
    return {int(b): int(n) for b, n in rows}


# --- traces ---------------------------------------------------------------------------

_TRACE_INSERTS: dict[str, Any] = {}


def save_trace_sync(session: Session, linkedid: str, trace: Mapping[str, Any]) -> bool:
    dialect = session.get_bind().dialect.name
    stmt = _TRACE_INSERTS.get(dialect)
    if stmt is None:  # built once: one per call was most of the cost of storing a trace
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        stmt = _TRACE_INSERTS[dialect] = insert(r.CallRouting.__table__).values(
            linkedid=bindparam("linkedid"), trace=bindparam("trace")).on_conflict_do_nothing(index_elements=["linkedid"])
    result = session.connection().execute(stmt, {"linkedid": linkedid, "trace": json.dumps(trace, default=str)})
    return bool(result.rowcount)


async def save_trace(session: AsyncSession, linkedid: str, trace: Mapping[str, Any]) -> bool:
    return await session.run_sync(save_trace_sync, linkedid, trace)


async def get_trace(session: AsyncSession, linkedid: str) -> dict[str, Any] | None:
    text = await session.scalar(select(r.CallRouting.trace).where(r.CallRouting.linkedid == linkedid))
    return json.loads(text) if text else None


async def get_traces(session: AsyncSession, linkedids: list[str]) -> dict[str, dict]:
    if not linkedids:
        return {}
    rows = await session.execute(select(r.CallRouting.linkedid, r.CallRouting.trace)
                                 .where(r.CallRouting.linkedid.in_(linkedids)))
    return {lid: json.loads(tr) for lid, tr in rows}


async def load_history(session: AsyncSession, router, now: datetime | None = None) -> int:
    """Rebuild the router's counters from stored calls (controller start); returns calls read.

    Reads back far enough for every monthly period and duplicate window in force."""
    now = now or datetime.now(UTC)
    longest = max([31] + [link.rules.duplicate_days for c in router.network.campaigns.values() for link in c.buyers])
    rows = await deliveries_since(session, now - timedelta(days=longest + 1))
    for buyer_id, answered_at, caller, caller_valid, revenue_cents in rows:
        router.delivered(buyer_id, answered_at, caller if caller_valid else "", revenue_cents)
    router.counters.total.update(await delivered_totals(session))
    return len(rows)
