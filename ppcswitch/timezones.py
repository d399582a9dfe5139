"""IANA time-zone names as people type them: case-insensitive, normalised to the canonical name.

`canonical("america/new_york")` -> "America/New_York"; an unknown name gives None, and callers refuse
it with their own clear message. The list of names (`names()`) feeds the panel's zone pickers.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=1)
def _index() -> dict[str, str]:
    out = {n.lower(): n for n in zoneinfo.available_timezones()}
    out.setdefault("utc", "UTC")
    return out


@lru_cache(maxsize=1)
def names() -> tuple[str, ...]:
    """Every zone name this system knows, sorted, without the legacy aliases (Etc/, US/, ...)
    that only make a picker longer; the aliases are still accepted when typed."""
    legacy = ("Etc/", "SystemV/", "US/", "Canada/", "Brazil/", "Chile/", "Mexico/")
    return tuple(sorted(n for n in set(_index().values())
                        if "/" in n and not n.startswith(legacy) and not n.startswith("posix") and
                        not n.startswith("right")) + ["UTC"])


def canonical(name: str | None) -> str | None:
    """The IANA name spelled as the tz database spells it, or None if no zone has that name."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    if not key or len(key) > 64:
        return None
    found = _index().get(key)
    if found is None:
        return None
    try:
        ZoneInfo(found)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # pragma: no cover - listed but unreadable
        return None
    return found


_UTC_ALIASES = {"Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "UCT", "Universal", "Zulu", "Etc/GMT", "GMT"}


def server_zone() -> str:
    """The machine's own zone (/etc/localtime or TZ), "UTC" when it cannot be told."""
    found = _server_zone()
    return "UTC" if found in _UTC_ALIASES else found


def _server_zone() -> str:
    import os

    tz = os.environ.get("TZ", "").lstrip(":")
    if canonical(tz):
        return canonical(tz)  # type: ignore[return-value]
    try:
        target = os.path.realpath("/etc/localtime")
        marker = "zoneinfo/"
        if marker in target and canonical(target.split(marker, 1)[1]):
            return canonical(target.split(marker, 1)[1])  # type: ignore[return-value]
        with open("/etc/timezone", encoding="utf-8") as f:
            return canonical(f.read().strip()) or "UTC"
    except OSError:
        return "UTC"
