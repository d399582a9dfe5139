"""AMI client on panoramisk's Manager, hardened for a switch that must not lose events.

What differs from a plain panoramisk Manager, and why:
- login is awaited and checked: a refused login closes the link and is retried
  with back-off (and logged), instead of an open but deaf connection;
- a ping every `ping_interval` must be answered within `pong_timeout`, else the
  link is declared dead and dropped (a half-open TCP link sends no events);
- reconnects back off exponentially between `reconnect_min` and `reconnect_max`;
- every event goes into one queue consumed by one task, so handlers see events
  in Asterisk's order (panoramisk schedules coroutine callbacks concurrently);
- actions pending when the link drops fail with ConnectionError and are never
  re-sent after a reconnect (a re-sent Originate places a second call);
- bytes are decoded incrementally, so a UTF-8 character split across two TCP
  reads is not lost.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol

log = logging.getLogger(__name__)


class AmiLoginError(ConnectionError):
    pass


class _Protocol(AMIProtocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.heard_at = datetime.now(timezone.utc)

    def data_received(self, data: bytes) -> None:
        self.heard_at = datetime.now(timezone.utc)
        text = self._decoder.decode(data)
        if text:
            # panoramisk's parser works on str; hand it already-decoded text.
            super().data_received(text.encode("utf-8"))

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)
        self.closed = True
        # Fail what is pending instead of queueing it for a re-send.
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(ConnectionError("AMI connection lost"))
        self.responses.clear()


class AmiClient(Manager):
    def __init__(
        self,
        settings,
        on_event: Callable[[Any], None],
        on_login: Callable[["AmiClient"], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            host=settings.host,
            port=settings.port,
            username=settings.username,
            secret=settings.secret,
            protocol_factory=_Protocol,
            forgetable_actions=(),
        )
        self.settings = settings
        self.on_event_cb = on_event
        self.on_login_cb = on_login
        self.queue: asyncio.Queue = asyncio.Queue()
        self.connected = False
        self.reconnects = 0
        self.last_event_lag = 0.0
        # When the last logged-in link was lost (Asterisk last known alive): calls a restarted
        # Asterisk no longer has ended then (ppcswitch.recovery).
        self.lost_at: datetime | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.register_event("*", self._enqueue)

    # panoramisk calls these; we run our own supervisor instead.
    def connection_made(self, f):  # pragma: no cover - not used
        raise RuntimeError("use AmiClient.start()")

    def connection_lost(self, exc):
        self.connected = False

    async def send_awaiting_actions(self, *_):
        self.awaiting_actions.clear()  # never re-send anything

    def _enqueue(self, manager, event) -> None:
        self.queue.put_nowait(event)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._supervise()), asyncio.create_task(self._consume())]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.protocol is not None and not self.protocol.closed:
            self.protocol.transport.close()

    async def action(self, action: dict, timeout: float = 5.0):
        if not self.connected:
            raise ConnectionError("AMI not connected")
        return await asyncio.wait_for(self.send_action(dict(action)), timeout)

    async def _consume(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                stamp = float(event.get("Timestamp") or 0)
                if stamp:
                    self.last_event_lag = max(0.0, time.time() - stamp)
            except (TypeError, ValueError):
                pass
            try:
                self.on_event_cb(event)
            except Exception:
                log.exception("AMI event handler failed")

    async def _supervise(self) -> None:
        delay = self.settings.reconnect_min
        first = True
        while not self._stopping:
            if not first:
                self.reconnects += 1
            first = False
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except AmiLoginError as exc:
                log.error("AMI login refused for user %r: %s", self.settings.username, exc)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                log.warning("AMI connection to %s:%s failed: %s", self.settings.host, self.settings.port, exc or type(exc).__name__)
            finally:
                self.connected = False
            if time.monotonic() - started > 10 * self.settings.reconnect_max:
                delay = self.settings.reconnect_min  # it was up a long time: start over
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.reconnect_max)

    async def _session(self) -> None:
        transport, protocol = await asyncio.wait_for(
            self.loop.create_connection(_Protocol, self.settings.host, self.settings.port), 5
        )
        self.protocol = protocol
        protocol.factory = self
        protocol.log = self.log
        protocol.config = self.config
        protocol.encoding = self.encoding = "utf-8"
        self.responses = protocol.responses
        try:
            resp = await asyncio.wait_for(
                self.send_action({"Action": "Login", "Username": self.settings.username, "Secret": self.settings.secret, "Events": "on"}),
                5,
            )
            if not resp.success:
                raise AmiLoginError(resp.get("Message", "authentication failed"))
            self.connected = True
            self.authenticated = True
            log.info("AMI logged in to %s:%s", self.settings.host, self.settings.port)
            if self.on_login_cb is not None:
                asyncio.create_task(self.on_login_cb(self))
            await self._ping_until_lost(protocol)
        finally:
            self.connected = False
            self.authenticated = False
            transport.close()

    async def _ping_until_lost(self, protocol: _Protocol) -> None:
        while True:
            done, _ = await asyncio.wait({protocol.lost}, timeout=self.settings.ping_interval)
            if done:
                log.warning("AMI connection lost")
                self.lost_at = datetime.now(timezone.utc)  # a dying Asterisk's socket closes at once
                return
            try:
                await asyncio.wait_for(self.send_action({"Action": "Ping"}), self.settings.pong_timeout)
            except (asyncio.TimeoutError, ConnectionError):
                log.warning("AMI ping unanswered within %ss: dropping the link", self.settings.pong_timeout)
                self.lost_at = protocol.heard_at  # silent since then
                return
