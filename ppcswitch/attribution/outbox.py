"""Delivery of the postback outbox: signed HTTP POSTs, retried with back-off, every attempt logged.

The outbox rows are written with the call's billing decision (one transaction),
so nothing is lost across restarts; a row is marked delivered (through the
writer) before the next one is looked at. A crash between a receiver's 2xx and
that mark would send it again: receivers dedupe on the X-Ppcswitch-Delivery id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import aiohttp

from ppcswitch.attribution import postback, store
from ppcswitch.config import AttributionSettings

log = logging.getLogger(__name__)
IDLE_SECONDS = 0.5  # how often an empty outbox is looked at


async def deliver_one(http: aiohttp.ClientSession, row, secret: str, settings: AttributionSettings):
    """Send one notification; returns (delivered, status code, error, ms)."""
    body = row.body.encode()
    ts = int(time.time())
    headers = {"Content-Type": "application/json", postback.TIMESTAMP_HEADER: str(ts),
               postback.SIGNATURE_HEADER: postback.sign(secret, ts, body), postback.DELIVERY_HEADER: str(row.id)}
    started = time.monotonic()
    try:
        async with http.post(row.url, data=body, headers=headers, allow_redirects=False,
                             timeout=aiohttp.ClientTimeout(total=settings.postback_timeout)) as resp:
            await resp.read()
            ok = 200 <= resp.status < 300
            return ok, resp.status, "" if ok else f"HTTP {resp.status}", int((time.monotonic() - started) * 1000)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        return False, None, (str(exc) or type(exc).__name__)[:300], int((time.monotonic() - started) * 1000)


async def deliver_due(sessionmaker, writer, http, settings: AttributionSettings, on_result=None) -> int:
    async with sessionmaker() as session:
        rows = await store.due(session)
    for row, secret in rows:
        ok, code, error, ms = await deliver_one(http, row, secret, settings)
        attempts = row.attempts + 1
        retry_at = None
        if not ok and attempts < settings.postback_max_attempts:
            delay = postback.backoff(attempts, settings.postback_retry_min, settings.postback_retry_max)
            retry_at = datetime.now(timezone.utc) + timedelta(seconds=delay)
        # Booked before the next row is sent (waiting for room if the writer is behind).
        await (await writer.submit_wait(lambda s, i=row.id, c=code, e=error, m=ms, d=ok, r=retry_at:
                                        store.record_attempt(s, i, c, e, m, d, r)))
        if on_result is not None:
            on_result(row.kind, "delivered" if ok else "retry" if retry_at else "failed")
        if not ok:
            log.info("postback %s to %s failed (%s); attempt %s", row.id, row.url.split("?")[0], error, attempts)
    return len(rows)


async def deliver_loop(sessionmaker, writer, settings: AttributionSettings, on_result=None) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                if await deliver_due(sessionmaker, writer, http, settings, on_result):
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("postback delivery pass failed; trying again")
            await asyncio.sleep(IDLE_SECONDS)
