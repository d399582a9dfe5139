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

from ppcswitch.money import MoneyError, format_cents, parse_cents
from ppcswitch.routing import model as m
from ppcswitch.routing.limits import NO_LIMITS, limits_of
from ppcswitch.routing.rules import LIMIT_KEYS, RulesError, merged, normalize, parse_rules
from ppcswitch.storage import models as t
from ppcswitch.storage import models_routing as r
from ppcswitch.storage.repo import UNSET, Ref, bump_config_version, get_buyer, get_campaign
from ppcswitch.storage.validate import ValidationError



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


async def update_buyer_rtb(session: AsyncSession, buyer: Ref, *, ping_url: str | None = None,
                           post_url: str | None = None, timeout_ms: int | str | None = None, floor: str | None = None,
                           share_caller: bool | None = None) -> r.BuyerRtb:
    """Change some RTB settings of a buyer (None: keep; a new bidder needs `ping_url`)."""
    b = await get_buyer(session, buyer)
    row = await session.get(r.BuyerRtb, b.id)
    if row is None and not ping_url:
        raise ValidationError("ping_url", f"buyer {b.name!r} does not bid yet: give --ping-url (or --off)")
    return await set_buyer_rtb(
        session, b.id, ping_url if ping_url else row.ping_url,
        post_url=post_url if post_url is not None else (row.post_url if row else ""),
        timeout_ms=timeout_ms if timeout_ms is not None else (row.timeout_ms if row else 300),
        floor=floor if floor is not None else (format_cents(row.floor_cents) if row else "0"),
        share_caller=share_caller if share_caller is not None else bool(row and row.share_caller))


async def remove_buyer_rtb(session: AsyncSession, buyer: Ref) -> None:
    b = await get_buyer(session, buyer)
    row = await session.get(r.BuyerRtb, b.id)
    if row is not None:
        await session.delete(row)
        await session.flush()
        await bump_config_version(session)


# --- campaign options -----------------------------------------------------------------

async def set_campaign_routing(session: AsyncSession, campaign: Ref, *, zip_prompt=UNSET, repeat_caller=UNSET,
                               whisper=UNSET, rtb_budget_ms=UNSET) -> r.CampaignRouting:
    """ZIP prompt, repeat-caller routing, buyer whisper (an Asterisk sound name) and RTB budget."""
    k = await get_campaign(session, campaign)
    row = await session.get(r.CampaignRouting, k.id)
    if row is None:
        row = r.CampaignRouting(campaign_id=k.id, zip_prompt=False, repeat_caller=False, whisper="", rtb_budget_ms=1000)
        session.add(row)
    if zip_prompt is not UNSET:
        row.zip_prompt = bool(zip_prompt)
    if repeat_caller is not UNSET:
        row.repeat_caller = bool(repeat_caller)
    if whisper is not UNSET:
        w = (whisper or "").strip()
        # An Asterisk sound name: nothing that could reach the dialplan as syntax.
        if w and (len(w) > 100 or not all(ch.isalnum() or ch in "/_-" for ch in w) or ".." in w or w.startswith("/")):
            raise ValidationError("whisper", f"expected a sound name such as custom/hvac-whisper, got {whisper!r}")
        row.whisper = w
    if rtb_budget_ms is not UNSET:
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
    campaign_limits, publisher_limits = {}, {}
    for row in (await session.execute(select(r.RoutingLimits.__table__))).all():
        try:
            lim = limits_of(parse_rules(json.loads(row.rules or "{}")),
                            "campaign_" if row.campaign_id is not None else "publisher_")
        except RulesError:  # only a write bypassing validation gets here
            continue
        if lim is NO_LIMITS:
            continue
        if row.campaign_id is not None:
            campaign_limits[row.campaign_id] = lim
        elif row.publisher_id is not None:
            publisher_limits[row.publisher_id] = lim
    from ppcswitch.billing import ledger  # the billing rules' layers, read as settlement reads them

    billing_rules = {(row.side, row.campaign_id, row.party_id): ledger.override_of(row)
                     for row in (await session.execute(select(ledger.RULES_TABLE))).all()}

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
            own = link_rules.get((cid, link.buyer_id), {})
            rules = rules_of(buyer_rules.get(link.buyer_id, {}), own)
            prio = rules.priority if rules.priority is not None else link.priority
            # Caps and budgets set on the link itself count this link's calls (in the link's zone).
            caps = {k: v for k, v in own.items() if k in LIMIT_KEYS and k != "timezone"}
            lim = limits_of(dataclasses.replace(rules_of(caps), timezone=rules.timezone)) if caps else NO_LIMITS
            links.append(m.CampaignBuyer(link.buyer_id, prio, rules, lim if lim is not NO_LIMITS else None))
        opt = options.get(cid)
        campaigns[cid] = dataclasses.replace(
            c, buyers=tuple(links), zip_prompt=bool(opt and opt.zip_prompt), repeat_caller=bool(opt and opt.repeat_caller),
            whisper=opt.whisper if opt else "", rtb_budget=(opt.rtb_budget_ms if opt else 1000) / 1000)
    return dataclasses.replace(network, buyers=buyers, campaigns=campaigns, campaign_limits=campaign_limits,
                               publisher_limits=publisher_limits, billing_rules=billing_rules)


