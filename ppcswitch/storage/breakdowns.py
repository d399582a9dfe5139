"""Calls by sub-ID and by the caller's state: daily totals kept with the calls.

`stored_sync` runs when a call row is inserted (repo.insert_call: in the settling transaction,
ledger.settle_sync, with the call's billing fields already decided), `dispute_sync` and `rerate_sync`
in the transactions that change a call's billing, so the table `breakdown_daily`
(storage.models_breakdowns) always holds, per UTC day, the same sums as the calls themselves: calls,
connected, billable (a disputed call no longer), disputed, revenue and payout (the calls' own, less
what disputes took back). A replayed call inserts nothing, so each call counts once.

`totals` answers for any period [start, end): whole UTC days from the table, the partial days at its
edges (a local day in New York or Kolkata) from the calls themselves, so the figures are exact in
every zone and a 30-day period reads a few thousand rows instead of every call.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from ppcswitch.storage.schema import by_shape
from ppcswitch.storage import models as t
from ppcswitch.storage import models_billing as b
from ppcswitch.storage.models_breakdowns import BreakdownDaily

SUB_ID, STATE = "sub_id", "state"
FACETS = (SUB_ID, STATE)
COLUMNS = ("calls", "connected", "billable", "disputed", "revenue_cents", "payout_cents")
TABLE = BreakdownDaily.__table__
_KEY = ("day_start", "facet", "publisher_id", "value")
_STATEMENTS: dict[tuple, Any] = {}


def day_of(when: datetime) -> datetime:
    return when.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _statement(dialect: str, changed: tuple[str, ...]):
    """The upsert adding to one row, built once per shape (it runs for every settled call)."""
    key = (dialect, changed)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
        stmt = insert(TABLE).values({c: bindparam(c) for c in (*_KEY, *COLUMNS)})
        stmt = stmt.on_conflict_do_update(index_elements=list(_KEY),
                                          set_={c: TABLE.c[c] + stmt.excluded[c] for c in changed})
        _STATEMENTS[key] = stmt
    return stmt


def keys_of(publisher_id: int | None, sub_id: str | None, state: str | None) -> list[tuple[str, int, str]]:
    """The two rows a call counts in: (facet, publisher_id, value)."""
    return [(SUB_ID, publisher_id or 0, sub_id or ""), (STATE, 0, state or "")]


def roll_sync(session: Session, started_at: datetime, publisher_id: int | None, sub_id: str | None,
              state: str | None, **deltas: int) -> None:
    """Add `deltas` (columns of COLUMNS) to the call's sub-ID row and state row of its UTC day."""
    deltas = {k: int(v) for k, v in deltas.items() if v}
    if not deltas:
        return
    day = day_of(started_at)
    values = {c: deltas.get(c, 0) for c in COLUMNS}
    stmt = _statement(session.get_bind().dialect.name, tuple(sorted(deltas)))
    session.connection().execute(stmt, [dict(values, day_start=day, facet=f, publisher_id=p, value=v)
                                        for f, p, v in keys_of(publisher_id, sub_id, state)])


def stored_sync(session: Session, record) -> None:
    """A call row was just inserted (repo.insert_call; when settling, its billing fields are set): count it."""
    answered = bool(record.buyer_id) and record.connected_ms > 0  # as ledger.facts_of
    roll_sync(session, record.started_at, record.publisher_id, record.sub_id, record.caller_state,
              calls=1, connected=int(answered), billable=int(bool(record.billable)),
              revenue_cents=record.revenue_cents, payout_cents=record.payout_cents)


def stored_many_sync(session: Session, records: list) -> None:
    """stored_sync for many calls just inserted (repo.insert_calls): the changes added up per row
    first, then one multi-row upsert per shape."""
    def changes():
        for record in records:
            answered = bool(record.buyer_id) and record.connected_ms > 0  # as stored_sync
            deltas = dict(calls=1, connected=int(answered), billable=int(bool(record.billable)),
                          revenue_cents=int(record.revenue_cents or 0), payout_cents=int(record.payout_cents or 0))
            day = day_of(record.started_at)
            for facet, publisher_id, value in keys_of(record.publisher_id, record.sub_id, record.caller_state):
                yield (day, facet, publisher_id, value), deltas

    dialect = session.get_bind().dialect.name
    for shape, rows in by_shape(changes(), COLUMNS).items():
        session.connection().execute(_statement(dialect, shape), [
            dict(totals, day_start=day, facet=facet, publisher_id=publisher_id, value=value)
            for (day, facet, publisher_id, value), totals in rows])


