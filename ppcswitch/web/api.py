"""REST API under /api/v1: JSON, bearer-token auth, the same objects as the panel.

Errors always have the body {"error": {"status", "code", "message", "field"}}.
Lists are paginated: objects by limit/offset (with the total), calls by an
opaque cursor (newest first), which stays fast over millions of calls.
The OpenAPI document (openapi.py) is checked against this code by schemathesis.
"""

from __future__ import annotations

import json

from aiohttp import web

from ppcswitch import keys
from ppcswitch.money import format_cents
from ppcswitch.attribution import codes
from ppcswitch.billing import reports
from ppcswitch.storage import models_routing, repo, repo_routing
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import base
from ppcswitch.web.json_api import _body, _ident, _known, _query_int, _write, error
from ppcswitch.web import numbers_import, openapi, security, store, zones
from ppcswitch.web.base import Forbidden, need


async def guard(request: web.Request, handler):
    auth = request.headers.get("Authorization", "")
    scheme, _, secret = auth.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return error(401, "unauthenticated", "send an API token: Authorization: Bearer <token>")
    async with request.app[keys.SESSIONS]() as s:
        found = await store.token_user(s, secret.strip())
    if found is None:
        return error(401, "unauthenticated", "unknown or revoked API token")
    user, token = found
    # A token never acts above its owner's current role (the owner may have been demoted since).
    role = token.role if security.role_within(token.role, user.role) else user.role
    request["user"], request["role"], request["token"] = user, role, token
    request["zone"] = await zones.request_zone(request)
    from ppcswitch.web import portal

    refused = portal.partner_gate(request)  # partner tokens: the portal's operations only
    if refused:
        return error(403, "forbidden", "a partner token reaches only /api/v1/portal operations")
    unknown = _unknown_query(request)
    if unknown:
        return error(400, "invalid", f"{unknown}: is not a query parameter of this operation "
                                     f"(see /api/v1/openapi.json)", unknown)
    try:
        return await handler(request)
    except Forbidden as exc:
        return error(403, "forbidden", str(exc))
    except numbers_import.ImportRejected as exc:
        return web.json_response({"error": {"status": 422, "code": "import_rejected", "message": str(exc),
                                            "field": "csv"}, "rows": len(exc.checked.rows),
                                  "errors": [_row_error(e) for e in exc.checked.errors]}, status=422)
    except ValidationError as exc:
        if exc.message.startswith("no ") or "is not a tracking" in exc.message:
            code, status = "not_found", 404
        elif "already exists" in exc.message or " is already " in exc.message:
            code, status = "conflict", 409  # a duplicate name, a number already taken ...
        else:
            code, status = "invalid", 400
        return error(status, code, str(exc), exc.field)
    except web.HTTPNotFound:
        return error(404, "not_found", "no such object")
    except web.HTTPMethodNotAllowed:
        return error(405, "method_not_allowed", f"{request.method} is not allowed here")
    except web.HTTPRequestEntityTooLarge:
        return error(413, "too_large", "the request body is too large")


def _unknown_query(request: web.Request) -> str:
    """The first query parameter the OpenAPI document does not list for this operation ('' if none)."""
    if not request.query:
        return ""
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    path = getattr(resource, "canonical", "") if resource is not None else ""
    if not path.startswith("/api/v1"):
        return ""
    allowed = openapi.query_parameters(path[len("/api/v1"):] or "/", request.method)
    if allowed is None:  # not documented (e.g. 404/405): the handler answers
        return ""
    return next((k for k in request.query if k not in allowed), "")


def _row_error(e) -> dict:
    return {"line": e.line, "field": e.field, "message": e.message}


# --- JSON forms of objects ---------------------------------------------------------------

def buyer_json(b) -> dict:
    return {"id": b.id, "name": b.name, "destination": b.destination, "revenue": format_cents(b.revenue_cents),
            "revenue_cents": b.revenue_cents, "ring_timeout": b.ring_timeout, "concurrency_cap": b.concurrency_cap,
            "min_duration": b.min_duration, "paused": b.paused, "created_at": b.created_at.isoformat()}


