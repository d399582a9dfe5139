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

    __slots__ = ("hour", "day", "month", "time", "date", "weekday", "minute", "week_minute")

    def __init__(self, hour: int, day: int, month: int, time: datetime, date_: date, weekday: int, minute: int):
        self.hour = hour  # (day ordinal * 24 + hour) * 2 + fold
        self.day = day  # date ordinal
        self.month = month  # year * 12 + month
        self.time = time
        self.date = date_
        self.weekday = weekday
        self.minute = minute  # minute of the day
        self.week_minute = weekday * 1440 + minute  # minute of the week, Monday 00:00 = 0 (plan.week_bits)


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


HOURS_KEPT = 48  # local hours with remembered answers: calls come in at about now, in a few zones


class Totals(dict):
    """Connected calls per buyer, ever (cap_total). A change drops what routing remembered of the buyer,
    also when made from outside (storage.repo_routing.load_history updates it at start)."""

    __slots__ = ("_changed",)

    def __init__(self, changed, *args) -> None:
        super().__init__(*args)
        self._changed = changed  # Counters.forget(buyer id or None)

    def __setitem__(self, buyer_id, n) -> None:
        dict.__setitem__(self, buyer_id, n)
        self._changed(buyer_id)

    def __delitem__(self, buyer_id) -> None:
        dict.__delitem__(self, buyer_id)
        self._changed(buyer_id)

    # Every other change: forget all buyers.
    def update(self, *args, **kwargs) -> None:
        dict.update(self, *args, **kwargs)
        self._changed(None)

    def __ior__(self, other):
        dict.update(self, other)
        self._changed(None)
        return self

    def pop(self, *args):
        out = dict.pop(self, *args)
        self._changed(None)
        return out

    def popitem(self):
        out = dict.popitem(self)
        self._changed(None)
        return out

    def setdefault(self, buyer_id, n=None):
        out = dict.setdefault(self, buyer_id, n)
        self._changed(None)
        return out

    def clear(self) -> None:
        dict.clear(self)
        self._changed(None)


class Counters:
    def __init__(self) -> None:
        self.per_buyer: dict[int, BuyerCounts] = {}
        self._total = Totals(self.forget)
        self.last_offer: dict[int, float] = {}  # buyer -> epoch of the last call handed to it
        self.delivered: dict[str, dict[int, float]] = {}  # caller -> {buyer: epoch of last delivery}
        self.latest: dict[str, tuple[float, int]] = {}  # caller -> (epoch, buyer) of the last delivery
        self._records = 0
        # Local.hour -> {key: answer}: what routing worked out from one buyer's counts at that local hour
        # (routing.plan: how far each cap is), so a call reads one entry per buyer, not five counts.
        # An hour key fixes the day and month keys, whatever the zone. A buyer's answers are dropped
        # when its counts change (delivered_call), all of them on prune.
        self.hours: dict[int, dict] = {}
        self._keys: dict[int, set] = {}  # buyer -> its keys in self.hours

    @property
    def total(self) -> Totals:
        return self._total

    @total.setter
    def total(self, value: dict[int, int]) -> None:
        self._total = Totals(self.forget, value)
        self.forget()

    def hour(self, lt: Local) -> dict:
        """The answers remembered at local hour `lt` (see remember)."""
        got = self.hours.get(lt.hour)
        if got is None:
            if len(self.hours) >= HOURS_KEPT:
                self.forget()
            got = self.hours[lt.hour] = {}
        return got

    def remember(self, lt: Local, buyer_id: int, key, answer) -> None:
        """Keep an answer worked out from this buyer's counts at local hour `lt`, until they change."""
        self.hour(lt)[key] = answer
        keys = self._keys.get(buyer_id)
        if keys is None:
            keys = self._keys[buyer_id] = set()
        keys.add(key)

    def forget(self, buyer_id: int | None = None) -> None:
        """Drop the remembered answers of one buyer (None: of all buyers)."""
        if buyer_id is None:
            self.hours.clear()
            self._keys.clear()
            return
        keys = self._keys.pop(buyer_id, None)
        if keys:
            for answers in self.hours.values():
                for key in keys:
                    answers.pop(key, None)

    def periods(self, buyer_id: int, lt: Local) -> tuple[int, int, int, int, int]:
        """(calls this hour, today, this month, revenue today, this month) at local periods `lt`."""
        b = self.per_buyer.get(buyer_id)
        if b is None:
            return (0, 0, 0, 0, 0)
        return (b.h.get(lt.hour, 0), b.d.get(lt.day, 0), b.m.get(lt.month, 0), b.rev_d.get(lt.day, 0),
                b.rev_m.get(lt.month, 0))

    def offered(self, buyer_id: int, epoch: float) -> None:
        if epoch > self.last_offer.get(buyer_id, 0.0):
            self.last_offer[buyer_id] = epoch

    def delivered_call(self, buyer_id: int, tz: str, epoch: float, caller: str = "", revenue_cents: int = 0) -> None:
        """A call connected to this buyer at `epoch` (its answer time)."""
        lt = local(tz, epoch)
        b = self.per_buyer.get(buyer_id)
        if b is None:
            b = self.per_buyer[buyer_id] = BuyerCounts()
        self.forget(buyer_id)
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
        self.forget()
        for b in self.per_buyer.values():
            for counts, per_day in ((b.h, 48), (b.d, 1), (b.rev_d, 1)):
                for k in [k for k in counts if today - k // per_day > 2]:
                    del counts[k]
