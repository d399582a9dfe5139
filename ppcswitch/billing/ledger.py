"""Settling calls into the immutable ledger, disputes, adjustments, closed periods.

Every function takes a session inside a Writer job and never commits:
`settle` stores the call record, its billing decision, its ledger entries and
the rollups in the caller's one transaction, so a crash leaves all or nothing,
and a replayed call (same linkedid) changes nothing.

Settling a call is written for a sync Session (settle_sync, run on the writer's
thread: storage.writer.SyncJob); the async functions of the same name run it
on an AsyncSession (run_sync) for everything else.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ppcswitch.billing import rules as r
from ppcswitch.calls import CallRecord, Outcome
from ppcswitch.qualification import SettlementFacts, Qualification, EarlierCall, decide
from ppcswitch.storage import breakdowns
from ppcswitch.storage import models as t
from ppcswitch.storage import models_billing as b
from ppcswitch.storage import repo
from ppcswitch.storage.schema import by_shape
from ppcswitch.storage.validate import ValidationError

RECEIVABLE, PAYABLE = "receivable", "payable"
BUCKET = timedelta(minutes=15)


class BillingError(ValidationError):
    """A billing operation refused, with the reason (exit code 2 on the CLI)."""


class PeriodClosedError(BillingError):
    pass


def bucket_of(when: datetime) -> datetime:
    """Start of the 15-minute rollup bucket holding `when` (UTC)."""
    when = when.astimezone(timezone.utc)
    return when.replace(minute=when.minute - when.minute % 15, second=0, microsecond=0)


def day_of(when: datetime) -> datetime:
    """Start (00:00 UTC) of the UTC day holding `when`."""
    return when.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _insert(session: AsyncSession):
    return {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[session.get_bind().dialect.name]


# --- rules -----------------------------------------------------------------

_RULE_FIELDS = r.OVERRIDABLE


def _override(row) -> dict[str, Any]:  # a BillingRule, or a row of its table
    out = {f: getattr(row, f) for f in _RULE_FIELDS}
    if out["tiers"] is not None:
        out["tiers"] = r.parse_tiers(json.loads(out["tiers"]))
    if out["deny_dispositions"] is not None:
        out["deny_dispositions"] = r.parse_dispositions(json.loads(out["deny_dispositions"]))
    return out


override_of = _override  # the routing snapshot reads the same layers (storage.repo_routing.with_routing)
RULES_TABLE = b.BillingRule.__table__


_BUYER_RULE = select(t.Buyer.min_duration, t.Buyer.revenue_cents).where(t.Buyer.id == bindparam("id"))
_PUBLISHER_RULE = select(t.Publisher.payout_cents).where(t.Publisher.id == bindparam("id"))
_RULE_ROWS = select(b.BillingRule.__table__).where(b.BillingRule.campaign_id.in_(bindparam("campaigns",
                                                                                              expanding=True)))


def rules_for_sync(session: Session, campaign_id: int | None, buyer_id: int | None,
                   publisher_id: int | None) -> tuple[r.SideRule, r.SideRule]:
    """(revenue rule, payout rule) of a call, after every override applies."""
    conn = session.connection()  # Core on the connection: the ORM's execute path is not needed here
    buyer = conn.execute(_BUYER_RULE, {"id": buyer_id}).first() if buyer_id else None
    publisher = conn.execute(_PUBLISHER_RULE, {"id": publisher_id}).first() if publisher_id else None
    rows = {(row.side, row.campaign_id, row.party_id): row
            for row in conn.execute(_RULE_ROWS, {"campaigns": [0, campaign_id or 0]})}
    return _merged_rules(buyer, publisher, rows, campaign_id, buyer_id, publisher_id)


def _merged_rules(buyer, publisher, rows: dict, campaign_id: int | None, buyer_id: int | None,
                  publisher_id: int | None) -> tuple[r.SideRule, r.SideRule]:
    """The rules of a call from its buyer's and publisher's rows and the override rows
    {(side, campaign_id, party_id): row} of its campaign and of every campaign (0)."""
    revenue = r.SideRule(min_duration=buyer.min_duration if buyer else 60,
                         flat_cents=buyer.revenue_cents if buyer else 0)
    payout = r.SideRule(flat_cents=publisher.payout_cents if publisher else 0)
    c = campaign_id or 0
    out = []
    for side, base, party in ((r.REVENUE, revenue, buyer_id or 0), (r.PAYOUT, payout, publisher_id or 0)):
        # Least specific first: every campaign and party, the campaign, the party, both.
        layers = [rows.get((side, 0, 0)), rows.get((side, c, 0)) if c else None,
                  rows.get((side, 0, party)) if party else None, rows.get((side, c, party)) if c and party else None]
        out.append(r.merge(base, *(_override(x) for x in layers if x is not None)))
    return out[0], out[1]


async def rules_for(session: AsyncSession, campaign_id: int | None, buyer_id: int | None,
                    publisher_id: int | None) -> tuple[r.SideRule, r.SideRule]:
    return await session.run_sync(rules_for_sync, campaign_id, buyer_id, publisher_id)


async def set_rule(session: AsyncSession, side: str, *, campaign_id: int = 0, party_id: int = 0,
                   **values: Any) -> b.BillingRule:
    """Create or change the override for one scope; fields given as None are left as they were."""
    try:
        values = r.check_override(side, values)
    except r.RuleError as exc:
        raise BillingError("rule", str(exc)) from None
    row = await session.scalar(select(b.BillingRule).where(
        b.BillingRule.side == side, b.BillingRule.campaign_id == campaign_id, b.BillingRule.party_id == party_id))
    if row is None:
        row = b.BillingRule(side=side, campaign_id=campaign_id, party_id=party_id)
        session.add(row)
    for key, value in values.items():
        setattr(row, key, r.tiers_json(value) if key == "tiers" else json.dumps(list(value))
                if key == "deny_dispositions" else value)
    row.updated_at = datetime.now(timezone.utc)
    await session.flush()
    # Routing reads the rules' highest price (budgets reserve it for calls in flight): a new snapshot.
    await repo.bump_config_version(session)
    return row


# --- deciding a call ---------------------------------------------------------

def facts_of(record: CallRecord | b.BillingDecision, rejected_reason: str = "") -> SettlementFacts:
    answered = bool(record.buyer_id) and record.connected_ms > 0 if isinstance(record, CallRecord) \
        else record.answered
    return SettlementFacts(connected_ms=record.connected_ms, answered=answered, started_at=record.started_at,
                     geo_match=record.geo_match, quality_score=record.quality_score,
                     revenue_override_cents=record.revenue_override_cents,
                     min_duration_override=record.min_duration_override, rejected_reason=rejected_reason,
                     ai_score=getattr(record, "ai_score", None),  # a transcript's (billing_decisions only)
                     dispositions=tuple(json.loads(record.dispositions)) if getattr(record, "dispositions", None)
                     is not None else None)


_PRIOR: dict[str, Any] = {}


def _prior_statement(side: str):
    """Earlier calls of this caller to this buyer (side "buyer") or publisher, built once per side."""
    stmt = _PRIOR.get(side)
    if stmt is None:
        d = b.BillingDecision.__table__.c
        party, billable = (d.buyer_id, d.revenue_billable) if side == "buyer" else (d.publisher_id, d.payout_billable)
        stmt = _PRIOR[side] = select(d.started_at, billable).where(
            d.caller == bindparam("caller"), party == bindparam("party"), d.started_at > bindparam("since"),
            d.started_at < bindparam("until"))
    return stmt


def _prior(session: Session, side: str, party_id: int, caller: str, started_at: datetime,
           seconds: int) -> list[EarlierCall]:
    if not seconds or not party_id or not caller or caller == "anonymous":
        return []
    rows = session.connection().execute(_prior_statement(side), {
        "caller": caller, "party": party_id, "since": started_at - timedelta(seconds=seconds), "until": started_at})
    return [EarlierCall(s, bool(x)) for s, x in rows]


def window_of(rule: r.SideRule) -> int:
    """A rule's unique-caller window in seconds."""
    return rule.unique_window or rule.unique_days * 86400


