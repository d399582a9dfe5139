"""Alerts: a publisher's flagged rate or a buyer's unanswered rate over a sliding window. Pure.

A subject is alerted once when its rate reaches the threshold with enough calls
in the window, and again only after it has dropped below (no alert storm).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PUBLISHER_FLAGGED = "publisher_flagged_rate"
BUYER_UNANSWERED = "buyer_unanswered_rate"


@dataclass(frozen=True)
class Alert:
    kind: str  # PUBLISHER_FLAGGED | BUYER_UNANSWERED
    subject_id: int  # publisher or buyer id
    bad: int  # flagged (or unanswered) calls in the window
    total: int
    threshold: float

    @property
    def rate(self) -> float:
        return self.bad / self.total if self.total else 0.0


class RateWindow:
    """Outcomes (at, bad) of one subject's calls in the last `window` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.events: deque[tuple[float, bool]] = deque()

    def add(self, at: float, bad: bool) -> None:
        self.events.append((at, bad))

    def counts(self, now: float) -> tuple[int, int]:
        """(bad, total) within [now - window, now]."""
        while self.events and self.events[0][0] < now - self.window:
            self.events.popleft()
        return sum(1 for _, b in self.events if b), len(self.events)


def crossed(bad: int, total: int, rate: float, min_calls: int) -> bool:
    """At least `min_calls` calls in the window and bad/total >= rate (rate <= 0: never)."""
    return rate > 0 and total >= max(1, min_calls) and bad / total >= rate


class Monitor:
    """Windows per (kind, subject) and which subjects are currently alerted."""

    def __init__(self, window: float, min_calls: int, thresholds: dict[str, float]) -> None:
        self.window, self.min_calls, self.thresholds = window, min_calls, thresholds
        self.windows: dict[tuple[str, int], RateWindow] = {}
        self.active: set[tuple[str, int]] = set()

    def observe(self, kind: str, subject_id: int | None, at: float, bad: bool) -> Alert | None:
        """Count one call; returns an Alert when this call makes the subject cross its threshold."""
        if subject_id is None or kind not in self.thresholds:
            return None
        key = (kind, subject_id)
        w = self.windows.setdefault(key, RateWindow(self.window))
        w.add(at, bad)
        n_bad, total = w.counts(at)
        if crossed(n_bad, total, self.thresholds[kind], self.min_calls):
            if key not in self.active:
                self.active.add(key)
                return Alert(kind, subject_id, n_bad, total, self.thresholds[kind])
        else:
            self.active.discard(key)
        return None
