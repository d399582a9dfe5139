"""Conversion rules per side (buyer pays revenue, publisher earns payout) and exact pricing.

Pure and synchronous. Money is integer cents; percentages are basis points
(1 % = 100 bp) so they are integers too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

REVENUE, PAYOUT = "revenue", "payout"
SIDES = (REVENUE, PAYOUT)
FLAT, TIERS, PERCENT = "flat", "tiers", "percent"
MODES = (FLAT, TIERS, PERCENT)


class RuleError(ValueError):
    """A conversion rule that cannot be applied as given."""


@dataclass(frozen=True)
class Tier:
    min_seconds: int  # this price applies from this many connected seconds
    cents: int


@dataclass(frozen=True)
class SideRule:
    """When one side of a call is billable, and for how much.

    Every field may be overridden; see `merge`. Defaults bill nothing special:
    no minimum, no duplicate window, no geography or quality requirement.
    """

    min_duration: int = 0  # connected seconds, counted from the buyer's answer
    unique_days: int = 0  # same caller within this many days is not billable again (0: off)
    # The same window in seconds, what billing reads: set with unique_days (days) or unique_window
    # ("30m", "12h", "7d"); one layer of rules sets both, so the most specific layer's window wins.
    unique_window: int = 0
    unique_counts_unbillable: bool = False  # does a non-billable earlier call start the window?
    require_geo: bool = False  # caller must be in the buyer's service area
    quality_threshold: int | None = None  # a score at or above this flags the call (None: off)
    mode: str = FLAT  # flat | tiers (by duration) | percent (of revenue, payout side only)
    flat_cents: int = 0
    tiers: tuple[Tier, ...] = ()
    percent_bp: int = 0  # basis points of the call's revenue
    only_when_buyer_pays: bool = True  # payout side: no payout unless the buyer pays ("revshare")
    min_ai_score: int | None = None  # a transcript's AI score below this is not billable (None: off)
    deny_dispositions: tuple[str, ...] = ()  # a call with any of these dispositions is not billable

    @property
    def depends_on_buyer(self) -> bool:
        """Revshare: the payout follows the revenue (a dispute reverses both)."""
        return self.mode == PERCENT or self.only_when_buyer_pays


OVERRIDABLE = tuple(f.name for f in dataclasses.fields(SideRule))


def percent_of(cents: int, bp: int) -> int:
    """`bp` basis points of `cents`, rounded half up to a whole cent (integers only)."""
    return (cents * bp + 5000) // 10000


def price(rule: SideRule, seconds: int, revenue_cents: int = 0) -> int:
    """Amount of a billable side, in cents."""
    if rule.mode == PERCENT:
        return percent_of(revenue_cents, rule.percent_bp)
    if rule.mode == TIERS:
        cents = 0
        for tier in sorted(rule.tiers, key=lambda t: t.min_seconds):
            if seconds >= tier.min_seconds:
                cents = tier.cents
        return cents
    return rule.flat_cents


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise RuleError(f"{name} must be a whole number, got {value!r}") from None
    if not lo <= value <= hi:
        raise RuleError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def parse_tiers(value: Any) -> tuple[Tier, ...]:
    """Tiers from "0:10.00,90:25.00" (seconds:amount) or a list of (seconds, cents) pairs."""
    from ppcswitch.money import MoneyError, parse_cents

    if isinstance(value, str):
        if value.strip().startswith("["):
            value = json.loads(value)
        else:
            out = []
            for part in filter(None, (p.strip() for p in value.split(","))):
                secs, sep, amount = part.partition(":")
                if not sep:
                    raise RuleError(f"tier {part!r}: write seconds:amount, e.g. 90:25.00")
                try:
                    out.append(Tier(_int("tier seconds", secs, 0, 86400), parse_cents(amount)))
                except MoneyError as exc:
                    raise RuleError(f"tier {part!r}: amount {exc}") from None
            value = [(t.min_seconds, t.cents) for t in out]
    tiers = tuple(Tier(_int("tier seconds", s, 0, 86400), _int("tier cents", c, 0, 100_000_000)) for s, c in value)
    if len({t.min_seconds for t in tiers}) != len(tiers):
        raise RuleError("two tiers start at the same duration")
    return tuple(sorted(tiers, key=lambda t: t.min_seconds))


def window_seconds(value: Any) -> int:
    """A unique-caller window: "30m", "12h", "7d", a bare number of days, or whole seconds (int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 3650 * 86400:
            raise RuleError(f"unique_window must be between 0 and 3650 days, got {value} seconds")
        return value
    from ppcswitch.routing.rules import RulesError, parse_window

    try:
        return parse_window(value, "unique_window")
    except RulesError as exc:
        raise RuleError(str(exc)) from None


def check_override(side: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Validated, normalised override values (None means inherit)."""
    if side not in SIDES:
        raise RuleError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in OVERRIDABLE:
            raise RuleError(f"unknown rule field {key!r} (known: {', '.join(OVERRIDABLE)})")
        if value is None:
            continue
        if key in ("min_duration",):
            value = _int(key, value, 0, 86400)
        elif key == "unique_days":
            value = _int(key, value, 0, 3650)
            if values.get("unique_window") is None:
                out["unique_window"] = value * 86400
        elif key == "unique_window":
            value = window_seconds(value)
            if values.get("unique_days") is None:
                out["unique_days"] = value // 86400 if value % 86400 == 0 else 0
        elif key == "quality_threshold":
            value = _int(key, value, 0, 100)
        elif key == "flat_cents":
            value = _int(key, value, 0, 100_000_000)
        elif key == "percent_bp":
            value = _int(key, value, 0, 10000)
        elif key == "mode":
            if value not in MODES:
                raise RuleError(f"mode must be one of {', '.join(MODES)}, got {value!r}")
            if value == PERCENT and side == REVENUE:
                raise RuleError("percent mode is for the payout side (a share of the revenue)")
        elif key == "tiers":
            value = parse_tiers(value)
        elif key == "min_ai_score":
            value = _int(key, value, 0, 100)
        elif key == "deny_dispositions":
            value = parse_dispositions(value)
        elif not isinstance(value, bool):
            raise RuleError(f"{key} must be true or false, got {value!r}")
        out[key] = value
    return out


def merge(base: SideRule, *overrides: Mapping[str, Any] | None) -> SideRule:
    """`base` with each override's non-None fields applied in order (later wins)."""
    for o in overrides:
        if o:
            base = dataclasses.replace(base, **{k: v for k, v in o.items() if v is not None})
    return base


def tiers_json(tiers: Iterable[Tier]) -> str:
    return json.dumps([[t.min_seconds, t.cents] for t in tiers])


def parse_dispositions(value: Any) -> tuple[str, ...]:
    """Disposition names from "wrong_number,stop_calling" or a list; lower-case letters, digits and _."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip().startswith("[") else value.split(",")
    out = []
    for name in (str(v).strip().lower() for v in value):
        if not name:
            continue
        if len(name) > 40 or not all(ch.isascii() and (ch.isalnum() or ch == "_") for ch in name):
            raise RuleError(f"disposition {name!r}: use letters, digits and _ (e.g. wrong_number)")
        if name not in out:
            out.append(name)
    return tuple(out)
