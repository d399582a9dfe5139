"""Call intelligence inside the controller: queueing recorded calls, feeding the worker processes,
storing results (and re-rating the call), metrics, retention.

The CPU-heavy work (speech to text) runs in separate processes (a spawn-context process pool, at
lower CPU priority): the event loop that answers FastAGI only waits on their futures. The queue is
the `transcripts` table: a call is queued by a database write after its record, taken in order by
the feeder, and a restart loses nothing (rows a stopped controller was working on are queued again).
Back-pressure never reaches calls: past `intelligence.queue_max` waiting calls, new recordings are
stored as `skipped` (counted) instead of queued.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timedelta, timezone
from typing import Callable

from aiohttp import web

from ppcswitch import keys
from ppcswitch.calls import CallRecord
from ppcswitch.fraud import alerts as al
from ppcswitch.intelligence import rules as pr
from ppcswitch.intelligence import store, worker
from ppcswitch.intelligence.engine import EngineError
from ppcswitch.metrics import Counter, header
from ppcswitch.storage.models_intelligence import PENDING, SKIPPED
from ppcswitch.storage.writer import SyncJob

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RATE_EVERY = 60.0  # seconds between looks for transcripts whose call has been settled since
RATE_WITHIN_DAYS = 7  # how far back those looks go (a call waits at most hours for an earlier one)
LOW_SCORE_ALERT = "publisher_low_ai_score"
RETENTION_EVERY = 3600.0


class Intelligence:
    """The controller's side of transcription (one per controller)."""

    def __init__(self, settings, sessions, writer, metrics, directory: str) -> None:
        self.settings, self.s = settings, settings.intelligence
        self.sessions, self.writer, self.directory = sessions, writer, directory
        self.depth = 0  # waiting or running, as of the last poll (plus what was queued since)
        self.oldest: datetime | None = None
        self.busy = 0
        self.wake = asyncio.Event()
        self.pool: ProcessPoolExecutor | None = None
        self.done = metrics.extend(Counter("ppcswitch_transcriptions", "Recorded calls by transcription result "
                                            "(done, failed, retried, skipped: queue full)", ("result",)))
        self.audio = metrics.extend(Counter("ppcswitch_transcription_audio_seconds", "Seconds of audio transcribed (both legs)"))
        self.cpu = metrics.extend(Counter("ppcswitch_transcription_cpu_seconds", "CPU seconds the workers spent transcribing"))
        self.dispositions = metrics.extend(Counter("ppcswitch_dispositions", "Dispositions found in transcripts",
                                                    ("campaign", "disposition")))
        metrics.extend(_Gauges(self))
        self.campaign_names: Callable[[int | None], str] = lambda _id: ""
        # A publisher's share of low AI scores, alerted like the fraud rates (fraud.alert_* window, webhook, auto-pause).
        f = settings.fraud
        self.monitor = al.Monitor(f.alert_window_minutes * 60, f.alert_min_calls,
                                  {LOW_SCORE_ALERT: self.s.alert_low_score_rate})
        self.on_alert: Callable[[al.Alert], None] = lambda _alert: None

    # -- queueing (event loop, per call: one database write, nothing else) ------

    def enqueue(self, record: CallRecord, recording: str) -> None:
        full = self.depth >= self.s.queue_max
        status, error = (SKIPPED, "queue full") if full else (PENDING, "")
        if full:
            self.done.labels("skipped").inc()
        else:
            self.depth += 1
            self.oldest = self.oldest or datetime.now(timezone.utc)
        job = SyncJob(lambda s: store.enqueue_sync(s, record.linkedid, record.started_at, record.campaign_id,
                                                   record.publisher_id, recording, status, error))
        try:
            self.writer.submit(job)
        except asyncio.QueueFull:
            async def later():
                await self.writer.submit_wait(job)

            asyncio.get_running_loop().create_task(later())
        self.wake.set()

    # -- the pool -----------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=max(1, self.s.workers), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=worker.init, initargs=(self.s.nice,))

    async def start(self) -> None:
        self.pool = self._new_pool()
        n = await self.writer.run(store.requeue_running)
        if n:
            log.info("transcription: %d call(s) a stopped controller was transcribing are queued again", n)
        await self.refresh()

    async def stop(self) -> None:
        if self.pool is not None:
            procs = list((getattr(self.pool, "_processes", None) or {}).values())  # our own children only
            self.pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                await asyncio.to_thread(proc.join, 5)
            self.pool = None

    async def refresh(self) -> None:
        async with self.sessions() as s:
            self.depth, self.oldest = await store.queue_stats(s)

    async def run(self) -> None:
        """Feed due jobs to the workers, one per worker at a time; the rest waits in the table."""
        tasks: set[asyncio.Task] = set()
        next_rating = 0.0
        while True:
            try:
                await self.refresh()
                if time.monotonic() >= next_rating:  # transcripts that came before their call was settled
                    next_rating = time.monotonic() + RATE_EVERY
                    await self.rate_settled()
                free = max(1, self.s.workers) - self.busy
                if free > 0:
                    async with self.sessions() as s:
                        jobs = await store.due(s, free)
                    if jobs:
                        await self.writer.run(lambda s, ids=[j.id for j in jobs]: store.mark_running(s, ids))
                        for j in jobs:
                            self.busy += 1
                            task = asyncio.create_task(self._one(j.id, j.linkedid, j.recording, j.campaign_id,
                                                                 j.publisher_id))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("transcription feeder failed; trying again")
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), POLL_SECONDS)
            except asyncio.TimeoutError:
                pass

    async def _one(self, job_id: int, linkedid: str, recording: str, campaign_id: int | None,
                   publisher_id: int | None = None) -> None:
        s = self.s
        try:
            if self.pool is None:  # stopping: never run the engine on the controller's own threads
                return
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.pool, worker.transcribe_call, self.directory, recording, s.engine,
                                                s.redact_min_digits, s.redact_audio)
            async with self.sessions() as session:
                rules = await store.rules_for_campaign(session, campaign_id)
                fraud_score, flags = await store.fraud_of(session, linkedid)
            hits = pr.dispositions(result["segments"], rules)
            score = pr.score(hits, result["segments"], result["caller_speech_ms"], result["buyer_speech_ms"],
                             fraud_score, flags)
            out = await self.writer.run(lambda session: store.save_result(session, job_id, result, hits, score))
            self.done.labels("done").inc()
            self.depth = max(0, self.depth - 1)  # out of the queue (the next poll counts again)
            self.audio.inc(result["audio_ms"] / 1000)
            self.cpu.inc(result["cpu_ms"] / 1000)
            for h in hits:
                self.dispositions.labels(self.campaign_names(campaign_id) or "none", h.disposition).inc()
            alert = self.monitor.observe(LOW_SCORE_ALERT, publisher_id, time.time(), score.value < s.low_score)
            if alert is not None:
                self.on_alert(alert)
            if out.get("rerated") is not None:
                c = out["rerated"]
                log.info("call %s re-rated on its transcript: revenue %d -> %d cents, payout %d -> %d cents (%s)",
                         linkedid, c.old_revenue_cents, c.new_revenue_cents, c.old_payout_cents, c.new_payout_cents,
                         ",".join(c.new_reasons) or "billable")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a missing file, the engine, a dead worker: retried, then failed
            final = isinstance(exc, EngineError)
            if isinstance(exc, BrokenProcessPool):  # a worker died (out of memory, killed): a new pool
                log.error("transcription worker died; starting a new one")
                old, self.pool = self.pool, self._new_pool()
                if old is not None:
                    old.shutdown(wait=False, cancel_futures=True)
            if not isinstance(exc, (FileNotFoundError, EngineError)):
                log.warning("transcription of %s failed: %s", linkedid, exc)
            try:
                status = await self.writer.run(lambda session: store.retry_later(
                    session, job_id, f"{type(exc).__name__}: {exc}", s.max_attempts, s.retry_seconds, final))
                self.done.labels("failed" if status == "failed" else "retried").inc()
                if status == "failed":
                    self.depth = max(0, self.depth - 1)
            except Exception:
                log.exception("could not record the transcription failure of %s", linkedid)
        finally:
            self.busy -= 1
            self.wake.set()

    async def rate_settled(self) -> int:
        since = datetime.now(timezone.utc) - timedelta(days=RATE_WITHIN_DAYS)
        changes = await self.writer.run(lambda session: store.rate_settled(session, since))
        for c in changes:
            log.info("call %s re-rated on its transcript once settled: revenue %d -> %d cents (%s)", c.linkedid,
                     c.old_revenue_cents, c.new_revenue_cents, ",".join(c.new_reasons) or "billable")
        return len(changes)

    # -- retention ----------------------------------------------------------------

    async def retention(self) -> int:
        days = self.s.retention_days
        if days <= 0:
            return 0
        before = datetime.now(timezone.utc) - timedelta(days=days)
        return await self.writer.run(lambda s: store.delete_expired(s, before))


