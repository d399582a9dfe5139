"""agi .../inbound over a real socket: the three steps' variables in one answer, status last.

(The telephony tests prove it with the real Asterisk; this pins the protocol details.)"""

from __future__ import annotations

import asyncio

import pytest

from ppcswitch import channel_vars as cv
from ppcswitch.agi import inbound
from ppcswitch.agi.server import FastAgiServer

HEADERS = (b"agi_network: yes\nagi_network_script: inbound\nagi_request: agi://127.0.0.1/inbound\n"
           b"agi_channel: PJSIP/trunk-00000001\nagi_uniqueid: 1700000000.1\nagi_extension: +18005550100\nagi_arg_1: 1700000000.1\n\n")


async def _talk(handlers, headers: bytes = HEADERS) -> list[str]:
    srv = FastAgiServer(handlers, "127.0.0.1", 0, header_timeout=1, max_header_bytes=4096, command_timeout=1)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(headers)
        await writer.drain()
        commands = []
        while line := await asyncio.wait_for(reader.readline(), 2):
            commands.append(line.decode().strip())
            cmd = commands[-1]
            if cmd.startswith("GET"):  # one value per expression asked ("|" joins them)
                answer = ("200 result=1 (" + "|".join(f"v{i}" for i in range(cmd.count("|") + 1)) + ")\n").encode()
            else:  # EXEC MSet answers what the application returned: 0
                answer = b"200 result=0\n" if cmd.startswith("EXEC") else b"200 result=1\n"
            writer.write(answer)
            await writer.drain()
        writer.close()
        return commands
    finally:
        await srv.stop()


def _handlers(screen_vars: dict, calls: list[str], expressions=()):
    async def attribution(req):
        calls.append("attribution")
        _, _, text = await req.command('GET FULL VARIABLE "${X}"')
        calls.append(text)

    async def screen(req):
        calls.append("screen")
        for k, v in screen_vars.items():
            await req.set_variable(k, v)

    async def route(req):
        calls.append("route")
        for k, v in {cv.ROUTE_STATUS: "ROUTE", cv.DEST: "PJSIP/b1", cv.DIAL_TIMEOUT: "20"}.items():
            await req.set_variable(k, v)

    return {"inbound": inbound.make_handler(attribution, screen, route, expressions)}


@pytest.mark.asyncio
async def test_one_request_routes_and_sets_the_status_last():
    calls: list[str] = []
    commands = await _talk(_handlers({cv.CHALLENGE: "", cv.RECORD: ""}, calls))
    assert calls == ["attribution", "(v0)", "screen", "route"]
    # Empty values the dialplan cleared before the AGI are not sent; the rest goes in one MSet,
    # which sets them in order: the status last.
    assert commands == ['GET FULL VARIABLE "${X}"',
                        'EXEC MSet "PPC_DEST=PJSIP/b1,PPC_DIAL_TIMEOUT=20,PPC_ROUTE_STATUS=ROUTE"']


@pytest.mark.asyncio
async def test_headers_are_read_in_one_request():
    calls: list[str] = []
    commands = await _talk(_handlers({}, calls, expressions=["${Y}", "${X}"]))
    assert commands[0] == 'GET FULL VARIABLE "${Y}|${X}"' and calls[1] == "(v1)"  # answered from that read
    assert not any(c == 'GET FULL VARIABLE "${X}"' for c in commands)
    # Not a PJSIP channel: no headers to read, the step asks for itself.
    calls.clear()
    commands = await _talk(_handlers({}, calls, expressions=["${Y}", "${X}"]),
                           HEADERS.replace(b"agi_uniqueid", b"agi_type: IAX2\nagi_uniqueid"))
    assert commands[0] == 'GET FULL VARIABLE "${X}"'


@pytest.mark.asyncio
async def test_values_that_mset_could_misread_are_set_alone_before_the_status():
    calls: list[str] = []
    commands = await _talk(_handlers({cv.RECORD: "/var/rec/a b,c.wav", cv.CHALLENGE: ""}, calls))
    assert commands[1:] == ['EXEC MSet "PPC_DEST=PJSIP/b1,PPC_DIAL_TIMEOUT=20"',
                            'SET VARIABLE PPC_RECORD "/var/rec/a b,c.wav"',
                            'SET VARIABLE PPC_ROUTE_STATUS "ROUTE"']


@pytest.mark.asyncio
async def test_a_refused_or_challenged_call_is_not_routed_yet():
    calls: list[str] = []
    commands = await _talk(_handlers({cv.ROUTE_STATUS: "REJECT", cv.HANGUP_CAUSE: "21"}, calls))
    assert calls == ["attribution", "(v0)", "screen"]
    assert commands[-1] == 'EXEC MSet "PPC_HANGUP_CAUSE=21,PPC_ROUTE_STATUS=REJECT"'
    calls.clear()
    commands = await _talk(_handlers({cv.CHALLENGE: "1"}, calls))
    assert calls == ["attribution", "(v0)", "screen"] and commands[-1] == 'SET VARIABLE PPC_CHALLENGE "1"'


@pytest.mark.asyncio
async def test_a_failing_screen_does_not_stop_routing():
    calls: list[str] = []
    handlers = _handlers({}, calls)

    async def broken(req):
        raise RuntimeError("fraud scorer bug")

    async def route(req):
        await req.set_variable(cv.ROUTE_STATUS, "ROUTE")

    handlers["inbound"] = inbound.make_handler(broken, broken, route)
    commands = await _talk(handlers)
    assert commands == ['SET VARIABLE PPC_ROUTE_STATUS "ROUTE"']
