"""A FastAGI server with hard limits.

Each connection must deliver its whole header block (agi_* lines ending in a
blank line) within `header_timeout` and `max_header_bytes`; otherwise it is
dropped. EOF before the blank line ends the connection at once (no loop on
empty reads). Every command has a timeout. Handlers are looked up by the
script name of agi://host:port/<name>.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ppcswitch.cpu import AGI, CPU

log = logging.getLogger(__name__)


class AgiError(Exception):
    """The AGI peer misbehaved, hung up, or a command failed."""


class AgiHangup(AgiError):
    """The channel hung up while we were talking to it."""


_HEADER = re.compile(r"^(agi_[a-z_0-9]+): ?(.*)$")
_RESULT = re.compile(r"^(\d{3})(?: result=(-?\d+))?(?: (.*))?$")


def parse_headers(block: bytes) -> dict[str, str]:
    """agi_* headers from a received block; non-header lines are ignored."""
    headers: dict[str, str] = {}
    for raw in block.decode("utf-8", "replace").split("\n"):
        m = _HEADER.match(raw.rstrip("\r"))
        if m:
            headers[m.group(1)] = m.group(2)
    return headers


def quote_arg(value: str) -> str:
    """Quote one AGI command argument; newlines would end the command, so they go."""
    value = value.replace("\r", " ").replace("\n", " ")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class AgiRequest:
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    command_timeout: float
    args: list[str] = field(default_factory=list)

    @property
    def script(self) -> str:
        name = self.headers.get("agi_network_script", "")
        if not name:  # older Asterisk: take the path of agi_request
            name = self.headers.get("agi_request", "").split("://", 1)[-1].partition("/")[2]
        return name.partition("?")[0].strip("/")

    async def command(self, line: str) -> tuple[int, int | None, str]:
        self.writer.write(line.encode("utf-8", "replace") + b"\n")
        try:
            # asyncio.timeout, not wait_for: no task per await (several per call on the hot path).
            async with asyncio.timeout(self.command_timeout):
                await self.writer.drain()
                while True:
                    raw = await self.reader.readline()
                    if not raw:
                        raise AgiHangup("connection closed by Asterisk")
                    text = raw.decode("utf-8", "replace").strip()
                    if text == "HANGUP":  # async hangup notice; the answer still follows
                        continue
                    m = _RESULT.match(text)
                    if not m:
                        raise AgiError(f"unexpected AGI reply {text[:100]!r}")
                    code = int(m.group(1))
                    if code == 520 and text.startswith("520-"):  # multi-line usage text
                        while not (await self.reader.readline()).startswith(b"520 "):
                            pass
                    if code == 511:
                        raise AgiHangup("channel is dead")
                    if code != 200:
                        raise AgiError(f"AGI command failed: {text[:100]!r}")
                    return code, int(m.group(2)) if m.group(2) else None, m.group(3) or ""
        except TimeoutError:
            raise AgiError(f"no answer to {line.split(' ', 1)[0]} within {self.command_timeout}s") from None
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            raise AgiHangup(str(exc)) from None

    async def set_variable(self, name: str, value: str) -> None:
        await self.command(f"SET VARIABLE {name} {quote_arg(value)}")


Handler = Callable[[AgiRequest], Awaitable[None]]

LOOPBACK = "127.0.0.0/8, ::1"


def parse_peers(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """agi.allowed_peers: comma-separated addresses or networks; empty means loopback only.
    Raises ValueError naming the bad entry."""
    nets = []
    for item in (text.strip() or LOOPBACK).split(","):
        try:
            nets.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"agi.allowed_peers: {item.strip()!r} is not an address or network") from None
    return nets


def peer_allowed(peer, nets) -> bool:
    try:
        addr = ipaddress.ip_address(peer[0])
    except (TypeError, ValueError, IndexError):
        return False
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    return any(addr in n for n in nets)


class FastAgiServer:
    def __init__(
        self,
        handlers: dict[str, Handler],
        host: str = "127.0.0.1",
        port: int = 4573,
        header_timeout: float = 2.0,
        max_header_bytes: int = 16384,
        command_timeout: float = 5.0,
        allowed_peers: str = "",
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        """observe(script, seconds): called once per request served, connect to close."""
        self.handlers = handlers
        self.observe = observe
        self.allowed = parse_peers(allowed_peers)
        self.host, self.port = host, port
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self.command_timeout = command_timeout
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.stats = {"requests": 0, "dropped": 0, "errors": 0}

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._measured_client, self.host, self.port, limit=self.max_header_bytes, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("FastAGI listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read_headers(self, reader: asyncio.StreamReader) -> bytes:
        block = bytearray()
        while True:
            line = await reader.readline()  # raises ValueError past the size limit
            if not line or not line.endswith(b"\n"):
                raise AgiError("connection closed before the AGI headers ended")
            if line in (b"\n", b"\r\n"):
                return bytes(block)
            block += line
            if len(block) > self.max_header_bytes:
                raise AgiError("AGI headers too large")

    async def _measured_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The request's own CPU, counted in the agi stage (ppcswitch.cpu).
        await CPU.measured(AGI, self._client(reader, writer))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        started = time.perf_counter()
        script = ""
        peer = writer.get_extra_info("peername")
        try:
            if not peer_allowed(peer, self.allowed):
                self.stats["dropped"] += 1
                log.warning("FastAGI client %s refused: not in agi.allowed_peers", peer)
                return
            try:
                async with asyncio.timeout(self.header_timeout):
                    block = await self._read_headers(reader)
            except (TimeoutError, AgiError, ValueError, asyncio.LimitOverrunError, ConnectionError) as exc:
                self.stats["dropped"] += 1
                log.warning("FastAGI client %s dropped: %s", peer, exc or "header timeout")
                return
            headers = parse_headers(block)
            args = [headers[k] for k in sorted((k for k in headers if k.startswith("agi_arg_")), key=lambda k: int(k[8:]) if k[8:].isdigit() else 0)]
            request = AgiRequest(headers, reader, writer, self.command_timeout, args)
            handler = self.handlers.get(request.script)
            if handler is None or "agi_channel" not in headers:
                self.stats["dropped"] += 1
                log.warning("FastAGI client %s asked for unknown script %r", peer, request.script[:50])
                return
            self.stats["requests"] += 1
            script = request.script
            try:
                await handler(request)
            except AgiHangup as exc:
                log.info("AGI %s: channel gone (%s)", request.script, exc)
            except Exception:
                self.stats["errors"] += 1
                log.exception("AGI handler %s failed", request.script)
        finally:
            self._tasks.discard(task)
            writer.close()
            if script and self.observe is not None:
                self.observe(script, time.perf_counter() - started)
            try:
                async with asyncio.timeout(1):
                    await writer.wait_closed()
            except Exception:
                pass
