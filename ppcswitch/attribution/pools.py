"""Number pools and leases, in memory (the call path reads them, never the database).

A pool's numbers are kept in least-recently-leased order, and a lease lasts the
pool's lease_seconds from its last renewal, so the first number is always the
one whose lease ends first: free if it has ended, else the pool is exhausted and
that oldest lease is reused (a shortage). O(1) per lease.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    campaign_id: int
    publisher_id: int
    key: str
    lease_seconds: int
    numbers: tuple[str, ...]  # E.164


@dataclass
class Lease:
    number: str
    pool_id: int
    token: str
    values: dict[str, str]
    leased_at: float
    expires_at: float


@dataclass
class _PoolState:
    pool: Pool
    order: OrderedDict = field(default_factory=OrderedDict)  # number -> Lease | None, oldest first
    shortages: int = 0
    tokens: dict = field(default_factory=dict)  # lease token -> number


class Pools:
    def __init__(self) -> None:
        self._pools: dict[int, _PoolState] = {}
        self._by_key: dict[str, int] = {}
        self._by_number: dict[str, _PoolState] = {}

    def replace(self, pools: list[Pool]) -> None:
        """A new configuration: leases on numbers still in the same pool are kept."""
        new: dict[int, _PoolState] = {}
        for p in pools:
            old = self._pools.get(p.id)
            state = _PoolState(p, shortages=old.shortages if old else 0)
            kept = old.order if old else {}
            members = set(p.numbers)
            for n in p.numbers:  # never-leased numbers first, then the old order
                if kept.get(n) is None:
                    state.order[n] = None
            for n, lease in kept.items():
                if lease is not None and n in members:
                    state.order[n] = lease
                    state.order.move_to_end(n)
                    state.tokens[lease.token] = n
            new[p.id] = state
        self._pools = new
        self._by_key = {s.pool.key: pid for pid, s in new.items()}
        self._by_number = {n: s for s in new.values() for n in s.pool.numbers}

    def pool_for_key(self, key: str) -> Pool | None:
        pid = self._by_key.get(key)
        return self._pools[pid].pool if pid is not None else None

    def shortages(self, pool_id: int) -> int:
        s = self._pools.get(pool_id)
        return s.shortages if s else 0

    def lease(self, pool_id: int, values: dict[str, str], now: float, token: str = "") -> tuple[Lease, bool]:
        """A number for one visitor (renewed when `token` still holds it); (lease, shortage)."""
        state = self._pools[pool_id]
        if not state.order:
            raise LookupError(f"pool {state.pool.name!r} has no numbers")
        ttl = state.pool.lease_seconds
        if token:
            n = state.tokens.get(token)
            lease = state.order.get(n) if n is not None else None
            if lease is not None and lease.token == token and lease.expires_at > now:
                lease.expires_at = now + ttl
                state.order.move_to_end(n)
                return lease, False
        number, current = next(iter(state.order.items()))
        shortage = current is not None and current.expires_at > now
        if shortage:
            state.shortages += 1
        lease = Lease(number, pool_id, secrets.token_urlsafe(12), dict(values), now, now + ttl)
        if current is not None:
            state.tokens.pop(current.token, None)
        state.order[number] = lease
        state.order.move_to_end(number)
        state.tokens[lease.token] = number
        return lease, shortage

    def attribution(self, number: str, now: float) -> Lease | None:
        """The live lease on a number (a call to it now belongs to that visitor), else None."""
        state = self._by_number.get(number)
        if state is None:
            return None
        lease = state.order.get(number)
        return lease if lease is not None and lease.expires_at > now else None

    def leased_now(self, pool_id: int, now: float) -> int:
        """Numbers of the pool held by a visitor's live lease (for the pools page; O(numbers))."""
        s = self._pools.get(pool_id)
        return sum(1 for lease in s.order.values() if lease is not None and lease.expires_at > now) if s else 0

    def is_pool_number(self, number: str) -> bool:
        return number in self._by_number
