"""Sandbox Asterisk and SIPp fixtures.

`sandbox` (session): the real Asterisk 22 of `ppcswitch sandbox`'s root, as its own instance
("tests", on 127.0.4.1: SIP 5060, AMI 5038, the controller's FastAGI 4573; its configuration in
`sandbox.etc_dir`, logs in `sandbox.log_dir`), built if needed and started with the repository's
configuration; stopped at the end by the last test session using it. It runs beside a
`ppcswitch dev` or `ppcswitch sandbox up` on the same machine, which it leaves alone.
When it cannot run (not root, no mmdebstrap, build or start failure) tests
using it are skipped with the reason, or fail when PPCSWITCH_REQUIRE_SERVICES=1 (CI).

`sipp_buyer(kind="answer"|"busy"|"noanswer", port=None)` starts a SIPp buyer
on 127.0.0.1 and returns it (`.dest` is its PJSIP Dial target, `.invites()`
the calls it got); `sipp_call(number, caller=..., display=..., seconds=...,
source_ip="127.0.0.2")` places one call and returns a CallResult (`.code`,
`.answered`, `.early_media`, `.hangup`). `sipp` has both plus `start_call` /
`result` for calls that run while the test does something else. Every SIPp
process is stopped by PID at teardown. `sandbox_ami` is the AmiSettings
(host, port, username, secret) a controller needs to reach the sandbox.
"""

from __future__ import annotations

import fcntl
import os

import pytest

from ppcswitch.config import AmiSettings, load_settings
from ppcswitch.sandbox import CallResult, Sandbox, SandboxError, SippProcess

__all__ = ["sandbox", "sandbox_ami", "sipp", "sipp_buyer", "sipp_call"]


def require_services() -> bool:
    """CI sets PPCSWITCH_REQUIRE_SERVICES=1: missing services fail instead of skipping."""
    return "1" in (os.environ.get("PPCSWITCH_REQUIRE_SERVICES"), os.environ.get("PPCSWITCH_REQUIRE_ASTERISK"))


def _unavailable(reason: str) -> None:
    if require_services():
        pytest.fail(f"{reason} (PPCSWITCH_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


# The suite's own Asterisk: an instance of the sandbox root on its own address (ppcswitch/sandbox.py,
# INSTANCES), so the tests run while `ppcswitch dev` (the sandbox itself, 127.0.0.1) runs too.
TEST_INSTANCE = "tests"


@pytest.fixture(scope="session")
def sandbox():
    box = Sandbox(load_settings().sandbox, instance=TEST_INSTANCE)
    try:
        # Shared with other sessions and `ppcswitch sandbox up`: stopped only by the last
        # session out, and only if a session started it.
        box.acquire()
    except SandboxError as exc:
        _unavailable(f"sandbox Asterisk unavailable: {exc}")
    yield box
    box.release()


@pytest.fixture(scope="session")
def sandbox_ami(sandbox) -> AmiSettings:
    return sandbox.ami_settings()


class SippRunner:
    """SIPp buyers and callers for one test; close() stops them all by PID."""

    def __init__(self, box: Sandbox):
        self.box = box
        self.procs: list[SippProcess] = []

    def buyer(self, kind: str = "answer", port: int | None = None, **kwargs) -> SippProcess:
        proc = self.box.start_sipp_uas(kind, port=port, **kwargs)
        self.procs.append(proc)
        return proc

    def start_call(self, number: str, **kwargs) -> SippProcess:
        proc = self.box.start_sipp_uac(number, **kwargs)
        self.procs.append(proc)
        return proc

    def result(self, proc: SippProcess, timeout: float = 60.0) -> CallResult:
        return self.box.call_result(proc, timeout)

    def call(self, number: str, timeout: float = 60.0, **kwargs) -> CallResult:
        return self.result(self.start_call(number, **kwargs), timeout)

    def close(self) -> None:
        for proc in self.procs:
            self.box.stop_sipp(proc)
        self.procs.clear()


@pytest.fixture
def sipp(sandbox):
    # One telephony test at a time on this machine: test sessions running side by
    # side share the sandbox's SIP port, the dialplan's FastAGI port and its globals.
    with open(sandbox.home / ".telephony.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner = SippRunner(sandbox)
        try:
            yield runner
        finally:
            runner.close()


@pytest.fixture
def sipp_buyer(sipp):
    return sipp.buyer


@pytest.fixture
def sipp_call(sipp):
    return sipp.call
