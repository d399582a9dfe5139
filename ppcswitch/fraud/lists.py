"""Block and allow lists of caller numbers and prefixes, per network and per campaign. Pure.

A pattern is an E.164 prefix ("+1415555", a whole number is its own longest
prefix) or "anonymous". Precedence, most specific first: the campaign's allow,
the campaign's block, the network's allow, the network's block. So a campaign
can let through a caller the network blocks, and the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

BLOCK, ALLOW = "block", "allow"
KINDS = (BLOCK, ALLOW)
ANONYMOUS = "anonymous"
_PATTERN = re.compile(r"^\+[0-9]{1,15}$")


class ListError(ValueError):
    """A list entry refused, with the reason."""


def clean_pattern(raw: str) -> str:
    """'+1 (415) 555' -> '+1415555'; 'anonymous' stays; anything else is refused with the reason."""
    text = (raw or "").strip()
    if text.lower() == ANONYMOUS:
        return ANONYMOUS
    digits = "+" + "".join(ch for ch in text if ch.isdigit()) if text.startswith("+") else ""
    if any(ch not in "+0123456789 -()." for ch in text) or not _PATTERN.match(digits):
        raise ListError(f"{raw!r}: a caller number or prefix in E.164 form (+ and 1-15 digits), or 'anonymous'")
    return digits


@dataclass(frozen=True)
class ListEntry:
    kind: str  # block | allow
    pattern: str  # E.164 prefix or 'anonymous'
    campaign_id: int | None = None  # None: the whole network


def _hits(pattern: str, caller: str) -> bool:
    return caller == ANONYMOUS if pattern == ANONYMOUS else caller.startswith(pattern)


def verdict(entries: Iterable[ListEntry], caller: str, campaign_id: int | None) -> str:
    """ALLOW, BLOCK or '' (not listed) for this caller (E.164 or 'anonymous') on this campaign."""
    found = {(e.campaign_id is not None, e.kind) for e in entries
             if (e.campaign_id is None or e.campaign_id == campaign_id) and _hits(e.pattern, caller)}
    for scope in (True, False):
        if (scope, ALLOW) in found:
            return ALLOW
        if (scope, BLOCK) in found:
            return BLOCK
    return ""


@dataclass(frozen=True)
class CampaignScreening:
    """How one campaign's calls are screened (the fraud settings the operator sets per campaign):
    press-1 challenge, recording, the score at which a call is blocked (None: the global one)."""

    challenge: bool = False
    record: bool = False
    block_score: int | None = None
