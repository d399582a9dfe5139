"""Attribution in the controller: the public lease endpoint and DNI script, calls' attribution, the outbox loop.

The call path (AGI) reads leases from memory only; pools are reloaded from the
database when the configuration version changes, shortages are written back
through the writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

from aiohttp import web

from ppcswitch import keys
from ppcswitch.attribution import store
from ppcswitch.attribution.clean import TAGS, clean
from ppcswitch.attribution.pools import Pools
from ppcswitch.attribution.ratelimit import RateLimiter
from ppcswitch.config import AttributionSettings
from ppcswitch.numbers import to_e164

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
FIELDS = ("sub_id", "click_id", *TAGS)
MAX_PENDING = 100_000  # calls in progress whose attribution waits for their record


def parse_sip_headers(spec: str) -> list[tuple[str, str]]:
    """"X-Sub-Id=sub_id,X-Click-Id=click_id" -> [(header, field)]; header names must be SIP tokens."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        header, _, name = part.partition("=")
        header, name = header.strip(), name.strip()
        if not header or clean(header) != header or "." in header or name not in FIELDS:
            raise ValueError(f"attribution.sip_headers: {part!r} is not Header=field (fields: {', '.join(FIELDS)})")
        out.append((header, name))
    return out


def display(number: str) -> str:
    """+18005550150 -> (800) 555-0150; other countries stay E.164."""
    if number.startswith("+1") and len(number) == 12:
        return f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    return number


class Attribution:
    def __init__(self, settings: AttributionSettings, region: str = "US", clock=time.time) -> None:
        self.settings, self.region, self.clock = settings, region, clock
        self.pools = Pools()
        self.sip_headers = parse_sip_headers(settings.sip_headers)
        self.per_client = RateLimiter(settings.lease_rate_per_client, settings.lease_burst_per_client)
        self.per_publisher = RateLimiter(settings.lease_rate_per_publisher, settings.lease_burst_per_publisher)
        self.pending: OrderedDict[str, dict] = OrderedDict()  # linkedid -> attribution, until the record
        self.new_shortages: dict[int, int] = defaultdict(int)  # pool id -> count not yet stored
        self.on_shortage = lambda pool: None  # metrics hook
        self.script = (HERE / "static" / "dni.js").read_bytes()

    # -- the call path (sync, memory only) --------------------------------------

    def on_call(self, linkedid: str, dialled: str, header_values: dict[str, str]) -> dict:
        """A new call: the live lease on the dialled number, then SIP header values, kept for its record."""
        found: dict = {}
        number = to_e164(dialled, self.region)
        lease = self.pools.attribution(number, self.clock()) if number else None
        if lease is not None:
            found.update(lease.values)
            found["source"], found["pool_id"] = "lease", lease.pool_id
        sip = {k: clean(v, 128 if k == "click_id" else 64) for k, v in header_values.items()}
        sip = {k: v for k, v in sip.items() if v}
        if sip:
            found.update(sip)
            found["source"] = "sip"
        if found and linkedid:
            self.pending[linkedid] = found
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
        return found

    def values_of(self, linkedid: str) -> dict:
        """The attribution a call has so far (asked by the route handler, for RTB pings)."""
        return self.pending.get(linkedid) or {}

    def on_code(self, linkedid: str, outcome) -> None:
        """The caller's answer at the publisher code prompt (routing.service.CodeOutcome), for the record.

        A code naming another publisher than the number's drops the lease's / headers' values (they came
        with the number's own traffic); a sub-ID code sets the sub-ID."""
        if not linkedid:
            return
        found = {} if outcome.other_publisher else dict(self.pending.get(linkedid) or {})
        code = outcome.code
        if code is not None:
            if code.sub_id:
                found["sub_id"] = code.sub_id
            found["source"] = "ivr"
        found["ivr_code"] = outcome.digits
        found["ivr_code_status"] = outcome.status  # matched | unknown | none
        self.pending[linkedid] = found
        self.pending.move_to_end(linkedid)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def stamp(self, record) -> None:
        """Put a finished call's attribution on its record (before it is stored)."""
        found = self.pending.pop(record.linkedid, None)
        if not found:
            return
        record.sub_id = found.get("sub_id", "")
        record.click_id = found.get("click_id", "")
        record.attribution = {k: v for k, v in found.items() if k not in ("sub_id", "click_id")}

    # -- HTTP -------------------------------------------------------------------

    async def lease_view(self, request: web.Request) -> web.Response:
        """GET /dni/v1/lease?key=...&sub_id=...&click_id=...&utm_...&token=...: a number for this visitor."""
        now = self.clock()
        q = request.query
        if not self.per_client.allow(request.remote, now):
            return _error(429, "rate_limited", "too many requests from this address")
        pool = self.pools.pool_for_key(q.get("key", ""))
        if pool is None:
            return _error(403, "unknown_key", "unknown publisher key")
        if not self.per_publisher.allow(pool.publisher_id, now):
            return _error(429, "rate_limited", "too many requests for this publisher")
        values = {}
        for name in FIELDS:
            v = clean(q.get(name, ""), 128 if name == "click_id" else 64)
            if v:
                values[name] = v
        try:
            lease, shortage = self.pools.lease(pool.id, values, now, token=q.get("token", "")[:64])
        except LookupError as exc:
            return _error(503, "pool_empty", str(exc))
        if shortage:
            self.new_shortages[pool.id] += 1
            self.on_shortage(pool)
        return web.json_response(
            {"number": lease.number, "display": display(lease.number), "token": lease.token,
             "lease_seconds": pool.lease_seconds, "renew_seconds": max(5, pool.lease_seconds // 2)},
            headers=_PUBLIC)

    async def script_view(self, request: web.Request) -> web.Response:
        return web.Response(body=self.script, content_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"})


_PUBLIC = {"Access-Control-Allow-Origin": "*", "Cache-Control": "no-store"}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "code": code, "message": message}}, status=status,
                             headers=_PUBLIC)


