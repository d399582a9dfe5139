"""Faults under SIPp load, real processes: the controller killed with SIGKILL and restarted, the
SQLite database locked by another process for seconds. After each: every call SIPp placed is in
the call log exactly once with the right outcome, and no bridged call was cut by the fault."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

NUMBER = "+18005550100"
ROOT = Path(__file__).resolve().parents[2]


def caller(i: int) -> str:
    return f"+1415555{i:04d}"


def place(sipp, first: int, count: int, seconds: float) -> dict[str, object]:
    return {caller(i): sipp.start_call(NUMBER, caller=caller(i), seconds=seconds) for i in range(first, first + count)}


def check_all_once(controller, placed: dict, results: dict, buyer_id: int, timeout: float = 25) -> list[dict]:
    """Every placed call answered and hung up by its caller (not cut), and stored once, connected."""
    for who, r in results.items():
        assert r.answered and r.hangup == "caller", (who, str(r))
    deadline = time.monotonic() + timeout
    while len(calls := controller.calls()) < len(placed) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(1.5)  # a duplicate would show up now
    calls = controller.calls()
    by_caller = {}
    for c in calls:
        assert c["caller"] not in by_caller, f"{c['caller']} stored twice"
        by_caller[c["caller"]] = c
    assert sorted(by_caller) == sorted(placed), controller.log()[-3000:]
    for c in calls:
        assert c["outcome"] == "connected" and c["buyer_id"] == buyer_id and c["billable"], c
    return calls


def setup(controller, sipp, sandbox, **env):
    buyer = sipp.buyer("answer")
    controller.seed([{"name": "A", "destination": buyer.dest.split("/", 2)[2], "ring_timeout": 5, "min_duration": 1}])
    controller.env.update({"PPCSWITCH_ROUTING_FALLBACK_BUYER": "A", "PPCSWITCH_RECOVERY_INTERVAL": "1",
                           "PPCSWITCH_RECOVERY_CDR_FILE": str(sandbox.cdr_file),
                           **env})
    controller.start()
    return buyer, controller.ids()["A"]


def test_kill_9_of_the_controller_under_load_loses_and_cuts_nothing(controller, sipp, sandbox):
    buyer, buyer_id = setup(controller, sipp, sandbox)
    placed = place(sipp, 0, 6, seconds=4)  # up and bridged when the controller dies
    time.sleep(1.5)
    controller.stop(signal.SIGKILL)
    placed |= place(sipp, 100, 4, seconds=1)  # while it is down: the fallback buyer takes them
    time.sleep(1.0)
    controller.start()
    placed |= place(sipp, 200, 4, seconds=1)  # after the restart
    results = {who: sipp.result(p, timeout=30) for who, p in placed.items()}
    check_all_once(controller, placed, results, buyer_id)
    assert len(buyer.invites()) == len(placed)


def test_database_locked_for_seconds_routing_goes_on_and_writes_catch_up(controller, sipp, sandbox):
    buyer, buyer_id = setup(controller, sipp, sandbox)
    db_file = controller.db_url.split(":///", 1)[1]
    # Another process takes the SQLite write lock and holds it for 6 s.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({db_file!r}, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(6)\n"
        "c.execute('ROLLBACK')\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        placed = place(sipp, 0, 8, seconds=1)
        results = {who: sipp.result(p, timeout=30) for who, p in placed.items()}
        # Routing answered from memory while the database was locked; the records wait in the queue.
        assert holder.poll() is None, "the lock was released before the calls ended: test too slow"
        health = controller.health()
        assert health["write_queue_depth"] >= 1, health
        metrics = controller.metrics()
        m = re.search(r"^ppcswitch_db_write_queue_depth\S* (\S+)$", metrics, re.M)
        assert m is None or float(m.group(1)) >= 1
    finally:
        holder.wait(15)
    check_all_once(controller, placed, results, buyer_id)
    assert controller.health()["write_queue_depth"] == 0
