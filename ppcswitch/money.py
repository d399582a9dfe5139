"""Money as integer cents: parsing decimal strings exactly and formatting them back.

Floats never touch money: "0.1 + 0.2" style errors would end up on invoices.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MAX_CENTS = 100_000_000  # 1,000,000.00: anything above is a typo, not a price
_PLAIN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_NON_FINITE = {"nan", "snan", "inf", "infinity", "+nan", "-nan", "+inf", "-inf", "+infinity", "-infinity"}


class MoneyError(ValueError):
    """A money amount that cannot be read exactly."""


def parse_cents(text: str) -> int:
    """Integer cents of a decimal amount such as "40", "40.00" or "12.5"."""
    if not isinstance(text, str):
        raise MoneyError(f"expected a decimal amount such as 40.00, got {text!r}")
    text = text.strip()
    if not text:
        raise MoneyError("is empty; give an amount such as 40.00")
    if len(text) > 32:
        raise MoneyError("is too long to be an amount")
    if text.lower() in _NON_FINITE:
        raise MoneyError(f"must be a finite amount, got {text!r}")
    # Only plain decimals: Decimal() alone would also take "1e3", "1_000" and non-ASCII digits.
    if not _PLAIN.fullmatch(text):
        raise MoneyError(f"is not a decimal amount: {text!r} (use digits and an optional '.', e.g. 12.50)")
    if text.startswith("-"):
        raise MoneyError(f"must not be negative, got {text}")
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex already ruled this out
        raise MoneyError(f"is not a decimal amount: {text!r}") from None
    if amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise MoneyError(f"has more than 2 decimal places: {text}")
    if amount > Decimal(MAX_CENTS) / 100:
        raise MoneyError(f"is too large: {text} (at most {format_cents(MAX_CENTS)})")
    return int(amount.scaleb(2))  # exact: at most 2 decimals and bounded


def format_cents(cents: int) -> str:
    """"40.00" for 4000; negative amounts (margins) keep their sign."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{frac:02d}"
