"""The controller process: one aiohttp application owning every long-lived resource.

Resources start and stop through app.cleanup_ctx, in order: database (engine,
migrations, the single writer), routing (configuration snapshot and its
reloader), AMI (event stream into the call tracker), FastAGI (routing answers).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

import aiohttp
from aiohttp import web

from ppcswitch import channel_vars as cv
from ppcswitch.agi import attribution as agi_attribution
from ppcswitch.agi import code as agi_code
from ppcswitch.agi import inbound as agi_inbound
from ppcswitch.agi import next as agi_next
from ppcswitch.agi import route as agi_route
from ppcswitch.agi import zip as agi_zip
from ppcswitch.agi import screen as agi_screen
from ppcswitch.fraud import runtime as fraud_runtime
from ppcswitch.intelligence import runtime as intelligence_runtime
from ppcswitch.agi.server import FastAgiServer
from ppcswitch.ami.client import AmiClient
from ppcswitch.attribution import service as attribution
from ppcswitch.attribution import store as attribution_store
from ppcswitch.calls import CallRecord
from ppcswitch.config import Settings
from ppcswitch.metrics import CONTENT_TYPE, Metrics, metrics_authorized
from ppcswitch.pipeline import FinishedCalls
from ppcswitch.recovery import Recovery
from ppcswitch.routing import shared as shared_reservations
from ppcswitch.routing.service import Router
from ppcswitch.rtb.auction import Auctioneer
from ppcswitch.storage import db, repo, repo_routing, snapshot
from ppcswitch.storage.writer import Writer
from ppcswitch.tracker.tracker import CallTracker
from ppcswitch import web as web_panel

log = logging.getLogger(__name__)

# The typed keys live in ppcswitch/keys.py (imported by every layer); re-exported here for scripts.
from ppcswitch.keys import (AGI, AMI, ENGINE, METRICS, PIPELINE, RECOVERY, RELOAD_LOCK, RELOAD_ROUTING,  # noqa: E402
                            ROUTER, SESSIONS, SETTINGS, ATTRIBUTION, FRAUD, TRACKER, WRITER)

# Calls whose end the controller never saw (AMI down for hours) are closed after this.
STALE_CALL_SECONDS = 6 * 3600


async def database_ctx(app: web.Application):
    settings = app[SETTINGS]
    if settings.database.auto_migrate:
        await db.upgrade(settings.database.url)
    engine = db.make_engine(settings.database.url)
    app[ENGINE] = engine
    app[SESSIONS] = db.make_sessionmaker(engine)
    writer_engine = db.make_writer_engine(settings.database.url)  # SQLite: the writer's own thread
    writer = Writer(app[SESSIONS], max_queue=settings.database.write_queue_max,
                    sync_sessionmaker=db.make_sync_sessionmaker(writer_engine) if writer_engine else None)
    await writer.start()
    app[WRITER] = writer
    yield
    await writer.stop()
    if writer_engine is not None:
        writer_engine.dispose()
    await engine.dispose()


async def _load_network(app: web.Application):
    async with app[SESSIONS]() as session:
        return await snapshot.load_network(session, app[SETTINGS].routing)


async def _config_version(app: web.Application) -> int:
    async with app[SESSIONS]() as session:
        return await repo.config_version(session)


async def push_fallback(app: web.Application) -> None:
    """Tell Asterisk which buyer to dial when the controller cannot be reached."""
    ami = app.get(AMI)
    if ami is None or not ami.connected:
        return
    network = app[ROUTER].network
    buyer = network.buyers.get(network.fallback_buyer_id) if network.fallback_buyer_id else None
    value = buyer.dial_target if buyer else ""
    try:
        resp = await ami.action({"Action": "Setvar", "Variable": cv.FALLBACK_DEST, "Value": value})
        if not resp.success:
            log.error("could not set the fallback buyer in Asterisk: %s", resp.get("Message"))
    except (ConnectionError, asyncio.TimeoutError) as exc:
        log.warning("could not set the fallback buyer in Asterisk: %s", exc)


async def reload_routing(app: web.Application) -> None:
    """Swap in the configuration from the database if it changed since the snapshot was taken.

    Called every routing.reload_interval (edits made by another controller or the CLI) and, by the
    panel and API, right after an edit, so that a saved change applies to the next call."""
    router = app.get(ROUTER)
    if router is None:
        return
    async with app[RELOAD_LOCK]:
        try:
            if await _config_version(app) != router.network.version:
                router.swap(await _load_network(app))
                gc.freeze()  # the new snapshot joins the long-lived heap the collector skips (see routing_ctx)
                log.info("routing configuration reloaded (version %s)", router.network.version)
                await push_fallback(app)
        except Exception:
            log.exception("reloading the routing configuration failed; keeping the current one")


async def routing_ctx(app: web.Application):
    settings = app[SETTINGS]
    router = Router(await _load_network(app), settings.routing.default_region, settings.routing.allow_anonymous)
    router.code_prompt = settings.attribution.code_prompt  # the IVR publisher code prompt
    app[METRICS].time_router(router)
    router.on_ping = app[METRICS].rtb_ping
    app[ROUTER] = router
    app[RELOAD_LOCK] = asyncio.Lock()
    async with app[SESSIONS]() as session:  # caps, budgets and duplicates survive a restart
        await repo_routing.load_history(session, router)
    # What is loaded now (code, snapshot, history) lives as long as the process: a full collection
    # walking it took ~50 ms with 1,000 buyers and 10,000 numbers, a stall every call waiting on
    # its route would feel. Frozen, the collector only walks what calls allocate.
    gc.collect()
    gc.freeze()
    untime_gc = app[METRICS].time_gc()
    # One HTTP client for every RTB ping and post: connections are reused, redirects never followed.
    rtb_http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
    router.rtb = Auctioneer(rtb_http, settings.routing.rtb_max_pings_per_minute)

    async def reload_loop():
        while True:
            await asyncio.sleep(settings.routing.reload_interval)
            await reload_routing(app)

    task = asyncio.create_task(reload_loop())
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    untime_gc()
    await router.rtb.close()
    await rtb_http.close()


async def ami_ctx(app: web.Application):
    settings = app[SETTINGS]
    router, writer, metrics = app[ROUTER], app[WRITER], app[METRICS]

    # Every finished call, from the tracker or from recovery, takes one way (ppcswitch.pipeline):
    # attribute, score, then order, settle and feed what the settlement decided.
    pipeline = FinishedCalls(router, writer, metrics, attribution_store.enqueue_for_call_sync)
    app[PIPELINE] = pipeline
    scored = fraud_runtime.wrap(app, pipeline, lambda: app[TRACKER], ROUTER, WRITER, METRICS, SETTINGS)
    scored = intelligence_runtime.wrap(app, scored, FRAUD)  # recorded calls queued for transcripts

    def on_record(record: CallRecord) -> None:
        app[ATTRIBUTION].stamp(record)  # sub-ID, click ID, tags (ppcswitch.attribution)
        scored(record)

    tracker = CallTracker(router.routes, router.live, lambda: router.network, on_record, settings.routing.default_region,
                          router.reservations)
    app[TRACKER] = tracker

    recovery = Recovery(settings.recovery, tracker, lambda: router.network, on_record, app[SESSIONS], writer,
                        settings.routing.default_region, node=settings.cluster.node)
    app[RECOVERY] = recovery
    await recovery.load_floor()  # before this run's first heartbeat

    async def on_login(client):
        recovery.synced = False  # no heartbeat until the calls missed before this login are recovered
        await push_fallback(app)
        await recovery.resync(client)  # calls missed while down, live counts (ppcswitch.recovery)
        recovery.synced = True
        await recovery.beat(client)  # at once: a controller killed a second later has moved the window

    ami = AmiClient(settings.ami, tracker.handle, on_login)
    app[AMI] = ami
    if not settings.ami.secret:
        log.error("ami.secret is empty (PPCSWITCH_AMI_SECRET): calls will route but not be recorded")
    await ami.start()

    async def sweep_loop():
        while True:
            await asyncio.sleep(60)
            tracker.sweep(STALE_CALL_SECONDS)
            router.routes.sweep(STALE_CALL_SECONDS)
            router.sweep_unsettled(STALE_CALL_SECONDS)
            pipeline.sweep()

    tasks = [asyncio.create_task(sweep_loop()), asyncio.create_task(recovery.run(ami))]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ami.stop()


async def agi_ctx(app: web.Application):
    s = app[SETTINGS].agi
    router = app[ROUTER]
    handlers = {
        "route": agi_route.make_handler(router, app[ATTRIBUTION]),
        "next": agi_next.make_handler(router), "zip": agi_zip.make_handler(router),
        "code": agi_code.make_handler(router, app[ATTRIBUTION]),
        "screen": agi_screen.make_handler(router, app[FRAUD], app[SETTINGS].recording.directory),
        "attribution": agi_attribution.make_handler(app[ATTRIBUTION])}
    # What the dialplan asks for a new call: the three above in one request (ppcswitch.agi.inbound).
    handlers["inbound"] = agi_inbound.make_handler(
        handlers["attribution"], handlers["screen"], handlers["route"],
        [*agi_attribution.header_expressions(app[ATTRIBUTION]), *agi_screen.HEADER_EXPRESSIONS])
    agi_time = app[METRICS].agi_time
    server = FastAgiServer(
        handlers, s.host, s.port, s.header_timeout, s.max_header_bytes, s.command_timeout, s.allowed_peers,
        observe=lambda script, seconds: agi_time.labels(script).observe(seconds),
    )
    await server.start()
    app[AGI] = server
    yield
    await server.stop()


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    ami = app[AMI]
    body = {
        "ami_connected": ami.connected,
        "agi_listening": app[AGI].port,
        "live_calls": len(app[TRACKER].calls),
        "write_queue_depth": app[WRITER].depth,
        "config_version": app[ROUTER].network.version,
    }
    return web.json_response(body, status=200 if ami.connected else 503)


async def metrics_view(request: web.Request) -> web.Response:
    http = request.app[SETTINGS].http
    if http.metrics_password and not metrics_authorized(request.headers.get("Authorization", ""), http.metrics_username, http.metrics_password):
        return web.Response(status=401, text="credentials required\n", headers={"WWW-Authenticate": 'Basic realm="ppcswitch metrics"'})
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def create_app(settings: Settings, *, telephony: bool = True, attribution_service: bool = True) -> web.Application:
    """The one application factory. By default the controller: everything. `telephony=False`: the
    panel and API on the database alone (no routing snapshot, AMI or FastAGI; live calls show as
    none), with the DNI endpoints, number pools and postback outbox unless `attribution_service=False`;
    tests, benchmarks and a panel-only process use these."""
    app = web.Application(client_max_size=web_panel.MAX_REQUEST_BYTES)  # CSV imports of numbers
    app[SETTINGS] = settings
    app[METRICS] = Metrics(node=settings.cluster.node)
    app[RELOAD_ROUTING] = lambda: reload_routing(app)  # the panel applies an edit before it says "saved"
    if telephony:
        app[METRICS].watch(lambda: {"ami": app.get(AMI), "agi": app.get(AGI), "writer": app.get(WRITER),
                                    "tracker": app.get(TRACKER), "router": app.get(ROUTER)})
        app.cleanup_ctx.extend([database_ctx, routing_ctx, shared_reservations.reservations_ctx(SETTINGS, ROUTER),
                                attribution.attribution_ctx,
                                fraud_runtime.fraud_ctx(SESSIONS, SETTINGS, WRITER, METRICS, ROUTER),
                                intelligence_runtime.intelligence_ctx(SESSIONS, SETTINGS, WRITER, METRICS, ROUTER),
                                ami_ctx, agi_ctx])
    else:
        app.cleanup_ctx.extend([database_ctx] + ([attribution.attribution_ctx] if attribution_service else []))
    if telephony:
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics_view)
    if telephony or attribution_service:
        attribution.setup(app, settings)  # public DNI lease endpoint and script under /dni/
    web_panel.setup(app)  # admin panel, partner portals and /api/v1
    return app


def serve(settings: Settings, ready_message: str = "") -> int:
    app = create_app(settings)

    async def announce(_app):
        print(
            f"ppcswitch controller: FastAGI {settings.agi.host}:{settings.agi.port}, "
            f"HTTP http://{settings.http.host}:{settings.http.port}/, AMI {settings.ami.host}:{settings.ami.port}",
            flush=True,
        )
        if ready_message:
            print(ready_message, flush=True)

    app.on_startup.append(announce)
    try:
        web.run_app(app, host=settings.http.host, port=settings.http.port, print=None, handle_signals=True)
    except OSError as exc:  # a port in use, an address not on this machine
        print(f"ppcswitch: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0
