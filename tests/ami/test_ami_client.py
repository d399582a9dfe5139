"""The AMI client: login checked, dead links noticed, nothing re-sent, events in order.

Protocol corner cases use a scripted AMI peer on loopback (narrow unit tests);
login against the real sandbox Asterisk is checked at the end.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from ppcswitch.ami.client import AmiClient
from ppcswitch.config import AmiSettings


class ScriptedAmi:
    """Speaks just enough AMI: banner, Login, Ping (optionally never answered), events on demand."""

    def __init__(self, accept_login=True, answer_pings=True):
        self.accept_login = accept_login
        self.answer_pings = answer_pings
        self.actions: list[dict] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self):
        self.server = await asyncio.start_server(self.client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self):
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()

    async def client(self, reader, writer):
        self.connections += 1
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                action = dict(line.split(": ", 1) for line in block.decode().strip().split("\r\n") if ": " in line)
                self.actions.append(action)
                aid = action.get("ActionID", "")
                name = action.get("Action", "").lower()
                if name == "login":
                    ok = self.accept_login
                    writer.write(
                        f"Response: {'Success' if ok else 'Error'}\r\nActionID: {aid}\r\nMessage: {'Authentication accepted' if ok else 'Authentication failed'}\r\n\r\n".encode()
                    )
                elif name == "ping" and self.answer_pings:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode())
                # Originate and everything else: never answered (the link dies first).
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send_raw(self, data: bytes):
        self.writers[-1].write(data)


def settings(port, **kw):
    base = dict(host="127.0.0.1", port=port, username="ppcswitch", secret="s", ping_interval=0.2, pong_timeout=0.2, reconnect_min=0.05, reconnect_max=0.2)
    return AmiSettings(**{**base, **kw})


async def wait_for(pred, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def test_refused_login_is_not_a_connection_and_is_retried(caplog):
    peer = ScriptedAmi(accept_login=False)
    await peer.start()
    client = AmiClient(settings(peer.port), on_event=lambda e: None)
    with caplog.at_level(logging.ERROR):
        await client.start()
        await wait_for(lambda: peer.connections >= 3)
        assert not client.connected
        await client.stop()
    await peer.stop()
    assert "AMI login refused" in caplog.text


async def test_unanswered_ping_drops_the_link_and_reconnects():
    peer = ScriptedAmi(answer_pings=False)
    await peer.start()
    client = AmiClient(settings(peer.port), on_event=lambda e: None)
    await client.start()
    await wait_for(lambda: client.connected)
    await wait_for(lambda: peer.connections >= 2 and client.reconnects >= 1)
    await client.stop()
    await peer.stop()


async def test_pending_originate_fails_and_is_never_resent():
    peer = ScriptedAmi()
    await peer.start()
    client = AmiClient(settings(peer.port, ping_interval=30), on_event=lambda e: None)
    await client.start()
    await wait_for(lambda: client.connected)
    pending = asyncio.ensure_future(client.action({"Action": "Originate", "Channel": "PJSIP/x"}, timeout=5))
    await wait_for(lambda: any(a.get("Action") == "Originate" for a in peer.actions))
    for w in peer.writers:  # the link dies with the Originate unanswered
        w.close()
    with pytest.raises(ConnectionError):
        await pending
    await wait_for(lambda: peer.connections >= 2 and client.connected)
    peer.send_raw(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
    await asyncio.sleep(0.3)
    assert [a.get("Action") for a in peer.actions].count("Originate") == 1
    await client.stop()
    await peer.stop()


async def test_events_in_order_and_utf8_split_across_reads():
    peer = ScriptedAmi()
    await peer.start()
    got = []
    client = AmiClient(settings(peer.port, ping_interval=30), on_event=lambda e: got.append(dict(e)))
    await client.start()
    await wait_for(lambda: client.connected)
    name = "José Ñandú 東京".encode()
    peer.send_raw(b"Event: Newchannel\r\nUniqueid: 1\r\nCallerIDName: " + name[:3])
    await asyncio.sleep(0.05)
    peer.send_raw(name[3:] + b"\r\n\r\n")
    for i in range(2, 200):
        peer.send_raw(f"Event: VarSet\r\nUniqueid: {i}\r\n\r\n".encode())
    await wait_for(lambda: len(got) >= 199)
    assert got[0]["CallerIDName"] == "José Ñandú 東京"
    assert [int(e["Uniqueid"]) for e in got] == list(range(1, 200))
    await client.stop()
    await peer.stop()


@pytest.mark.asterisk
async def test_login_against_the_sandbox(sandbox_ami):
    good = AmiClient(AmiSettings(**{**sandbox_ami.__dict__, "reconnect_min": 0.1}), on_event=lambda e: None)
    bad = AmiClient(AmiSettings(**{**sandbox_ami.__dict__, "secret": "wrong", "reconnect_min": 0.1}), on_event=lambda e: None)
    await good.start()
    await bad.start()
    await wait_for(lambda: good.connected, 5)
    resp = await good.action({"Action": "Ping"})
    assert resp.success
    await asyncio.sleep(0.5)
    assert not bad.connected
    await good.stop()
    await bad.stop()
