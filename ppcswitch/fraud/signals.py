"""Per-call fraud and quality signals. Pure and synchronous: facts in, findings out.

Each function answers one question about one call, with the boundary stated
(windows are inclusive of their edge: a call exactly `window` seconds ago counts).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Iterable, Sequence

import phonenumbers

from ppcswitch.numbers import ANONYMOUS_VALUES

# Signal names as stored with the call and shown on its page.
REPEAT_PUBLISHERS = "repeat_caller_publishers"  # same caller on other publishers within the window
VELOCITY = "caller_velocity"  # same caller many times within minutes
NEAR_THRESHOLD = "near_threshold_duration"  # connected just above the billable minimum
NEAR_THRESHOLD_PUBLISHER = "publisher_threshold_clustering"  # the publisher's share of such calls is high
CALLER_ANONYMOUS = "caller_anonymous"
CALLER_INVALID = "caller_invalid"
CALLER_CANNOT_CALL = "caller_cannot_call"  # a range that does not place calls (toll-free, premium, unassigned)
STATE_MISMATCH = "area_code_state_mismatch"  # area-code state differs from the keyed-in ZIP's state
ATTESTATION_B = "attestation_b"
ATTESTATION_C = "attestation_c"
ATTESTATION_NONE = "attestation_none"
NO_CONVERSATION = "no_conversation"  # caller never spoke, or nobody spoke
CHALLENGE_FAILED = "challenge_failed"  # press-1 challenge not passed
BLOCKED = "blocked_caller"

# Number types phonenumbers reports for ranges that receive but do not originate calls.
_CANNOT_CALL = frozenset({
    phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.UAN,
    phonenumbers.PhoneNumberType.VOICEMAIL, phonenumbers.PhoneNumberType.PAGER,
})


@dataclass(frozen=True)
class PriorCall:
    """An earlier call of the same caller, as the fraud history keeps it."""

    at: float  # epoch seconds
    publisher_id: int | None


def repeat_publishers(prior: Iterable[PriorCall], at: float, publisher_id: int | None, window: float) -> set[int]:
    """Other publishers that sent this caller within [at - window, at]."""
    return {p.publisher_id for p in prior
            if p.publisher_id is not None and p.publisher_id != publisher_id and at - window <= p.at <= at}


def velocity(prior: Iterable[PriorCall], at: float, window: float) -> int:
    """Calls from this caller within [at - window, at], this one included."""
    return 1 + sum(1 for p in prior if at - window <= p.at <= at)


def near_threshold(connected_seconds: int, min_duration: int, margin: int = 5) -> bool:
    """Connected at or just above the billable minimum: min <= seconds <= min + margin.

    No minimum (0) means no threshold to game."""
    return min_duration > 0 and min_duration <= connected_seconds <= min_duration + margin


def threshold_share(near: int, connected: int) -> float:
    """A publisher's share of connected calls that ended near the threshold (0.0 with no calls)."""
    return near / connected if connected > 0 else 0.0


def clustering(near: int, connected: int, share: float, min_calls: int) -> bool:
    """Threshold clustering: enough connected calls, and at least `share` of them near the minimum."""
    return connected >= min_calls and threshold_share(near, connected) >= share


def caller_number(raw: str, region: str = "US") -> str:
    """'' for a plausible caller, else CALLER_ANONYMOUS / CALLER_INVALID / CALLER_CANNOT_CALL."""
    text = (raw or "").strip()
    if text.lower() in ANONYMOUS_VALUES:
        return CALLER_ANONYMOUS
    if not text or any(ch not in "+0123456789-(). " for ch in text):
        return CALLER_INVALID
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return CALLER_INVALID
    if not phonenumbers.is_possible_number(number):
        return CALLER_INVALID
    if not phonenumbers.is_valid_number(number):
        return CALLER_CANNOT_CALL  # possible length, but an unassigned range
    if phonenumbers.number_type(number) in _CANNOT_CALL:
        return CALLER_CANNOT_CALL
    return ""


def state_mismatch(area_code_state: str, zip_state: str) -> bool:
    """The caller's area code is in one state and the ZIP keyed in is in another (both known)."""
    return bool(area_code_state and zip_state and area_code_state != zip_state)


def _b64url(part: str) -> bytes:
    part = part.strip()
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def attestation(identity: str = "", header: str = "") -> str:
    """STIR/SHAKEN attestation 'A' / 'B' / 'C', or '' when none was sent.

    `identity` is the SIP Identity header, or just its JWT payload (the dialplan
    passes the second dot-separated part). The `attest` claim is read from the
    base64url payload WITHOUT verifying the signature: we trust the carrier that
    delivered the call to have verified it (the level is a signal, not a proof).
    `header` is a carrier's own attestation header (X-Attestation: A), used when
    there is no readable Identity.
    """
    token = (identity or "").split(";", 1)[0].strip()
    parts = token.split(".")
    payload = parts[1] if len(parts) >= 3 else parts[0]  # header.payload.signature: the payload is second
    if payload:
        try:
            claims = json.loads(_b64url(payload))
            level = str(claims.get("attest", "")).strip().upper() if isinstance(claims, dict) else ""
            if level in ("A", "B", "C"):
                return level
        except (binascii.Error, ValueError, UnicodeDecodeError):
            pass
    level = (header or "").strip().upper()[:1]
    return level if level in ("A", "B", "C") else ""


def attestation_signal(level: str) -> str:
    """'' for full attestation A, else the signal for B, C or none."""
    return {"A": "", "B": ATTESTATION_B, "C": ATTESTATION_C}.get(level, ATTESTATION_NONE)


def no_conversation(connected_ms: int, caller_talk_ms: int | None, buyer_talk_ms: int | None,
                    min_connected_ms: int = 5000) -> str:
    """'caller_silent' or 'nobody_spoke' for a connected call long enough to judge, else ''.

    None talk times mean talk detection was not running: nothing to say."""
    if connected_ms < min_connected_ms or caller_talk_ms is None:
        return ""
    if caller_talk_ms <= 0 and not buyer_talk_ms:
        return "nobody_spoke"
    if caller_talk_ms <= 0:
        return "caller_silent"
    return ""


def prior_within(prior: Sequence[PriorCall], at: float, keep: float) -> list[PriorCall]:
    """The history worth keeping: calls no older than `keep` seconds before `at`."""
    return [p for p in prior if p.at >= at - keep]