def decide_call(session: Session, facts: SettlementFacts, caller: str, campaign_id: int, buyer_id: int,
                publisher_id: int) -> Qualification:
    revenue_rule, payout_rule = rules_for_sync(session, campaign_id, buyer_id, publisher_id)
    return _decide_with(session, facts, caller, buyer_id, publisher_id, revenue_rule, payout_rule)


def _decide_with(session: Session, facts: SettlementFacts, caller: str, buyer_id: int, publisher_id: int,
                 revenue_rule: r.SideRule, payout_rule: r.SideRule) -> Qualification:
    prior_b = _prior(session, "buyer", buyer_id, caller, facts.started_at, window_of(revenue_rule))
    prior_p = _prior(session, "publisher", publisher_id, caller, facts.started_at, window_of(payout_rule))
    return decide(facts, revenue_rule, payout_rule, prior_b, prior_p)


@dataclass(frozen=True)
class Settled:
    call_id: int
    decision: Qualification


_DECISION_INSERT = b.BillingDecision.__table__.insert()


def settle_sync(session: Session, record: CallRecord, *, now: datetime | None = None) -> Settled | None:
    """Decide, store the call, its decision, its ledger entries and rollups; None if already stored."""
    now = now or datetime.now(timezone.utc)
    rejected = (record.reject_reason or "invalid_number") if record.outcome == Outcome.REJECTED else ""
    facts = facts_of(record, rejected)
    campaign_id, buyer_id, publisher_id = record.campaign_id or 0, record.buyer_id or 0, record.publisher_id or 0
    decision = decide_call(session, facts, record.caller, campaign_id, buyer_id, publisher_id)
    record.billable = decision.revenue.billable
    record.payout_billable = decision.payout.billable
    record.billing_reasons = decision.reasons
    record.revenue_cents, record.payout_cents = decision.revenue.cents, decision.payout.cents
    call_id = repo.insert_call(session, record)
    if call_id is None:
        return None
    session.connection().execute(_DECISION_INSERT, dict(
        call_id=call_id, linkedid=record.linkedid, started_at=record.started_at, caller=record.caller,
        campaign_id=campaign_id, buyer_id=buyer_id, publisher_id=publisher_id, answered=facts.answered,
        connected_ms=record.connected_ms, geo_match=record.geo_match, quality_score=record.quality_score,
        revenue_override_cents=record.revenue_override_cents, min_duration_override=record.min_duration_override,
        rejected_reason=rejected, revision=1, disputed=False, **_decision_columns(decision)))
    # The call's counts and its entries' money move the same rollup rows (the call's time) unless an
    # entry was booked late: one upsert per rollup table per call, not one per entry.
    rolls: list[tuple[datetime, dict[str, int]]] = [(record.started_at, dict(
        calls=1, connected=int(facts.answered), connected_ms=record.connected_ms if facts.answered else 0,
        billable=int(decision.revenue.billable), paid=int(decision.payout.billable)))]
    book_decision_sync(session, "call", call_id, record.linkedid, record.started_at, now,
                       campaign_id, buyer_id, publisher_id, decision.revenue.billable, decision.revenue.cents,
                       decision.payout.billable, decision.payout.cents, reason="call", rolls=rolls)
    merged: dict[datetime, dict[str, int]] = {}
    for when, deltas in rolls:
        into = merged.setdefault(when, {})
        for column, delta in deltas.items():
            into[column] = into.get(column, 0) + delta
    for when, deltas in merged.items():
        roll_sync(session, when, campaign_id, buyer_id, publisher_id, **deltas)
    return Settled(call_id, decision)


