"""Per-buyer counts the rules need: calls per local hour/day/month and in total,
revenue per local day/month, the last call handed out, and who was delivered
to whom (duplicate rule, repeat callers).

In memory, fed by each finished call record and rebuilt from the stored call
records when the controller starts (storage.repo.recent_deliveries), so a
restart loses nothing. Periods are the buyer's own local clock periods: an
hour key carries `fold`, so the hour repeated when DST ends is a new hour.
"""

from __future__ import annotations

from datetime import date, datetime

from ppcswitch.routing.rules import zone


class Local:
    """Integer period keys (cheap to hash on every check) and the wall-clock facts schedules need."""

    __slots__ = ("hour", "day", "month", "time", "date", "weekday", "minute")

    def __init__(self, hour: int, day: int, month: int, time: datetime, date_: date, weekday: int, minute: int):
        self.hour = hour  # (day ordinal * 24 + hour) * 2 + fold
        self.day = day  # date ordinal
        self.month = month  # year * 12 + month
        self.time = time
        self.date = date_
        self.weekday = weekday
        self.minute = minute  # minute of the day


_memo: dict[tuple[str, int], Local] = {}
_last: dict[str, tuple[float, float, Local]] = {}  # tz -> (minute start, minute end, Local): the hot path


def local(tz: str, epoch: float) -> Local:
    """The local periods of an instant in zone `tz` (memoised per minute: offsets change on minutes)."""
    last = _last.get(tz)
    if last is not None and last[0] <= epoch < last[1]:
        return last[2]
    minute = int(epoch // 60)
    key = (tz, minute)
    hit = _memo.get(key)
    if hit is not None:
        _last[tz] = (minute * 60.0, minute * 60.0 + 60.0, hit)
        return hit
    t = datetime.fromtimestamp(epoch, zone(tz))
    d = t.date()
    day = d.toordinal()
    hit = Local((day * 24 + t.hour) * 2 + t.fold, day, t.year * 12 + t.month, t, d, d.weekday(), t.hour * 60 + t.minute)
    if len(_memo) > 4096:
        _memo.clear()
    _memo[key] = hit
    _last[tz] = (minute * 60.0, minute * 60.0 + 60.0, hit)
    return hit


class BuyerCounts:
    """One buyer's connected calls and revenue per local period (keys: Local.hour/day/month)."""

    __slots__ = ("h", "d", "m", "rev_d", "rev_m")

    def __init__(self) -> None:
        self.h: dict[tuple, int] = {}
        self.d: dict[tuple, int] = {}
        self.m: dict[tuple, int] = {}
        self.rev_d: dict[tuple, int] = {}
        self.rev_m: dict[tuple, int] = {}


class Counters:
    def __init__(self) -> None:
        self.per_buyer: dict[int, BuyerCounts] = {}
        self.total: dict[int, int] = {}
        self.last_offer: dict[int, float] = {}  # buyer -> epoch of the last call handed to it
        self.delivered: dict[str, dict[int, float]] = {}  # caller -> {buyer: epoch of last delivery}
        self.latest: dict[str, tuple[float, int]] = {}  # caller -> (epoch, buyer) of the last delivery
        self._records = 0

    def offered(self, buyer_id: int, epoch: float) -> None:
        if epoch > self.last_offer.get(buyer_id, 0.0):
            self.last_offer[buyer_id] = epoch

    def delivered_call(self, buyer_id: int, tz: str, epoch: float, caller: str = "", revenue_cents: int = 0) -> None:
        """A call connected to this buyer at `epoch` (its answer time)."""
        lt = local(tz, epoch)
        b = self.per_buyer.get(buyer_id)
        if b is None:
            b = self.per_buyer[buyer_id] = BuyerCounts()
        for counts, period in ((b.h, lt.hour), (b.d, lt.day), (b.m, lt.month)):
            counts[period] = counts.get(period, 0) + 1
        self.total[buyer_id] = self.total.get(buyer_id, 0) + 1
        if revenue_cents:
            for counts, period in ((b.rev_d, lt.day), (b.rev_m, lt.month)):
                counts[period] = counts.get(period, 0) + revenue_cents
        if caller:
            seen = self.delivered.setdefault(caller, {})
            if epoch > seen.get(buyer_id, 0.0):
                seen[buyer_id] = epoch
            if epoch >= self.latest.get(caller, (0.0, 0))[0]:
                self.latest[caller] = (epoch, buyer_id)
        self.offered(buyer_id, epoch)
        self._records += 1
        if self._records % 10_000 == 0:
            self.prune(epoch)

    def count(self, buyer_id: int, kind: str, period: tuple) -> int:
        b = self.per_buyer.get(buyer_id)
        return getattr(b, kind).get(period, 0) if b is not None else 0

    def spent(self, buyer_id: int, kind: str, period: tuple) -> int:
        b = self.per_buyer.get(buyer_id)
        return getattr(b, "rev_" + kind).get(period, 0) if b is not None else 0

    def last_delivery(self, caller: str, buyer_id: int) -> float | None:
        seen = self.delivered.get(caller)
        return seen.get(buyer_id) if seen else None

    def last_buyer(self, caller: str) -> int | None:
        """The buyer this caller was last delivered to (repeat-caller routing)."""
        latest = self.latest.get(caller)
        return latest[1] if latest else None

    def prune(self, now: float, keep_days: int = 400) -> None:
        """Forget periods long past and deliveries older than any duplicate window."""
        cutoff = now - keep_days * 86400
        for caller in [c for c, seen in self.delivered.items() if max(seen.values()) < cutoff]:
            del self.delivered[caller]
            self.latest.pop(caller, None)
        today = datetime.fromtimestamp(now).date().toordinal()
        for b in self.per_buyer.values():
            for counts, per_day in ((b.h, 48), (b.d, 1), (b.rev_d, 1)):
                for k in [k for k in counts if today - k // per_day > 2]:
                    del counts[k]
