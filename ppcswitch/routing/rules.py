"""A buyer's eligibility rules: parsed and validated once, checked on every call.

Rules are stored as a small JSON object per buyer, optionally overridden per
campaign-buyer link (the link's keys win). `parse_rules` turns such an object
into a frozen `Rules`; bad input raises RulesError with the key and why, so the
CLI and the panel can show one clear line. Everything here is pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ppcswitch import timezones
from ppcswitch.routing.geo import STATES

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RulesError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@lru_cache(maxsize=None)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass(frozen=True, slots=True)
class Rules:
    timezone: str = "UTC"  # the buyer's own zone: schedules and cap periods use it
    hours: str = ""  # weekly open hours, e.g. "mon-fri 09:00-17:00; sat 10:00-14:00" ('' = always open)
    # minutes of the day open, per weekday (Monday first); None = always open
    weekly: tuple[tuple[tuple[int, int], ...], ...] | None = None
    closed_dates: frozenset[date] = frozenset()
    states_allowed: frozenset[str] = frozenset()  # empty: every state
    states_denied: frozenset[str] = frozenset()
    area_codes_allowed: frozenset[str] = frozenset()
    area_codes_denied: frozenset[str] = frozenset()
    cap_hourly: int | None = None  # connected calls per local clock hour
    cap_daily: int | None = None  # per local day
    cap_monthly: int | None = None  # per local month
    cap_total: int | None = None  # ever
    budget_daily_cents: int | None = None  # revenue per local day
    budget_monthly_cents: int | None = None
    duplicate_days: int = 0  # a caller delivered within N days is not offered again (0: off)
    # The duplicate window in seconds: duplicate_window ("30m", "12h", "7d") or duplicate_days (0: off).
    duplicate_seconds: int = 0
    concurrency: int | None = None  # live calls at once at this level (buyer level: the buyer's --cap)
    cap_counts: str = "connected"  # what the count caps count: routed | connected | billable calls
    min_gap_seconds: int = 0  # least time between two calls handed to this buyer
    weight: int = 1  # share inside its priority tier
    paused: bool = False  # a link can pause one buyer on one campaign
    priority: int | None = None  # link override of the campaign priority
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)  # the JSON it came from
    # Derived once (checked on every call): any geography rule; any count or budget cap; needs local time.
    geo: bool = field(default=False, init=False, compare=False)
    counted: bool = field(default=False, init=False, compare=False)
    timed: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        geo = bool(self.states_allowed or self.states_denied or self.area_codes_allowed or self.area_codes_denied)
        counted = any(x is not None for x in (self.cap_hourly, self.cap_daily, self.cap_monthly, self.cap_total,
                                               self.budget_daily_cents, self.budget_monthly_cents))
        object.__setattr__(self, "geo", geo)
        object.__setattr__(self, "counted", counted)
        object.__setattr__(self, "timed", counted or self.weekly is not None or bool(self.closed_dates))

    def open_at(self, lt) -> bool:
        """is_open() for a counters.Local (the per-call fast path)."""
        if self.closed_dates and lt.date in self.closed_dates:
            return False
        if self.weekly is None:
            return True
        minute = lt.minute
        for lo, hi in self.weekly[lt.weekday]:
            if lo <= minute < hi:
                return True
        return False

    def is_open(self, local: datetime) -> bool:
        """Open at this local wall-clock time (aware, in self.timezone)."""
        if self.closed_dates and local.date() in self.closed_dates:
            return False
        if self.weekly is None:
            return True
        minute = local.hour * 60 + local.minute
        for lo, hi in self.weekly[local.weekday()]:
            if lo <= minute < hi:
                return True
        return False


NO_RULES = Rules()

_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def _minute(text: str, key: str) -> int:
    m = _TIME.match(text)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise RulesError(key, f"{text!r} is no time (HH:MM, 00:00-24:00)")
    return int(m.group(1)) * 60 + int(m.group(2))


def _days(text: str, key: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().lower().partition("-")
        if lo not in DAYS or (hi and hi not in DAYS):
            raise RulesError(key, f"{part.strip()!r} is no day or day range (mon..sun)")
        a, b = DAYS.index(lo), DAYS.index(hi or lo)
        out.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return out


def parse_hours(text: str, key: str = "hours") -> tuple[tuple[tuple[int, int], ...], ...] | None:
    """"mon-fri 09:00-17:00, 18:00-20:00; sat 10:00-14:00" -> minutes open per weekday.

    A span past midnight ("fri 22:00-02:00") runs into the next day. '' = always open."""
    text = (text or "").strip()
    if not text:
        return None
    week: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for clause in text.split(";"):
        clause = clause.strip()
        if not clause:
            continue
        days_text, _, spans_text = clause.partition(" ")
        if not spans_text.strip():
            raise RulesError(key, f"{clause!r}: expected DAYS HH:MM-HH:MM[, HH:MM-HH:MM]")
        for day in _days(days_text, key):
            for span in spans_text.split(","):
                lo_t, sep, hi_t = span.strip().partition("-")
                if not sep:
                    raise RulesError(key, f"{span.strip()!r} is no time span (HH:MM-HH:MM)")
                lo, hi = _minute(lo_t.strip(), key), _minute(hi_t.strip(), key)
                if lo == hi:
                    raise RulesError(key, f"{span.strip()!r} is empty")
                if lo < hi:
                    week[day].append((lo, hi))
                else:  # past midnight
                    week[day].append((lo, 1440))
                    if hi:
                        week[(day + 1) % 7].append((0, hi))
    return tuple(tuple(sorted(d)) for d in week)


def _int(value: Any, key: str, lo: int, hi: int, optional: bool = True) -> int | None:
    if value is None or (optional and value == ""):
        if not optional:
            raise RulesError(key, "is required")
        return None
    if isinstance(value, bool):
        raise RulesError(key, f"expected a whole number, got {value!r}")
    try:
        n = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise RulesError(key, f"expected a whole number, got {value!r}") from None
    if not lo <= n <= hi:
        raise RulesError(key, f"{n} is out of range {lo}..{hi}")
    return n


def _cents(value: Any, key: str) -> int | None:
    if value is None or value == "":
        return None
    from ppcswitch.money import parse_cents

    try:
        cents = parse_cents(str(value))
    except ValueError as exc:
        raise RulesError(key, str(exc)) from None
    if cents < 0:
        raise RulesError(key, "must not be negative")
    return cents


def _list(value: Any, key: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise RulesError(key, f"expected a list, got {value!r}")
    return [str(v).strip() for v in value]


def _states(value: Any, key: str) -> frozenset[str]:
    out = frozenset(s.upper() for s in _list(value, key))
    bad = sorted(out - STATES)
    if bad:
        raise RulesError(key, f"unknown state code(s): {', '.join(bad)}")
    return out


def _area_codes(value: Any, key: str) -> frozenset[str]:
    out = frozenset(_list(value, key))
    bad = sorted(a for a in out if not re.fullmatch(r"[2-9]\d\d", a))
    if bad:
        raise RulesError(key, f"not 3-digit area codes: {', '.join(bad)}")
    return out


def _dates(value: Any, key: str) -> frozenset[date]:
    out = set()
    for v in _list(value, key):
        try:
            out.add(date.fromisoformat(v))
        except ValueError:
            raise RulesError(key, f"{v!r} is no date (YYYY-MM-DD)") from None
    return frozenset(out)


KEYS = ("timezone", "hours", "closed_dates", "states_allowed", "states_denied", "area_codes_allowed",
        "area_codes_denied", "cap_hourly", "cap_daily", "cap_monthly", "cap_total", "budget_daily",
        "budget_monthly", "duplicate_days", "duplicate_window", "min_gap_seconds", "weight", "paused", "priority",
        "concurrency", "cap_counts")
# The keys a campaign or a publisher may carry (ppcswitch campaign caps / publisher caps).
LIMIT_KEYS = ("timezone", "concurrency", "cap_hourly", "cap_daily", "cap_monthly", "cap_total", "budget_daily",
              "budget_monthly", "cap_counts")
CAP_COUNTS = ("routed", "connected", "billable")
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT = {"": 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_window(value: Any, key: str) -> int:
    """A window such as "30m", "12h", "7d" (a bare number: days) -> seconds; '' / None -> 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise RulesError(key, f"expected a window such as 30m, 12h or 7d, got {value!r}")
    m = _WINDOW.match(str(value).lower())
    if not m:
        raise RulesError(key, f"expected a window such as 30m, 12h or 7d, got {value!r}")
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if not 0 <= seconds <= 3650 * 86400:
        raise RulesError(key, f"{value!r} is out of range (at most 3650 days)")
    return seconds