# --- campaign and publisher caps --------------------------------------------------------

async def _limits_row(session: AsyncSession, campaign_id: int | None, publisher_id: int | None):
    cond = [r.RoutingLimits.campaign_id.is_(None) if campaign_id is None else r.RoutingLimits.campaign_id == campaign_id,
            r.RoutingLimits.publisher_id.is_(None) if publisher_id is None else r.RoutingLimits.publisher_id == publisher_id]
    return await session.scalar(select(r.RoutingLimits).where(*cond))


async def get_limits(session: AsyncSession, *, campaign: Ref | None = None, publisher: Ref | None = None) -> dict:
    """The caps and budgets stored for a whole campaign or publisher."""
    from ppcswitch.storage.repo import get_publisher

    cid = (await get_campaign(session, campaign)).id if campaign is not None else None
    pid = (await get_publisher(session, publisher)).id if publisher is not None else None
    row = await _limits_row(session, cid, pid)
    return json.loads(row.rules) if row else {}


async def set_limits(session: AsyncSession, changes: Mapping[str, Any], *, campaign: Ref | None = None,
                     publisher: Ref | None = None) -> dict:
    """Change the caps and budgets of a whole campaign or publisher (a None or '' value removes one);
    returns what is stored now. Keys: routing.rules.LIMIT_KEYS."""
    from ppcswitch.storage.repo import get_publisher

    if (campaign is None) == (publisher is None):
        raise ValidationError("scope", "give a campaign or a publisher")
    cid = (await get_campaign(session, campaign)).id if campaign is not None else None
    pid = (await get_publisher(session, publisher)).id if publisher is not None else None
    bad = sorted(set(changes) - set(LIMIT_KEYS))
    if bad:
        raise ValidationError(bad[0], f"not a campaign or publisher cap (known: {', '.join(LIMIT_KEYS)})")
    row = await _limits_row(session, cid, pid)
    current = {} if row is None else json.loads(row.rules)
    current.update(changes)
    try:
        clean = normalize(current)
    except RulesError as exc:
        raise ValidationError(exc.key, str(exc).split(": ", 1)[1]) from None
    if row is None:
        row = r.RoutingLimits(campaign_id=cid, publisher_id=pid, rules="{}")
        session.add(row)
    row.rules = json.dumps(clean, sort_keys=True, default=str)
    await session.flush()
    await bump_config_version(session)
    return clean


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


