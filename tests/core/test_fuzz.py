"""Bad input on the controller's sockets: no crash, no hang, a clear log line, service goes on.

FastAGI gets empty connections, garbage, oversized, slow and malformed headers
(the real server on loopback, a raw socket plays the client); the AMI client gets
split UTF-8, unknown events, huge fields and junk from a scripted peer.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from ppcswitch.agi.server import FastAgiServer, parse_peers, peer_allowed
from ppcswitch.ami.client import AmiClient
from test_agi_server import HEADERS, play_asterisk
from test_ami_client import ScriptedAmi, settings, wait_for


@pytest.fixture
async def agi():
    seen = []

    async def route(request):
        seen.append(request.headers.get("agi_extension"))
        await request.set_variable("PPC_ROUTE_STATUS", "ROUTE")

    srv = FastAgiServer({"route": route}, "127.0.0.1", 0, header_timeout=0.5, max_header_bytes=4096, command_timeout=1)
    await srv.start()
    srv.seen = seen
    yield srv
    await srv.stop()


async def send_and_close(port: int, chunks: list[bytes], pause: float = 0.0) -> bytes:
    """Send chunks (pausing between them), then read until the server closes; returns what it said."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for c in chunks:
            writer.write(c)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 3)  # the server must close: never hang
    except ConnectionError:
        return b""
    finally:
        writer.close()


def garbage(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


BAD_CLIENTS = {
    "empty": [],
    "garbage, no newline": [garbage(3000, 1)],
    "garbage lines": [garbage(2000, 2).replace(b"\n", b"") + b"\n" + garbage(500, 3) + b"\n\n"],
    "oversized header": [b"agi_network: yes\n" + b"agi_x: " + b"A" * 10000 + b"\n\n"],
    "many small lines": [b"agi_a: b\n" * 1000 + b"\n"],
    "no script": [b"agi_channel: PJSIP/x\n\n"],
    "unknown script": [HEADERS.replace(b"route", b"../../etc/passwd")],
    "no channel": [b"agi_network_script: route\n\n"],
    "not utf-8": [b"agi_network_script: route\nagi_channel: \xff\xfe\xc3\n\n"],
    "nul bytes": [b"agi_network_script: route\x00\nagi_channel: x\x00\n\n"],
    "only blank line": [b"\n"],
    "crlf header then junk": [HEADERS.replace(b"\n", b"\r\n") + garbage(200, 4)],
}


@pytest.mark.parametrize("name", list(BAD_CLIENTS))
async def test_bad_fastagi_client_is_dropped_and_the_next_call_routes(agi, name):
    await send_and_close(agi.port, BAD_CLIENTS[name])
    commands = await play_asterisk(agi.port)  # a real request right after still works
    assert commands and commands[0].startswith("SET VARIABLE PPC_ROUTE_STATUS")


async def test_slow_header_is_cut_at_the_header_timeout(agi, caplog):
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING):
        # One byte every 0.1 s: the whole header would take seconds; the server gives 0.5 s.
        await send_and_close(agi.port, [bytes([b]) for b in HEADERS[:40]], pause=0.1)
    assert loop.time() - started < 2.5
    assert "dropped" in caplog.text
    assert agi.stats["dropped"] >= 1


async def test_a_flood_of_bad_clients_does_not_stop_routing(agi):
    bad = [send_and_close(agi.port, [garbage(500, i)]) for i in range(100)]
    good = [play_asterisk(agi.port) for _ in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*bad, *good), 10)
    assert all(r and r[0].startswith("SET VARIABLE") for r in results[100:])
    assert len(agi.seen) == 20


def test_allowed_peers_default_is_loopback_and_bad_entries_are_named():
    nets = parse_peers("")
    assert peer_allowed(("127.0.0.1", 1), nets) and peer_allowed(("::1", 1, 0, 0), nets)
    assert not peer_allowed(("10.0.0.5", 1), nets) and not peer_allowed(None, nets)
    nets = parse_peers("10.0.0.0/24, 192.0.2.7")
    assert peer_allowed(("10.0.0.9", 1), nets) and peer_allowed(("::ffff:192.0.2.7", 1, 0, 0), nets)
    assert not peer_allowed(("127.0.0.1", 1), nets)
    with pytest.raises(ValueError, match="'nope'"):
        parse_peers("10.0.0.1, nope")


