"""Admin panel (server-rendered HTML) and REST API (/api/v1), served by the controller.

`setup(app)` mounts both on the controller's aiohttp application. Every
request passes the auth middleware: panel pages need a login session (cookie),
the API a bearer token; state-changing panel requests need the session's CSRF
token. Security headers go on every response.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from aiohttp import web

from ppcswitch import keys
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import security
from ppcswitch.web.base import FILTERS, MAX_REQUEST_BYTES, PUBLIC_PATHS, SECURITY_HEADERS, Forbidden, need  # noqa: F401

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    if request.path.startswith("/api/") or request.get("user") is not None:
        response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def auth_middleware(request: web.Request, handler):
    from ppcswitch.web import api, panel

    path = request.path
    if path in PUBLIC_PATHS or path.startswith(("/static/", "/dni/", "/invite/")):  # /dni/: ppcswitch.attribution
        # /invite/: a partner's one-time link (ppcswitch.web.portal), the token is the credential
        return await handler(request)
    guard = api.guard if path.startswith("/api/") else panel.guard
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return await guard(request, handler)
    try:
        response = await guard(request, handler)
    except web.HTTPException as exc:  # a redirect after a saved form is raised
        if exc.status < 400:
            await _apply_edits(request.app)
        raise
    if response.status < 400:
        await _apply_edits(request.app)
    return response


async def _apply_edits(app: web.Application) -> None:
    """An edit is live before the operator sees "saved": the next call routes on it."""
    reload_routing = app.get(keys.RELOAD_ROUTING)
    if reload_routing is not None:
        await reload_routing()


def setup(app: web.Application) -> None:
    """Mount the panel, the partner portals and the API on the controller's application."""
    from ppcswitch.web import (account_views, api, attribution_views, billing_views, bulk_views, call_views,
                               fraud_views, intelligence_views, link_views, live_views, network_views, panel,
                               portal, portal_api, report_views)

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             auto_reload=False)
    env.filters.update(FILTERS)
    app[keys.JINJA] = env
    app[keys.LOGIN_THROTTLE] = security.LoginThrottle()
    app[keys.ACCOUNT_ZONE] = {}
    app.middlewares.append(auth_middleware)
    app.middlewares.append(account_views.error_pages)  # inside the login check: error pages keep the menu
    app.on_response_prepare.append(_add_security_headers)
    app.router.add_static("/static/", HERE / "static", append_version=True)
    # Routes match in the order they are added: /numbers/bulk before panel's /numbers/{number}.
    app.router.add_post("/numbers/bulk", bulk_views.bulk_numbers)
    for views in (panel, call_views, account_views, live_views, link_views, report_views, billing_views,
                  network_views,  # operator pages
                  api, attribution_views,  # /api/v1; delivery logs, disputes, sub-ID reports
                  portal, portal_api,  # publisher and buyer portals, invites, disputes; their API
                  fraud_views, intelligence_views):  # quality, recordings; transcripts, QC, phrase rules
        views.add_routes(app)


__all__ = ["MAX_REQUEST_BYTES", "SECURITY_HEADERS", "setup", "need", "Forbidden", "ValidationError"]