def publisher_json(p) -> dict:
    return {"id": p.id, "name": p.name, "payout": format_cents(p.payout_cents), "payout_cents": p.payout_cents,
            "paused": p.paused, "created_at": p.created_at.isoformat()}


def campaign_json(k) -> dict:
    return {"id": k.id, "name": k.name, "paused": k.paused, "created_at": k.created_at.isoformat()}


def number_json(n) -> dict:
    return {"number": n.number, "campaign_id": n.campaign_id, "publisher_id": n.publisher_id,
            "ask_publisher_code": bool(n.ask_publisher_code), "created_at": n.created_at.isoformat()}


def _iso(x):
    return None if x is None else x.isoformat()


def call_json(c) -> dict:
    out = {"id": c.id, "linkedid": c.linkedid, "tracking_number": c.tracking_number, "caller": c.caller,
           "caller_valid": c.caller_valid, "started_at": _iso(c.started_at), "answered_at": _iso(c.answered_at),
           "ended_at": _iso(c.ended_at), "outcome": c.outcome, "campaign_id": c.campaign_id,
           "publisher_id": c.publisher_id, "buyer_id": c.buyer_id, "connected_ms": c.connected_ms,
           "hangup_cause": c.hangup_cause, "hangup_cause_text": c.hangup_cause_text,
           "reject_reason": c.reject_reason, "billable": c.billable,
           "billing_reasons": json.loads(c.billing_reasons or "[]"), "revenue_cents": c.revenue_cents,
           "payout_cents": c.payout_cents}
    if "attempts" in c.__dict__:  # loaded: the single-call endpoint
        out["attempts"] = [{"seq": a.seq, "buyer_id": a.buyer_id, "dial_status": a.dial_status,
                            "started_at": _iso(a.started_at), "answered_at": _iso(a.answered_at),
                            "ended_at": _iso(a.ended_at)} for a in c.attempts]
    return out


TO_JSON = {"buyer": buyer_json, "publisher": publisher_json, "campaign": campaign_json}
FIELDS = {
    "buyer": ("name", "destination", "revenue", "ring_timeout", "concurrency_cap", "min_duration", "paused"),
    "publisher": ("name", "payout", "paused"),
    "campaign": ("name", "paused"),
}
GET = {"buyer": repo.get_buyer, "publisher": repo.get_publisher, "campaign": repo.get_campaign}


TYPES = {"name": str, "destination": str, "revenue": str, "payout": str, "ring_timeout": int,
         "concurrency_cap": (int, type(None)), "min_duration": int, "paused": bool}
TYPE_WORDS = {str: "text", int: "a whole number", bool: "true or false"}