_CALL = select(t.Call.started_at, t.Call.publisher_id, t.Call.sub_id, t.Call.caller_state,
               t.Call.billable).where(t.Call.id == bindparam("id"))


def dispute_sync(session: Session, call_id: int, revenue_cents: int, payout_cents: int) -> None:
    """A dispute reversed this call: it is no longer billable, and the amounts (negative) come off."""
    row = session.connection().execute(_CALL, {"id": call_id}).first()
    if row is None:
        return
    roll_sync(session, row.started_at, row.publisher_id, row.sub_id, row.caller_state, disputed=1,
              billable=-int(bool(row.billable)), revenue_cents=revenue_cents, payout_cents=payout_cents)


def rerate_sync(session: Session, call_id: int, billable_before: bool, billable_after: bool,
                revenue_delta_cents: int, payout_delta_cents: int) -> None:
    """A re-rating changed the call's decision (before the calls row is updated or after: only the
    row's keys are read)."""
    row = session.connection().execute(_CALL, {"id": call_id}).first()
    if row is None:
        return
    roll_sync(session, row.started_at, row.publisher_id, row.sub_id, row.caller_state,
              billable=int(billable_after) - int(billable_before), revenue_cents=revenue_delta_cents,
              payout_cents=payout_delta_cents)


# --- reading -----------------------------------------------------------------

def _raw_part(facet: str, n: int, by_publisher: bool):
    """The same sums straight from the calls of [lo<n>, hi<n>) (the partial days at a period's edges)."""
    rev, pay = aliased(b.LedgerEntry), aliased(b.LedgerEntry)
    c = t.Call
    if facet == SUB_ID:
        # publisher_id + 0, not the column: SQLite would otherwise walk the whole (publisher_id,
        # sub_id) index to save a sort, instead of reading the period's calls by started_at.
        pub, value = (func.coalesce(c.publisher_id, 0) + 0).label("p"), c.sub_id.label("v")
    else:
        pub, value = literal(0).label("p"), func.coalesce(c.caller_state, "").label("v")
    q = (select(pub, value, func.count(),
                func.sum(case((and_(c.buyer_id.is_not(None), c.connected_ms > 0), 1), else_=0)),
                func.sum(case((and_(c.billable, rev.id.is_(None)), 1), else_=0)),
                func.sum(case((rev.id.is_not(None), 1), else_=0)),
                func.sum(c.revenue_cents + func.coalesce(rev.amount_cents, 0)),
                func.sum(c.payout_cents + func.coalesce(pay.amount_cents, 0)))
         .outerjoin(rev, and_(rev.call_id == c.id, rev.kind == "dispute", rev.account == "receivable"))
         .outerjoin(pay, and_(pay.call_id == c.id, pay.kind == "dispute", pay.account == "payable"))
         .where(c.started_at >= bindparam(f"lo{n}"), c.started_at < bindparam(f"hi{n}")).group_by(pub, value))
    return q.where(c.publisher_id == bindparam("pub")) if by_publisher else q


def _daily_part(facet: str, n: int, by_publisher: bool):
    """The sums of the table's rows of the UTC days in [lo<n>, hi<n>)."""
    r = BreakdownDaily
    q = (select(r.publisher_id, r.value, *(func.sum(getattr(r, col)) for col in COLUMNS))
         .where(r.day_start >= bindparam(f"lo{n}"), r.day_start < bindparam(f"hi{n}"), r.facet == facet)
         .group_by(r.publisher_id, r.value))
    return q.where(r.publisher_id == bindparam("pub")) if by_publisher else q


def _raw(facet: str, start: datetime, end: datetime, publisher_id: int | None):
    return _raw_part(facet, 0, publisher_id is not None).params(lo0=start, hi0=end, pub=publisher_id)


def _daily(facet: str, start: datetime, end: datetime, publisher_id: int | None):
    return _daily_part(facet, 0, publisher_id is not None).params(lo0=start, hi0=end, pub=publisher_id)


RAW, DAILY = "raw", "daily"