class _Gauges:
    """Queue depth, lag and busy workers, read at scrape time."""

    def __init__(self, intel: Intelligence) -> None:
        self.intel = intel

    def render(self, out: list[str]) -> None:
        i = self.intel
        lag = (datetime.now(timezone.utc) - i.oldest).total_seconds() if i.oldest and i.depth else 0.0
        for name, doc, value in (
                ("ppcswitch_transcription_queue_depth", "Recorded calls waiting for (or in) transcription", i.depth),
                ("ppcswitch_transcription_lag_seconds", "Age of the oldest recorded call waiting for transcription", lag),
                ("ppcswitch_transcription_workers_busy", "Transcription worker processes working now", i.busy)):
            out.append(f"{header(name, doc, 'gauge')}{name} {float(max(0.0, value))!r}\n")




def intelligence_ctx(sessions_key, settings_key, writer_key, metrics_key, router_key):
    async def ctx(app: web.Application):
        from ppcswitch.fraud.runtime import recordings_dir

        settings = app[settings_key]
        if not settings.intelligence.engine.strip():
            yield
            return
        intel = Intelligence(settings, app[sessions_key], app[writer_key], app[metrics_key],
                             str(recordings_dir(settings)))

        def campaign_name(cid):
            c = app[router_key].network.campaigns.get(cid) if cid is not None else None
            return c.name if c is not None else ""

        intel.campaign_names = campaign_name

        def alert(a):
            from ppcswitch.fraud import runtime as fraud_runtime

            fraud_runtime.raise_alert(app, a, app[writer_key], app[metrics_key], app[router_key], settings)

        intel.on_alert = alert
        await intel.start()
        app[keys.INTELLIGENCE] = intel

        async def retention_loop():
            while True:
                try:
                    gone = await intel.retention()
                    if gone:
                        log.info("deleted %d transcripts past their %d-day retention", gone,
                                 settings.intelligence.retention_days)
                except Exception:
                    log.exception("transcript clean-up failed")
                await asyncio.sleep(RETENTION_EVERY)

        tasks = [asyncio.create_task(intel.run()), asyncio.create_task(retention_loop())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await intel.stop()

    return ctx


def wrap(app: web.Application, on_record: Callable[[CallRecord], None], fraud_key) -> Callable[[CallRecord], None]:
    """on_record, then the call queued for transcription when it was recorded and connected."""

    def hook(record: CallRecord) -> None:
        fraud = app.get(fraud_key)
        screened = fraud.pending.get(record.linkedid) if fraud is not None else None
        recording = getattr(screened, "recording", "") or ""
        on_record(record)
        intel = app.get(keys.INTELLIGENCE)
        if intel is not None and recording and record.buyer_id and record.connected_ms > 0:
            try:
                intel.enqueue(record, recording)
            except Exception:  # transcription must never cost a call record
                log.exception("could not queue call %s for transcription", record.linkedid)

    return hook