def _bool_fields(data: dict) -> dict:
    """Strict JSON types: "4" is not a number, 4 is not a name, money is a decimal string ("40.00")."""
    if "paused" in data and not isinstance(data["paused"], bool):
        raise ValidationError("paused", "must be true or false")
    for key, kind in TYPES.items():
        if key not in data:
            continue
        value = data[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if not ok:
            if key in ("revenue", "payout"):
                raise ValidationError(key, f'must be a decimal amount as a string, e.g. "40.00" (got {value!r})')
            if key == "concurrency_cap":
                raise ValidationError(key, f"must be a whole number or null (got {value!r})")
            raise ValidationError(key, f"must be {TYPE_WORDS[kind]} (got {value!r})")
    return data


# --- handlers ------------------------------------------------------------------------------

def object_handlers(kind: str):
    async def list_(request: web.Request) -> web.Response:
        need(request, "read")
        limit = _query_int(request, "limit", 50, 1, 1000)
        offset = _query_int(request, "offset", 0, 0, 10 ** 9)
        q = request.query.get("q", "")[:100]
        async with request.app[keys.SESSIONS]() as s:
            rows, total = await store.list_objects(s, kind, q, limit, offset)
        return web.json_response({"items": [TO_JSON[kind](r) for r in rows], "total": total, "limit": limit,
                                  "offset": offset})

    async def get(request: web.Request) -> web.Response:
        need(request, "read")
        ident = _ident(request)
        async with request.app[keys.SESSIONS]() as s:
            row = await GET[kind](s, ident)
        return web.json_response(TO_JSON[kind](row))

    async def create(request: web.Request) -> web.Response:
        need(request, "write")
        data = _bool_fields(_known(await _body(request), FIELDS[kind]))
        args = dict(data)
        if "name" not in args:
            raise ValidationError("name", "is required")
        name = args.pop("name")
        if kind == "buyer":
            if "destination" not in args:
                raise ValidationError("destination", "is required")
            destination = args.pop("destination")
            fn = lambda s: repo.create_buyer(s, name, destination, **args)  # noqa: E731
        else:
            fn = lambda s: base.CREATE[kind](s, name, **args)  # noqa: E731
        row = await _write(request, f"{kind}.create", str(name)[:100], data, fn)
        return web.json_response(TO_JSON[kind](row), status=201)

    async def update(request: web.Request) -> web.Response:
        need(request, "write")
        ident = _ident(request)
        data = _bool_fields(_known(await _body(request), FIELDS[kind]))
        row = await _write(request, f"{kind}.update", f"{kind} {ident}", data,
                           lambda s: base.UPDATE[kind](s, ident, **data))
        return web.json_response(TO_JSON[kind](row))

    return list_, get, create, update


async def campaign_buyers(request: web.Request) -> web.Response:
    need(request, "read")
    ident = _ident(request)
    async with request.app[keys.SESSIONS]() as s:
        await repo.get_campaign(s, ident)
        links = await store.campaign_buyers(s, ident)
    return web.json_response({"items": [{"buyer_id": b.id, "priority": link.priority} for link, b in links]})


async def campaign_buyer_put(request: web.Request) -> web.Response:
    """Add a buyer to the campaign or change its priority."""
    need(request, "write")
    ident, buyer_id = _ident(request), _ident(request, "buyer_id")
    data = _known(await _body(request), ("priority",))
    priority = data.get("priority", 1)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValidationError("priority", "must be a whole number from 1 to 1000")

    async def fn(s):
        await repo.get_campaign(s, ident)
        await repo.get_buyer(s, buyer_id)
        try:
            return await repo.set_campaign_buyer_priority(s, ident, buyer_id, priority)
        except ValidationError as exc:
            if exc.field != "buyer":
                raise
            return await repo.add_campaign_buyer(s, ident, buyer_id, priority)

    link = await _write(request, "campaign.set_buyer", f"campaign {ident}", {"buyer_id": buyer_id, **data}, fn)
    return web.json_response({"buyer_id": link.buyer_id, "priority": link.priority})


async def campaign_buyer_delete(request: web.Request) -> web.Response:
    need(request, "write")
    ident, buyer_id = _ident(request), _ident(request, "buyer_id")
    await _write(request, "campaign.remove_buyer", f"campaign {ident}", {"buyer_id": buyer_id},
                 lambda s: repo.remove_campaign_buyer(s, ident, buyer_id))
    return web.Response(status=204)


async def numbers_list(request: web.Request) -> web.Response:
    need(request, "read")
    limit = _query_int(request, "limit", 50, 1, 1000)
    offset = _query_int(request, "offset", 0, 0, 10 ** 9)
    campaign = _query_int(request, "campaign_id", 0, 0, 2 ** 31 - 1) or None
    publisher = _query_int(request, "publisher_id", 0, 0, 2 ** 31 - 1) or None
    async with request.app[keys.SESSIONS]() as s:
        rows, total = await store.list_numbers(s, base.number_digits(request.query.get("q", "")[:32]), campaign,
                                               publisher, limit, offset)
    return web.json_response({"items": [number_json(r) for r in rows], "total": total, "limit": limit,
                              "offset": offset})


def _id_field(data: dict, key: str, required: bool) -> int | str | None:
    """An id (`campaign_id`), or the name the CSV import uses (`campaign`), never both."""
    name_key = key.removesuffix("_id")
    if name_key != key and name_key in data:
        if key in data:
            raise ValidationError(name_key, f"give {key} or {name_key}, not both")
        if not isinstance(data[name_key], str) or not data[name_key].strip():
            raise ValidationError(name_key, f"must be the {name_key}'s name (text)")
        return data[name_key].strip()
    if key not in data:
        if required:
            raise ValidationError(key, f"is required (or {name_key}: its name)" if name_key != key else "is required")
        return None
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2 ** 31 - 1:
        raise ValidationError(key, "must be an id (a positive whole number)")
    return value


async def number_create(request: web.Request) -> web.Response:
    need(request, "write")
    data = _known(await _body(request), ("number", "campaign_id", "publisher_id", "campaign", "publisher",
                                         "ask_publisher_code"))
    number = data.get("number")
    if not isinstance(number, str):
        raise ValidationError("number", "is required: the tracking number as text, e.g. \"+18005550199\"")
    campaign, publisher = _id_field(data, "campaign_id", True), _id_field(data, "publisher_id", True)
    ask = _bool_field(data, "ask_publisher_code")
    region = request.app[keys.SETTINGS].routing.default_region

    async def create(s):
        row = await repo.add_tracking_number(s, number, campaign, publisher, region=region)
        if ask:
            row = await codes.set_number_asks(s, row.number, True, region=region)
        return row

    row = await _write(request, "number.create", str(number)[:40], data, create)
    return web.json_response(number_json(row), status=201)


def _bool_field(data: dict, key: str) -> bool | None:
    if key not in data:
        return None
    if not isinstance(data[key], bool):
        raise ValidationError(key, "must be true or false")
    return data[key]


async def number_get(request: web.Request) -> web.Response:
    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        row = await store.get_number(s, request.match_info["number"])
    return web.json_response(number_json(row))


async def number_update(request: web.Request) -> web.Response:
    """Assign a tracking number to another campaign and/or publisher."""
    need(request, "write")
    number = request.match_info["number"]
    data = _known(await _body(request), ("campaign_id", "publisher_id", "campaign", "publisher", "ask_publisher_code"))
    campaign, publisher = _id_field(data, "campaign_id", False), _id_field(data, "publisher_id", False)
    ask = _bool_field(data, "ask_publisher_code")

    async def update(s):
        row = await store.update_number(s, number, campaign, publisher)
        if ask is not None:  # the number as stored (E.164): no region needed
            row.ask_publisher_code = ask
            await s.flush()
        return row

    row = await _write(request, "number.update", number, data, update)
    return web.json_response(number_json(row))


async def number_delete(request: web.Request) -> web.Response:
    """Release a tracking number: calls to it are no longer routed."""
    need(request, "write")
    number = request.match_info["number"]

    async def fn(s):
        row = await store.get_number(s, number)
        await s.delete(row)
        await s.flush()
        await repo.bump_config_version(s)

    await _write(request, "number.release", number, {}, fn)
    return web.Response(status=204)


async def publisher_codes_list(request: web.Request) -> web.Response:
    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        return web.json_response({"items": await codes.list_codes(s)})


async def publisher_code_put(request: web.Request) -> web.Response:
    """Add an IVR publisher code (or point it at another publisher / sub-ID)."""
    need(request, "write")
    code = request.match_info["code"]
    data = _known(await _body(request), ("publisher_id", "sub_id"))
    publisher = _id_field(data, "publisher_id", True)
    sub_id = data.get("sub_id", "")
    if not isinstance(sub_id, str):
        raise ValidationError("sub_id", "must be text")

    async def put(s):
        row = await codes.set_code(s, code, publisher, sub_id)
        return {"code": row.code, "publisher_id": row.publisher_id,
                "publisher": (await repo.get_publisher(s, row.publisher_id)).name, "sub_id": row.sub_id}

    return web.json_response(await _write(request, "publisher_code.set", code[:8], data, put))


async def publisher_code_delete(request: web.Request) -> web.Response:
    need(request, "write")
    code = request.match_info["code"]
    await _write(request, "publisher_code.remove", code[:8], {}, lambda s: codes.remove_code(s, code))
    return web.Response(status=204)


async def numbers_import_(request: web.Request) -> web.Response:
    """Bulk import from CSV text; all rows or none. dry_run checks without writing."""
    need(request, "write")
    data = _known(await _body(request), ("csv", "dry_run"))
    text, dry_run = data.get("csv"), data.get("dry_run", False)
    if not isinstance(text, str):
        raise ValidationError("csv", "is required: CSV text with the header number,campaign,publisher")
    if not isinstance(dry_run, bool):
        raise ValidationError("dry_run", "must be true or false")
    region = request.app[keys.SETTINGS].routing.default_region
    if dry_run:
        async with request.app[keys.SESSIONS]() as s:
            checked = await store.check_numbers_csv(s, text, region)
        if checked.errors:
            raise numbers_import.ImportRejected(checked)
        return web.json_response({"imported": 0, "valid_rows": len(checked.rows), "dry_run": True})
    checked = await _write(request, "number.import", "", {"rows": len(text.splitlines())},
                           lambda s: store.import_numbers_csv(s, text, region))
    return web.json_response({"imported": len(checked.rows), "valid_rows": len(checked.rows), "dry_run": False})


async def calls_list(request: web.Request) -> web.Response:
    need(request, "read")
    flt, errors = base.call_filter(request.query, _zone_arg(request))
    if errors:
        field, message = next(iter(errors.items()))
        raise ValidationError(field, message)
    limit = _query_int(request, "limit", 50, 1, 1000)
    async with request.app[keys.SESSIONS]() as s:
        rows, cursor = await store.list_calls(s, flt, limit, request.query.get("cursor", ""))
    return web.json_response({"items": [call_json(c) for c in rows], "next_cursor": cursor or None})


async def call_get(request: web.Request) -> web.Response:
    need(request, "read")
    async with request.app[keys.SESSIONS]() as s:
        row = await store.call_by_linkedid(s, request.match_info["linkedid"])
    if row is None:
        raise web.HTTPNotFound()
    return web.json_response(call_json(row))


async def live_list(request: web.Request) -> web.Response:
    need(request, "read")
    calls = [{**c, "started_at": c["started_at"].isoformat()} for c in base._live_calls(request)]
    return web.json_response({"items": calls, "caps": base.cap_use(request)})


async def live_hangup(request: web.Request) -> web.Response:
    need(request, "hangup")
    linkedid = request.match_info["linkedid"]
    try:
        message = await base.hang_up(request.app, linkedid)
    except ValidationError as exc:
        return error(404 if exc.field == "linkedid" else 503, "not_found" if exc.field == "linkedid"
                     else "unavailable", str(exc), exc.field)
    await _write(request, "call.hangup", linkedid, {}, base._noop)
    return web.json_response({"result": message})


def _zone_arg(request: web.Request) -> str:
    """`tz` if given (any case), else the token owner's zone (their own, else the account's)."""
    raw = request.query.get("tz")
    return zones.check(raw, "tz") if raw is not None else request["zone"]


async def summary(request: web.Request) -> web.Response:
    """Today's totals (or `day`'s) in the time zone `tz` (default: the user's), with calls per local hour."""
    need(request, "read")
    from datetime import date

    zone = _zone_arg(request)
    raw = request.query.get("day", "")
    try:
        day = date.fromisoformat(raw) if raw else zones.today(zone)
    except ValueError:
        raise ValidationError("day", "use YYYY-MM-DD") from None
    async with request.app[keys.SESSIONS]() as s:
        out = await store.day_summary(s, day, zone)
    out["start"], out["end"] = out["start"].isoformat(), out["end"].isoformat()
    return web.json_response({"day": day.isoformat(), **out, "live_calls": len(base._live_calls(request))})


async def buyer_rules_get(request: web.Request) -> web.Response:
    need(request, "read")
    ident = _ident(request)
    async with request.app[keys.SESSIONS]() as s:
        rules = await repo_routing.get_buyer_rules(s, ident)
    return web.json_response(rules)


async def buyer_rules_put(request: web.Request) -> web.Response:
    """Replace a buyer's rules (schedule, caps, budgets, geography...) with the object sent."""
    need(request, "write")
    ident = _ident(request)
    data = _rules_body(await _body(request))
    rules = await _write(request, "buyer.rules", f"buyer {ident}", data,
                         lambda s: repo_routing.set_buyer_rules(s, ident, data, replace=True))
    return web.json_response(rules)


RULE_TYPES = {"timezone": (str,), "hours": (str,), "closed_dates": (list, str), "states_allowed": (list, str),
              "states_denied": (list, str), "area_codes_allowed": (list, str), "area_codes_denied": (list, str),
              "budget_daily": (str, int), "budget_monthly": (str, int), "paused": (bool,)}


def _rules_body(data: dict) -> dict:
    """Strict JSON types for the rules the document describes (text, lists of text, whole numbers);
    values are then checked by the routing rules module, as the CLI's are."""
    for key, value in data.items():
        if value is None:
            continue
        kinds = RULE_TYPES.get(key, (int, str) if key in ("cap_hourly", "cap_daily", "cap_monthly", "cap_total",
                                                          "duplicate_days", "min_gap_seconds", "weight",
                                                          "priority") else None)
        if kinds is None:
            continue  # a rule this API does not know yet: the rules module decides
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds) or \
                (isinstance(value, list) and not all(isinstance(x, str) for x in value)):
            words = {str: "text", int: "a whole number", list: "a list of text", bool: "true or false"}
            raise ValidationError(key, f"must be {' or '.join(words[k] for k in kinds)} (got {value!r})")
    return zones.canonical_rules(data)