def window_text(seconds: int) -> str:
    """Seconds as the shortest exact window: 2592000 -> "30d", 7200 -> "2h", 90 -> "90s"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
BIG = 10**9


def normalize(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated JSON form of a rules object (unknown keys refused, '' / None dropped)."""
    data = dict(data or {})
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise RulesError(unknown[0], f"unknown rule (known: {', '.join(KEYS)})")
    rules = parse_rules(data)  # raises on any bad value
    clean = {k: v for k, v in data.items() if v is not None and v != "" and v != []}
    # Stored in one canonical form, whatever the CLI or panel sent ("20" -> 20, "tx" -> "TX").
    for key in ("cap_hourly", "cap_daily", "cap_monthly", "cap_total", "duplicate_days", "min_gap_seconds",
                "weight", "priority", "concurrency", "cap_counts"):
        if key in clean:
            clean[key] = getattr(rules, key)
    for key in ("states_allowed", "states_denied", "area_codes_allowed", "area_codes_denied"):
        if key in clean:
            clean[key] = sorted(getattr(rules, key))
    if "timezone" in clean:
        clean["timezone"] = rules.timezone
    if "closed_dates" in clean:
        clean["closed_dates"] = sorted(d.isoformat() for d in rules.closed_dates)
    if "duplicate_window" in clean:
        clean["duplicate_window"] = window_text(parse_window(clean["duplicate_window"], "duplicate_window"))
    return clean


