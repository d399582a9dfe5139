"""`ppcswitch user add|password|token|list`: panel users and API tokens from the shell.

The first admin must come from here (or `ppcswitch dev`, which calls
ensure_first_admin): the panel has no sign-up page.
"""

from __future__ import annotations

import secrets
import sys

from ppcswitch.cli.common import command, group
from ppcswitch.web import security, store


def _password(args) -> tuple[str, bool]:
    """(password, generated): from stdin with --password-stdin, else a new random one."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(15), True


async def _user_add(ctx, args) -> int:
    password, generated = _password(args)

    async def job(s):
        user = await store.create_user(s, args.username, password, args.role)
        store.audit(s, "(shell)", "cli", "user.create", user.username, {"role": user.role})
        return user

    user = await ctx.writer.run(job)
    print(f"user {user.username!r} created (role {user.role})")
    if generated:
        print(f"password: {password}")
    return 0


async def _user_password(ctx, args) -> int:
    password, generated = _password(args)

    async def job(s):
        user = await store.set_password(s, args.username, password)
        store.audit(s, "(shell)", "cli", "user.password", user.username)
        return user

    user = await ctx.writer.run(job)
    print(f"password of {user.username!r} changed; its sessions were ended")
    if generated:
        print(f"password: {password}")
    return 0


async def _user_token(ctx, args) -> int:
    async def job(s):
        user = await store.user_by_name(s, args.username)
        if user is None:
            raise security.ValidationError("username", f"no user named {args.username!r}")
        row, secret = await store.create_token(s, user, args.name, args.role)
        store.audit(s, "(shell)", "cli", "token.create", args.name, {"user": user.username, "role": row.role})
        return row, secret

    row, secret = await ctx.writer.run(job)
    print(f"API token {row.name!r} ({row.role}); shown only now:\n{secret}")
    return 0


async def _user_list(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        users = await store.list_users(s)
    for u in users:
        print(f"{u.username:<24} {u.role:<8} {'disabled' if u.disabled else 'active'}")
    if not users:
        print("no users; create the first admin with: ppcswitch user add NAME --role admin")
    return 0


async def ensure_first_admin(session, username: str = "admin") -> str | None:
    """Create `username` as admin when there are no users yet; returns its new password, or None."""
    if await store.count_users(session):
        return None
    password = secrets.token_urlsafe(15)
    await store.create_user(session, username, password, "admin")
    store.audit(session, "(shell)", "cli", "user.create", username, {"role": "admin", "first": True})
    return password


def add_cli(sub) -> None:
    users = group(sub, "user", "panel users and API tokens")

    p = command(users, "add", _user_add, "create a user (prints a generated password unless --password-stdin)")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=security.PERMISSIONS, help="admin, finance or noc")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p = command(users, "password", _user_password, "set a new password (ends the user's sessions)")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    p = command(users, "token", _user_token, "create an API token for a user (printed once)")
    p.add_argument("username")
    p.add_argument("--name", required=True, help="what the token is for, e.g. crm-sync")
    p.add_argument("--role", default=None, choices=security.PERMISSIONS, help="scope (default: the user's role)")
    command(users, "list", _user_list, "list users")
