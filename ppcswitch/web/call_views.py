"""One call's page: what routing decided (buyers in order, in words), billing reasons, the ledger,
fraud signals, the transcript, the postbacks and webhooks it caused, and a dispute form."""

from __future__ import annotations

import json

from aiohttp import web
from sqlalchemy import select

from ppcswitch import keys
from ppcswitch.fraud import store as fraud_store
from ppcswitch.intelligence import store as intelligence_store
from ppcswitch.storage import models_billing, repo_routing
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import explain, store
from ppcswitch.web.base import _int_arg, _read, call_log, need, render


async def call_page(request: web.Request, status: int = 200, **more) -> web.Response:
    """The call; `more` comes from a refused form posted on it (the dispute: its error and reason)."""
    need(request, "read")
    try:
        call_id = _int_arg(request.match_info["id"], "id")
    except ValidationError:
        raise web.HTTPNotFound() from None
    call = await _read(request, store.call_with_attempts, call_id)
    if call is None:
        raise web.HTTPNotFound()
    async with request.app[keys.SESSIONS]() as s:
        names = {k: await store.names(s, k) for k in ("campaign", "publisher", "buyer")}
        extras = await _call_extras(s, call)
    return render(request, "call.html", status=status, c=call, names=names,
                  reasons=json.loads(call.billing_reasons or "[]"), message=request.query.get("msg", "")[:300],
                  routing_rows=explain.routing_table(extras["trace"], call.attempts, names["buyer"]),
                  **extras, **more)


async def _call_extras(session, call) -> dict:
    """The call's routing trace (candidates, skip reasons, bids) and its ledger entries."""
    trace = await repo_routing.get_trace(session, call.linkedid)
    ledger = list(await session.scalars(select(models_billing.LedgerEntry)
                                        .where(models_billing.LedgerEntry.call_id == call.id)
                                        .order_by(models_billing.LedgerEntry.id)))
    return {"trace": trace, "trace_text": json.dumps(trace, indent=2, sort_keys=True) if trace else "",
            "ledger": ledger, "fraud": await fraud_store.get_signals(session, call.linkedid),
            "transcript": await intelligence_store.get_transcript(session, call.linkedid),
            "postbacks": await call_log(session, call.linkedid),
            "disputed": next((e for e in ledger if e.kind == "dispute"), None)}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/calls/{id}", call_page)
