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

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


SESSION_COOKIE = "ppc_session"
LOGIN_CSRF_COOKIE = "ppc_login_csrf"
# Largest request body: a CSV of 100,000 tracking numbers (numbers_import.MAX_BYTES) and form overhead.
MAX_REQUEST_BYTES = 12 * 1024 * 1024
PUBLIC_PATHS = ("/login", "/healthz", "/metrics", "/api/v1/openapi.json", "/favicon.ico")
SECURITY_HEADERS = {
    # No inline script or style anywhere in the panel, so a strict policy costs nothing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def need(request: web.Request, permission: str) -> None:
    """Refuse the request unless the logged-in user's (or token's) role allows `permission`."""
    if not security.role_allows(request["role"], permission):
        raise Forbidden(f"your role ({request['role']}) does not allow this ({permission})")


class Forbidden(Exception):
    pass


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
    """Mount the panel and the API on the controller's application."""
    from ppcswitch.web import api, panel

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             auto_reload=False)
    env.filters.update(panel.FILTERS)
    app[keys.JINJA] = env
    app[keys.LOGIN_THROTTLE] = security.LoginThrottle()
    from ppcswitch.web import zones

    app[keys.ACCOUNT_ZONE] = {}
    app.middlewares.append(auth_middleware)
    from ppcswitch.web import account_views

    app.middlewares.append(account_views.error_pages)  # inside the login check: error pages keep the menu
    app.on_response_prepare.append(_add_security_headers)
    app.router.add_static("/static/", HERE / "static", append_version=True)
    panel.add_routes(app)
    api.add_routes(app)
    from ppcswitch.web import attribution_views  # delivery logs, disputes, pools, sub-ID reports

    attribution_views.add_routes(app)
    from ppcswitch.web import portal  # publisher and buyer portals, invites, disputes

    portal.add_routes(app)
    from ppcswitch.web import fraud_views  # quality view, recordings, call-page fraud section
    from ppcswitch.web import intelligence_views  # transcripts, QC, phrase rules

    fraud_views.add_routes(app)
    intelligence_views.add_routes(app)


__all__ = ["MAX_REQUEST_BYTES", "setup", "need", "Forbidden", "ValidationError"]