async def settle(session: AsyncSession, record: CallRecord, *, now: datetime | None = None) -> Settled | None:
    return await session.run_sync(settle_sync, record, now=now)


# --- settling many calls at once (the finished-call pipeline's groups) -------------------

_BUYER_RULES = select(t.Buyer.id, t.Buyer.min_duration, t.Buyer.revenue_cents).where(
    t.Buyer.id.in_(bindparam("ids", expanding=True)))
_PUBLISHER_RULES = select(t.Publisher.id, t.Publisher.payout_cents).where(
    t.Publisher.id.in_(bindparam("ids", expanding=True)))
_CLOSED_BETWEEN = select(b.ClosedPeriod.__table__).where(b.ClosedPeriod.start_at <= bindparam("last"),
                                                         b.ClosedPeriod.end_at > bindparam("first"))


def settle_many_sync(session: Session, records: list[CallRecord], *,
                     now: datetime | None = None) -> list[Settled | None]:
    """settle_sync for each record, in order, with the same result, in a few multi-row statements
    per group instead of about fifteen statements per call: the rules, buyers, publishers and
    closed periods of the whole group read once; calls, attempts, decisions, ledger entries and
    rollups written in multi-row INSERTs and upserts (rollup changes of the group added up first).

    Calls of one caller (or one linkedid) go in separate rounds, in order: a call's unique-caller
    rule reads the caller's earlier calls, which must be stored by then."""
    now = now or datetime.now(timezone.utc)
    out: list[Settled | None] = []
    chunk: list[CallRecord] = []
    seen: set[str] = set()
    for record in records:
        keys = {"l:" + record.linkedid, "c:" + record.caller}
        if seen & keys:
            out.extend(_settle_round(session, chunk, now))
            chunk, seen = [], set()
        chunk.append(record)
        seen |= keys
    out.extend(_settle_round(session, chunk, now))
    return out


