"""Attribution values from outside (landing page, SIP headers, keypad): cut and cleaned.

Only letters, digits and ``._~-`` survive (what sub-IDs and click IDs are made of),
so nothing a visitor or a publisher's switch sends can mean anything to the
dialplan, AGI, SQL or a postback URL.
"""

from __future__ import annotations

import re

MAX_VALUE = 64  # characters kept of one value
_BAD = re.compile(r"[^A-Za-z0-9._~-]+")
# What the landing page may send besides sub_id / click_id.
TAGS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "keyword")
# Asterisk's FILTER() character set matching _BAD (used in the AGI expression).
ASTERISK_FILTER = r"A-Za-z0-9._~\-"


def clean(value: object, limit: int = MAX_VALUE) -> str:
    return _BAD.sub("", str(value or "")[: limit * 4])[:limit]


def values_from(params) -> dict[str, str]:
    """sub_id, click_id and tags from a mapping (query string, AGI args): cleaned, empty ones dropped."""
    out = {}
    for name in ("sub_id", "click_id", *TAGS):
        v = clean(params.get(name, ""), 128 if name == "click_id" else MAX_VALUE)
        if v:
            out[name] = v
    return out
