"""FastAGI protocol handling (a narrow unit test: a raw socket plays Asterisk)."""

import asyncio
import time

import pytest

from ppcswitch.agi.server import FastAgiServer, parse_headers, quote_arg

HEADERS = (
    b"agi_network: yes\nagi_network_script: route\nagi_request: agi://127.0.0.1/route\n"
    b"agi_channel: PJSIP/sandbox-carrier-00000001\nagi_uniqueid: 1700000000.1\n"
    b"agi_callerid: +15551230000\nagi_extension: +18005550100\nagi_arg_1: 1700000000.1\n\n"
)


@pytest.fixture
async def server():
    seen = []

    async def route(request):
        seen.append(request)
        await request.set_variable("PPC_ROUTE_STATUS", "ROUTE")
        await request.set_variable("PPC_DEST", 'PJSIP/x "quoted" \\ back\nslash')

    srv = FastAgiServer({"route": route}, "127.0.0.1", 0, header_timeout=0.5, max_header_bytes=4096, command_timeout=1)
    await srv.start()
    srv.seen = seen
    yield srv
    await srv.stop()


async def play_asterisk(port, headers=HEADERS):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(headers)
    commands = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 2)
        if not line:
            break
        commands.append(line.decode())
        writer.write(b"200 result=1\n")
    writer.close()
    return commands


async def test_route_request_sets_variables(server):
    commands = await play_asterisk(server.port)
    assert commands == [
        'SET VARIABLE PPC_ROUTE_STATUS "ROUTE"\n',
        'SET VARIABLE PPC_DEST "PJSIP/x \\"quoted\\" \\\\ back slash"\n',
    ]
    req = server.seen[0]
    assert req.script == "route" and req.args == ["1700000000.1"]
    assert req.headers["agi_callerid"] == "+15551230000"


@pytest.mark.parametrize(
    "payload",
    [b"", b"GET / HTTP/1.0\r\n\r\n", b"\x00\xff" * 100, b"agi_network_script: route\n", b"A" * 10000 + b"\n\n"],
    ids=["empty", "http", "binary", "eof-mid-headers", "oversized"],
)
async def test_bad_clients_are_dropped_and_routing_continues(server, payload):
    cpu0 = time.process_time()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(payload)
    await writer.drain()
    if payload.endswith(b"\n") and not payload.endswith(b"\n\n"):
        writer.write_eof()  # closed before the headers ended: the panoramisk busy-loop case
    elif not payload:
        writer.close()
    # A real call at the same time is answered normally.
    commands = await play_asterisk(server.port)
    assert len(commands) == 2
    # The bad client is closed by the server within the header timeout.
    data = await asyncio.wait_for(reader.read(), 2)
    assert data == b""
    await asyncio.sleep(0.2)
    assert time.process_time() - cpu0 < 0.5, "no busy loop on a dead connection"
    assert not [t for t in server._tasks if not t.done()]
    writer.close()


async def test_silent_client_times_out(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    start = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert time.monotonic() - start < 1.5
    assert server.stats["dropped"] == 1
    writer.close()


async def test_unknown_script_is_dropped(server):
    commands = await play_asterisk(server.port, HEADERS.replace(b"script: route", b"script: dialanything"))
    assert commands == [] and server.stats["dropped"] == 1


async def test_command_timeout_ends_the_request(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(HEADERS)
    assert (await reader.readline()).startswith(b"SET VARIABLE")
    # Never answer: the server gives up after command_timeout and closes.
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert server.stats["errors"] == 1
    writer.close()


def test_parse_headers_ignores_noise():
    h = parse_headers(b"agi_callerid: \"Bob\" <1>\nnot a header\nagi_arg_1: x\r\n")
    assert h == {"agi_callerid": '"Bob" <1>', "agi_arg_1": "x"}


def test_quote_arg():
    assert quote_arg('a"b\\c\nd') == '"a\\"b\\\\c d"'