async def test_fastagi_refuses_peers_not_allowed():
    async def route(request):  # pragma: no cover - must never run
        raise AssertionError("a refused peer reached a handler")

    srv = FastAgiServer({"route": route}, "127.0.0.1", 0, allowed_peers="192.0.2.0/24")
    await srv.start()
    try:
        assert await send_and_close(srv.port, [HEADERS]) == b""
        assert srv.stats["dropped"] == 1 and srv.stats["requests"] == 0
    finally:
        await srv.stop()


# -- AMI ------------------------------------------------------------------------


async def test_ami_client_survives_junk_unknown_events_and_huge_fields():
    peer = ScriptedAmi()
    await peer.start()
    got = []
    client = AmiClient(settings(peer.port, ping_interval=30), on_event=lambda e: got.append(dict(e)))
    await client.start()
    try:
        await wait_for(lambda: client.connected)
        word = "Zoë 東京".encode()
        peer.send_raw(b"Event: Newchannel\r\nUniqueid: 1\r\nCallerIDName: " + word[:2])  # split inside a character
        await asyncio.sleep(0.05)
        peer.send_raw(word[2:] + b"\r\n\r\n")
        peer.send_raw(b"Event: SomethingNew2031\r\nUniqueid: 2\r\nWhatever: x\r\n\r\n")  # unknown event
        peer.send_raw(b"Event: Newchannel\r\nUniqueid: 3\r\nCallerIDName: " + b"A" * 1_000_000 + b"\r\n\r\n")
        peer.send_raw(b"no colon line\r\n:\r\n: empty key\r\nEvent: Hangup\r\nUniqueid: 4\r\n\r\n")
        peer.send_raw(b"Event: Hangup\r\nUniqueid: 5\r\nCause: \xff\xfe not utf-8\r\n\r\n")
        peer.send_raw(b"\r\n\r\n\r\n")  # empty blocks
        peer.send_raw(b"Event: FullyBooted\r\nUniqueid: 6\r\n\r\n")
        await wait_for(lambda: any(e.get("Uniqueid") == "6" for e in got), 5)
        ids = [e.get("Uniqueid") for e in got]
        assert ids.index("1") < ids.index("3") < ids.index("6")
        assert got[ids.index("1")]["CallerIDName"] == "Zoë 東京"
        assert len(got[ids.index("3")]["CallerIDName"]) == 1_000_000
        assert client.connected
        assert (await client.action({"Action": "Ping"})).success  # still answering
    finally:
        await client.stop()
        await peer.stop()


async def test_tracker_ignores_events_it_cannot_read():
    from ppcswitch.routing.live import CallRoutes, LiveCalls
    from ppcswitch.routing.model import Network
    from ppcswitch.tracker.tracker import CallTracker

    records = []
    tracker = CallTracker(CallRoutes(), LiveCalls(), Network, records.append)
    for event in [{}, {"Event": None}, {"Event": "Newchannel"}, {"Event": "Newchannel", "Linkedid": "1", "Timestamp": "x"},
                  {"Event": "DialBegin", "Linkedid": "1", "DestUniqueid": "2", "ChanVariable": 5},
                  {"Event": "Hangup", "Linkedid": "1", "Uniqueid": "1", "Cause": "??"}, 7, "text", None]:
        tracker.handle(event)  # never raises
    assert isinstance(tracker.errors, int)


def test_ami_eventfilter_lets_through_every_event_the_tracker_handles():
    """asterisk/manager.conf sends the controller only the events it names: a handler added to the
    tracker must be added there too, or it never fires."""
    import re
    from pathlib import Path

    from ppcswitch.tracker.tracker import CallTracker

    conf = (Path(__file__).resolve().parents[2] / "asterisk/manager.conf").read_text()
    allowed = set(re.findall(r"^eventfilter\(action\(include\),name\((\w+)\)[,)]", conf, re.M))
    handled = {name.split(":")[0] for name in CallTracker._handlers}
    assert handled <= allowed, f"add to asterisk/manager.conf: {handled - allowed}"
    # ... and none of them may be switched off for everyone (disabledevents).
    disabled = set(re.search(r"^disabledevents = (.*)$", conf, re.M).group(1).split(","))
    assert not (allowed | {"CoreShowChannel", "CoreShowChannelsComplete", "FullyBooted"}) & disabled
