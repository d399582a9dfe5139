"""Redaction of card numbers, social security numbers and other long digit runs, before a
transcript is stored. Pure.

A run is consecutive tokens that are digits ("4111", "4111-1111") or spoken digits ("four one one
one", "oh", "double five"); a run with at least `min_digits` digits becomes "[redacted]". Words a
recogniser puts for spoken digits ("for", "to", "too", "won", "ate") count inside a run, not at
its ends, so "talk to you" is left alone while "four to one one ..." is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARK = "[redacted]"

_STRONG = {"zero": 1, "one": 1, "two": 1, "three": 1, "four": 1, "five": 1, "six": 1, "seven": 1, "eight": 1,
           "nine": 1, "niner": 1}
_WEAK = {"oh": 1, "o": 1, "for": 1, "to": 1, "too": 1, "won": 1, "ate": 1, "double": 1, "triple": 2}
_NUMERAL = re.compile(r"^[0-9][0-9\-./]*$")


def _digits(token: str) -> tuple[int, bool]:
    """(digits the token stands for, is it a sure digit)."""
    t = token.lower().strip(",.;:!?\"'()")
    if _NUMERAL.match(t):
        return sum(ch.isdigit() for ch in t), True
    if t in _STRONG:
        return _STRONG[t], True
    if t in _WEAK:
        return _WEAK[t], False
    return 0, False


@dataclass(frozen=True)
class Redaction:
    text: str
    runs: list[tuple[int, int]]  # token index ranges [start, end) that were removed


def redact_tokens(tokens: list[str], min_digits: int) -> Redaction:
    if min_digits <= 0:
        return Redaction(" ".join(tokens), [])
    kinds = [_digits(t) for t in tokens]
    for i in range(len(kinds) - 1):  # "double five": a multiplier before a sure digit is sure too
        if tokens[i].lower() in ("double", "triple") and kinds[i + 1][1]:
            kinds[i] = (kinds[i][0], True)
    runs, i, n = [], 0, len(tokens)
    while i < n:
        if kinds[i][0] == 0:
            i += 1
            continue
        j = i
        while j < n and kinds[j][0] > 0:
            j += 1
        a, b = i, j  # trim weak tokens at the edges
        while a < b and not kinds[a][1]:
            a += 1
        while b > a and not kinds[b - 1][1]:
            b -= 1
        if a < b and sum(k[0] for k in kinds[a:b]) >= min_digits:
            runs.append((a, b))
        i = j
    out, k = [], 0
    for a, b in runs:
        out += tokens[k:a] + [MARK]
        k = b
    out += tokens[k:]
    return Redaction(" ".join(out), runs)


def redact(text: str, min_digits: int) -> tuple[str, int]:
    """The text with every long digit run replaced, and how many runs were."""
    r = redact_tokens(text.split(), min_digits)
    return r.text, len(r.runs)
