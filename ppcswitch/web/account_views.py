"""Account pages of the panel: the account's settings (time zone), each user's own account (time zone,
password, API tokens), role changes, and the confirmation step of destructive actions.

A destructive button (Release, Pause, Hang up, Revoke, Disable) is a link to a GET page that says what
will happen and holds the real POST form: it works without JavaScript, and the POST routes themselves
are unchanged (the API and scripts post to them directly).
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from sqlalchemy import delete, func, select

from ppcswitch import keys
from ppcswitch import timezones
from ppcswitch.storage import models_web as w
from ppcswitch.storage.validate import ValidationError
from ppcswitch.web import base
from ppcswitch.web import security, store, zones
from ppcswitch.web.base import Forbidden, _error_page, _int_arg, _write, need, render

NEW_TOKEN_COOKIE = "ppc_new_token"  # the secret of a token just made, shown once after the redirect


# --- the account's settings (admin) -------------------------------------------------------

async def settings_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    need(request, "users")
    zone, chosen = await zones.account_zone(request.app)
    return base.render(request, "settings.html", status=status, errors=errors or {},
                        # First run: the server's own zone is offered, one click to accept it.
                        values=values or {"timezone": zone if chosen else timezones.server_zone()},
                        account_zone=zone, chosen=chosen,
                        default_zone=zones.default_zone(request.app), server_zone=timezones.server_zone(),
                        zone_names=timezones.names())


async def settings_save(request: web.Request) -> web.Response:
    need(request, "users")
    form = await request.post()
    values = {"timezone": str(form.get("timezone", "")).strip()}
    user = request["user"].username
    try:
        await base._write(request, "settings.timezone", "account", values,
                           lambda s: zones.set_account_zone(s, values["timezone"], user))
    except ValidationError as exc:
        return await settings_page(request, {exc.field: exc.message}, values, status=400)
    zones.forget(request.app)
    raise web.HTTPFound("/settings?saved=zone")


# --- a user's own account -----------------------------------------------------------------

async def own_tokens(session, user_id: int) -> list[w.ApiToken]:
    return list(await session.scalars(select(w.ApiToken).where(w.ApiToken.user_id == user_id)
                                      .order_by(w.ApiToken.id)))


async def account_page(request: web.Request, errors=None, values=None, status=200) -> web.Response:
    need(request, "read")
    user = request["user"]
    async with request.app[keys.SESSIONS]() as s:
        tokens = await own_tokens(s, user.id)
    new_token = request.cookies.get(NEW_TOKEN_COOKIE, "")
    new_token = new_token if new_token.startswith(security.TOKEN_PREFIX) else ""
    resp = base.render(request, "account.html", status=status, errors=errors or {},
                        values=values or {"timezone": user.timezone or ""}, tokens=tokens, token=new_token,
                        account_zone=(await zones.account_zone(request.app))[0], zone_names=timezones.names())
    if new_token:
        resp.del_cookie(NEW_TOKEN_COOKIE, path="/")
    return resp


async def account_zone_save(request: web.Request) -> web.Response:
    need(request, "read")
    form = await request.post()
    values = {"timezone": str(form.get("timezone", "")).strip()}
    user_id = request["user"].id
    try:
        await base._write(request, "user.timezone", request["user"].username, values,
                           lambda s: zones.set_user_zone(s, user_id, values["timezone"]))
    except ValidationError as exc:
        return await account_page(request, {exc.field: exc.message}, values, status=400)
    raise web.HTTPFound("/account?saved=zone")


async def change_own_password(session, user_id: int, current: str, new: str, keep_sid: str) -> w.User:
    """Writer job: a user's new password, given the current one; every other login of theirs ends."""
    row = await session.get(w.User, user_id)
    if row is None or not security.verify_password(current, row.password_hash):
        raise ValidationError("current", "is not your current password")
    row.password_hash = security.hash_password(security.check_password(new))
    await session.execute(delete(w.WebSession).where(w.WebSession.user_id == row.id,
                                                     w.WebSession.id_hash != security.digest(keep_sid)))
    await session.flush()
    return row