async def buyer_rules_patch(request: web.Request) -> web.Response:
    """Change only the rules sent (null or "" removes one); the others stay as they are."""
    need(request, "write")
    ident = _ident(request)
    data = _rules_body(await _body(request))
    rules = await _write(request, "buyer.rules", f"buyer {ident}", data,
                         lambda s: repo_routing.set_buyer_rules(s, ident, data))
    return web.json_response(rules)


async def link_rules_get(request: web.Request) -> web.Response:
    need(request, "read")
    ident, buyer_id = _ident(request), _ident(request, "buyer_id")
    async with request.app[keys.SESSIONS]() as s:
        await _link_exists(s, ident, buyer_id)
        rules = await repo_routing.get_buyer_rules(s, buyer_id, ident)
    return web.json_response(rules)


async def _link_exists(s, campaign_id: int, buyer_id: int) -> None:
    await repo.get_campaign(s, campaign_id)
    await repo.get_buyer(s, buyer_id)
    if buyer_id not in {b.id for _, b in await store.campaign_buyers(s, campaign_id)}:
        raise ValidationError("buyer", f"no buyer {buyer_id} on campaign {campaign_id}")


def link_rules_write(replace: bool):
    async def handler(request: web.Request) -> web.Response:
        """The rules of a buyer on one campaign only (caps, budgets, weight, hours...)."""
        need(request, "write")
        ident, buyer_id = _ident(request), _ident(request, "buyer_id")
        data = _rules_body(await _body(request))

        async def fn(s):
            await _link_exists(s, ident, buyer_id)
            return await repo_routing.set_buyer_rules(s, buyer_id, data, ident, replace=replace)

        rules = await _write(request, "campaign.link", f"campaign {ident} buyer {buyer_id}", data, fn)
        return web.json_response(rules)

    return handler


