"""The partner portals through the API: /api/v1/portal/*, with a partner's own token.

A publisher's or buyer's token reaches these operations only (portal.PARTNER_ROUTES);
each answers with the token owner's own party's data, as the portal pages do.
`paths()` is their part of the OpenAPI document (openapi.document adds it).
"""

from __future__ import annotations

import json

from aiohttp import web

from ppcswitch import keys
from ppcswitch.money import format_cents
from ppcswitch.storage import models_portal as mp
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web.base import Forbidden
from ppcswitch.web import json_api, portal
from ppcswitch.web import portal_store as ps

P = "/api/v1/portal"


def _iso(x):
    return x.isoformat() if x is not None else None


def call_json(view: dict) -> dict:
    out = {"id": view["id"], "started_at": _iso(view["started_at"]), "tracking_number": view["tracking_number"],
           "caller": view["caller"], "duration_s": view["duration_s"], "billable": view["billable"],
           "billing_reasons": view["reasons"]}
    if "payout_cents" in view:
        out.update(sub_id=view["sub_id"], payout=format_cents(view["payout_cents"]),
                   payout_cents=view["payout_cents"], buyer=view["buyer"])
    else:
        out.update(state=view["state"], revenue=format_cents(view["revenue_cents"]),
                   revenue_cents=view["revenue_cents"], dispute=view["dispute"], recording=view["recording"])
    return out


def dispute_json(d) -> dict:
    return {"id": d.id, "call_id": d.call_id, "reason_code": d.reason_code, "note": d.note, "state": d.state,
            "created_at": _iso(d.created_at), "decided_at": _iso(d.decided_at), "decision_note": d.decision_note,
            "reversed": format_cents(d.reversed_cents), "reversed_cents": d.reversed_cents}


async def me(request: web.Request) -> web.Response:
    who = await portal.party(request)
    acc = await portal.access(request, who)
    return web.json_response({"username": request["user"].username, "role": who.kind,
                              "party": {"kind": who.kind, "id": who.id, "name": who.name},
                              "timezone": request["zone"], "caller_display": acc.caller_display,
                              "dispute_window_days": request.app[keys.SETTINGS].billing.dispute_window_days})


async def calls(request: web.Request) -> web.Response:
    who = await portal.party(request)
    q = portal.call_query(request.query, request["zone"])
    limit = json_api._query_int(request, "limit", 50, 1, 1000)
    rows, nxt = await portal.calls_for(request, who, q, limit, request.query.get("cursor", ""))
    return web.json_response({"items": [call_json(c) for c in rows], "next_cursor": nxt or None})


async def call_get(request: web.Request) -> web.Response:
    who = await portal.party(request)
    ident = json_api._ident(request)
    async with request.app[keys.SESSIONS]() as s:
        call = await ps.get_call(s, who, ident)
        if call is None:
            raise web.HTTPNotFound()
    views = await portal.call_views(request, who, [call])
    return web.json_response(call_json(views[0]))


async def dispute(request: web.Request) -> web.Response:
    who = await portal.party(request)
    ident = json_api._ident(request)
    if who.kind != "buyer":
        raise Forbidden("only buyers dispute calls")
    data = json_api._known(await json_api._body(request), ("reason_code", "note"))
    code, note = data.get("reason_code"), data.get("note", "")
    if not isinstance(code, str):
        raise ValidationError("reason_code", f"must be one of {', '.join(mp.DISPUTE_REASONS)}")
    if not isinstance(note, str):
        raise ValidationError("note", "must be a string")
    window, user = request.app[keys.SETTINGS].billing.dispute_window_days, request["user"].username
    try:
        row = await portal.write(request, "portal.dispute", f"call {ident}", {"reason_code": code, "note": note},
                                 lambda s: ps.open_dispute(s, who, ident, reason_code=code, note=note, user=user,
                                                           window_days=window), via="portal-api")
    except ps.DisputeRefused as exc:
        return json_api.error(422, "refused", exc.message, exc.field)
    except ValidationError as exc:
        if exc.message.startswith("no call"):
            raise web.HTTPNotFound() from None
        raise
    return web.json_response(dispute_json(row), status=201)


