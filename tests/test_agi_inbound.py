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


async def _talk(handlers) -> list[str]:
    srv = FastAgiServer(handlers, "127.0.0.1", 0, header_timeout=1, max_header_bytes=4096, command_timeout=1)
    await srv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(HEADERS)
        await writer.drain()
        commands = []
        while line := await asyncio.wait_for(reader.readline(), 2):
            commands.append(line.decode().strip())
            answer = b"200 result=1 (abc)\n" if commands[-1].startswith("GET") else b"200 result=1\n"
            writer.write(answer)
            await writer.drain()
        writer.close()
        return commands
    finally:
        await srv.stop()


def _handlers(screen_vars: dict, calls: list[str]):
    async def attribution(req):
        calls.append("attribution")
        await req.command('GET FULL VARIABLE "${X}"')

    async def screen(req):
        calls.append("screen")
        for k, v in screen_vars.items():
            await req.set_variable(k, v)

    async def route(req):
        calls.append("route")
        for k, v in {cv.ROUTE_STATUS: "ROUTE", cv.DEST: "PJSIP/b1", cv.DIAL_TIMEOUT: "20"}.items():
            await req.set_variable(k, v)

    return {"inbound": inbound.make_handler(attribution, screen, route)}


@pytest.mark.asyncio
async def test_one_request_routes_and_sets_the_status_last():
    calls: list[str] = []
    commands = await _talk(_handlers({cv.CHALLENGE: "", cv.RECORD: ""}, calls))
    assert calls == ["attribution", "screen", "route"]
    assert commands[0].startswith("GET FULL VARIABLE")
    sets = [c for c in commands if c.startswith("SET VARIABLE")]
    # Empty values the dialplan cleared before the AGI are not sent; the status comes last.
    assert sets == ['SET VARIABLE PPC_DEST "PJSIP/b1"', 'SET VARIABLE PPC_DIAL_TIMEOUT "20"',
                    'SET VARIABLE PPC_ROUTE_STATUS "ROUTE"']


@pytest.mark.asyncio
async def test_a_refused_or_challenged_call_is_not_routed_yet():
    calls: list[str] = []
    commands = await _talk(_handlers({cv.ROUTE_STATUS: "REJECT", cv.HANGUP_CAUSE: "21"}, calls))
    assert calls == ["attribution", "screen"] and commands[-1] == 'SET VARIABLE PPC_ROUTE_STATUS "REJECT"'
    calls.clear()
    commands = await _talk(_handlers({cv.CHALLENGE: "1"}, calls))
    assert calls == ["attribution", "screen"] and commands[-1] == 'SET VARIABLE PPC_CHALLENGE "1"'


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