async def account_password_save(request: web.Request) -> web.Response:
    need(request, "read")
    form = await request.post()
    current, new, again = (str(form.get(k, "")) for k in ("current", "password", "password_again"))
    try:
        if new != again:
            raise ValidationError("password_again", "does not match the new password")
        user_id, sid = request["user"].id, request["sid"]
        await base._write(request, "user.password", request["user"].username, {},
                           lambda s: change_own_password(s, user_id, current, new, sid))
    except ValidationError as exc:
        return await account_page(request, {exc.field: exc.message}, status=400)
    raise web.HTTPFound("/account?saved=password")


def remember_new_token(resp: web.StreamResponse, request: web.Request, secret: str) -> None:
    resp.set_cookie(NEW_TOKEN_COOKIE, secret, httponly=True, samesite="Strict", path="/", max_age=120,
                    secure=request.app[keys.SETTINGS].http.secure_cookies)


# --- users: roles, password resets (admin) --------------------------------------------------

async def set_role(session, user_id: int, role: str, acting_user_id: int) -> w.User:
    """Writer job: a user's role; the last active admin stays an admin (nobody could manage users)."""
    role = security.check_role(role)
    row = await session.get(w.User, user_id)
    if row is None:
        raise ValidationError("user", f"no user with id {user_id}")
    if row.role == "admin" and role != "admin":
        admins = await session.scalar(select(func.count()).select_from(w.User)
                                      .where(w.User.role == "admin", w.User.disabled.is_(False)))
        if int(admins or 0) <= 1:
            raise ValidationError("role", f"{row.username} is the only admin: make another user admin first")
        if row.id == acting_user_id:
            raise ValidationError("role", "you cannot take away your own admin role (ask another admin)")
    row.role = role
    await session.flush()
    return row


async def user_role(request: web.Request) -> web.Response:
    need(request, "users")
    role = str((await request.post()).get("role", ""))
    try:
        user_id = base._int_arg(request.match_info["id"], "id")
        acting = request["user"].id
        row = await base._write(request, "user.role", f"user {user_id}", {"role": role},
                                 lambda s: set_role(s, user_id, role, acting))
    except ValidationError as exc:
        return await users_page(request, {"user": exc.message}, status=400)
    raise web.HTTPFound(f"/users?saved=role#user-{row.id}")


async def user_password_reset(request: web.Request) -> web.Response:
    """An admin sets another user's password (as `ppcswitch user password` does); their logins end."""
    need(request, "users")
    password = str((await request.post()).get("password", ""))
    try:
        user_id = base._int_arg(request.match_info["id"], "id")

        async def job(s):
            row = await s.get(w.User, user_id)
            if row is None:
                raise ValidationError("user", f"no user with id {user_id}")
            return await store.set_password(s, row.username, password)

        await base._write(request, "user.password", f"user {user_id}", {}, job)
    except ValidationError as exc:
        return await users_page(request, {"user": f"password: {exc.message}"}, status=400)
    raise web.HTTPFound("/users?saved=password")


# --- confirmation pages of destructive actions --------------------------------------------

async def _confirm(request: web.Request, *, title: str, question: str, consequence: str, action: str,
                   button: str, back: str, fields: dict | None = None) -> web.Response:
    return base.render(request, "confirm.html", title=title, question=question, consequence=consequence,
                        action=action, button=button, back=back, fields=fields or {})


async def confirm_release(request: web.Request) -> web.Response:
    need(request, "write")
    number = request.match_info["number"]
    try:
        row = await base._read(request, store.get_number, number)
    except ValidationError:
        raise web.HTTPNotFound() from None
    return await _confirm(request, title=f"Release {row.number}", question=f"Release {row.number}?",
                          consequence="Calls to this number will no longer be routed. Its call history is kept; "
                                      "you can add the number again later.",
                          action=f"/numbers/{quote(row.number)}/release", button="Release the number",
                          back="/numbers")


async def confirm_pause(request: web.Request) -> web.Response:
    need(request, "write")
    kind = base._kind(request)
    row = await base._object(request, kind)
    plural = base.PLURAL[kind]
    if row.paused:
        return await _confirm(request, title=f"Resume {row.name}", question=f"Resume {kind} {row.name}?",
                              consequence="It takes calls again at once.", action=f"/{plural}/{row.id}/pause",
                              button="Resume", back=f"/{plural}", fields={"paused": "0"})
    what = {"buyer": "No new call will be sent to this buyer", "publisher": "Calls from this publisher's numbers "
            "will be refused", "campaign": "Calls to this campaign's numbers will be refused"}[kind]
    return await _confirm(request, title=f"Pause {row.name}", question=f"Pause {kind} {row.name}?",
                          consequence=f"{what} until you resume it. Calls in progress go on.",
                          action=f"/{plural}/{row.id}/pause", button=f"Pause {row.name}", back=f"/{plural}",
                          fields={"paused": "1"})


