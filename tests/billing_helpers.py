"""Shared by the billing, ledger and report tests: a small network and call records."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

from ppcswitch.calls import CallRecord, Outcome
from ppcswitch.storage import repo

UTC = timezone.utc
_ids = itertools.count(1)


async def network(session, *, revenue="40.00", payout="10.00", min_duration=60) -> dict[str, int]:
    k = await repo.create_campaign(session, "HVAC")
    p = await repo.create_publisher(session, "Pub", payout=payout)
    p2 = await repo.create_publisher(session, "Pub2", payout="5.00")
    a = await repo.create_buyer(session, "Buyer A", "sip:a@127.0.0.1:5071", revenue=revenue, min_duration=min_duration)
    b = await repo.create_buyer(session, "Buyer B", "sip:b@127.0.0.1:5072", revenue="30.00", min_duration=30)
    return {"campaign": k.id, "pub": p.id, "pub2": p2.id, "a": a.id, "b": b.id}


def record(ids, started_at: datetime, seconds: float, *, buyer="a", publisher="pub", caller="+14155550123",
           linkedid=None, **kw) -> CallRecord:
    answered = seconds > 0
    answer_at = started_at + timedelta(seconds=2)
    return CallRecord(
        linkedid=linkedid or f"lid-{next(_ids)}", tracking_number="+18005550100", caller=caller, caller_valid=True,
        started_at=started_at, ended_at=answer_at + timedelta(seconds=max(seconds, 0)),
        outcome=Outcome.CONNECTED if answered else Outcome.NOT_CONNECTED, publisher_id=ids[publisher],
        campaign_id=ids["campaign"], buyer_id=ids[buyer] if answered else None,
        answered_at=answer_at if answered else None, connected_ms=int(seconds * 1000), **kw)
