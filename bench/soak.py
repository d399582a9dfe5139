"""Soak: a steady call rate through ppcswitch for a long time; controller memory and open files flat.

    python bench/soak.py --minutes 30 --rate 20

Needs root and the sandbox; holds the telephony lock. Starts a real `ppcswitch serve`
(fresh SQLite database, the same network as bench/throughput.py, smaller by default),
one SIPp buyer, and a SIPp caller at --rate calls/s for --minutes, from a population of
--callers distinct callers (repeat callers get the duplicate rule, repeat-caller routing
and fraud checks, as on a real network). Every --sample seconds
it prints the controller's RSS (MiB), open file descriptors, live calls and write queue
depth; at the end: failed calls, the growth of RSS and fds between the first and the last
third of the run, and stored records against Asterisk's own CDRs.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from throughput import (Bench, ControllerProcess, callers, seed_network, tracking_numbers,  # noqa: E402
                        wait_stored)

from ppcswitch.config import load_settings  # noqa: E402
from ppcswitch.recovery import read_new_rows  # noqa: E402
from ppcswitch.sandbox import Sandbox  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20, help="calls per second")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds each call is held")
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples")
    ap.add_argument("--buyers", type=int, default=1000)
    ap.add_argument("--numbers", type=int, default=10000)
    ap.add_argument("--callers", type=int, default=5000,
                    help="distinct callers, called in turn (0: every call a new caller). The controller keeps "
                         "state per caller (duplicate rule, repeat callers, fraud velocity), so memory is flat "
                         "once the population has been seen, and grows with it when every call is new")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/soak.py needs root (the sandbox runs in a chroot)", file=sys.stderr)
        return 2
    box = Sandbox(load_settings().sandbox)
    box.acquire()
    try:
        with open(box.home / ".telephony.lock", "w") as lock:
            print("waiting for the telephony lock ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
            return soak(box, args)
    finally:
        box.release()


def soak(box: Sandbox, args) -> int:
    seconds = args.minutes * 60
    bench = Bench(box, args.hold)
    numbers = tracking_numbers(args.numbers)
    total = int(args.rate * seconds * 1.1) + 100
    pool = callers(args.callers or total)
    bench.write_calls(numbers, [pool[i % len(pool)] for i in range(total)])
    buyer = box.start_sipp_uas("answer")
    cdr_file = box.root / "var/log/asterisk/cdr-csv/Master.csv"
    ctl = ControllerProcess(Path(tempfile.mkdtemp(prefix="ppcswitch-soak-")), box.ami_settings(),
                            PPCSWITCH_RECOVERY_CDR_FILE=str(cdr_file))
    samples: list[tuple[float, float, int]] = []
    queue: list[int] = []
    try:
        asyncio.run(seed_network(ctl.db_url, buyer.port, args.buyers, numbers))
        ctl.start()
        pid = ctl.proc.pid
        _, offset = read_new_rows(str(cdr_file), 0)
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(r=bench.run("soak", args.rate, seconds, pid)))
        started = time.monotonic()
        runner.start()
        print(f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'live':>5} {'queue':>6}", flush=True)
        while runner.is_alive():
            t = time.monotonic() - started
            health = ctl.health() or {}
            samples.append((t, rss_mib(pid), fds(pid)))
            if isinstance(health.get("write_queue_depth"), int):
                queue.append(health["write_queue_depth"])
            print(f"{t:6.0f} {samples[-1][1]:8.1f} {samples[-1][2]:5d} {health.get('live_calls', '?'):>5} "
                  f"{health.get('write_queue_depth', '?'):>6}", flush=True)
            runner.join(args.sample)
        res = result["r"]
        time.sleep(args.hold + 3)
        in_cdr = len({r.linkedid for r in read_new_rows(str(cdr_file), offset)[0]})
        stored = wait_stored(ctl.db_url, in_cdr)
    finally:
        ctl.stop()
        box.stop_sipp(buyer)
        time.sleep(1)
        box.cli("channel request hangup all")  # we hold the telephony lock: every channel left is ours
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    avg = lambda xs, i: sum(x[i] for x in xs) / len(xs)  # noqa: E731
    print()
    print(f"{args.minutes:g} min at {args.rate:g} calls/s: placed {res.placed}, successful {res.successful}, "
          f"failed {res.failed}, PDD p50 {res.pct(50):.1f} ms p99 {res.pct(99):.1f} ms")
    middle = samples[third:-third] or samples
    print(f"controller RSS: thirds {avg(first, 1):.1f} / {avg(middle, 1):.1f} / {avg(last, 1):.1f} MiB, "
          f"max {max(s[1] for s in samples):.1f} MiB ({args.callers or 'every call a new'} callers)")
    print(f"controller open fds: thirds {avg(first, 2):.1f} / {avg(middle, 2):.1f} / {avg(last, 2):.1f}, "
          f"max {max(s[2] for s in samples)}")
    if queue:
        print(f"write queue depth: max {max(queue)}, mean {sum(queue) / len(queue):.1f} over {len(queue)} samples")
    print(f"records stored {stored}, calls in Asterisk's CDRs {in_cdr}")
    return 0 if res.failed == 0 and stored == in_cdr else 1


if __name__ == "__main__":
    sys.exit(main())