def _settle_round(session: Session, records: list[CallRecord], now: datetime) -> list[Settled | None]:
    if not records:
        return []
    conn = session.connection()
    dialect = session.get_bind().dialect.name
    ids = [(rec.campaign_id or 0, rec.buyer_id or 0, rec.publisher_id or 0) for rec in records]
    buyer_ids = sorted({bid for _, bid, _ in ids if bid})
    publisher_ids = sorted({pid for _, _, pid in ids if pid})
    buyers = {row.id: row for row in conn.execute(_BUYER_RULES, {"ids": buyer_ids})} if buyer_ids else {}
    publishers = {row.id: row for row in conn.execute(_PUBLISHER_RULES, {"ids": publisher_ids})} \
        if publisher_ids else {}
    rule_rows = {(row.side, row.campaign_id, row.party_id): row for row in conn.execute(
        _RULE_ROWS, {"campaigns": sorted({0, *(c for c, _, _ in ids)})})}
    times = [rec.started_at for rec in records]
    closed = list(conn.execute(_CLOSED_BETWEEN, {"first": min(*times, now), "last": max(*times, now)}))

    def closed_at(when: datetime):
        return next((p for p in closed if p.start_at <= when < p.end_at), None)

    decided = []
    for rec, (campaign_id, buyer_id, publisher_id) in zip(records, ids):
        rejected = (rec.reject_reason or "invalid_number") if rec.outcome == Outcome.REJECTED else ""
        facts = facts_of(rec, rejected)
        revenue_rule, payout_rule = _merged_rules(buyers.get(buyer_id) if buyer_id else None,
                                                  publishers.get(publisher_id) if publisher_id else None,
                                                  rule_rows, campaign_id, buyer_id, publisher_id)
        decision = _decide_with(session, facts, rec.caller, buyer_id, publisher_id, revenue_rule, payout_rule)
        rec.billable = decision.revenue.billable
        rec.payout_billable = decision.payout.billable
        rec.billing_reasons = decision.reasons
        rec.revenue_cents, rec.payout_cents = decision.revenue.cents, decision.payout.cents
        decided.append((rec, facts, rejected, decision))
    call_ids = repo.insert_calls(session, records)
    decisions, entries, rolls = [], [], []
    for (rec, facts, rejected, decision), call_id, (campaign_id, buyer_id, publisher_id) in zip(decided, call_ids, ids):
        if call_id is None:
            continue
        decisions.append(dict(
            call_id=call_id, linkedid=rec.linkedid, started_at=rec.started_at, caller=rec.caller,
            campaign_id=campaign_id, buyer_id=buyer_id, publisher_id=publisher_id, answered=facts.answered,
            connected_ms=rec.connected_ms, geo_match=rec.geo_match, quality_score=rec.quality_score,
            revenue_override_cents=rec.revenue_override_cents, min_duration_override=rec.min_duration_override,
            rejected_reason=rejected, revision=1, disputed=False, **_decision_columns(decision)))
        rolls.append((rec.started_at, campaign_id, buyer_id, publisher_id, dict(
            calls=1, connected=int(facts.answered), connected_ms=rec.connected_ms if facts.answered else 0,
            billable=int(decision.revenue.billable), paid=int(decision.payout.billable))))
        for account, billable, cents in ((RECEIVABLE, decision.revenue.billable, decision.revenue.cents),
                                         (PAYABLE, decision.payout.billable, decision.payout.cents)):
            if not (billable or cents):
                continue
            booked_at, reason = rec.started_at, "call"
            if closed_at(booked_at) is not None:  # as book_sync(late_ok=True): booked now, saying so
                reason = f"{reason} (booked late: {booked_at:%Y-%m-%d %H:%M:%S}Z is in a closed period)"
                booked_at = now
                if closed_at(booked_at) is not None:
                    raise PeriodClosedError("period", f"now ({now:%Y-%m-%d %H:%M}Z) is in a closed period")
            entries.append(dict(key=f"call:{rec.linkedid}:{account}", kind="call", account=account, call_id=call_id,
                                campaign_id=campaign_id, buyer_id=buyer_id, publisher_id=publisher_id,
                                amount_cents=cents, booked_at=booked_at, created_at=now, reason=reason, user=""))
    if decisions:
        conn.execute(_DECISION_INSERT, decisions)
    if entries:
        booked = {key for (key,) in conn.execute(_entries_statement(dialect), entries)}
        for e in entries:
            if e["key"] in booked:
                money = {"receivable_cents" if e["account"] == RECEIVABLE else "payable_cents": e["amount_cents"]}
                rolls.append((e["booked_at"], e["campaign_id"], e["buyer_id"], e["publisher_id"], money))
    _roll_many(conn, dialect, rolls)
    return [Settled(call_id, decision) if call_id is not None else None
            for (_, _, _, decision), call_id in zip(decided, call_ids)]