def setup(app: web.Application, settings) -> None:
    """Create the attribution service and its public routes (before the app starts)."""
    attribution = Attribution(settings.attribution, settings.routing.default_region)
    app[keys.ATTRIBUTION] = attribution
    metrics = app.get(keys.METRICS)
    if metrics is not None:
        attribution.on_shortage = lambda pool: metrics.pool_shortages.labels(pool.name).inc()
    app.router.add_get("/dni/v1/lease", attribution.lease_view)
    app.router.add_get("/dni/v1/dni.js", attribution.script_view)


async def attribution_ctx(app: web.Application):
    """Pools from the database (and on every configuration change); the postback outbox loop."""
    from ppcswitch.attribution.outbox import deliver_loop
    from ppcswitch.storage import repo

    attribution, settings = app[keys.ATTRIBUTION], app[keys.SETTINGS]
    metrics = app.get(keys.METRICS)

    def on_result(kind: str, result: str) -> None:
        if metrics is not None:
            metrics.postbacks.labels(kind, result).inc()
    async with app[keys.SESSIONS]() as session:
        version = await repo.config_version(session)
        attribution.pools.replace(await store.load_pools(session))

    async def reload_loop():
        nonlocal version
        while True:
            await asyncio.sleep(settings.routing.reload_interval)
            try:
                async with app[keys.SESSIONS]() as session:
                    current = await repo.config_version(session)
                    if current != version:
                        attribution.pools.replace(await store.load_pools(session))
                        version = current
                if attribution.new_shortages:
                    counts, attribution.new_shortages = dict(attribution.new_shortages), defaultdict(int)
                    app[keys.WRITER].submit(lambda s: store.add_shortages(s, counts))
            except Exception:
                log.exception("reloading number pools failed; keeping the current ones")

    tasks = [asyncio.create_task(reload_loop()),
             asyncio.create_task(deliver_loop(app[keys.SESSIONS], app[keys.WRITER], settings.attribution, on_result))]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
