"""Nothing let in: strangers, unknown numbers, dialplan injection and scanners never create an
outbound leg and bill nothing; the controller's sockets listen on loopback by default.

Real Asterisk, real controller, SIPp callers and a SIPp buyer that counts every INVITE it gets."""

from __future__ import annotations

import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from ppcswitch.config import load_settings
from ppcswitch.recovery import read_new_rows
from ppcswitch.sandbox import SIPP_SCENARIOS, STRANGER_IP

NUMBER = "+18005550100"
ROOT = Path(__file__).resolve().parents[2]

# Dialled numbers a caller controls: each must be refused before any Dial().
INJECTIONS = [
    "+18005550100&PJSIP/evil@127.0.0.1",
    "18005550100,1",
    "+18005550100;x=1",
    "%24%7BSHELL(id)%7D",
    "+1800)(Dial",
    "+18005550100%0aexten",
]


def listening(port: int) -> list[str]:
    """Local addresses with a TCP socket listening on port (from /proc/net/tcp and tcp6)."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                raw = bytes.fromhex(addr)
                if name == "tcp":
                    out.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    out.append(socket.inet_ntop(socket.AF_INET6, words))
    return out


def test_defaults_bind_loopback_and_ami_is_loopback_only():
    s = load_settings(env={})
    assert s.agi.host == "127.0.0.1" and s.http.host == "127.0.0.1" and s.ami.host == "127.0.0.1"
    assert s.agi.allowed_peers == ""  # loopback only
    manager = (ROOT / "asterisk/manager.conf").read_text()
    assert "bindaddr = 127.0.0.1" in manager and "webenabled = no" in manager
    assert "deny = 0.0.0.0/0.0.0.0" in manager and "permit = 127.0.0.1/255.255.255.255" in manager


def test_strangers_unknown_numbers_and_injection_never_reach_a_buyer(controller, sipp, sandbox):
    buyer = sipp.buyer("answer")
    controller.seed([{"name": "A", "destination": buyer.dest.split("/", 2)[2], "min_duration": 1}])
    controller.env["PPCSWITCH_HTTP_METRICS_PASSWORD"] = "s3cret"
    controller.start()

    # The controller's own sockets: FastAGI and HTTP on loopback only.
    # (The suite's controller listens on the sandbox instance's loopback address; a `ppcswitch dev`
    # beside it on 127.0.0.1.)
    assert listening(4573) and all(a.startswith("127.") for a in listening(4573))
    assert set(listening(controller.http_port)) <= {"127.0.0.1"}
    # /metrics asks for credentials when a password is set.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{controller.http_port}/metrics", timeout=2)
        raise AssertionError("/metrics answered without credentials")
    except urllib.error.HTTPError as e:
        assert e.code == 401

    cdr_file = sandbox.cdr_file
    _, cdr_offset = read_new_rows(str(cdr_file), 0)
    calls = [sipp.start_call(NUMBER, source_ip=STRANGER_IP, seconds=1),  # no trunk
             sipp.start_call("+18005550199", seconds=1)]  # not a tracking number
    calls += [sipp.start_call(n, seconds=1) for n in INJECTIONS]
    results = [sipp.result(p, timeout=20) for p in calls]
    for r in results:
        assert not r.answered, r

    # A scanner: OPTIONS and REGISTER with User-Agent friendly-scanner, 200 of each, fast.
    shutil.copy(SIPP_SCENARIOS / "uac_scanner.xml", sandbox.in_root(sandbox.sipp_dir) / "uac_scanner.xml")
    security_log = sandbox.log_dir / "security"
    before = security_log.stat().st_size if security_log.exists() else 0
    scan = sandbox._start_sipp("scanner", [sandbox.sip_target, "-sf", f"{sandbox.sipp_dir}/uac_scanner.xml",
                                           "-i", STRANGER_IP, "-r", "100", "-m", "200", "-timeout", "15s"])
    sipp.procs.append(scan)
    scan.wait(20)

    time.sleep(1.5)
    assert buyer.invites() == []  # no outbound leg, ever
    # Asterisk's own record agrees: these calls never ran Dial().
    rows, _ = read_new_rows(str(cdr_file), cdr_offset)
    assert rows and all(r.app != "Dial" for r in rows), rows
    recorded = controller.calls()
    assert all(not c["billable"] and c["revenue_cents"] == 0 and c["payout_cents"] == 0 for c in recorded), recorded
    assert all(c["attempts"] == [] for c in recorded), recorded
    # The stranger's INVITE never reached the dialplan: no record from it.
    assert len(recorded) <= len(results) - 1
    # The scanner left its trace in the security log that fail2ban reads (deploy/fail2ban).
    assert security_log.exists() and security_log.stat().st_size > before
    text = security_log.read_text(errors="replace")[before:]
    assert 'RemoteAddress="IPV4/UDP/127.0.0.3/' in text
