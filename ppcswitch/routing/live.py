"""Live calls per buyer and the routing state of calls in progress (in memory)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ppcswitch.routing.engine import CallFacts, Decision


class LiveCalls:
    """Buyer legs that are ringing or connected, counted per buyer.

    A slot is taken when the controller hands a buyer to the dialplan (before
    the Dial, so simultaneous calls cannot all slip under a cap) and released
    once, whichever of DialEnd, the buyer leg's Hangup or the call's end is seen first.
    """

    def __init__(self) -> None:
        self._slots: dict[tuple[str, int], int] = {}  # (linkedid, attempt) -> buyer id
        self._counts: Counter[int] = Counter()

    @property
    def counts(self) -> Counter[int]:
        """Legs per buyer id, read by routing.engine.route (absent: none). Not to be changed."""
        return self._counts

    def count(self, buyer_id: int) -> int:
        return self._counts.get(buyer_id, 0)

    def take(self, linkedid: str, attempt: int, buyer_id: int) -> None:
        key = (linkedid, attempt)
        if key in self._slots:
            return
        self._slots[key] = buyer_id
        self._counts[buyer_id] += 1

    def release(self, linkedid: str, attempt: int) -> None:
        buyer_id = self._slots.pop((linkedid, attempt), None)
        if buyer_id is not None:
            self._counts[buyer_id] -= 1
            if self._counts[buyer_id] <= 0:
                del self._counts[buyer_id]

    def release_call(self, linkedid: str) -> None:
        for key in [k for k in self._slots if k[0] == linkedid]:
            self.release(*key)

    def snapshot(self) -> dict[int, int]:
        return dict(self._counts)

    # -- rebuilt from Asterisk after a (re)connect (ppcswitch.recovery) ---------
    def has_call(self, linkedid: str) -> bool:
        return any(k[0] == linkedid for k in self._slots)

    def retain(self, live_linkedids: set[str]) -> None:
        """Release the slots of calls Asterisk no longer has (they ended while AMI was down)."""
        for linkedid in {k[0] for k in self._slots} - live_linkedids:
            self.release_call(linkedid)


@dataclass
class CallRoute:
    """What the controller decided for one call, kept until the call ends."""

    linkedid: str
    facts: CallFacts
    decision: Decision
    next_index: int = 0  # index into decision.candidates of the next buyer to try
    attempts: list[int] = field(default_factory=list)  # buyer id per attempt, in order
    code_tries: int = 0  # publisher code prompts answered (IVR)
    created: float = field(default_factory=time.monotonic)


class CallRoutes:
    def __init__(self) -> None:
        self._routes: dict[str, CallRoute] = {}
        # Routes of calls just finished, until their record is stored with its trace.
        self.finished: dict[str, CallRoute] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, route: CallRoute) -> None:
        self._routes[route.linkedid] = route

    def get(self, linkedid: str) -> CallRoute | None:
        return self._routes.get(linkedid)

    def pop(self, linkedid: str) -> CallRoute | None:
        route = self._routes.pop(linkedid, None)
        if route is not None:
            self.finished[linkedid] = route
            if len(self.finished) > 10_000:  # records never claimed (no trace store): forget the oldest
                del self.finished[next(iter(self.finished))]
        return route

    def sweep(self, max_age: float, now: float | None = None) -> list[str]:
        """Forget routes of calls whose end was never seen (AMI down); returns their ids."""
        now = time.monotonic() if now is None else now
        old = [k for k, r in self._routes.items() if now - r.created > max_age]
        for k in old:
            del self._routes[k]
        return old
