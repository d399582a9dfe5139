"""The fraud service inside the controller: start-up, reloads, the record hook, alerts, retention.

I/O only: the decisions are in ppcswitch.fraud.service and its pure modules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import aiohttp
from aiohttp import web

from ppcswitch import keys
from ppcswitch.calls import CallRecord
from ppcswitch.fraud import scorer as ext
from ppcswitch.fraud import store
from ppcswitch.fraud.alerts import Alert
from ppcswitch.fraud.score import with_external
from ppcswitch.fraud.service import FraudService
from ppcswitch.storage.writer import SyncJob

log = logging.getLogger(__name__)

RETENTION_EVERY = 3600.0  # seconds between recording clean-ups


def recordings_dir(settings) -> Path:
    """The recordings directory as this process sees it."""
    return Path(settings.recording.local_directory or settings.recording.directory)


def cleanup_recordings(directory: Path, retention_days: int, now: float | None = None) -> list[str]:
    """Delete recordings older than the retention; returns the names deleted (0 days: keep all)."""
    if retention_days <= 0 or not directory.is_dir():
        return []
    cutoff = (now or time.time()) - retention_days * 86400
    gone = []
    for path in directory.glob("*.wav"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                gone.append(path.name)
        except OSError as exc:
            log.warning("could not delete recording %s: %s", path, exc)
    return gone


async def _reload(app, fraud: FraudService, sessions) -> None:
    async with sessions() as session:
        fraud.load(await store.list_entries(session), await store.campaign_settings(session))


def fraud_ctx(sessions_key, settings_key, writer_key, metrics_key, router_key):
    """cleanup_ctx for the fraud service (app keys passed in: app.py owns them)."""

    async def ctx(app: web.Application):
        settings = app[settings_key]
        fraud = FraudService(settings.fraud, settings.routing.default_region)
        app[keys.FRAUD] = fraud
        app[keys.FRAUD_SCORER] = ext.HttpScorer(settings.fraud.scorer_url, settings.fraud.scorer_timeout) \
            if settings.fraud.scorer_url else None
        sessions = app[sessions_key]
        await _reload(app, fraud, sessions)
        async with sessions() as session:  # repeat callers and velocity survive a restart
            since = datetime.now(timezone.utc) - timedelta(hours=settings.fraud.repeat_window_hours)
            for caller, started, publisher in await store.recent_callers(session, since):
                fraud.remember(caller, started.timestamp(), publisher)

        async def reload_loop():
            while True:
                await asyncio.sleep(settings.routing.reload_interval)
                try:
                    await _reload(app, fraud, sessions)
                except Exception:
                    log.exception("reloading fraud lists failed; keeping the current ones")

        async def retention_loop():
            while True:
                gone = await asyncio.to_thread(cleanup_recordings, recordings_dir(settings),
                                               settings.recording.retention_days)
                if gone:
                    log.info("deleted %d recordings past their %d-day retention", len(gone),
                             settings.recording.retention_days)
                await asyncio.sleep(RETENTION_EVERY)

        tasks = [asyncio.create_task(reload_loop()), asyncio.create_task(retention_loop())]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return ctx


def wrap(app: web.Application, on_record: Callable[[CallRecord], None], tracker: Callable[[], object],
         router_key, writer_key, metrics_key, settings_key) -> Callable[[CallRecord], None]:
    """on_record with the call scored first: quality_score set before billing, signals stored after the call."""

    def hook(record: CallRecord) -> None:
        fraud = app.get(keys.FRAUD)
        if fraud is None:
            return on_record(record)
        router, writer, metrics = app[router_key], app[writer_key], app[metrics_key]
        talk = tracker().signals.pop(record.linkedid, None)
        try:
            assessment = fraud.assess(record, router.routes.finished.get(record.linkedid), talk, router.network)
        except Exception:  # scoring must never cost a call record
            log.exception("could not score call %s", record.linkedid)
            return on_record(record)

        def finish() -> None:
            on_record(record)
            publisher = router.network.publishers.get(record.publisher_id) if record.publisher_id else None
            for flag in assessment.score.flags:
                metrics.fraud_flag(publisher.name if publisher else "", flag)
            row = dict(assessment.row, score=assessment.score.value, flags=assessment.score.flags,
                       explanation=assessment.score.explanation,
                       flagged=assessment.score.value >= app[settings_key].fraud.flag_score)
            _submit(writer, SyncJob(lambda s: store.save_signals_sync(s, row), many=(store.save_signals_many_sync, row)))
            for alert in assessment.alerts:
                raise_alert(app, alert, writer, metrics, router, app[settings_key])

        scorer = app.get(keys.FRAUD_SCORER)
        if scorer is None:
            return finish()

        async def external():
            points, detail = await ext.ask(scorer, dict(assessment.row, started_at=record.started_at.isoformat(),
                                                        connected_ms=record.connected_ms, outcome=record.outcome),
                                           app[settings_key].fraud.scorer_timeout)
            assessment.score = with_external(assessment.score, points, detail)
            record.quality_score = assessment.score.value
            finish()

        asyncio.get_running_loop().create_task(external())

    return hook


def _submit(writer, job) -> None:
    try:
        writer.submit(job)
    except asyncio.QueueFull:
        async def later():
            await writer.submit_wait(job)

        asyncio.get_running_loop().create_task(later())


def raise_alert(app, alert: Alert, writer, metrics, router, settings) -> None:
    """Store the alert (pausing when configured, with an audit entry), count it, post the webhook."""
    pause = settings.fraud.auto_pause
    log.warning("fraud alert: %s %s (%d of %d calls, threshold %.0f%%)%s", alert.kind, alert.subject_id, alert.bad,
                alert.total, alert.threshold * 100, "; pausing it" if pause else "")
    _submit(writer, lambda s: store.save_alert(s, alert, pause))
    subject = (router.network.publishers if alert.kind.startswith("publisher") else router.network.buyers).get(alert.subject_id)
    metrics.fraud_flag(subject.name if subject else str(alert.subject_id), "alert:" + alert.kind)
    url = settings.fraud.alert_webhook
    if url:
        body = {"kind": alert.kind, "subject_id": alert.subject_id, "subject": subject.name if subject else "",
                "bad": alert.bad, "total": alert.total, "threshold": alert.threshold, "paused": pause}

        async def post():
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                    async with http.post(url, json=body) as resp:
                        if resp.status >= 300:
                            log.warning("alert webhook answered %s", resp.status)
            except Exception as exc:
                log.warning("alert webhook failed: %s", exc)

        asyncio.get_running_loop().create_task(post())
