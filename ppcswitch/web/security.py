"""Passwords, secrets, roles and login throttling: plain synchronous functions.

Passwords: scrypt (stdlib), n=2**14 r=8 p=1, 16-byte salt, stored as
`scrypt$n$r$p$salt$hash` so parameters can be raised later without breaking
existing hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque

from ppcswitch.storage.models_web import PARTNER_ROLES, ROLES
from ppcswitch.storage.validate import ValidationError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
PASSWORD_MIN = 10
TOKEN_PREFIX = "ppc_"

# What each role may do. admin: everything; finance: reports and adjustments
# (and reading); noc: read-only.
PERMISSIONS = {
    "admin": {"read", "write", "reports", "hangup", "users"},
    "finance": {"read", "reports"},
    "noc": {"read"},
    # Partners reach only the portal's own routes (ppcswitch.web.portal.PARTNER_ROUTES), scoped to their party.
    "publisher": {"portal"},
    "buyer": {"portal"},
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# Verifying against this keeps a login for an unknown user as slow as for a known one.
DUMMY_HASH = hash_password("not a real password, only for timing")


def check_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise ValidationError("password", f"must be at least {PASSWORD_MIN} characters")
    if len(password) > 1024:
        raise ValidationError("password", "must be at most 1024 characters")
    return password


def check_username(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("username", "must not be empty")
    value = value.strip()
    if len(value) > 64 or not all(ch.isalnum() or ch in "._-@" for ch in value):
        raise ValidationError("username", "use at most 64 letters, digits, '.', '_', '-', '@'")
    return value


def check_role(value: object) -> str:
    if value not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
    return str(value)


def role_allows(role: str, permission: str) -> bool:
    return permission in PERMISSIONS.get(role, ())


def role_within(role: str, owner_role: str) -> bool:
    """A token may not carry more than its owner's permissions (a partner's: only its own role)."""
    if role in PARTNER_ROLES or owner_role in PARTNER_ROLES:
        return role == owner_role
    return PERMISSIONS.get(role, set()) <= PERMISSIONS.get(owner_role, set())


def is_partner(role: str | None) -> bool:
    return role in PARTNER_ROLES


def new_secret(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """Stored form of a session id or API token (high-entropy, so no salt or stretching needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class LoginThrottle:
    """At most `limit` failed logins per username, and `address_limit` per client address,
    within `window` seconds.

    In memory: a restart forgets, which is acceptable for slowing password guessing;
    the (higher) limit per address stops one client spraying many usernames without
    locking out a whole office behind one NAT address after a few typos.
    """

    def __init__(self, limit: int = 5, window: float = 300.0, address_limit: int = 20, clock=time.monotonic):
        self.limit, self.window, self.address_limit, self.clock = limit, window, address_limit, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        cutoff = self.clock() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until another attempt is allowed (0: allowed now)."""
        wait = 0.0
        for key, limit in (("u:" + username.lower(), self.limit), ("a:" + address, self.address_limit)):
            q = self._recent(key)
            if len(q) >= limit:
                wait = max(wait, q[0] + self.window - self.clock())
        return wait

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        for key in ("u:" + username.lower(), "a:" + address):
            self._recent(key).append(now)
        if len(self._failures) > 100_000:  # bounded memory under a spraying attack
            self._failures.clear()

    def succeeded(self, username: str) -> None:
        self._failures.pop("u:" + username.lower(), None)
