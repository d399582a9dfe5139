"""Reading dialled numbers and caller IDs as E.164, whatever the carrier sends."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

# Caller IDs carriers and Asterisk use when the number is withheld or missing.
ANONYMOUS_VALUES = frozenset(
    {"", "anonymous", "unknown", "restricted", "private", "unavailable", "withheld", "blocked", "none"}
)
# A raw, non-numeric caller ID is kept for the record, but never at any length.
MAX_RAW_LENGTH = 64


@dataclass(frozen=True)
class Caller:
    value: str  # E.164, "anonymous", or the raw value (cut to MAX_RAW_LENGTH)
    valid: bool  # a real, possible phone number
    anonymous: bool


def _clean(raw: str | None) -> str:
    raw = (raw or "").strip()
    # Drop control characters and quotes: they reach logs, the database and the panel.
    return "".join(ch for ch in raw if ch.isprintable() and ch not in "\"'\\")


def to_e164(raw: str | None, region: str) -> str | None:
    """E.164 form of a dialled number or caller ID, or None when it is no possible number."""
    text = _clean(raw)
    if not text or len(text) > 32 or not any(ch.isdigit() for ch in text):
        return None
    if any(ch not in "+0123456789-(). " for ch in text):
        return None
    return _parse_e164(text, region)


# A call's numbers are read by several steps (attribution, screen, route), and tracking numbers
# repeat on every call: phonenumbers' parse is the costly part, so its answers are kept (bounded).
@lru_cache(maxsize=8192)
def _parse_e164(text: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def read_caller(raw: str | None, region: str) -> Caller:
    text = _clean(raw)
    if text.lower() in ANONYMOUS_VALUES:
        return Caller("anonymous", valid=False, anonymous=True)
    e164 = to_e164(text, region)
    if e164 is not None:
        return Caller(e164, valid=True, anonymous=False)
    return Caller(text[:MAX_RAW_LENGTH], valid=False, anonymous=False)