def _rtb_json(row) -> dict:
    if row is None:
        return {"ping_url": "", "post_url": "", "timeout_ms": 300, "floor": "0.00", "share_caller": False}
    return {"ping_url": row.ping_url, "post_url": row.post_url, "timeout_ms": row.timeout_ms,
            "floor": format_cents(row.floor_cents), "share_caller": row.share_caller}


async def buyer_rtb_get(request: web.Request) -> web.Response:
    need(request, "read")
    ident = _ident(request)
    async with request.app[keys.SESSIONS]() as s:
        await repo.get_buyer(s, ident)
        row = await s.get(models_routing.BuyerRtb, ident)
    return web.json_response(_rtb_json(row))


async def buyer_rtb_put(request: web.Request) -> web.Response:
    """Set how a buyer is reached by real-time bidding; an empty ping_url turns bidding off."""
    need(request, "write")
    ident = _ident(request)
    data = _known(await _body(request), ("ping_url", "post_url", "timeout_ms", "floor", "share_caller"))
    for key, kind in (("ping_url", str), ("post_url", str), ("floor", str), ("share_caller", bool)):
        if key in data and not isinstance(data[key], kind):
            raise ValidationError(key, f"must be {'true or false' if kind is bool else 'text'}")
    if "timeout_ms" in data and (not isinstance(data["timeout_ms"], int) or isinstance(data["timeout_ms"], bool)):
        raise ValidationError("timeout_ms", "must be a whole number of milliseconds")

    async def fn(s):
        if data.get("ping_url"):
            await repo_routing.set_buyer_rtb(s, ident, data["ping_url"], post_url=data.get("post_url", ""),
                                             timeout_ms=data.get("timeout_ms", 300), floor=data.get("floor", "0"),
                                             share_caller=data.get("share_caller", False))
        else:
            await repo_routing.remove_buyer_rtb(s, ident)
        return await s.get(models_routing.BuyerRtb, ident)

    return web.json_response(_rtb_json(await _write(request, "buyer.rtb", f"buyer {ident}", data, fn)))


