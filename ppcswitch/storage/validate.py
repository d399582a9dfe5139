"""Checks for every configuration value a person types (CLI, web panel).

Pure functions: each returns the normalised value or raises ValidationError.
Buyer destinations end up inside Asterisk's Dial(), so they are matched against
a strict whitelist rather than cleaned: anything unexpected is refused.
"""

from __future__ import annotations

import ipaddress
import re

import phonenumbers

from ppcswitch.money import MoneyError, format_cents, parse_cents

__all__ = [
    "ValidationError", "name", "money", "format_money", "phone", "destination", "endpoint_name",
    "ring_timeout", "concurrency_cap", "min_duration", "priority", "int_range",
]


class ValidationError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


NAME_MAX = 100


def name(value: object, field: str = "name") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be text")
    value = value.strip()
    if not value:
        raise ValidationError(field, "must not be empty")
    if len(value) > NAME_MAX:
        raise ValidationError(field, f"must be at most {NAME_MAX} characters (got {len(value)})")
    # isprintable() is False for control, format (bidi overrides, zero-width) and odd space characters.
    if any(not ch.isprintable() for ch in value):
        raise ValidationError(field, "must not contain control or invisible characters")
    return value


def money(value: object, field: str) -> int:
    """Integer cents from a decimal string such as "40.00"."""
    try:
        return parse_cents(value)  # type: ignore[arg-type]
    except MoneyError as exc:
        raise ValidationError(field, str(exc)) from None


format_money = format_cents


def phone(value: object, region: str, field: str = "number") -> str:
    """E.164 form of a real, valid phone number (national numbers read in `region`)."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a phone number")
    text = value.strip()
    if len(text) > 32 or not re.fullmatch(r"[+0-9() .-]+", text, re.ASCII):
        raise ValidationError(field, f"is not a phone number: {text[:40]!r}")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(field, f"is not a phone number: {text!r} ({exc})") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise ValidationError(field, f"is not a valid phone number: {text!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_SIP = re.compile(r"sip:(?P<user>[A-Za-z0-9+*#._-]{1,64})@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})"
                  r"(?::(?P<port>[0-9]{1,5}))?", re.ASCII)
_ENDPOINT = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
DESTINATION_HELP = "use sip:user@host[:port] or pjsip:ENDPOINT"


def _host_ok(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
            return True
        except ValueError:
            return False
    labels = host.split(".")
    if all(label.isdigit() for label in labels):  # looks like IPv4: must be one
        try:
            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            return False
    return all(_LABEL.fullmatch(label) for label in labels)


def destination(value: object, field: str = "destination") -> str:
    """`sip:user@host[:port]` or `pjsip:ENDPOINT`; nothing that could add Dial() options or targets."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be text; {DESTINATION_HELP}")
    text = value.strip(" ")  # only spaces: a tab or newline anywhere is refused below
    shown = text[:60] + ("..." if len(text) > 60 else "")
    if len(text) > 300:
        raise ValidationError(field, f"is too long ({len(text)} characters); {DESTINATION_HELP}")
    if text.startswith("pjsip:"):
        if _ENDPOINT.fullmatch(text[6:]):
            return text
        raise ValidationError(field, f"endpoint name may only use letters, digits, '_', '.', '-': {shown!r}")
    m = _SIP.fullmatch(text)
    if not m:
        raise ValidationError(field, f"is not an accepted destination: {shown!r}; {DESTINATION_HELP}")
    if not _host_ok(m["host"]):
        raise ValidationError(field, f"has an invalid host {m['host']!r}")
    if m["port"] is not None and not 1 <= int(m["port"]) <= 65535:
        raise ValidationError(field, f"port must be 1..65535, got {m['port']}")
    return text


def endpoint_name(value: str, field: str = "routing.buyer_endpoint") -> str:
    if not isinstance(value, str) or not _ENDPOINT.fullmatch(value):
        raise ValidationError(field, f"is not a valid PJSIP endpoint name: {value!r}")
    return value


def int_range(value: object, field: str, lo: int, hi: int) -> int:
    """An integer (or its decimal text) within lo..hi."""
    if isinstance(value, bool):
        raise ValidationError(field, f"must be a whole number from {lo} to {hi}")
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", value, re.ASCII):
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError(field, f"must be a whole number from {lo} to {hi}, got {str(value)[:40]!r}")
    if not lo <= value <= hi:
        raise ValidationError(field, f"must be from {lo} to {hi}, got {value}")
    return value


def ring_timeout(value: object) -> int:
    return int_range(value, "ring_timeout", 1, 300)


def concurrency_cap(value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return int_range(value, "concurrency_cap", 1, 10000)


def min_duration(value: object) -> int:
    return int_range(value, "min_duration", 0, 86400)


def priority(value: object) -> int:
    return int_range(value, "priority", 1, 1000)