async def confirm_hangup(request: web.Request) -> web.Response:
    need(request, "hangup")
    linkedid = request.match_info["linkedid"]
    live = {c["linkedid"]: c for c in base._live_calls(request)}
    call = live.get(linkedid)
    who = f" from {call['caller']} to {call['dialled']}" if call else ""
    return await _confirm(request, title="Hang up a call", question=f"Hang up the call{who}?",
                          consequence="Both the caller and the buyer are disconnected now. "
                                      + ("" if call else "(This call is no longer listed: it may have ended.)"),
                          action=f"/live/{quote(linkedid, safe='')}/hangup", button="Hang up", back="/live")


async def confirm_revoke(request: web.Request) -> web.Response:
    need(request, "read")
    token_id = _token_id(request)
    async with request.app[keys.SESSIONS]() as s:
        row = await s.get(w.ApiToken, token_id)
    if row is None or (row.user_id != request["user"].id and not security.role_allows(request["role"], "users")):
        raise web.HTTPNotFound()
    back = "/users" if security.role_allows(request["role"], "users") else "/account"
    return await _confirm(request, title=f"Revoke token {row.name}", question=f"Revoke the API token {row.name} "
                          f"({row.prefix}…)?", consequence="Programs using it get 401 from then on. This cannot be "
                          "undone: make a new token if it is needed again.", action=f"/tokens/{row.id}/revoke",
                          button="Revoke the token", back=back)


async def confirm_disable(request: web.Request) -> web.Response:
    need(request, "users")
    user_id = _token_id(request)
    async with request.app[keys.SESSIONS]() as s:
        row = await s.get(w.User, user_id)
    if row is None:
        raise web.HTTPNotFound()
    if row.disabled:
        return await _confirm(request, title=f"Enable {row.username}", question=f"Enable {row.username}?",
                              consequence="They can log in again and their tokens work again.",
                              action=f"/users/{row.id}/disable", button="Enable", back="/users",
                              fields={"disabled": "0"})
    return await _confirm(request, title=f"Disable {row.username}", question=f"Disable {row.username}?",
                          consequence="They are logged out everywhere and their API tokens stop working, until an "
                                      "admin enables them again.", action=f"/users/{row.id}/disable",
                          button=f"Disable {row.username}", back="/users", fields={"disabled": "1"})


def _token_id(request: web.Request) -> int:
    try:
        return base._int_arg(request.match_info["id"], "id")
    except ValidationError:
        raise web.HTTPNotFound() from None


# --- styled error pages -------------------------------------------------------------------

ERROR_TEXT = {404: "There is no page at this address.",
              405: "This address does not take that kind of request (a form sent twice, or a bookmark of a "
                   "form's result?). Go back to the page the form is on.",
              500: "Something went wrong on the server; nothing was saved. The error has been logged."}


@web.middleware
async def error_pages(request: web.Request, handler):
    """HTML 404/405/500 pages for the panel (the API keeps its JSON errors)."""
    if request.path.startswith(("/api/", "/dni/", "/metrics", "/healthz", "/static/")):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            resp = base._error_page(request, exc.status, ERROR_TEXT[exc.status])
            if exc.status == 405:
                resp.headers["Allow"] = exc.headers.get("Allow", "")
            return resp
        raise
    except Forbidden:
        raise  # the login check turns it into its 403 page
    except Exception:
        import logging

        logging.getLogger(__name__).exception("panel error on %s %s", request.method, request.path)
        return base._error_page(request, 500, ERROR_TEXT[500])


# --- users and tokens (admins) ---------------------------------------------------------