_ENTRIES_STATEMENTS: dict[str, Any] = {}


def _entries_statement(dialect: str):
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key, for many entries at once."""
    stmt = _ENTRIES_STATEMENTS.get(dialect)
    if stmt is None:
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        table = b.LedgerEntry.__table__
        stmt = insert(table).values({c: bindparam(c) for c in _ENTRY_COLUMNS})
        stmt = _ENTRIES_STATEMENTS[dialect] = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(
            table.c.key)
    return stmt


def _roll_many(conn, dialect: str, rolls: list[tuple[datetime, int, int, int, dict[str, int]]]) -> None:
    """The rollup changes of many calls: added up per rollup row first, then one upsert per row,
    sent as one statement per table and shape (what roll_sync does for each change, in sum)."""
    for table, time_column, start_of in ((b.BillingRollup.__table__, "bucket_start", bucket_of),
                                         (b.BillingDaily.__table__, "day_start", day_of)):
        changes = (((start_of(when), campaign_id, buyer_id, publisher_id), deltas)
                   for when, campaign_id, buyer_id, publisher_id, deltas in rolls)
        for shape, rows in by_shape(changes, _ROLL_COLUMNS).items():
            conn.execute(_roll_statement(dialect, table, time_column, shape),
                         [{time_column: start, "campaign_id": campaign_id, "buyer_id": buyer_id,
                           "publisher_id": publisher_id, **totals}
                          for (start, campaign_id, buyer_id, publisher_id), totals in rows])


def _decision_columns(d: Qualification) -> dict[str, Any]:
    return dict(revenue_billable=d.revenue.billable, payout_billable=d.payout.billable,
                revenue_cents=d.revenue.cents, payout_cents=d.payout.cents,
                revenue_reasons=json.dumps(list(d.revenue.reasons)), payout_reasons=json.dumps(list(d.payout.reasons)),
                payout_depends_on_buyer=d.payout_depends_on_buyer)


def book_decision_sync(session: Session, kind, call_id, linkedid, when, now, campaign_id, buyer_id, publisher_id,
                       revenue_billable, revenue_cents, payout_billable, payout_cents, *, reason, user="",
                       counts=False, key_suffix="", rolls: list | None = None):
    """Ledger entries for one call's (changed) decision; `counts` also moves the billable/paid counters.
    `rolls`: see book_sync."""
    if counts:
        roll_sync(session, when, campaign_id, buyer_id, publisher_id,
                  billable=int(revenue_billable), paid=int(payout_billable))
    for account, billable, cents in ((RECEIVABLE, revenue_billable, revenue_cents),
                                     (PAYABLE, payout_billable, payout_cents)):
        if billable or cents:
            book_sync(session, key=f"{kind}:{linkedid}:{account}{key_suffix}", kind=kind, account=account,
                      amount_cents=cents, call_id=call_id, campaign_id=campaign_id, buyer_id=buyer_id,
                      publisher_id=publisher_id, booked_at=when, now=now, reason=reason, user=user,
                      late_ok=True, fetch=False, rolls=rolls)


async def _book_decision(session: AsyncSession, *args, **kwargs) -> None:
    await session.run_sync(book_decision_sync, *args, **kwargs)


# --- the ledger ------------------------------------------------------------

_CLOSED_AT = select(b.ClosedPeriod.__table__).where(b.ClosedPeriod.start_at <= bindparam("when"),
                                                    b.ClosedPeriod.end_at > bindparam("when")).limit(1)


def closed_period_at_sync(session: Session, when: datetime):
    """The closed period holding `when` (a row: start_at, end_at, closed_by ...), or None."""
    return session.connection().execute(_CLOSED_AT, {"when": when}).first()


def book_sync(session: Session, *, key: str, kind: str, account: str, amount_cents: int, booked_at: datetime,
              now: datetime | None = None, call_id: int | None = None, campaign_id: int = 0, buyer_id: int = 0,
              publisher_id: int = 0, reason: str = "", user: str = "", late_ok: bool = False,
              fetch: bool = True, rolls: list | None = None) -> b.LedgerEntry | int | None:
    """Append one entry (and its rollup); None if `key` is already booked. Returns the entry, or
    only its id when not `fetch` (settling a call needs no more, and saves a query).

    A time in a closed period is refused (PeriodClosedError), except with
    `late_ok`, used for calls: a call that ends up in a closed period (replayed
    late) is booked now, in the open period, saying so, rather than lost.

    With `rolls` (a list), the rollup change is appended there as (booked at, {column: delta})
    for the caller to apply with its own (settle_sync: one upsert per rollup table per call).
    """
    if account not in (RECEIVABLE, PAYABLE):
        raise BillingError("account", f"must be {RECEIVABLE} or {PAYABLE}, got {account!r}")
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise BillingError("amount", f"must be integer cents, got {amount_cents!r}")
    now = now or datetime.now(timezone.utc)
    closed = closed_period_at_sync(session, booked_at)
    if closed is not None:
        if not late_ok:
            raise PeriodClosedError("period", (
                f"{booked_at:%Y-%m-%d %H:%M:%S}Z falls in the closed period {closed.start_at:%Y-%m-%d %H:%M}Z to "
                f"{closed.end_at:%Y-%m-%d %H:%M}Z (closed by {closed.closed_by}); book the correction in an open "
                f"period"))
        reason = f"{reason} (booked late: {booked_at:%Y-%m-%d %H:%M:%S}Z is in a closed period)".strip()
        booked_at = now
        if closed_period_at_sync(session, booked_at) is not None:
            raise PeriodClosedError("period", f"now ({now:%Y-%m-%d %H:%M}Z) is in a closed period")
    values = dict(key=key, kind=kind, account=account, call_id=call_id, campaign_id=campaign_id, buyer_id=buyer_id,
                  publisher_id=publisher_id, amount_cents=amount_cents, booked_at=booked_at, created_at=now,
                  reason=reason, user=user)
    entry_id = session.connection().execute(_entry_statement(session.get_bind().dialect.name),
                                            {f"p_{k}": v for k, v in values.items()}).scalar()
    if entry_id is None:
        return None
    money = {"receivable_cents" if account == RECEIVABLE else "payable_cents": amount_cents}
    if rolls is not None:
        rolls.append((booked_at, money))
    else:
        roll_sync(session, booked_at, campaign_id, buyer_id, publisher_id, **money)
    return session.get(b.LedgerEntry, entry_id) if fetch else entry_id


async def book(session: AsyncSession, **kwargs) -> b.LedgerEntry | int | None:
    return await session.run_sync(lambda s: book_sync(s, **kwargs))


_ENTRY_COLUMNS = ("key", "kind", "account", "call_id", "campaign_id", "buyer_id", "publisher_id", "amount_cents",
                  "booked_at", "created_at", "reason", "user")
_ENTRY_STATEMENTS: dict[str, Any] = {}


def _entry_statement(dialect: str):
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id, built once (see _roll_statement)."""
    stmt = _ENTRY_STATEMENTS.get(dialect)
    if stmt is None:
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        table = b.LedgerEntry.__table__  # Core: the ORM's insert path cost more than the insert
        stmt = insert(table).values({c: bindparam(f"p_{c}") for c in _ENTRY_COLUMNS})
        stmt = stmt.on_conflict_do_nothing(index_elements=["key"]).returning(table.c.id)
        _ENTRY_STATEMENTS[dialect] = stmt
    return stmt


