"""JSON request and response helpers the operator API (api.py) and the partner API (portal_api.py) share:
the error body, a JSON object body with only known fields, ids and integer query parameters, and a
write with its audit entry (source "api")."""

from __future__ import annotations

import json

from aiohttp import web

from ppcswitch.storage.validate import ValidationError, int_range
from ppcswitch.web.base import audited_write


def error(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"status": status, "code": code, "message": message, "field": field}},
                             status=status)


async def _body(request: web.Request) -> dict:
    try:
        data = json.loads(await request.text() or "null")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("body", "must be a JSON object")
    return data


def _known(data: dict, allowed: tuple[str, ...]) -> dict:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise ValidationError(extra[0], f"is not a known field (known: {', '.join(allowed)})")
    return data


def _ident(request: web.Request, key: str = "id") -> int:
    try:
        return int_range(request.match_info[key], key, 1, 2 ** 31 - 1)
    except ValidationError:
        raise web.HTTPNotFound() from None


def _query_int(request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(key)
    return default if raw is None else int_range(raw, key, lo, hi)


async def _write(request: web.Request, action: str, target: str, detail: dict, fn):
    """An API operation's write and its audit entry, in one transaction."""
    return await audited_write(request, "api", action, target, detail, fn)
