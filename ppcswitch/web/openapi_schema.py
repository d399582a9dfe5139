"""Building blocks of the OpenAPI document: schema and parameter helpers the operator part (openapi.py)
and the partner part (portal_api.paths) are written with."""

from __future__ import annotations


ERROR = {"$ref": "#/components/schemas/Error"}


ID = {"type": "integer", "minimum": 1, "maximum": 2147483647}


TIME = {"type": "string", "format": "date-time"}


NTIME = {"type": "string", "format": "date-time", "nullable": True}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props),
            "additionalProperties": False}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "Invalid input", 401: "No or bad API token", 403: "The token's role does not allow this",
            404: "Not found", 405: "Method not allowed", 409: "Conflict: the name or number is taken already",
            413: "Too large", 422: "Import rejected (row errors)", 503: "Asterisk unavailable"}
    return {str(c): _json(ERROR, text[c]) for c in (400, 401, 403, 404, 413, *codes)}


def _param(name: str, where: str, schema: dict, required: bool = False, description: str = "") -> dict:
    out = {"name": name, "in": where, "required": required or where == "path", "schema": schema}
    if description:
        out["description"] = description
    return out