async def users_page(request: web.Request, errors=None, values=None, new_token="", status=200) -> web.Response:
    need(request, "users")
    async with request.app[keys.SESSIONS]() as s:
        users, tokens = await store.list_users(s), await store.list_tokens(s)
    cookie = request.cookies.get(NEW_TOKEN_COOKIE, "")
    new_token = new_token or (cookie if cookie.startswith(security.TOKEN_PREFIX) else "")
    resp = render(request, "users.html", status=status, users=users, tokens=tokens, errors=errors or {},
                  values=values or {}, new_token=new_token, roles=security.PERMISSIONS)
    if cookie:
        resp.del_cookie(NEW_TOKEN_COOKIE, path="/")
    return resp


async def user_add(request: web.Request) -> web.Response:
    need(request, "users")
    form = await request.post()
    values = {k: str(form.get(k, "")) for k in ("username", "role")}
    password = str(form.get("password", ""))
    try:
        await _write(request, "user.create", values["username"], values,
                     lambda s: store.create_user(s, values["username"], password, values["role"]))
    except ValidationError as exc:
        return await users_page(request, {exc.field: exc.message}, values, status=400)
    raise web.HTTPFound("/users?saved=1")


async def user_disable(request: web.Request) -> web.Response:
    need(request, "users")
    disabled = (await request.post()).get("disabled") == "1"
    try:
        user_id = _int_arg(request.match_info["id"], "id")
        if disabled and user_id == request["user"].id:
            raise ValidationError("user", "you cannot disable yourself")
        await _write(request, f"user.{'disable' if disabled else 'enable'}", f"user {user_id}", {},
                     lambda s: store.set_user_disabled(s, user_id, disabled))
    except ValidationError as exc:
        return await users_page(request, {"user": exc.message}, status=400)
    raise web.HTTPFound("/users?saved=" + ("disabled" if disabled else "enabled"))


async def token_add(request: web.Request) -> web.Response:
    need(request, "read")  # everyone may make tokens for themselves, never above their own role
    form = await request.post()
    name, role = str(form.get("name", "")), str(form.get("role", "")) or request["role"]
    user = request["user"]
    try:
        _row, secret = await _write(request, "token.create", name, {"role": role},
                                    lambda s: store.create_token(s, user, name, role))
    except ValidationError as exc:
        if request["role"] != "admin":
            return _error_page(request, 400, str(exc))
        return await users_page(request, {"token_" + exc.field: exc.message}, status=400)
    # Post-redirect-get: reloading the page that shows the token does not make another one.
    resp = web.HTTPFound("/users#new-token" if request["role"] == "admin" else "/account#new-token")
    remember_new_token(resp, request, secret)
    raise resp


async def token_revoke(request: web.Request) -> web.Response:
    """An admin revokes any token; everyone else their own."""
    need(request, "read")
    admin = security.role_allows(request["role"], "users")
    user_id = request["user"].id

    async def job(s):
        row = await s.get(store.w.ApiToken, token_id)
        if row is None or (not admin and row.user_id != user_id):
            raise ValidationError("token", f"no token with id {token_id}")
        return await store.revoke_token(s, token_id)

    try:
        token_id = _int_arg(request.match_info["id"], "id")
        await _write(request, "token.revoke", f"token {token_id}", {}, job)
    except ValidationError as exc:
        return _error_page(request, 404, str(exc))
    raise web.HTTPFound("/users?saved=revoked" if admin else "/account?saved=revoked")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/account", account_page)
    r.add_get("/users", users_page)
    r.add_post("/users", user_add)
    r.add_post("/users/{id}/disable", user_disable)
    r.add_post("/tokens", token_add)
    r.add_post("/tokens/{id}/revoke", token_revoke)
    r.add_get("/settings", settings_page)
    r.add_post("/settings", settings_save)
    r.add_post("/account/timezone", account_zone_save)
    r.add_post("/account/password", account_password_save)
    r.add_post("/users/{id}/role", user_role)
    r.add_post("/users/{id}/password", user_password_reset)
    r.add_get("/numbers/{number}/release", confirm_release)
    for plural in base.PLURAL.values():
        r.add_get(f"/{plural}/{{id}}/pause", confirm_pause)
    r.add_get("/live/{linkedid}/hangup", confirm_hangup)
    r.add_get("/tokens/{id}/revoke", confirm_revoke)
    r.add_get("/users/{id}/disable", confirm_disable)