def _pieces(start: datetime, end: datetime) -> list[tuple[int, str, datetime, datetime]]:
    """(sign, RAW | DAILY, from, to) whose signed sums are the period's: whole UTC days from the table;
    a partial day at an edge from the calls of its shorter side (the day's row less the calls outside
    the period when that side is shorter: a New York day reads 5 hours of calls, not 19)."""
    half = timedelta(hours=12)
    first = day_of(start)
    if first < start:
        first += timedelta(days=1)
    last = day_of(end)
    if first > last:  # inside one UTC day, touching no midnight
        return [(1, RAW, start, end)]
    out = [(1, DAILY, first, last)] if first < last else []
    if start < first:  # [start, first): part of the UTC day before `first`
        day = first - timedelta(days=1)
        out += [(1, RAW, start, first)] if first - start <= half else [(1, DAILY, day, first), (-1, RAW, day, start)]
    if last < end:  # [last, end): part of the UTC day from `last`
        nxt = last + timedelta(days=1)
        out += [(1, RAW, last, end)] if end - last <= half else [(1, DAILY, last, nxt), (-1, RAW, end, nxt)]
    return out


_TOTALS: dict[tuple, Any] = {}


def _totals_statement(facet: str, shape: tuple[tuple[int, str], ...], by_publisher: bool):
    """The pieces of a period in one statement (UNION ALL, each part read by its own index range: one
    round trip), built once per shape: building and keying it anew cost more than running it."""
    key = (facet, shape, by_publisher)
    stmt = _TOTALS.get(key)
    if stmt is None:
        parts = [(_raw_part if kind == RAW else _daily_part)(facet, n, by_publisher)
                 .add_columns(literal(sign).label("sign")) for n, (sign, kind) in enumerate(shape)]
        stmt = _TOTALS[key] = union_all(*parts) if len(parts) > 1 else parts[0]
    return stmt


async def totals(session, facet: str, start: datetime, end: datetime,
                 publisher_id: int | None = None) -> dict[tuple[int, str], dict[str, int]]:
    """{(publisher_id, value): {column: sum}} of the calls started in [start, end); for the state
    facet publisher_id is 0 (states are not split by publisher)."""
    if facet not in FACETS:
        raise ValueError(facet)
    pieces = _pieces(start, end)
    stmt = _totals_statement(facet, tuple((sign, kind) for sign, kind, _, _ in pieces), publisher_id is not None)
    params: dict[str, Any] = {"pub": publisher_id} if publisher_id is not None else {}
    for n, (_, _, lo, hi) in enumerate(pieces):
        params[f"lo{n}"], params[f"hi{n}"] = lo, hi
    out: dict[tuple[int, str], dict[str, int]] = {}
    for pub, value, *sums, sign in (await session.execute(stmt, params)).all():
        into = out.setdefault((int(pub or 0), value or ""), dict.fromkeys(COLUMNS, 0))
        for col, v in zip(COLUMNS, sums):
            into[col] += int(sign) * int(v or 0)
    return {k: v for k, v in out.items() if any(v.values())}


def backfill_sql(dialect: str) -> list[str]:
    """The INSERT ... SELECTs filling the table from the calls (migration 0010_breakdowns)."""
    day = ("substr(c.started_at, 1, 10) || ' 00:00:00.000000'" if dialect == "sqlite"
           else "date_trunc('day', c.started_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
    sums = ("count(*), sum(CASE WHEN c.buyer_id IS NOT NULL AND c.connected_ms > 0 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN c.billable AND r.id IS NULL THEN 1 ELSE 0 END), "
            "sum(CASE WHEN r.id IS NOT NULL THEN 1 ELSE 0 END), "
            "sum(c.revenue_cents + coalesce(r.amount_cents, 0)), sum(c.payout_cents + coalesce(p.amount_cents, 0))")
    joins = ("FROM calls c LEFT JOIN ledger_entries r ON r.call_id = c.id AND r.kind = 'dispute' AND "
             "r.account = 'receivable' LEFT JOIN ledger_entries p ON p.call_id = c.id AND p.kind = 'dispute' "
             "AND p.account = 'payable'")
    cols = "day_start, facet, publisher_id, value, " + ", ".join(COLUMNS)
    return [f"INSERT INTO breakdown_daily ({cols}) SELECT {day}, 'sub_id', coalesce(c.publisher_id, 0), "
            f"coalesce(c.sub_id, ''), {sums} {joins} GROUP BY 1, 3, 4",
            f"INSERT INTO breakdown_daily ({cols}) SELECT {day}, 'state', 0, coalesce(c.caller_state, ''), "
            f"{sums} {joins} GROUP BY 1, 4"]
