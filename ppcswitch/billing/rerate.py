"""Re-rating: run qualification again over a period with today's rules.

`rerate(..., apply=False)` is the dry run: what would change, per call and in
total. With apply=True (inside a writer job) each change becomes "rerate"
ledger entries for the difference (the ledger is never edited), and the call's
current decision and record are updated. Disputed calls are left alone: their
revenue was reversed already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ppcswitch.billing import ledger
from ppcswitch.billing.ledger import BillingError, _balance, _book_decision, _decision_columns, _roll
from ppcswitch.billing.reports import Period
from ppcswitch.qualification import EarlierCall, decide
from ppcswitch.storage import breakdowns
from ppcswitch.storage import models as t
from ppcswitch.storage import models_billing as b


@dataclass(frozen=True)
class RerateChange:
    linkedid: str
    started_at: datetime
    old_revenue_cents: int  # booked so far
    new_revenue_cents: int
    old_payout_cents: int
    new_payout_cents: int
    old_reasons: list[str]
    new_reasons: list[str]

    @property
    def revenue_delta_cents(self) -> int:
        return self.new_revenue_cents - self.old_revenue_cents

    @property
    def payout_delta_cents(self) -> int:
        return self.new_payout_cents - self.old_payout_cents


@dataclass
class RerateResult:
    period: Period
    calls_checked: int = 0
    changes: list[RerateChange] = field(default_factory=list)
    applied: bool = False

    @property
    def revenue_delta_cents(self) -> int:
        return sum(c.revenue_delta_cents for c in self.changes)

    @property
    def payout_delta_cents(self) -> int:
        return sum(c.payout_delta_cents for c in self.changes)

    @property
    def margin_delta_cents(self) -> int:
        return self.revenue_delta_cents - self.payout_delta_cents


def _reasons(d: b.BillingDecision) -> list[str]:
    return json.loads(d.revenue_reasons) + [f"payout:{r}" for r in json.loads(d.payout_reasons)]


async def rerate(session: AsyncSession, p: Period, *, apply: bool = False, user: str = "",
                 now: datetime | None = None, linkedids: list[str] | None = None) -> RerateResult:
    """`linkedids`: only these calls of the period (a transcript that just arrived re-rates its own call)."""
    now = now or datetime.now(timezone.utc)
    if apply and not (user or "").strip():
        raise BillingError("user", "say who applies the re-rating (--user)")
    result = RerateResult(p, applied=apply)
    q = select(b.BillingDecision).where(b.BillingDecision.started_at >= p.start, b.BillingDecision.started_at < p.end)
    if linkedids is not None:
        q = q.where(b.BillingDecision.linkedid.in_(linkedids))
    rows = list(await session.scalars(q.order_by(b.BillingDecision.started_at, b.BillingDecision.call_id)))
    redecided: dict[int, tuple[bool, bool]] = {}  # call_id -> new (revenue, payout) billable, for later repeats

    async def prior(column, party, d, days, index) -> list[EarlierCall]:
        if not days or not party or d.caller in ("", "anonymous"):
            return []
        q = select(b.BillingDecision).where(
            b.BillingDecision.caller == d.caller, column == party, b.BillingDecision.started_at < d.started_at,
            b.BillingDecision.started_at > d.started_at - timedelta(seconds=days))
        out = []
        for x in await session.scalars(q):
            billable = redecided[x.call_id][index] if x.call_id in redecided else \
                (x.revenue_billable, x.payout_billable)[index]
            out.append(EarlierCall(x.started_at, billable))
        return out

    for d in rows:
        result.calls_checked += 1
        facts = ledger.facts_of(d, d.rejected_reason)
        revenue_rule, payout_rule = await ledger.rules_for(session, d.campaign_id, d.buyer_id, d.publisher_id)
        new = decide(facts, revenue_rule, payout_rule,
                     await prior(b.BillingDecision.buyer_id, d.buyer_id, d, ledger.window_of(revenue_rule), 0),
                     await prior(b.BillingDecision.publisher_id, d.publisher_id, d, ledger.window_of(payout_rule), 1))
        redecided[d.call_id] = (new.revenue.billable, new.payout.billable)
        if d.disputed:
            continue
        rev, pay = await _balance(session, d.call_id)
        if (rev, pay) == (new.revenue.cents, new.payout.cents) and _reasons(d) == new.reasons:
            continue
        result.changes.append(RerateChange(d.linkedid, d.started_at, rev, new.revenue.cents, pay, new.payout.cents,
                                           _reasons(d), new.reasons))
        if not apply:
            continue
        revision = d.revision + 1
        await _roll(session, d.started_at, d.campaign_id, d.buyer_id, d.publisher_id,
                    billable=int(new.revenue.billable) - int(d.revenue_billable),
                    paid=int(new.payout.billable) - int(d.payout_billable))
        await _book_decision(session, "rerate", d.call_id, d.linkedid, d.started_at, now, d.campaign_id, d.buyer_id,
                             d.publisher_id, False, new.revenue.cents - rev, False, new.payout.cents - pay,
                             reason=f"re-rated (revision {revision})", user=user.strip()[:100],
                             key_suffix=f":r{revision}")
        await session.run_sync(breakdowns.rerate_sync, d.call_id, d.revenue_billable, new.revenue.billable,
                               new.revenue.cents - d.revenue_cents, new.payout.cents - d.payout_cents)
        for key, value in _decision_columns(new).items():
            setattr(d, key, value)
        d.revision = revision
        await session.execute(update(t.Call).where(t.Call.id == d.call_id).values(
            billable=new.revenue.billable, billing_reasons=json.dumps(new.reasons),
            revenue_cents=new.revenue.cents, payout_cents=new.payout.cents))
    await session.flush()
    return result