_ROLL_COLUMNS = ("calls", "connected", "billable", "paid", "connected_ms", "receivable_cents", "payable_cents")


def roll_sync(session: Session, when: datetime, campaign_id: int, buyer_id: int, publisher_id: int,
              **deltas: int) -> None:
    deltas = {k: v for k, v in deltas.items() if v}
    if not deltas:
        return
    values = {c: deltas.get(c, 0) for c in _ROLL_COLUMNS}
    dialect = session.get_bind().dialect.name
    conn = session.connection()
    for table, time_column, start in ((b.BillingRollup.__table__, "bucket_start", bucket_of(when)),
                                      (b.BillingDaily.__table__, "day_start", day_of(when))):
        stmt = _roll_statement(dialect, table, time_column, tuple(sorted(deltas)))
        conn.execute(stmt, {time_column: start, "campaign_id": campaign_id, "buyer_id": buyer_id,
                               "publisher_id": publisher_id, **values})


async def _roll(session: AsyncSession, *args, **deltas: int) -> None:
    await session.run_sync(roll_sync, *args, **deltas)


_ROLL_STATEMENTS: dict[tuple, Any] = {}


def _roll_statement(dialect: str, table, time_column: str, changed: tuple[str, ...]):
    """The upsert that adds to one rollup row, built once per shape: every settled call runs
    several, and building and compiling them anew each time was the writer's largest cost."""
    key = (dialect, table.name, changed)
    stmt = _ROLL_STATEMENTS.get(key)
    if stmt is None:
        columns = (time_column, "campaign_id", "buyer_id", "publisher_id", *_ROLL_COLUMNS)
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        stmt = insert(table).values({c: bindparam(c) for c in columns})
        stmt = stmt.on_conflict_do_update(index_elements=[time_column, "campaign_id", "buyer_id", "publisher_id"],
                                          set_={c: table.c[c] + stmt.excluded[c] for c in changed})
        _ROLL_STATEMENTS[key] = stmt
    return stmt