def save_traces_sync(session: Session, traces: list[tuple[str, Mapping[str, Any]]]) -> None:
    """save_trace_sync for many calls (linkedid, trace) in one multi-row statement."""
    if not traces:
        return
    dialect = session.get_bind().dialect.name
    stmt = _TRACE_INSERTS.get(dialect)
    if stmt is None:
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        stmt = _TRACE_INSERTS[dialect] = insert(r.CallRouting.__table__).values(
            linkedid=bindparam("linkedid"), trace=bindparam("trace")).on_conflict_do_nothing(index_elements=["linkedid"])
    session.connection().execute(stmt, [{"linkedid": linkedid, "trace": json.dumps(trace, default=str)}
                                        for linkedid, trace in traces])


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

    Each stored call is counted by the same function that counts a call when it is settled
    (routing.reservations.count), so a controller that restarted counts what one that never stopped
    counts. Reads back far enough for every monthly period and duplicate window in force; totals ever
    (cap_total) come from counts over the whole table."""
    from ppcswitch.routing.limits import campaign_key, link_key, publisher_key
    from ppcswitch.storage import models_billing as mb

    now = now or datetime.now(UTC)
    windows = [link.rules.duplicate_seconds for c in router.network.campaigns.values() for link in c.buyers]
    longest = max([31 * 86400] + windows)
    since = now - timedelta(seconds=longest + 86400)
    calls = await settled_calls_since(session, since)
    n = router.reservations.rebuild(calls, router.network)
    # Totals ever, per scope and per what is counted (connected, routed, billable).
    c, d, a = t.Call.__table__.c, mb.BillingDecision.__table__.c, t.CallAttempt.__table__.c
    counters = router.counters
    connected: dict = {}
    billable: dict = {}
    rows = await session.execute(
        select(c.buyer_id, c.campaign_id, c.publisher_id, d.revenue_billable, d.payout_billable, func.count())
        .select_from(t.Call.__table__.outerjoin(mb.BillingDecision.__table__, d.call_id == c.id))
        .where(c.buyer_id.is_not(None), c.answered_at.is_not(None))
        .group_by(c.buyer_id, c.campaign_id, c.publisher_id, d.revenue_billable, d.payout_billable))
    for buyer_id, campaign_id, publisher_id, rev_ok, pay_ok, k in rows:
        cid, pid = campaign_id or 0, publisher_id or 0
        for scope in (buyer_id, link_key(cid, buyer_id), campaign_key(cid)):
            connected[scope] = connected.get(scope, 0) + k
            if rev_ok:
                billable[scope] = billable.get(scope, 0) + k
        if pid:
            scope = publisher_key(pid)
            connected[scope] = connected.get(scope, 0) + k
            if pay_ok:
                billable[scope] = billable.get(scope, 0) + k
    routed: dict = {}
    rows = await session.execute(
        select(a.buyer_id, c.campaign_id, c.publisher_id, func.count())
        .select_from(t.CallAttempt.__table__.join(t.Call.__table__, a.call_id == c.id))
        .where(a.buyer_id.is_not(None), a.started_at.is_not(None))
        .group_by(a.buyer_id, c.campaign_id, c.publisher_id))
    for buyer_id, campaign_id, publisher_id, k in rows:
        cid, pid = campaign_id or 0, publisher_id or 0
        for scope in (buyer_id, link_key(cid, buyer_id), campaign_key(cid)) + ((publisher_key(pid),) if pid else ()):
            routed[scope] = routed.get(scope, 0) + k
    counters.total.clear()
    counters.total.update(connected)
    counters.totals = {**{("r", k): v for k, v in routed.items()}, **{("b", k): v for k, v in billable.items()}}
    counters.forget()
    return n


async def settled_calls_since(session: AsyncSession, since: datetime) -> list:
    """Stored calls started since `since`, as routing.reservations.SettledCall, oldest first."""
    from ppcswitch.routing.reservations import SettledAttempt, SettledCall
    from ppcswitch.storage import models_billing as mb

    c, d, a = t.Call.__table__.c, mb.BillingDecision.__table__.c, t.CallAttempt.__table__.c
    attempts: dict[int, list] = {}
    rows = await session.execute(
        select(a.call_id, a.seq, a.buyer_id, a.started_at)
        .select_from(t.CallAttempt.__table__.join(t.Call.__table__, a.call_id == c.id))
        .where(c.started_at >= since, a.buyer_id.is_not(None)))
    for call_id, seq, buyer_id, started in rows:
        attempts.setdefault(call_id, []).append((seq, SettledAttempt(buyer_id, started.timestamp() if started else None)))
    rows = await session.execute(
        select(c.id, c.linkedid, c.caller, c.caller_valid, c.campaign_id, c.publisher_id, c.buyer_id, c.answered_at,
               d.revenue_billable, d.payout_billable, d.revenue_cents, d.payout_cents)
        .select_from(t.Call.__table__.outerjoin(mb.BillingDecision.__table__, d.call_id == c.id))
        .where(c.started_at >= since).order_by(c.started_at, c.id))
    out = []
    for (call_id, linkedid, caller, caller_valid, campaign_id, publisher_id, buyer_id, answered_at, rev_ok, pay_ok,
         rev, pay) in rows:
        out.append(SettledCall(
            linkedid, caller if caller_valid else "", campaign_id, publisher_id, buyer_id,
            answered_at.timestamp() if answered_at is not None else None,
            tuple(x for _, x in sorted(attempts.get(call_id, ()), key=lambda p: p[0])),
            bool(rev_ok), bool(pay_ok), int(rev or 0), int(pay or 0)))
    return out