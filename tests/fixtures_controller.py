"""A real `ppcswitch serve` process for telephony tests.

`controller` gives a ControllerProcess on a fresh SQLite database in tmp_path,
wired to the sandbox Asterisk's AMI; `seed(...)` writes the network through the
storage layer, `start()` / `stop()` / `kill()` manage the process by PID, and
`calls()` reads the call log back through `ppcswitch calls list --json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ppcswitch.storage import snapshot
from ppcswitch.config import load_settings
from ppcswitch.storage import db, repo

__all__ = ["controller", "ControllerProcess"]

AGI_PORT = 4573  # the dialplan's PPC_AGI_URL


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even killed, so no controller is left
    holding the AGI port for the next run."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class ControllerProcess:
    def __init__(self, tmp_path: Path, ami, **env):
        self.db_url = f"sqlite+aiosqlite:///{tmp_path}/ppcswitch.db"
        self.http_port = _free_tcp_port()
        self.log_path = tmp_path / "controller.log"
        self.env = {
            **os.environ,
            "PPCSWITCH_DATABASE_URL": self.db_url,
            "PPCSWITCH_AMI_HOST": ami.host,
            "PPCSWITCH_AMI_PORT": str(ami.port),
            "PPCSWITCH_AMI_USERNAME": ami.username,
            "PPCSWITCH_AMI_SECRET": ami.secret,
            "PPCSWITCH_AMI_RECONNECT_MAX": "2",
            "PPCSWITCH_AGI_HOST": ami.host,  # the sandbox instance's address: its dialplan's PPC_AGI_URL
            "PPCSWITCH_AGI_PORT": str(AGI_PORT),
            "PPCSWITCH_HTTP_PORT": str(self.http_port),
            "PPCSWITCH_ROUTING_RELOAD_INTERVAL": "0.3",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    # -- network ---------------------------------------------------------------
    def seed(self, buyers: list[dict], publisher_payout: str = "10.00", numbers=("+18005550100",)) -> None:
        """Campaign "HVAC", publisher "Pub", the given buyers in list order (priority 1, 2, ...)."""

        async def go():
            await db.upgrade(self.db_url)
            engine = db.make_engine(self.db_url)
            try:
                async with db.make_sessionmaker(engine)() as s, s.begin():
                    await repo.create_campaign(s, "HVAC")
                    await repo.create_publisher(s, "Pub", payout=publisher_payout)
                    for prio, spec in enumerate(buyers, 1):
                        await repo.create_buyer(s, **spec)
                        await repo.add_campaign_buyer(s, "HVAC", spec["name"], prio)
                    for n in numbers:
                        await repo.add_tracking_number(s, n, "HVAC", "Pub")
            finally:
                await engine.dispose()

        asyncio.run(go())

    def ids(self) -> dict[str, int]:
        async def go():
            engine = db.make_engine(self.db_url)
            try:
                async with db.make_sessionmaker(engine)() as s:
                    net = await snapshot.load_network(s, load_settings(env={}).routing)
                    out = {b.name: b.id for b in net.buyers.values()}
                    out.update({"campaign:" + c.name: c.id for c in net.campaigns.values()})
                    out.update({"publisher:" + p.name: p.id for p in net.publishers.values()})
                    return out
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ppcswitch", *args], env=self.env, capture_output=True, text=True, timeout=60)

    # -- process ---------------------------------------------------------------
    def start(self, wait_ami: bool = True, timeout: float = 20) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ppcswitch", "serve"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}:\n{self.log()}")
            health = self.health()
            if health and (health.get("ami_connected") or not wait_ami):
                return
            time.sleep(0.1)
        raise RuntimeError(f"controller not ready within {timeout}s:\n{self.log()}")

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())
        except OSError:
            return None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- call log --------------------------------------------------------------
    def calls(self) -> list[dict]:
        out = self.cli("calls", "list", "--json", "--limit", "1000")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def wait_calls(self, count: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls()
            if len(calls) >= count or time.monotonic() > deadline:
                return calls
            time.sleep(0.3)


@pytest.fixture
def controller(tmp_path, sandbox_ami, sipp):  # sipp: holds the telephony lock
    ctl = ControllerProcess(tmp_path, sandbox_ami)
    try:
        yield ctl
    finally:
        ctl.stop()