async def dispute(session: AsyncSession, linkedid: str, *, user: str, reason: str, window_days: int,
                  now: datetime | None = None) -> list[b.LedgerEntry]:
    """The buyer disputes a call: reverse its revenue (and, in revshare, its payout), booked now."""
    now = now or datetime.now(timezone.utc)
    user, reason = _who(user, reason)
    d = await session.scalar(select(b.BillingDecision).where(b.BillingDecision.linkedid == linkedid))
    if d is None:
        raise BillingError("call", f"no call with linkedid {linkedid!r}")
    if d.disputed:
        raise BillingError("call", f"call {linkedid} is already disputed")
    if now - d.started_at > timedelta(days=window_days):
        raise BillingError("call", f"the dispute window ({window_days} days) for call {linkedid} closed on "
                                   f"{d.started_at + timedelta(days=window_days):%Y-%m-%d %H:%M}Z")
    rev, pay = await _balance(session, d.call_id)
    if not rev:
        raise BillingError("call", f"call {linkedid} has no revenue to dispute")
    booked = []
    parts = [(RECEIVABLE, -rev)] + ([(PAYABLE, -pay)] if d.payout_depends_on_buyer and pay else [])
    for account, amount in parts:
        booked.append(await book(session, key=f"dispute:{linkedid}:{account}", kind="dispute", account=account,
                                 amount_cents=amount, call_id=d.call_id, campaign_id=d.campaign_id,
                                 buyer_id=d.buyer_id, publisher_id=d.publisher_id, booked_at=now, now=now,
                                 reason=reason, user=user))
    # Counts stay with the call's own time (they are not money; closed periods guard money).
    await _roll(session, d.started_at, d.campaign_id, d.buyer_id, d.publisher_id, billable=-1,
                paid=-1 if len(parts) > 1 and d.payout_billable else 0)
    d.disputed = True
    await session.flush()
    amounts = dict(parts)
    await session.run_sync(breakdowns.dispute_sync, d.call_id, -rev, amounts.get(PAYABLE, 0))
    # The buyer's webhook and (when its payout went too) the publisher's postback hear of it, same transaction.
    from ppcswitch.attribution import store as attribution_store

    await attribution_store.enqueue_reversal(session, linkedid, amounts.get(RECEIVABLE, 0), amounts.get(PAYABLE, 0))
    return [e for e in booked if e is not None]