async def campaign_routing_get(request: web.Request) -> web.Response:
    need(request, "read")
    ident = _ident(request)
    async with request.app[keys.SESSIONS]() as s:
        return web.json_response(await repo_routing.get_campaign_routing(s, ident))


async def campaign_routing_patch(request: web.Request) -> web.Response:
    """ZIP prompt, repeat-caller routing, buyer whisper, RTB budget: only the fields sent change."""
    need(request, "write")
    ident = _ident(request)
    data = _known(await _body(request), ("zip_prompt", "repeat_caller", "whisper", "rtb_budget_ms"))
    for key in ("zip_prompt", "repeat_caller"):
        if key in data and not isinstance(data[key], bool):
            raise ValidationError(key, "must be true or false")
    if "whisper" in data and not isinstance(data["whisper"], str):
        raise ValidationError("whisper", "must be text")
    if "rtb_budget_ms" in data and (not isinstance(data["rtb_budget_ms"], int) or isinstance(data["rtb_budget_ms"], bool)):
        raise ValidationError("rtb_budget_ms", "must be a whole number of milliseconds")

    async def fn(s):
        await repo_routing.set_campaign_routing(s, ident, **data)
        return await repo_routing.get_campaign_routing(s, ident)

    return web.json_response(await _write(request, "campaign.routing", f"campaign {ident}", data, fn))


