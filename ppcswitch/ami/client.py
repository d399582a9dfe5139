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

from urllib.parse import unquote

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message
from panoramisk.utils import EOL

from ppcswitch.cpu import AMI, CPU

log = logging.getLogger(__name__)
_QUOTED = frozenset(k.lower() for k in Message.quoted_keys)


class AmiLoginError(ConnectionError):
    pass


class _Protocol(AMIProtocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.heard_at = datetime.now(timezone.utc)

    def data_received(self, data: bytes) -> None:
        stage = CPU.enter(AMI)
        try:
            self.heard_at = datetime.now(timezone.utc)
            text = self._decoder.decode(data)
            if text:
                self._messages(text)
        finally:
            CPU.leave(stage)

    def _messages(self, text: str) -> None:
        """panoramisk's data_received on already-decoded text, each message parsed once: an event
        that answers no action (nearly all of them) goes straight from its lines to the client's
        queue; anything else takes panoramisk's own way (Message.from_line, handle_message)."""
        if self.version is None and text.startswith("Asterisk Call Manager/"):
            self.version = text.partition(EOL)[0].partition("/")[2].strip()
            self.log.info("protocol version: '%s'", self.version)
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(EOL + EOL)
        self.queue.append(blocks.pop(-1))
        for block in blocks:
            block = block.strip()
            if block.startswith("Event: ") and self._event(block):
                continue
            message = Message.from_line(block)
            if message is not None:
                self.handle_message(message)

    def _event(self, block: str) -> bool:
        """Parse and deliver one event as panoramisk would (a Message, headers repeated as lists,
        quoted keys unquoted); False to leave it to panoramisk (an action's event, Shutdown, other
        listeners)."""
        factory = self.factory
        deliver = getattr(factory, "deliver_event", None)
        if deliver is None:
            return False
        store: dict[str, tuple[str, Any]] = {}
        for line in block.split(EOL):
            key, sep, value = line.partition(": ")
            if not sep:
                continue
            low = key.lower()
            if low in _QUOTED:
                value = unquote(value).strip()
            seen = store.get(low)
            if seen is not None and seen[0] == key:
                store[low] = (key, seen[1] + [value] if isinstance(seen[1], list) else [seen[1], value])
            else:
                store[low] = (key, value)
        if "actionid" in store or "commandid" in store or store["event"][1].lower() == "shutdown":
            return False
        store["content"] = ("content", "")
        message = Message.__new__(Message)
        message._store = store
        message.manager = factory
        deliver(message)
        return True

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

    @property
    def deliver_event(self) -> Callable[[Any], None] | None:
        """Where _Protocol hands an event it parsed itself: the queue, when this client's own
        listener is the only one (else None: panoramisk's dispatch, to every listener)."""
        if len(self.callbacks) == 1 and list(self.callbacks.get("*", ())) == [self._enqueue]:
            return self.queue.put_nowait
        return None

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
            stage = CPU.enter(AMI)
            try:
                while True:  # every event already queued, in one wake-up
                    self._handle(event)
                    if self.queue.empty():
                        break
                    event = self.queue.get_nowait()
            finally:
                CPU.leave(stage)

    def _handle(self, event) -> None:
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