async def _balance(session: AsyncSession, call_id: int) -> tuple[int, int]:
    """(receivable, payable) booked so far for one call."""
    rows = dict((await session.execute(select(b.LedgerEntry.account, func.sum(b.LedgerEntry.amount_cents)).where(
        b.LedgerEntry.call_id == call_id).group_by(b.LedgerEntry.account))).all())
    return int(rows.get(RECEIVABLE) or 0), int(rows.get(PAYABLE) or 0)


def _who(user: str, reason: str) -> tuple[str, str]:
    user, reason = (user or "").strip(), (reason or "").strip()
    if not user:
        raise BillingError("user", "say who makes this correction (--user)")
    if not reason:
        raise BillingError("reason", "give the reason for this correction (--reason)")
    return user[:100], reason[:1000]


async def adjust(session: AsyncSession, *, account: str, party_id: int | str, amount_cents: int, reason: str, user: str,
                 campaign_id: int = 0, booked_at: datetime | None = None,
                 now: datetime | None = None) -> b.LedgerEntry:
    """A manual correction for a buyer (receivable) or publisher (payable), by id or name; signed cents."""
    now = now or datetime.now(timezone.utc)
    user, reason = _who(user, reason)
    if account == RECEIVABLE:
        parties = dict(buyer_id=(await repo.get_buyer(session, party_id)).id)
    elif account == PAYABLE:
        parties = dict(publisher_id=(await repo.get_publisher(session, party_id)).id)
    else:
        raise BillingError("account", f"must be {RECEIVABLE} or {PAYABLE}, got {account!r}")
    if not amount_cents:
        raise BillingError("amount", "an adjustment of 0.00 changes nothing")
    entry = await book(session, key=f"adjustment:{uuid.uuid4().hex}", kind="adjustment", account=account,
                       amount_cents=amount_cents, booked_at=booked_at or now, now=now, campaign_id=campaign_id,
                       reason=reason, user=user, **parties)
    assert entry is not None
    return entry


async def close_period(session: AsyncSession, start: datetime, end: datetime, *, user: str,
                       now: datetime | None = None) -> b.ClosedPeriod:
    """Close [start, end): no more entries may be booked in it."""
    now = now or datetime.now(timezone.utc)
    if not (user or "").strip():
        raise BillingError("user", "say who closes the period (--user)")
    if end <= start:
        raise BillingError("period", "the period ends before it starts")
    if end > now:
        raise BillingError("period", f"cannot close a period that has not ended yet (ends {end:%Y-%m-%d %H:%M}Z)")
    row = b.ClosedPeriod(start_at=start, end_at=end, closed_at=now, closed_by=user.strip()[:100])
    session.add(row)
    await session.flush()
    return row


async def ledger_totals(session: AsyncSession, start: datetime, end: datetime) -> tuple[int, int]:
    """(receivable, payable) summed straight from the ledger for [start, end): the reference for reports."""
    rows = dict((await session.execute(select(b.LedgerEntry.account, func.sum(b.LedgerEntry.amount_cents)).where(
        b.LedgerEntry.booked_at >= start, b.LedgerEntry.booked_at < end).group_by(b.LedgerEntry.account))).all())
    return int(rows.get(RECEIVABLE) or 0), int(rows.get(PAYABLE) or 0)


async def entries(session: AsyncSession, start: datetime, end: datetime, *, account: str | None = None,
                  buyer_id: int | None = None, publisher_id: int | None = None) -> list[b.LedgerEntry]:
    q = select(b.LedgerEntry).where(b.LedgerEntry.booked_at >= start, b.LedgerEntry.booked_at < end)
    if account:
        q = q.where(b.LedgerEntry.account == account)
    if buyer_id is not None:
        q = q.where(b.LedgerEntry.buyer_id == buyer_id)
    if publisher_id is not None:
        q = q.where(b.LedgerEntry.publisher_id == publisher_id)
    return list(await session.scalars(q.order_by(b.LedgerEntry.booked_at, b.LedgerEntry.id)))
