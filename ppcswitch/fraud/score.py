"""The 0-100 fraud/quality score of a call and its explanation. Pure.

Higher is worse. Each signal found adds its points (the sum is capped at 100);
the explanation lists every signal with its points and detail, so an operator
can see why a call was flagged. The score feeds billing's per-campaign
`quality_threshold` (ppcswitch.qualification): at or above it, the call is not billable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ppcswitch.fraud import signals as s

# Points per signal. Chosen so that one strong signal (a blocked or impossible
# caller, a failed challenge, nobody speaking) reaches a typical threshold of
# 40-50 on its own, while weak ones (attestation B, a single near-threshold call)
# only matter together.
WEIGHTS: dict[str, int] = {
    s.BLOCKED: 100,
    s.CHALLENGE_FAILED: 60,
    s.NO_CONVERSATION + ":nobody_spoke": 50,
    s.NO_CONVERSATION + ":caller_silent": 40,
    s.CALLER_INVALID: 40,
    s.CALLER_CANNOT_CALL: 40,
    s.REPEAT_PUBLISHERS: 35,
    s.VELOCITY: 30,
    s.CALLER_ANONYMOUS: 25,
    s.ATTESTATION_C: 25,
    s.NEAR_THRESHOLD_PUBLISHER: 20,
    s.ATTESTATION_NONE: 15,
    s.STATE_MISMATCH: 15,
    s.ATTESTATION_B: 10,
    s.NEAR_THRESHOLD: 10,
}


@dataclass(frozen=True)
class Finding:
    signal: str  # a name from ppcswitch.fraud.signals
    detail: str = ""  # e.g. "2 other publishers in 24 h", "caller_silent"

    @property
    def key(self) -> str:
        return f"{self.signal}:{self.detail}" if self.signal == s.NO_CONVERSATION else self.signal


@dataclass(frozen=True)
class Score:
    value: int  # 0-100
    explanation: list[dict] = field(default_factory=list)  # [{"signal", "points", "detail"}], worst first

    @property
    def flags(self) -> list[str]:
        return [e["signal"] for e in self.explanation]


def score(findings: list[Finding], weights: dict[str, int] | None = None) -> Score:
    """Add up the findings' points (cap 100)."""
    weights = WEIGHTS if weights is None else weights
    rows = [{"signal": f.signal, "points": weights.get(f.key, 0), "detail": f.detail} for f in findings]
    rows.sort(key=lambda r: -r["points"])
    return Score(max(0, min(100, sum(r["points"] for r in rows))), rows)


def explain(result: Score) -> str:
    """One line for logs and the CLI: '55 = no_conversation +40 (caller_silent), attestation_none +15'."""
    parts = [f"{r['signal']} +{r['points']}" + (f" ({r['detail']})" if r["detail"] else "") for r in result.explanation]
    return f"{result.value} = " + (", ".join(parts) if parts else "no signals")


def with_external(result: Score, points: int, detail: str) -> Score:
    """The score with an external scorer's points added (cap 100)."""
    if not points:
        return result
    rows = sorted(result.explanation + [{"signal": "external_scorer", "points": int(points), "detail": detail}],
                  key=lambda r: -r["points"])
    return Score(max(0, min(100, sum(r["points"] for r in rows))), rows)
