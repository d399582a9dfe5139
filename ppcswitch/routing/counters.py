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


# What one scope counts, per local period (keys: Local.hour/day/month), in Counters.n under
# (scope key, what, period): a scope is a buyer (key: its id), a campaign link (("l", campaign id,
# buyer id)), a campaign (("c", id)) or a publisher (("p", id)). Calls are counted three ways, so each
# cap can count what its operator means (Rules.cap_counts): "h"/"d"/"m" connected calls (at the
# answer), "rh"/"rd"/"rm" routed calls (every hand-off to a buyer, at its dial), "bh"/"bd"/"bm"
# billable calls (at the answer); "rev_d"/"rev_m" the money billed (revenue for buyers, links and
# campaigns, payout for publishers; settled amounts only). One flat dictionary of tuples of plain
# values: the garbage collector untracks such tuples, so thousands of scopes cost it nothing, where
# a dictionary per scope and period kind made its full collections take tens of milliseconds.
# Rules.cap_counts -> the prefix of its counts in Counters.n and its key in Counters.totals.
FAMILY = {"connected": "", "routed": "r", "billable": "b"}


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
        self.n: dict[tuple, int] = {}  # (scope key, what, period) -> count or cents (see above)
        self._total = Totals(self.forget)
        # Routed and billable calls ever, per (family prefix, scope key); connected ones are in `total`.
        self.totals: dict[tuple, int] = {}
        # Reservations of calls in flight (routing.reservations): scope key -> [calls holding one (not
        # settled yet), of them legs that may still connect, money they may still cost (cents)].
        self.held: dict[object, list[int]] = {}
        # caller -> {buyer id: calls holding a reservation with it now}: the duplicate rule reads them
        # as well as past deliveries, so a caller on a call with a buyer is not offered to it again.
        self.on_call: dict[str, dict[int, int]] = {}
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

    def periods(self, buyer_id, lt: Local, family: str = "") -> tuple[int, int, int, int, int]:
        """(calls this hour, today, this month, money today, this month) of a scope at local periods
        `lt`; `family`: FAMILY's prefix of the calls counted ("" connected, "r" routed, "b" billable)."""
        get = self.n.get
        return (get((buyer_id, family + "h", lt.hour), 0), get((buyer_id, family + "d", lt.day), 0),
                get((buyer_id, family + "m", lt.month), 0), get((buyer_id, "rev_d", lt.day), 0),
                get((buyer_id, "rev_m", lt.month), 0))

    def total_of(self, key, family: str = "") -> int:
        """Calls ever of a scope, counted as `family` says."""
        return self.total.get(key, 0) if not family else self.totals.get((family, key), 0)

    def _bump(self, key, what: str, lt: Local, n: int) -> None:
        counts = self.n
        for k in ((key, what + "h", lt.hour), (key, what + "d", lt.day), (key, what + "m", lt.month)):
            counts[k] = counts.get(k, 0) + n

    def add(self, key, tz: str, epoch: float, family: str, n: int = 1) -> None:
        """`n` calls of `family` ("" connected, "r" routed, "b" billable) to a scope at `epoch`."""
        self.forget(key)
        self._bump(key, family, local(tz, epoch), n)
        if family:
            self.totals[(family, key)] = self.totals.get((family, key), 0) + n
        else:
            self.total[key] = self.total.get(key, 0) + n
        self._records += 1
        if self._records % 200_000 == 0:
            self.prune(epoch)

    def add_money(self, key, tz: str, epoch: float, cents: int) -> None:
        """Money billed to (or, for a publisher, paid for) a scope at `epoch`."""
        if not cents:
            return
        lt = local(tz, epoch)
        self.forget(key)
        counts = self.n
        for k in ((key, "rev_d", lt.day), (key, "rev_m", lt.month)):
            counts[k] = counts.get(k, 0) + cents

    def deliver(self, caller: str, buyer_id: int, epoch: float) -> None:
        """The caller was connected to the buyer at `epoch` (duplicate rule, repeat callers)."""
        seen = self.delivered.setdefault(caller, {})
        if epoch > seen.get(buyer_id, 0.0):
            seen[buyer_id] = epoch
        if epoch >= self.latest.get(caller, (0.0, 0))[0]:
            self.latest[caller] = (epoch, buyer_id)

    def offered(self, buyer_id: int, epoch: float) -> None:
        if epoch > self.last_offer.get(buyer_id, 0.0):
            self.last_offer[buyer_id] = epoch

    def delivered_call(self, buyer_id: int, tz: str, epoch: float, caller: str = "", revenue_cents: int = 0) -> None:
        """A call connected to this buyer at `epoch` (its answer time): its connected count, its
        revenue and the caller's delivery (routing.reservations.count does this for settled calls)."""
        self.add(buyer_id, tz, epoch, "")
        self.add_money(buyer_id, tz, epoch, revenue_cents)
        if caller:
            self.deliver(caller, buyer_id, epoch)
        self.offered(buyer_id, epoch)

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
        per_day = {"h": 48, "rh": 48, "bh": 48, "d": 1, "rd": 1, "bd": 1, "rev_d": 1}
        for k in [k for k in self.n if k[1] in per_day and today - k[2] // per_day[k[1]] > 2]:
            del self.n[k]