def _line_json(x) -> dict:
    return {"id": x.id, "name": x.name, "calls": x.calls, "connected": x.connected, "billable": x.billable,
            "paid": x.paid, "billable_rate": x.billable_rate, "receivable_cents": x.receivable_cents,
            "payable_cents": x.payable_cents, "margin_cents": x.margin_cents}


async def report(request: web.Request) -> web.Response:
    """The billing report of a period: per campaign, buyer (receivable), publisher (payable), total."""
    need(request, "reports")
    q = request.query
    zone = _zone_arg(request)
    today = zones.today(zone)
    p = reports.period(q.get("from", today.replace(day=1).isoformat())[:10], q.get("to", today.isoformat())[:10],
                       zone)
    async with request.app[keys.SESSIONS]() as s:
        rep = await reports.period_report(s, p)
    return web.json_response({"period": rep.period.label, "start": rep.period.start.isoformat(),
                              "end": rep.period.end.isoformat(), "currency": rep.currency,
                              "total": _line_json(rep.total),
                              "by_campaign": [_line_json(x) for x in rep.by_campaign],
                              "by_buyer": [_line_json(x) for x in rep.by_buyer],
                              "by_publisher": [_line_json(x) for x in rep.by_publisher]})


async def openapi_view(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


def add_routes(app: web.Application) -> None:
    r = app.router
    p = "/api/v1"
    r.add_get(f"{p}/openapi.json", openapi_view)
    for kind, plural in base.PLURAL.items():
        list_, get, create, update = object_handlers(kind)
        r.add_get(f"{p}/{plural}", list_)
        r.add_post(f"{p}/{plural}", create)
        r.add_get(f"{p}/{plural}/{{id}}", get)
        r.add_patch(f"{p}/{plural}/{{id}}", update)
    r.add_get(f"{p}/buyers/{{id}}/rules", buyer_rules_get)
    r.add_put(f"{p}/buyers/{{id}}/rules", buyer_rules_put)
    r.add_patch(f"{p}/buyers/{{id}}/rules", buyer_rules_patch)
    r.add_get(f"{p}/campaigns/{{id}}/buyers/{{buyer_id}}/rules", link_rules_get)
    r.add_put(f"{p}/campaigns/{{id}}/buyers/{{buyer_id}}/rules", link_rules_write(True))
    r.add_patch(f"{p}/campaigns/{{id}}/buyers/{{buyer_id}}/rules", link_rules_write(False))
    r.add_get(f"{p}/buyers/{{id}}/rtb", buyer_rtb_get)
    r.add_put(f"{p}/buyers/{{id}}/rtb", buyer_rtb_put)
    r.add_get(f"{p}/campaigns/{{id}}/routing", campaign_routing_get)
    r.add_patch(f"{p}/campaigns/{{id}}/routing", campaign_routing_patch)
    r.add_get(f"{p}/reports", report)
    r.add_get(f"{p}/campaigns/{{id}}/buyers", campaign_buyers)
    r.add_put(f"{p}/campaigns/{{id}}/buyers/{{buyer_id}}", campaign_buyer_put)
    r.add_delete(f"{p}/campaigns/{{id}}/buyers/{{buyer_id}}", campaign_buyer_delete)
    r.add_get(f"{p}/numbers", numbers_list)
    r.add_post(f"{p}/numbers", number_create)
    r.add_post(f"{p}/numbers/import", numbers_import_)
    r.add_get(f"{p}/numbers/{{number}}", number_get)
    r.add_patch(f"{p}/numbers/{{number}}", number_update)
    r.add_delete(f"{p}/numbers/{{number}}", number_delete)
    r.add_get(f"{p}/publisher-codes", publisher_codes_list)
    r.add_put(f"{p}/publisher-codes/{{code}}", publisher_code_put)
    r.add_delete(f"{p}/publisher-codes/{{code}}", publisher_code_delete)
    r.add_get(f"{p}/calls", calls_list)
    r.add_get(f"{p}/calls/{{linkedid}}", call_get)
    r.add_get(f"{p}/live-calls", live_list)
    r.add_post(f"{p}/live-calls/{{linkedid}}/hangup", live_hangup)
    r.add_get(f"{p}/summary", summary)
