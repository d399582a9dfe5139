"""Live calls through the API against the sandbox Asterisk: a real call in progress is listed,
an admin hangs it up (AMI Hangup), Asterisk ends it and the call is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

NUMBER = "+18005550100"


def api(controller, token: str, method: str, path: str):
    req = urllib.request.Request(f"http://127.0.0.1:{controller.http_port}/api/v1{path}", method=method,
                                 headers={"Authorization": f"Bearer {token}"}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.asterisk
def test_hang_up_a_live_call(controller, sipp):
    buyer = sipp.buyer("answer")
    controller.seed([{"name": "Buyer A", "destination": buyer.dest.split("/", 2)[2], "ring_timeout": 5,
                      "min_duration": 1, "revenue": "40.00"}])
    tokens = {}
    for role in ("admin", "noc"):
        made = subprocess.run([sys.executable, "-m", "ppcswitch", "user", "add", role, "--role", role],
                              env=controller.env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        out = subprocess.run([sys.executable, "-m", "ppcswitch", "user", "token", role, "--name", "t"],
                             env=controller.env, capture_output=True, text=True, timeout=60)
        tokens[role] = out.stdout.strip().splitlines()[-1]
    controller.start()

    proc = sipp.start_call(NUMBER, caller="+14155550123", seconds=30)
    deadline, live = time.monotonic() + 15, []
    while time.monotonic() < deadline and not any(c["answered"] for c in live):
        time.sleep(0.2)
        live = api(controller, tokens["noc"], "GET", "/live-calls")[1]["items"]
    [call] = live
    assert call["answered"] and call["campaign"] == "HVAC"
    status, body = api(controller, tokens["noc"], "POST", f"/live-calls/{call['linkedid']}/hangup")
    assert status == 403 and body["error"]["code"] == "forbidden"  # noc is read-only
    started = time.monotonic()
    status, body = api(controller, tokens["admin"], "POST", f"/live-calls/{call['linkedid']}/hangup")
    assert status == 200, body
    result = sipp.result(proc)
    assert result.answered and result.hangup == "remote" and time.monotonic() - started < 10, result
    [record] = controller.wait_calls(1)
    assert record["linkedid"] == call["linkedid"] and record["connected_ms"] < 25000
    assert api(controller, tokens["admin"], "GET", "/live-calls")[1]["items"] == []
    status, body = api(controller, tokens["admin"], "POST", f"/live-calls/{call['linkedid']}/hangup")
    assert status == 404
