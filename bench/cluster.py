"""Cluster benchmark: one node alone versus two nodes behind the edge, same offered load, one run.

    python bench/cluster.py                    # 20 calls/s for 20 s, each way
    python bench/cluster.py --rate 40 --seconds 30

Needs root, the sandbox root and PostgreSQL (127.0.0.1:5432). Brings up its own cluster
(`ppcswitch sandbox cluster`, database ppcswitch_cluster_bench, dropped at the end) unless one
is running, in which case it refuses. Both runs go through Kamailio: "one node" has node2
disabled at the edge (dispatcher.set_state d), "cluster" has both nodes. Same SIPp caller, same
buyer, fresh callers (the duplicate rule never refuses).

Figures: achieved calls/s (180s received per second over the run), failed calls (SIPp),
post-dial delay p50/p99 (INVITE -> 180, SIPp rtd: edge + node + controller + buyer), records
stored, each node's share, and the CPU seconds per call of the cluster's processes (Kamailio, the
Asterisk nodes, the controllers); then each controller's shared reservations (one round trip to
PostgreSQL per leg: every bench buyer has a concurrency cap, never reached): their count, mean,
and p50/p99 over both runs (`ppcswitch_cluster_reservation_seconds{quantile}`). On one machine both nodes share its cores, so the cluster's
ceiling is about one node's: the run shows what the edge and the shared database cost, and
that calls spread; a second machine is what adds capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import csv
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from ppcswitch.cluster import SIPP_DIR, Cluster  # noqa: E402
from ppcswitch.config import load_settings  # noqa: E402
from ppcswitch.sandbox import TRUNK_IP, free_udp_port  # noqa: E402
from ppcswitch.storage import db, repo  # noqa: E402

NUMBERS = [f"+1800555{1000 + i:04d}" for i in range(20)]


async def seed(url: str, buyer_uri: str) -> None:
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s, s.begin():
            await repo.create_campaign(s, "Bench")
            await repo.create_publisher(s, "Pub", payout="1.00")
            for i in range(5):
                await repo.create_buyer(s, name=f"B{i}", destination=buyer_uri, revenue="5.00", min_duration=1,
                                        concurrency_cap=1000)  # a limit, never reached: every leg is reserved
                await repo.add_campaign_buyer(s, "Bench", f"B{i}", i + 1)
            for n in NUMBERS:
                await repo.add_tracking_number(s, n, "Bench", "Pub")
    finally:
        await engine.dispose()


async def stored(url: str, prefix: str) -> collections.Counter:
    engine = db.make_engine(url)
    try:
        async with engine.connect() as conn:
            from sqlalchemy import text

            rows = await conn.execute(text("SELECT linkedid FROM calls WHERE caller LIKE :p"), {"p": prefix + "%"})
            return collections.Counter(r[0].split("-", 1)[0] for r in rows)
    finally:
        await engine.dispose()


def cpu_seconds(c: Cluster) -> float:
    """User + system CPU of Kamailio (all its processes), the Asterisk nodes and the controllers."""
    import os

    mine = {p for p in [c.kamailio_pid()] + [c.asterisk_pid(n) for n in c.nodes] + [c.controller_pid(n) for n in c.nodes] if p}
    kam = c.kamailio_pid()
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid in mine or (kam and ppid == kam):
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def run_load(c: Cluster, label: str, rate: float, seconds: float, prefix: str) -> dict:
    calls = int(rate * seconds)
    cpu_before = cpu_seconds(c)
    work = c.root / SIPP_DIR.lstrip("/") / "bench"
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{label}-{int(time.time() * 1000)}"
    (work / f"{tag}.csv").write_text("SEQUENTIAL\n" + "".join(
        f"{NUMBERS[i % len(NUMBERS)]};{prefix}{i:06d}\n" for i in range(calls)))
    (work / f"{tag}.xml").write_bytes((REPO / "ppcswitch/sipp/uac_load.xml").read_bytes())
    cmd = ["chroot", str(c.root), "/bin/sh", "-c", 'cd "$0" && exec sipp "$@"', f"{SIPP_DIR}/bench",
           c.sip_target, "-sf", f"{SIPP_DIR}/bench/{tag}.xml", "-i", TRUNK_IP, "-inf", f"{SIPP_DIR}/bench/{tag}.csv",
           "-r", f"{rate:g}", "-m", str(calls), "-d", "1000", "-l", str(int(rate * 12) + 10), "-nostdin",
           "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1", "-timeout", f"{seconds + 60:g}s"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(seconds + 90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    cpu = cpu_seconds(c) - cpu_before
    pdd, stamps = [], []
    rtt = next(work.glob(f"{tag}_*_rtt.csv"), None)
    if rtt:
        for row in csv.reader(rtt.read_text().splitlines()[1:], delimiter=";"):
            with contextlib.suppress(ValueError, IndexError):
                stamps.append(float(row[0]))
                pdd.append(float(row[1]))
    ok = failed = 0
    stat = next(work.glob(f"{tag}_*_.csv"), None)
    if stat:
        rows = list(csv.reader(stat.read_text().splitlines(), delimiter=";"))
        col = {name: i for i, name in enumerate(rows[0])}
        ok, failed = int(rows[-1][col["SuccessfulCall(C)"]]), int(rows[-1][col["FailedCall(C)"]])
    span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
    pct = lambda q: statistics.quantiles(pdd, n=100)[q - 1] if len(pdd) >= 2 else float("nan")  # noqa: E731
    deadline = time.monotonic() + 60
    per_node, last = collections.Counter(), -1
    while time.monotonic() < deadline:  # records land once the writer has them
        per_node = asyncio.run(stored(c.database_url, prefix))
        if sum(per_node.values()) >= ok or sum(per_node.values()) == last:
            break
        last = sum(per_node.values())
        time.sleep(3)
    return {"label": label, "offered": rate, "placed": calls, "ok": ok, "failed": failed,
            "cps": (len(stamps) - 1) / span if span else 0.0, "p50": pct(50), "p99": pct(99),
            "stored": sum(per_node.values()), "nodes": dict(sorted(per_node.items())),
            "cpu_ms": cpu / max(ok, 1) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    c = Cluster(load_settings().sandbox, database="ppcswitch_cluster_bench")
    if c.is_running():
        print("a cluster is already running: ppcswitch sandbox cluster down", file=sys.stderr)
        return 2
    c.drop_database()
    c.up(out=lambda *_: None)
    try:
        buyer = c.start_sipp_uas("answer", port=free_udp_port())
        asyncio.run(seed(c.database_url, buyer.dest.split("/", 2)[2]))
        time.sleep(3)  # both controllers load the network
        node2 = c.nodes[1]
        c.kamcmd("dispatcher.set_state", "d", "1", node2.sip_uri)
        one = run_load(c, "one node", args.rate, args.seconds, "+1415500")
        c.kamcmd("dispatcher.set_state", "ip", "1", node2.sip_uri)
        c.wait_node_state(node2, True)
        both = run_load(c, "cluster", args.rate, args.seconds, "+1415600")
        print(f"{'run':<10} {'offered/s':>9} {'placed':>7} {'cps':>6} {'failed':>6} {'PDD p50 ms':>10} {'p99 ms':>7} "
              f"{'stored':>7} {'CPU ms/call':>11}  per node")
        for r in (one, both):
            print(f"{r['label']:<10} {r['offered']:>9g} {r['placed']:>7} {r['cps']:>6.1f} {r['failed']:>6} "
                  f"{r['p50']:>10.1f} {r['p99']:>7.1f} {r['stored']:>7} {r['cpu_ms']:>11.1f}  {r['nodes']}")
        for node in c.nodes:  # the shared reservations (cluster.reservations = postgresql): one round trip each
            text = urllib.request.urlopen(f"http://{node.ip}:8080/metrics", timeout=5).read().decode()
            got = dict(re.findall(r"^(ppcswitch_cluster_reservation\w+|ppcswitch_cluster_reservations_total\{result=\"\w+\"\}) (\S+)$",
                                  text, re.M))
            n = float(got.get("ppcswitch_cluster_reservation_seconds_count", 0))
            mean = float(got.get("ppcswitch_cluster_reservation_seconds_sum", 0)) / n * 1000 if n else float("nan")
            q = dict(re.findall(r'^ppcswitch_cluster_reservation_seconds\{quantile="([\d.]+)"\} (\S+)$', text, re.M))
            print(f"{node.name}: {n:.0f} shared reservations, 1 round trip each, mean {mean:.2f} ms, "
                  f"p50 {float(q.get('0.5', 'nan')) * 1000:.2f} ms, p99 {float(q.get('0.99', 'nan')) * 1000:.2f} ms")
    finally:
        c.down()
        c.drop_database()
    return 0


if __name__ == "__main__":
    sys.exit(main())