def parse_rules(data: Mapping[str, Any] | None) -> Rules:
    d = dict(data or {})
    tz = str(d.get("timezone") or "UTC").strip()
    tz = timezones.canonical(tz) or tz  # any case: "america/new_york" is America/New_York
    try:
        zone(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError("timezone", f"unknown time zone {tz!r} (e.g. America/New_York)") from None
    hours = str(d.get("hours") or "").strip()
    paused = d.get("paused", False)
    if not isinstance(paused, bool):
        raise RulesError("paused", f"expected true/false, got {paused!r}")
    counts = str(d.get("cap_counts") or "connected").strip().lower()
    if counts not in CAP_COUNTS:
        raise RulesError("cap_counts", f"expected one of {', '.join(CAP_COUNTS)}, got {d.get('cap_counts')!r}")
    days = _int(d.get("duplicate_days"), "duplicate_days", 0, 3650) or 0
    window = parse_window(d.get("duplicate_window"), "duplicate_window")
    return Rules(
        timezone=tz,
        hours=hours,
        weekly=parse_hours(hours),
        closed_dates=_dates(d.get("closed_dates"), "closed_dates"),
        states_allowed=_states(d.get("states_allowed"), "states_allowed"),
        states_denied=_states(d.get("states_denied"), "states_denied"),
        area_codes_allowed=_area_codes(d.get("area_codes_allowed"), "area_codes_allowed"),
        area_codes_denied=_area_codes(d.get("area_codes_denied"), "area_codes_denied"),
        cap_hourly=_int(d.get("cap_hourly"), "cap_hourly", 0, BIG),
        cap_daily=_int(d.get("cap_daily"), "cap_daily", 0, BIG),
        cap_monthly=_int(d.get("cap_monthly"), "cap_monthly", 0, BIG),
        cap_total=_int(d.get("cap_total"), "cap_total", 0, BIG),
        budget_daily_cents=_cents(d.get("budget_daily"), "budget_daily"),
        budget_monthly_cents=_cents(d.get("budget_monthly"), "budget_monthly"),
        duplicate_days=days,
        duplicate_seconds=window or days * 86400,  # a window given in minutes/hours/days wins over days
        concurrency=_int(d.get("concurrency"), "concurrency", 0, BIG),
        cap_counts=counts,
        min_gap_seconds=_int(d.get("min_gap_seconds"), "min_gap_seconds", 0, 86400) or 0,
        weight=_int(d.get("weight"), "weight", 1, 1_000_000) or 1,
        paused=paused,
        priority=_int(d.get("priority"), "priority", 0, 1000),
        source=d,
    )


def merged(buyer_rules: Mapping[str, Any] | None, link_rules: Mapping[str, Any] | None) -> Rules:
    """A buyer's rules with one campaign link's overrides on top."""
    return parse_rules({**(buyer_rules or {}), **(link_rules or {})})
