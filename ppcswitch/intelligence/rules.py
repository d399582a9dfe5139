"""Dispositions from phrase rules and the AI score of a transcribed call. Pure and synchronous.

A phrase rule sets its disposition when its phrase is said (whole words, case and punctuation
ignored) on its side of the call (caller, buyer, or any). The shipped defaults below apply to every
campaign; an operator adds phrases per campaign or network-wide, and can switch a default phrase
off for a campaign (`ppcswitch intelligence phrase ...`).

The AI score is 0-100, **higher is a better lead** (the opposite of the fraud score): it starts at
50 and each reason adds or takes points (the dispositions' points, whether both sides talked, how
much the caller said, and the switch's own fraud score). Every reason is kept with the score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

CALLER, BUYER, ANY = "caller", "buyer", "any"
SIDES = (CALLER, BUYER, ANY)
BASE_SCORE = 50

# Points a disposition moves the score by; custom dispositions move it by 0 (a tag only).
POINTS = {"sale": 30, "appointment": 20, "already_customer": -25, "not_interested": -30,
          "wrong_number": -40, "stop_calling": -40}

DEFAULT_PHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "wrong_number": ((ANY, "wrong number"), (CALLER, "i didn't call"), (CALLER, "i did not call"),
                     (CALLER, "never called"), (CALLER, "who is this")),
    "already_customer": ((CALLER, "already a customer"), (CALLER, "already have an account"),
                         (CALLER, "existing customer"), (CALLER, "already signed up"), (CALLER, "my account")),
    "not_interested": ((CALLER, "not interested"), (CALLER, "no thank you"), (CALLER, "no thanks"),
                       (CALLER, "don't need it")),
    "stop_calling": ((CALLER, "stop calling"), (CALLER, "take me off"), (CALLER, "do not call"),
                     (CALLER, "don't call me"), (CALLER, "remove my number")),
    "appointment": ((ANY, "appointment"), (ANY, "schedule"), (ANY, "tomorrow morning"),
                    (ANY, "tomorrow afternoon"), (BUYER, "send a technician"), (ANY, "come out")),
    "sale": ((BUYER, "sign you up"), (CALLER, "sign me up"), (ANY, "place the order"), (ANY, "purchase"),
             (BUYER, "you're all set"), (ANY, "credit card")),
}

_NAME = re.compile(r"^[a-z0-9_]{1,40}$")


class PhraseError(ValueError):
    pass


@dataclass(frozen=True)
class PhraseRule:
    disposition: str
    phrase: str
    side: str = ANY
    enabled: bool = True
    campaign_id: int | None = None  # None: every campaign


def normalise(text: str) -> str:
    """Lower case, letters/digits/apostrophes only, single spaces: what phrases are matched on."""
    return " ".join(re.sub(r"[^a-z0-9'\[\] ]+", " ", text.lower()).split())


def check_rule(disposition: str, phrase: str, side: str) -> tuple[str, str, str]:
    disposition = (disposition or "").strip().lower()
    if not _NAME.match(disposition):
        raise PhraseError("disposition: letters, digits and _ only, at most 40 (e.g. wrong_number)")
    phrase = normalise(phrase or "")
    if not phrase or len(phrase) > 200:
        raise PhraseError("phrase: a few words (at most 200 characters)")
    if side not in SIDES:
        raise PhraseError(f"side: one of {', '.join(SIDES)}")
    return disposition, phrase, side


def defaults() -> list[PhraseRule]:
    return [PhraseRule(d, p, s) for d, rules in DEFAULT_PHRASES.items() for s, p in rules]


def effective(rows: Iterable[PhraseRule], campaign_id: int | None) -> list[PhraseRule]:
    """The rules for one campaign: defaults, then network-wide rows, then the campaign's rows; a row
    with the same disposition, phrase and side as an earlier one replaces it (enabled or not)."""
    out: dict[tuple[str, str, str], PhraseRule] = {(r.disposition, r.phrase, r.side): r for r in defaults()}
    rows = list(rows)
    for layer in ([r for r in rows if r.campaign_id is None],
                  [r for r in rows if campaign_id is not None and r.campaign_id == campaign_id]):
        for r in layer:
            out[(r.disposition, r.phrase, r.side)] = r
    return [r for r in out.values() if r.enabled]


def _said(phrase: str, text: str) -> bool:
    return f" {phrase} " in f" {text} "


@dataclass(frozen=True)
class Hit:
    disposition: str
    phrase: str
    side: str  # where it was said
    at: float  # seconds into the call


def dispositions(segments: Sequence[dict], rules: Sequence[PhraseRule]) -> list[Hit]:
    """The first hit of each disposition, in the order the dispositions were first heard."""
    hits: dict[str, Hit] = {}
    for seg in sorted(segments, key=lambda s: s["start"]):
        text = normalise(seg["text"])
        for r in rules:
            if r.disposition in hits or (r.side != ANY and r.side != seg["side"]):
                continue
            if _said(r.phrase, text):
                hits[r.disposition] = Hit(r.disposition, r.phrase, seg["side"], seg["start"])
    return sorted(hits.values(), key=lambda h: h.at)


@dataclass(frozen=True)
class AiScore:
    value: int
    reasons: list[dict]  # [{"reason", "points", "detail"}]


def score(hits: Sequence[Hit], segments: Sequence[dict], caller_speech_ms: int, buyer_speech_ms: int,
          fraud_score: int | None = None, fraud_flags: Sequence[str] = ()) -> AiScore:
    reasons: list[dict] = []

    def add(reason: str, points: int, detail: str) -> None:
        reasons.append({"reason": reason, "points": points, "detail": detail})

    for h in hits:
        add(f"disposition:{h.disposition}", POINTS.get(h.disposition, 0), f"{h.side} said \"{h.phrase}\" at {h.at:.1f} s")
    talk = caller_speech_ms + buyer_speech_ms
    if caller_speech_ms <= 0:
        add("caller_silent", -30, "the caller said nothing the engine understood")
    elif buyer_speech_ms <= 0:
        add("buyer_silent", -15, "the buyer said nothing the engine understood")
    else:
        share = caller_speech_ms / talk
        if 0.2 <= share <= 0.8:
            add("conversation", 10, f"both sides talked (caller {share:.0%} of speech)")
        else:
            add("one_sided", -5, f"the caller had {share:.0%} of the speech")
    caller_words = sum(len(s["text"].split()) for s in segments if s["side"] == CALLER)
    if 0 < caller_words < 5:
        add("few_caller_words", -10, f"the caller said {caller_words} word(s)")
    if fraud_score:
        add("fraud_score", -(fraud_score // 2), f"the switch's fraud score {fraud_score}"
            + (f" ({', '.join(fraud_flags)})" if fraud_flags else ""))
    value = max(0, min(100, BASE_SCORE + sum(r["points"] for r in reasons)))
    return AiScore(value, reasons)