async def disputes(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "buyer":
        raise Forbidden("disputes are for buyers")
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_disputes(s, who.id)
    return web.json_response({"items": [dispute_json(d) for d in rows]})


async def numbers(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "publisher":
        raise Forbidden("tracking numbers are for publishers")
    async with request.app[keys.SESSIONS]() as s:
        nums, pools = await ps.numbers_of(s, who), await ps.pools_of(s, who)
    base = f"{request.scheme}://{request.host}"
    return web.json_response({
        "items": [{"number": n.number, "campaign": name} for n, name in nums],
        "pools": [{"name": pool.name, "campaign": name, "numbers": count, "public_key": pool.public_key,
                   "snippet": f'<script src="{base}/dni/v1/dni.js" data-key="{pool.public_key}" async></script>'}
                  for pool, name, count in pools]})


async def report(request: web.Request) -> web.Response:
    who = await portal.party(request)
    first, last, rows = await portal.report_rows(request, who)
    key = "payout" if who.kind == "publisher" else "revenue"
    by = request.query.get("by", "day")
    return web.json_response({"from": str(first), "to": str(last), "timezone": request["zone"], "by": by, "rows": [
        {"key": str(r["key"]), "calls": r["calls"], "billable": r["billable"], "connected_s": r["seconds"],
         key: format_cents(r["amount_cents"]), f"{key}_cents": r["amount_cents"]} for r in rows]})


async def statements(request: web.Request) -> web.Response:
    await portal.party(request)
    async with request.app[keys.SESSIONS]() as s:
        periods = await ps.closed_periods(s)
    return web.json_response({"items": [{"id": x.id, "start": _iso(x.start_at), "end": _iso(x.end_at)}
                                        for x in periods]})


async def statement(request: web.Request) -> web.Response:
    who = await portal.party(request)
    ident = 0 if request.path.endswith("/current") else json_api._ident(request)
    st, lines = await portal.statement_for(request, who, ident)
    return web.json_response({"id": ident, "title": st.title, "currency": st.currency,
                              "total": format_cents(st.total_cents), "total_cents": st.total_cents,
                              "lines": [{"booked_at": _iso(x["booked_at"]), "kind": x["kind"], "call": x["linkedid"],
                                         "caller": x["caller"], "connected_s": x["connected_s"],
                                         "amount": format_cents(x["amount_cents"]), "amount_cents": x["amount_cents"],
                                         "note": x["reason"]} for x in lines]})


async def availability(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "buyer":
        raise Forbidden("only buyers pause themselves")
    data = json_api._known(await json_api._body(request), ("paused",))
    paused = data.get("paused")
    if not isinstance(paused, bool):
        raise ValidationError("paused", "must be true or false")
    try:
        row = await portal.write(request, "portal.pause" if paused else "portal.resume", f"buyer {who.id}",
                                 {"paused": paused}, lambda s: ps.set_paused(s, who, paused), via="portal-api")
    except ValidationError as exc:
        raise Forbidden(exc.message) from None
    return web.json_response({"paused": bool(row.paused)})


# --- the partners' own tasks ---------------------------------------------------------------------

async def recording(request: web.Request) -> web.StreamResponse:
    return await portal.recording(request)


def request_json(row) -> dict:
    return {"id": row.id, "campaign_id": row.campaign_id, "area_code": row.area_code, "quantity": row.quantity,
            "note": row.note, "state": row.state, "numbers": ps.request_numbers_of(row),
            "created_at": _iso(row.created_at), "decided_at": _iso(row.decided_at), "decision_note": row.decision_note}


async def number_requests(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "publisher":
        raise Forbidden("number requests are for publishers")
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_number_requests(s, who.id)
        acc = await ps.access_of(s, "publisher", who.id)
        held, asked = await ps.numbers_held(s, who), await ps.numbers_asked(s, who)
        campaigns = await ps.campaigns_of(s, who)
    return web.json_response({"limit": acc.number_limit, "held": held, "asked": asked,
                              "fill_at_once": acc.auto_fill_numbers,
                              "campaigns": [{"id": i, "name": n} for i, n in campaigns],
                              "items": [request_json(r) for r in rows]})


async def number_request_add(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "publisher":
        raise Forbidden("number requests are for publishers")
    data = json_api._known(await json_api._body(request), ("campaign_id", "area_code", "quantity", "note"))
    campaign_id, area, quantity, note = (data.get(k) for k in ("campaign_id", "area_code", "quantity", "note"))
    if not isinstance(campaign_id, int) or isinstance(campaign_id, bool):
        raise ValidationError("campaign_id", "must be the id of one of your campaigns")
    if not isinstance(area, str):
        raise ValidationError("area_code", "must be a 3-digit area code as text, such as \"212\"")
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise ValidationError("quantity", "must be a whole number")
    if not isinstance(note if note is not None else "", str):
        raise ValidationError("note", "must be a string")
    user = request["user"].username
    try:
        row = await portal.write(request, "portal.numbers.request", f"publisher {who.id}", data,
                                 lambda s: ps.request_numbers(s, who, campaign_id=campaign_id, area_code=area,
                                                              quantity=quantity, note=note or "", user=user),
                                 via="portal-api")
    except ps.NumberRefused as exc:
        return json_api.error(422, "refused", exc.message, exc.field)
    return web.json_response(request_json(row), status=201)


def target_json(row, deliveries, secret: str = "") -> dict:
    out = {"url": row.url if row else None, "deliveries": [
        {"call": d.linkedid, "event": d.event, "status": d.status, "attempts": d.attempts,
         "last_error": d.last_error, "created_at": _iso(d.created_at), "delivered_at": _iso(d.delivered_at)}
        for d in deliveries]}
    if secret:
        out["secret"] = secret
    return out


async def postback_get(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "publisher":
        raise Forbidden("postback URLs are for publishers")
    async with request.app[keys.SESSIONS]() as s:
        return web.json_response(target_json(await ps.own_target(s, who), await ps.own_deliveries(s, who)))


async def postback_put(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "publisher":
        raise Forbidden("postback URLs are for publishers")
    data = json_api._known(await json_api._body(request), ("url", "new_secret"))
    url, renew = data.get("url"), data.get("new_secret", False)
    if not isinstance(url, str):
        raise ValidationError("url", "must be an http:// or https:// URL")
    if not isinstance(renew, bool):
        raise ValidationError("new_secret", "must be true or false")
    private_ok = portal._private_ok(request)
    row, secret = await portal.write(request, "portal.postback.set", f"publisher {who.id}",
                                     {"url": url, "new_secret": renew},
                                     lambda s: ps.set_own_target(s, who, url, new_secret=renew, private_ok=private_ok),
                                     via="portal-api")
    async with request.app[keys.SESSIONS]() as s:
        deliveries = await ps.own_deliveries(s, who)
    return web.json_response(target_json(row, deliveries, secret))


async def postback_delete(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "publisher":
        raise Forbidden("postback URLs are for publishers")
    gone = await portal.write(request, "portal.postback.delete", f"publisher {who.id}", {},
                              lambda s: ps.delete_own_target(s, who), via="portal-api")
    if not gone:
        raise web.HTTPNotFound()
    return web.Response(status=204)


def rules_json(rules: dict, acc) -> dict:
    return {**rules, "editable": acc.edit_rules, "bounds": {
        "hours": acc.hours_bound, **{k: getattr(acc, b) for k, b in ps.BOUND_OF.items()}}}


async def schedule_get(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "buyer":
        raise Forbidden("hours and caps are a buyer's")
    async with request.app[keys.SESSIONS]() as s:
        return web.json_response(rules_json(await ps.own_rules(s, who), await ps.access_of(s, "buyer", who.id)))


async def schedule_patch(request: web.Request) -> web.Response:
    who = await portal.party(request)
    if who.kind != "buyer":
        raise Forbidden("hours and caps are a buyer's")
    data = json_api._known(await json_api._body(request), ps.RULE_FIELDS)
    for key, value in data.items():
        ok = isinstance(value, str) if key == "hours" else (value is None or (isinstance(value, int)
                                                                              and not isinstance(value, bool)))
        if not ok:
            raise ValidationError(key, "must be text" if key == "hours" else "must be a whole number or null (no cap)")
    try:
        await portal.write(request, "portal.rules", f"buyer {who.id}", data, lambda s: ps.set_own_rules(s, who, data),
                           via="portal-api")
    except ps.RulesRefused as exc:
        raise Forbidden(exc.message) from None
    return await schedule_get(request)


# --- operators: publishers' number requests ----------------------------------------------------------

async def operator_number_requests(request: web.Request) -> web.Response:
    from ppcswitch.web.base import need

    need(request, "read")
    state = _state(request, mp.NUMBER_REQUEST_STATES)
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_number_requests(s, None, state)
        spare = await ps.spare_counts(s)
    return web.json_response({"spare": spare, "items": [{**request_json(r), "publisher_id": r.publisher_id}
                                                        for r in rows]})


async def operator_number_decide(request: web.Request) -> web.Response:
    from ppcswitch.web.base import need

    need(request, "write")  # before reading the body
    row = await portal.decide(request, "numbers", "write", "fill", await _note(request), "api")
    return web.json_response({**request_json(row), "publisher_id": row.publisher_id})


async def _note(request: web.Request) -> str:
    note = json_api._known(await json_api._body(request), ("note",)).get("note", "")
    if not isinstance(note, str):
        raise ValidationError("note", "must be a string")
    return note


def _state(request: web.Request, states: tuple[str, ...]) -> str:
    state = request.query.get("state", "")
    if state and state not in states:
        raise ValidationError("state", f"must be one of {', '.join(states)}")
    return state


# --- operators: buyers' disputes ---------------------------------------------------------------

async def operator_disputes(request: web.Request) -> web.Response:
    from ppcswitch.web.base import need

    need(request, "read")
    state = _state(request, mp.DISPUTE_STATES)
    async with request.app[keys.SESSIONS]() as s:
        rows = await ps.list_disputes(s, None, state)
    return web.json_response({"items": [{**dispute_json(d), "buyer_id": d.buyer_id, "linkedid": d.linkedid}
                                        for d in rows]})


async def operator_decide(request: web.Request) -> web.Response:
    from ppcswitch.web.base import need

    need(request, "reports")  # before reading the body
    row = await portal.decide(request, "dispute", "reports", "accept", await _note(request), "api")
    return web.json_response({**dispute_json(row), "buyer_id": row.buyer_id, "linkedid": row.linkedid})


# --- operators: what each partner and campaign shows partners ------------------------------------------

def access_json(kind: str, party_id: int, acc) -> dict:
    import dataclasses

    return {"party": kind, "party_id": party_id, **dataclasses.asdict(acc)}


async def operator_access(request: web.Request) -> web.Response:
    from ppcswitch.web import store
    from ppcswitch.web.base import need

    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        acc = await ps.all_access(s)
        names = {k: await store.names(s, k) for k in ("publisher", "buyer", "campaign")}
        campaigns = await ps.campaign_access(s)
    partners = [access_json(kind, i, acc.get((kind, i), ps.Access())) for kind in ("publisher", "buyer")
                for i in sorted(names[kind])]
    return web.json_response({"partners": partners, "campaigns": [
        {"campaign_id": i, **{k: campaigns.get(i, {}).get(k) for k in ps.CAMPAIGN_FIELDS}} for i in sorted(names["campaign"])]})


ACCESS_TYPES = {"caller_display": (str,), "show_buyer_name": (bool,), "allow_pause": (bool,), "recordings": (bool,),
                "number_limit": (int,), "auto_fill_numbers": (bool,), "edit_rules": (bool,), "hours_bound": (str,),
                **{k: (int, type(None)) for k in ps.BOUNDS}}


async def operator_access_put(request: web.Request) -> web.Response:
    from ppcswitch.web import store
    from ppcswitch.web.base import need

    need(request, "users")
    kind, ident = request.match_info["party"], json_api._ident(request)
    if kind not in ("publisher", "buyer"):
        raise web.HTTPNotFound()
    data = json_api._known(await json_api._body(request), tuple(ACCESS_TYPES))
    for key, value in data.items():
        kinds = ACCESS_TYPES[key]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ValidationError(key, "has the wrong type (see the API document)")
    by = request["user"].username

    async def job(s):
        result = await ps.set_access(s, kind, ident, **data)
        store.audit(s, by, "api", "partner.access", f"{kind} {ident}", access_json(kind, ident, result))
        return result

    return web.json_response(access_json(kind, ident, await request.app[keys.WRITER].run(job)))


async def operator_campaign_access_put(request: web.Request) -> web.Response:
    from ppcswitch.web import store
    from ppcswitch.web.base import need

    need(request, "users")
    ident = json_api._ident(request)
    data = json_api._known(await json_api._body(request), ps.CAMPAIGN_FIELDS)
    values = {k: data.get(k) for k in ps.CAMPAIGN_FIELDS}
    if not isinstance(values["caller_display"], (str, type(None))):
        raise ValidationError("caller_display", "must be full, last4, hidden or null (as the partner)")
    for key in ("show_buyer_name", "recordings"):
        if not isinstance(values[key], (bool, type(None))):
            raise ValidationError(key, "must be true, false or null (as the partner)")
    by = request["user"].username

    async def job(s):
        result = await ps.set_campaign_access(s, ident, **values)
        store.audit(s, by, "api", "partner.campaign_access", f"campaign {ident}", result)
        return result

    return web.json_response({"campaign_id": ident, **await request.app[keys.WRITER].run(job)})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/disputes", operator_disputes)
    r.add_post("/api/v1/disputes/{id}/accept", operator_decide)
    r.add_post("/api/v1/disputes/{id}/reject", operator_decide)
    r.add_get(f"{P}/me", me)
    r.add_get(f"{P}/calls", calls)
    r.add_get(f"{P}/calls/{{id}}", call_get)
    r.add_post(f"{P}/calls/{{id}}/dispute", dispute)
    r.add_get(f"{P}/disputes", disputes)
    r.add_get(f"{P}/numbers", numbers)
    r.add_get(f"{P}/report", report)
    r.add_get(f"{P}/statements", statements)
    r.add_get(f"{P}/statements/current", statement)
    r.add_get(f"{P}/statements/{{id}}", statement)
    r.add_put(f"{P}/availability", availability)
    r.add_get(f"{P}/calls/{{id}}/recording", recording)
    r.add_get(f"{P}/number-requests", number_requests)
    r.add_post(f"{P}/number-requests", number_request_add)
    r.add_get(f"{P}/postback", postback_get)
    r.add_put(f"{P}/postback", postback_put)
    r.add_delete(f"{P}/postback", postback_delete)
    r.add_get(f"{P}/schedule", schedule_get)
    r.add_patch(f"{P}/schedule", schedule_patch)
    r.add_get("/api/v1/portal-access", operator_access)
    r.add_put("/api/v1/portal-access/campaigns/{id}", operator_campaign_access_put)
    r.add_put("/api/v1/portal-access/{party}/{id}", operator_access_put)
    r.add_get("/api/v1/number-requests", operator_number_requests)
    r.add_post("/api/v1/number-requests/{id}/fill", operator_number_decide)
    r.add_post("/api/v1/number-requests/{id}/reject", operator_number_decide)


# --- the OpenAPI document's part ---------------------------------------------------------------

def schemas() -> dict:
    from ppcswitch.web.openapi_schema import NTIME, TIME, _obj

    b, n = {"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 10**9, "nullable": True}
    ACCESS_SCHEMA = {"caller_display": {"type": "string", "enum": list(mp.CALLER_DISPLAY)}, "show_buyer_name": b,
                     "allow_pause": b, "recordings": b,
                     "number_limit": {"type": "integer", "minimum": 0, "maximum": 10000}, "auto_fill_numbers": b,
                     "edit_rules": b, "hours_bound": {"type": "string", "maxLength": 500},
                     **{k: n for k in ps.BOUNDS}}

    s = {"type": "string"}
    i = {"type": "integer"}
    return {
        "PortalMe": _obj({"username": s, "role": {"type": "string", "enum": ["publisher", "buyer"]},
                          "party": _obj({"kind": s, "id": i, "name": s}), "timezone": s,
                          "caller_display": {"type": "string", "enum": list(mp.CALLER_DISPLAY)},
                          "dispute_window_days": i}),
        "PortalCall": {"type": "object", "additionalProperties": False,
                       "description": "a publisher sees sub_id, payout and (if the operator allows) buyer; a buyer "
                                      "sees state, revenue, its dispute and whether it may hear the recording. Money is the ledger's, reversals included.",
                       "required": ["id", "started_at", "tracking_number", "caller", "duration_s", "billable",
                                    "billing_reasons"],
                       "properties": {"id": i, "started_at": TIME, "tracking_number": s,
                                      "caller": {"type": "string", "description": "in full, last 4 digits or '' as "
                                                 "the operator sets for this partner"},
                                      "duration_s": i, "billable": {"type": "boolean"},
                                      "billing_reasons": {"type": "array", "items": s}, "sub_id": s, "payout": s,
                                      "payout_cents": i, "buyer": {"type": "string", "nullable": True}, "state": s,
                                      "revenue": s, "revenue_cents": i,
                                      "dispute": {"type": "object", "nullable": True},
                                      "recording": {"type": "boolean", "description": "a buyer may hear this "
                                                    "call's recording (GET /portal/calls/{id}/recording)"}}},
        "PortalDispute": _obj({"id": i, "call_id": i, "reason_code": s, "note": s,
                               "state": {"type": "string", "enum": list(mp.DISPUTE_STATES)}, "created_at": TIME,
                               "decided_at": NTIME, "decision_note": s, "reversed": s, "reversed_cents": i}),
        "Dispute": _obj({"id": i, "call_id": i, "linkedid": s, "buyer_id": i, "reason_code": s, "note": s,
                         "state": {"type": "string", "enum": list(mp.DISPUTE_STATES)}, "created_at": TIME,
                         "decided_at": NTIME, "decision_note": s, "reversed": s, "reversed_cents": i}),
        "PortalDisputeInput": _obj({"reason_code": {"type": "string", "enum": list(mp.DISPUTE_REASONS)},
                                    "note": {"type": "string", "maxLength": 1000}}, required=["reason_code"]),
        "PortalNumberRequest": _obj({"id": i, "campaign_id": i, "area_code": s, "quantity": i, "note": s,
                                     "state": {"type": "string", "enum": list(mp.NUMBER_REQUEST_STATES)},
                                     "numbers": {"type": "array", "items": s}, "created_at": TIME,
                                     "decided_at": NTIME, "decision_note": s}),
        "NumberRequest": _obj({"id": i, "publisher_id": i, "campaign_id": i, "area_code": s, "quantity": i, "note": s,
                               "state": {"type": "string", "enum": list(mp.NUMBER_REQUEST_STATES)},
                               "numbers": {"type": "array", "items": s}, "created_at": TIME,
                               "decided_at": NTIME, "decision_note": s}),
        "PortalPostback": _obj({"url": {"type": "string", "nullable": True},
                                "secret": {"type": "string", "description": "only when new or renewed: keep it"},
                                "deliveries": {"type": "array", "items": _obj({
                                    "call": s, "event": s, "status": s, "attempts": i, "last_error": s,
                                    "created_at": TIME, "delivered_at": NTIME})}},
                               required=["url", "deliveries"]),
        "PartnerAccess": _obj({"party": {"type": "string", "enum": ["publisher", "buyer"]}, "party_id": i,
                               **ACCESS_SCHEMA}),
        "PartnerAccessInput": _obj(ACCESS_SCHEMA, required=[]),
        "CampaignAccess": _obj({"campaign_id": i,
                                "caller_display": {"type": "string", "enum": list(mp.CALLER_DISPLAY), "nullable": True},
                                "show_buyer_name": {"type": "boolean", "nullable": True},
                                "recordings": {"type": "boolean", "nullable": True}}),
        "PortalSchedule": _obj({"timezone": s, "hours": s, "concurrency": {"type": "integer", "nullable": True},
                                "cap_hourly": {"type": "integer", "nullable": True},
                                "cap_daily": {"type": "integer", "nullable": True},
                                "cap_monthly": {"type": "integer", "nullable": True},
                                "editable": {"type": "boolean"},
                                "bounds": _obj({"hours": s, **{k: {"type": "integer", "nullable": True}
                                                              for k in ps.BOUND_OF}})}),
    }


def paths() -> dict:
    from ppcswitch.web.openapi_schema import ID, _errors, _json, _obj, _param, _ref

    date = {"type": "string", "format": "date"}
    pid = _param("id", "path", {"type": "integer", "minimum": 1, "maximum": 2 ** 62})
    s, i = {"type": "string"}, {"type": "integer"}
    only = " Partner tokens only (a publisher's or buyer's own token); staff tokens get 403."
    decided = _json(_ref("Dispute"))
    note = {"required": True, "content": {"application/json": {"schema": _obj(
        {"note": {"type": "string", "maxLength": 1000}}, required=[])}}}
    return {
        "/disputes": {"get": {
            "summary": "Buyers' disputes (from their portals), newest first", "operationId": "list_disputes",
            "description": "Any staff role. state: pending, accepted or rejected (default: all).",
            "parameters": [_param("state", "query", {"type": "string", "enum": list(mp.DISPUTE_STATES)})],
            "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("Dispute")}})), **_errors()}}},
        "/disputes/{id}/accept": {"post": {
            "summary": "Accept a pending dispute: the ledger reverses the call's revenue (and payout where it "
                       "depends on the buyer paying) and the signed reversal postback is queued",
            "operationId": "accept_dispute", "parameters": [pid], "requestBody": note,
            "description": "Finance and admin. A dispute decided already is refused (400).",
            "responses": {"200": decided, **_errors()}}},
        "/disputes/{id}/reject": {"post": {
            "summary": "Reject a pending dispute, with a note (required) the buyer sees",
            "operationId": "reject_dispute", "parameters": [pid], "requestBody": note,
            "description": "Finance and admin. Nothing moves in the ledger.",
            "responses": {"200": decided, **_errors()}}},
        "/portal/me": {"get": {"summary": "The partner the token belongs to", "operationId": "portal_me",
                               "description": "Who the token's owner is, its publisher or buyer, its time zone." + only,
                               "responses": {"200": _json(_ref("PortalMe")), **_errors()}}},
        "/portal/calls": {"get": {
            "summary": "The partner's own calls, newest first", "operationId": "portal_list_calls",
            "description": "Only the token owner's publisher's or buyer's calls; times in UTC (ISO 8601)." + only,
            "parameters": [_param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
                           _param("cursor", "query", s, description="next_cursor of the previous page"),
                           _param("date_from", "query", date), _param("date_to", "query", date),
                           _param("sub_id", "query", {"type": "string", "maxLength": 64}),
                           _param("number", "query", {"type": "string", "maxLength": 32},
                                  description="tracking number contains these digits"),
                           _param("billable", "query", {"type": "string", "enum": ["yes", "no"]})],
            "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("PortalCall")},
                                             "next_cursor": {"type": "string", "nullable": True}})), **_errors()}}},
        "/portal/calls/{id}": {"get": {
            "summary": "One of the partner's calls", "operationId": "portal_get_call", "parameters": [pid],
            "description": "404 for a call that is not the partner's own." + only,
            "responses": {"200": _json(_ref("PortalCall")), **_errors()}}},
        "/portal/calls/{id}/dispute": {"post": {
            "summary": "A buyer disputes one of its billable calls (pending until the operator decides)",
            "operationId": "portal_dispute_call", "parameters": [pid],
            "description": "Within billing.dispute_window_days of the call; refused (422) after the window, for "
                           "a call not billable, or one already disputed." + only,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PortalDisputeInput")}}},
            "responses": {"201": _json(_ref("PortalDispute"), "Created (pending)"),
                          "422": _json({"$ref": "#/components/schemas/Error"}, "Refused, with the reason"),
                          **_errors()}}},
        "/portal/disputes": {"get": {
            "summary": "A buyer's disputes and their state", "operationId": "portal_list_disputes",
            "description": "Pending, accepted (with the revenue reversed) or rejected (with the operator's note)." + only,
            "responses": {"200": _json(_obj({"items": {"type": "array", "items": _ref("PortalDispute")}})),
                          **_errors()}}},
        "/portal/numbers": {"get": {
            "summary": "A publisher's tracking numbers and pools (with the DNI snippet)",
            "operationId": "portal_list_numbers", "description": "Publishers only." + only,
            "responses": {"200": _json(_obj({"items": {"type": "array", "items": _obj({"number": s, "campaign": s})},
                                             "pools": {"type": "array", "items": _obj(
                                                 {"name": s, "campaign": s, "numbers": i, "public_key": s,
                                                  "snippet": s})}})), **_errors()}}},
        "/portal/report": {"get": {
            "summary": "The partner's calls and money per local day, number, campaign or sub-ID",
            "operationId": "portal_report",
            "description": "Days in the token owner's time zone; money is the ledger's entries booked each day "
                           "(payout for a publisher, revenue for a buyer). At most 92 days." + only,
            "parameters": [_param("from", "query", date), _param("to", "query", date),
                           _param("by", "query", {"type": "string", "enum": ["day", "number", "campaign", "sub_id"]},
                                  description="rows per local day (default), tracking number, campaign or sub-ID "
                                              "(publishers)")],
            "responses": {"200": _json(_obj({"from": s, "to": s, "timezone": s, "by": s, "rows": {"type": "array", "items": {
                "type": "object", "required": ["key", "calls", "billable", "connected_s"],
                "properties": {"key": s, "calls": i, "billable": i, "connected_s": i, "payout": s, "payout_cents": i,
                               "revenue": s, "revenue_cents": i}, "additionalProperties": False}}})),
                          **_errors()}}},
        "/portal/statements": {"get": {
            "summary": "Closed billing periods (each has the partner's statement or invoice)",
            "operationId": "portal_list_statements", "description": "The operator closes periods." + only,
            "responses": {"200": _json(_obj({"items": {"type": "array", "items": _obj(
                {"id": ID, "start": s, "end": s})}})), **_errors()}}},
        "/portal/statements/{id}": {"get": {
            "summary": "The partner's statement (publisher) or invoice (buyer) of one closed period",
            "operationId": "portal_get_statement", "parameters": [pid],
            "description": "Every ledger entry of the partner booked in the period, to the cent." + only,
            "responses": {"200": _json(_obj({"id": i, "title": s, "currency": s, "total": s, "total_cents": i,
                                             "lines": {"type": "array", "items": _obj(
                                                 {"booked_at": s, "kind": s, "call": s, "caller": s, "connected_s": i,
                                                  "amount": s, "amount_cents": i, "note": s})}})), **_errors()}}},
        "/portal/statements/current": {"get": {
            "summary": "The partner's statement or invoice of the open period so far",
            "operationId": "portal_current_statement",
            "description": "Every ledger entry of the partner booked since the last closed period." + only,
            "responses": {"200": _json(_obj({"id": i, "title": s, "currency": s, "total": s, "total_cents": i,
                                             "lines": {"type": "array", "items": _obj(
                                                 {"booked_at": s, "kind": s, "call": s, "caller": s, "connected_s": i,
                                                  "amount": s, "amount_cents": i, "note": s})}})), **_errors()}}},
        "/portal/calls/{id}/recording": {"get": {
            "summary": "The recording of one of a buyer's calls (WAV)", "operationId": "portal_get_recording",
            "parameters": [pid, _param("download", "query", {"type": "string", "enum": ["1"]},
                                       description="as an attachment")],
            "description": "Where the call's campaign recorded it and the operator lets this buyer hear "
                           "recordings (per buyer, or per campaign); otherwise 404, as for another's call." + only,
            "responses": {"200": {"description": "The recording",
                                  "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
                          **_errors()}}},
        "/portal/number-requests": {
            "get": {"summary": "A publisher's number requests, its limit and its campaigns",
                    "operationId": "portal_list_number_requests", "description": "Publishers only." + only,
                    "responses": {"200": _json(_obj({"limit": i, "held": i, "asked": i, "fill_at_once": {"type": "boolean"},
                                                     "campaigns": {"type": "array", "items": _obj({"id": i, "name": s})},
                                                     "items": {"type": "array", "items": _ref("PortalNumberRequest")}})),
                                  **_errors()}},
            "post": {"summary": "A publisher asks for numbers in an area code on one of its campaigns",
                     "operationId": "portal_request_numbers",
                     "description": "Up to the limit the operator sets (numbers held plus asked for); filled at "
                                    "once from the operator's spare numbers when the operator allows it and there "
                                    "are enough, else pending until the operator fills it. 422: over the limit or "
                                    "requests not taken." + only,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                         {"campaign_id": i, "area_code": {"type": "string", "pattern": "^[2-9][0-9][0-9]$"},
                          "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                          "note": {"type": "string", "maxLength": 500}},
                         required=["campaign_id", "area_code", "quantity"])}}},
                     "responses": {"201": _json(_ref("PortalNumberRequest"), "Created (pending or filled)"),
                                   "422": _json({"$ref": "#/components/schemas/Error"}, "Refused, with the reason"),
                                   **_errors()}}},
        "/portal/postback": {
            "get": {"summary": "A publisher's own postback URL and its latest deliveries",
                    "operationId": "portal_get_postback", "description": "Publishers only." + only,
                    "responses": {"200": _json(_ref("PortalPostback")), **_errors()}},
            "put": {"summary": "Set the publisher's postback URL template (signed as every postback is)",
                    "operationId": "portal_set_postback",
                    "description": "Sent for the publisher's own calls when billed or reversed; the caller as "
                                   "the operator lets this publisher see callers. The signing secret is in the "
                                   "answer when the target is new or new_secret is true." + only,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                        {"url": {"type": "string", "maxLength": 2000}, "new_secret": {"type": "boolean"}},
                        required=["url"])}}},
                    "responses": {"200": _json(_ref("PortalPostback")), **_errors()}},
            "delete": {"summary": "Remove the publisher's postback", "operationId": "portal_delete_postback",
                       "description": "Nothing is sent afterwards." + only,
                       "responses": {"204": {"description": "Removed"}, **_errors()}}},
        "/portal/schedule": {
            "get": {"summary": "A buyer's hours and caps, and the operator's bounds on them",
                    "operationId": "portal_get_schedule", "description": "Buyers only." + only,
                    "responses": {"200": _json(_ref("PortalSchedule")), **_errors()}},
            "patch": {"summary": "A buyer changes its own hours and caps, within the operator's bounds",
                      "operationId": "portal_set_schedule",
                      "description": "Only the fields sent change; null removes a cap (refused where the operator "
                                     "set a bound). 403 when the operator does not let the buyer edit them." + only,
                      "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                          {"hours": {"type": "string", "maxLength": 500},
                           **{k: {"type": "integer", "minimum": 0, "nullable": True} for k in ps.BOUND_OF}},
                          required=[])}}},
                      "responses": {"200": _json(_ref("PortalSchedule")), **_errors()}}},
        "/portal-access": {"get": {
            "summary": "What each partner and each campaign shows partners", "operationId": "get_portal_access",
            "description": "Any staff role. Partners without a setting show the defaults; a campaign's null "
                           "values keep the partner's own.",
            "responses": {"200": _json(_obj({"partners": {"type": "array", "items": _ref("PartnerAccess")},
                                             "campaigns": {"type": "array", "items": _ref("CampaignAccess")}})),
                          **_errors()}}},
        "/portal-access/{party}/{id}": {"put": {
            "summary": "Change what one publisher or buyer sees and may do (the fields sent only)",
            "operationId": "set_partner_access",
            "parameters": [_param("party", "path", {"type": "string", "enum": ["publisher", "buyer"]}), pid],
            "description": "Only the fields sent change; the partner's next page and API call see the change. Admin.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                **_ref("PartnerAccessInput")}}}},
            "responses": {"200": _json(_ref("PartnerAccess")), **_errors()}}},
        "/portal-access/campaigns/{id}": {"put": {
            "summary": "What one campaign's calls show partners (null: as the partner)",
            "operationId": "set_campaign_access", "parameters": [pid],
            "description": "Only the fields sent change; null gives the field back to each partner's own setting. Admin.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                {"caller_display": {"type": "string", "enum": list(mp.CALLER_DISPLAY), "nullable": True},
                 "show_buyer_name": {"type": "boolean", "nullable": True},
                 "recordings": {"type": "boolean", "nullable": True}}, required=[])}}},
            "responses": {"200": _json(_ref("CampaignAccess")), **_errors()}}},
        "/number-requests": {"get": {
            "summary": "Publishers' number requests, newest first, and the spare numbers per area code",
            "operationId": "list_number_requests",
            "description": "Pending, filled and rejected requests; `state` narrows the list. Any staff role.",
            "parameters": [_param("state", "query", {"type": "string", "enum": list(mp.NUMBER_REQUEST_STATES)})],
            "responses": {"200": _json(_obj({"spare": {"type": "object", "additionalProperties": i},
                                             "items": {"type": "array", "items": _ref("NumberRequest")}})),
                          **_errors()}}},
        "/number-requests/{id}/fill": {"post": {
            "summary": "Fill a pending request from the spare numbers of its area code",
            "operationId": "fill_number_request", "parameters": [pid], "requestBody": note,
            "description": "Admin. The numbers become the publisher's tracking numbers on the campaign asked "
                           "for; refused (400) when too few are spare.",
            "responses": {"200": _json(_ref("NumberRequest")), **_errors()}}},
        "/number-requests/{id}/reject": {"post": {
            "summary": "Reject a pending number request, with a note (required) the publisher sees",
            "operationId": "reject_number_request", "parameters": [pid], "requestBody": note,
            "description": "The request is closed without numbers; the publisher sees it rejected. Admin.",
            "responses": {"200": _json(_ref("NumberRequest")), **_errors()}}},
        "/portal/availability": {"put": {
            "summary": "A buyer pauses or resumes itself (if the operator allows it)",
            "operationId": "portal_set_availability",
            "description": "paused: true stops calls to the buyer until it resumes." + only,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _obj(
                {"paused": {"type": "boolean"}})}}},
            "responses": {"200": _json(_obj({"paused": {"type": "boolean"}})), **_errors()}}},
    }
