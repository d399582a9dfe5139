"""The typed keys of the controller's aiohttp application: every long-lived resource by name.

The lowest module of the package: everything may import it and it imports nothing of ours at run
time (the types below are for type checkers only), so no layer has to reach up to the composition
root (ppcswitch/app.py) for a key. app.py fills them in its cleanup contexts.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web

if TYPE_CHECKING:  # types only: no import at run time
    import jinja2

    from ppcswitch.agi.server import FastAgiServer
    from ppcswitch.ami.client import AmiClient
    from ppcswitch.attribution.service import Attribution
    from ppcswitch.config import Settings
    from ppcswitch.fraud.service import FraudService
    from ppcswitch.intelligence.runtime import Intelligence
    from ppcswitch.metrics import Metrics
    from ppcswitch.pipeline import FinishedCalls
    from ppcswitch.recovery import Recovery
    from ppcswitch.routing.service import Router
    from ppcswitch.storage.writer import Writer
    from ppcswitch.tracker.tracker import CallTracker
    from ppcswitch.web.security import LoginThrottle

# The controller's core resources (ppcswitch/app.py).
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
ENGINE: web.AppKey[object] = web.AppKey("engine")  # the AsyncEngine
SESSIONS: web.AppKey[object] = web.AppKey("sessionmaker")  # async_sessionmaker: reads
WRITER: web.AppKey[Writer] = web.AppKey("writer")  # the one writer: every write goes through it
ROUTER: web.AppKey[Router] = web.AppKey("router")
TRACKER: web.AppKey[CallTracker] = web.AppKey("tracker")
AMI: web.AppKey[AmiClient] = web.AppKey("ami")
AGI: web.AppKey[FastAgiServer] = web.AppKey("agi")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
RECOVERY: web.AppKey[Recovery] = web.AppKey("recovery")
RELOAD_LOCK: web.AppKey[asyncio.Lock] = web.AppKey("reload_lock")
PIPELINE: web.AppKey[FinishedCalls] = web.AppKey("pipeline")
# () -> awaitable: swap in the configuration from the database now (panel and API, after an edit).
RELOAD_ROUTING: web.AppKey[Callable[[], Awaitable[None]]] = web.AppKey("reload_routing")

# Features (their own packages fill them).
ATTRIBUTION: web.AppKey[Attribution] = web.AppKey("attribution")
FRAUD: web.AppKey[FraudService] = web.AppKey("fraud")
FRAUD_SCORER: web.AppKey[object] = web.AppKey("fraud_scorer")
INTELLIGENCE: web.AppKey[Intelligence] = web.AppKey("intelligence")

# The panel (ppcswitch/web/).
JINJA: web.AppKey[jinja2.Environment] = web.AppKey("web_jinja")
LOGIN_THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("web_throttle")
ACCOUNT_ZONE: web.AppKey[dict] = web.AppKey("web_account_zone")  # cached account time zone
