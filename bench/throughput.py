"""Throughput benchmark: Asterisk alone versus Asterisk + ppcswitch, same load, one run.

    python bench/throughput.py            # ramp to saturation, then measure both there
    python bench/throughput.py --rate 60  # skip the ramp, measure both at 60 calls/s

Needs root and the sandbox (built and started if needed). Holds the telephony
lock (/var/lib/ppcswitch/sandbox/.telephony.lock) for the whole run, so other
telephony tests wait.

1. Static ceiling: the inbound extension is swapped at runtime (CLI `dialplan
   remove/add extension`) for a plain Dial() of the SIPp buyer; the shipped
   dialplan comes back with `dialplan reload` at the end, whatever happens.
2. The ramp raises the offered rate on the static dialplan until calls fail,
   the achieved rate falls below 97 % of the offered one or p99 post-dial delay
   passes 100 ms; the last good rate is the saturation point.
3. Both runs at that rate: static, then ppcswitch (a real `ppcswitch serve` on a
   fresh SQLite database with 1,000 buyers, 10,000 tracking numbers and every
   buyer rule on, none binding). Same SIPp caller, same buyer, same call list.

Figures: achieved calls/s (180s received per second over the run), failed
calls (SIPp), post-dial delay p50/p99 (INVITE -> first 180/183, SIPp rtd), and
for ppcswitch the call records stored. The machine may be shared: compare the
ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import fcntl
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from fixtures_controller import ControllerProcess  # noqa: E402  (a real `ppcswitch serve`)

from ppcswitch.config import load_settings  # noqa: E402
from ppcswitch.recovery import read_new_rows  # noqa: E402
from ppcswitch.sandbox import SIP_HOST, SIP_PORT, SIPP_DIR_IN_ROOT, TRUNK_IP, Sandbox  # noqa: E402
from ppcswitch.storage import db, repo  # noqa: E402

INBOUND = "ppcswitch-inbound"
PATTERN = "_[+0-9]."


@dataclass
class LoadResult:
    label: str
    offered: float  # calls/s asked of SIPp
    placed: int
    successful: int
    failed: int
    achieved: float  # calls/s that reached the buyer's ringing
    pdd_ms: list[float]
    wall: float
    asterisk_cpu: float = 0.0  # CPU seconds Asterisk used during the run
    controller_cpu: float = 0.0  # and the controller (ppcswitch runs)

    def pct(self, q: float) -> float:
        if not self.pdd_ms:
            return float("nan")
        xs = sorted(self.pdd_ms)
        return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


# -- the network ---------------------------------------------------------------


def callers(count: int, seed: int = 8) -> list[str]:
    """Distinct, valid US caller numbers spread over many area codes."""
    rnd = random.Random(seed)
    areas = [201, 212, 213, 305, 312, 404, 415, 503, 602, 617, 702, 713, 718, 808, 917, 972]
    seen: set[str] = set()
    while len(seen) < count:
        seen.add(f"+1{rnd.choice(areas)}{rnd.randint(200, 999)}{rnd.randint(0, 9999):04d}")
    return sorted(seen)


def tracking_numbers(count: int) -> list[str]:
    return [f"+1800{5000000 + i:07d}" for i in range(count)]


def all_rules_on() -> dict:
    """Every buyer rule the routing engine knows, set so that none refuses a bench call."""
    return {"timezone": "America/New_York", "hours": "mon-sun 00:00-24:00", "closed_dates": ["2001-01-01"],
            "states_denied": ["AK"], "area_codes_denied": ["999"], "cap_hourly": 1_000_000,
            "cap_daily": 10_000_000, "cap_monthly": 100_000_000, "cap_total": 1_000_000_000,
            "budget_daily": "1000000.00", "budget_monthly": "1000000.00", "duplicate_days": 1,
            "min_gap_seconds": 0, "weight": 1}


async def seed_network(url: str, buyer_port: int, buyers: int, numbers: list[str], campaigns: int = 100) -> str:
    """Campaigns with buyers (all played by one SIPp buyer) and tracking numbers; returns what is on."""
    try:
        from ppcswitch.storage import repo_routing
    except ImportError:  # before routing rules were stored
        repo_routing = None
    await db.upgrade(url)
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s, s.begin():
            for p in range(20):
                await repo.create_publisher(s, f"Pub {p}", payout="10.00")
            for c in range(campaigns):
                await repo.create_campaign(s, f"Campaign {c}")
                if repo_routing is not None:
                    await repo_routing.set_campaign_routing(s, f"Campaign {c}", repeat_caller=True)
            per = buyers // campaigns
            for b in range(buyers):
                await repo.create_buyer(s, f"Buyer {b}", f"sip:b{b}@127.0.0.1:{buyer_port}", revenue="40.00",
                                        ring_timeout=20, concurrency_cap=10_000, min_duration=1)
                await repo.add_campaign_buyer(s, f"Campaign {b // per}", f"Buyer {b}", b % per + 1)
                if repo_routing is not None:
                    await repo_routing.set_buyer_rules(s, f"Buyer {b}", all_rules_on())
            for i, n in enumerate(numbers):
                await repo.add_tracking_number(s, n, f"Campaign {i % campaigns}", f"Pub {i % 20}")
    finally:
        await engine.dispose()
    on = "concurrency caps, priorities, paused checks, anonymous refusal"
    if repo_routing is None:
        return on + " (no stored buyer rules on main yet)"
    # Off: the ZIP prompt (needs caller DTMF), whisper (audio to the buyer), RTB (needs a bidder).
    return on + ", repeat-caller routing, buyer rules (" + ", ".join(all_rules_on()) + ")"


async def count_calls(url: str) -> int:
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s:
            return await repo.count_calls(s)
    finally:
        await engine.dispose()


def wait_stored(url: str, want: int, timeout: float = 180, quiet: float = 10) -> int:
    """Call records in the database once they reach want, or stop growing for `quiet` seconds
    (a controller behind on its AMI events is still storing calls after the load ends)."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while True:
        n = asyncio.run(count_calls(url))
        now = time.monotonic()
        if n != last:
            last, since = n, now
        if n >= want or now - since >= quiet or now > deadline:
            return n
        time.sleep(1)


# -- SIPp load -----------------------------------------------------------------


class Bench:
    def __init__(self, box: Sandbox, hold: float):
        self.box, self.hold = box, hold
        self.work = box.root / SIPP_DIR_IN_ROOT.lstrip("/") / "bench"
        shutil.rmtree(self.work, ignore_errors=True)  # the last run's files
        self.work.mkdir(parents=True)
        self.csv_in_root = f"{SIPP_DIR_IN_ROOT}/bench/calls.csv"

    def write_calls(self, numbers: list[str], who: list[str]) -> None:
        rnd = random.Random(1)
        with open(self.work / "calls.csv", "w") as f:
            f.write("SEQUENTIAL\n")
            for caller in who:  # each caller once: the duplicate rule never refuses
                f.write(f"{rnd.choice(numbers)};{caller}\n")

    def run(self, label: str, rate: float, seconds: float, controller_pid: int | None = None) -> LoadResult:
        ast0, ctl0 = cpu_seconds(self.box.pid()), cpu_seconds(controller_pid)
        res = self._run(label, rate, seconds)
        res.asterisk_cpu = cpu_seconds(self.box.pid()) - ast0
        res.controller_cpu = cpu_seconds(controller_pid) - ctl0
        return res

    def _run(self, label: str, rate: float, seconds: float) -> LoadResult:
        calls = max(1, int(rate * seconds))
        tag = f"{label}-{int(rate)}-{int(time.time() * 1000)}"
        scen = f"{SIPP_DIR_IN_ROOT}/bench/{tag}.xml"
        (self.work / f"{tag}.xml").write_bytes((self.box.root / SIPP_DIR_IN_ROOT.lstrip("/") / "uac_load.xml").read_bytes())
        # SIPp writes its statistics files into its working directory: run it in ours.
        cmd = ["chroot", str(self.box.root), "/bin/sh", "-c", 'cd "$0" && exec sipp "$@"',
               f"{SIPP_DIR_IN_ROOT}/bench", f"{SIP_HOST}:{SIP_PORT}", "-sf", scen, "-i", TRUNK_IP,
               "-inf", self.csv_in_root, "-r", f"{rate:g}", "-m", str(calls), "-d", str(int(self.hold * 1000)),
               "-l", str(int(rate * (self.hold + 10)) + 10), "-nostdin", "-max_socket", "60000",
               "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "1",
               "-trace_err", "-error_file", f"{SIPP_DIR_IN_ROOT}/bench/{tag}.err", "-timeout", f"{seconds + 60:g}s"]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd="/", start_new_session=True)
        try:
            proc.wait(seconds + 90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.monotonic() - started
        return self._read(label, rate, tag, wall)

    def _read(self, label: str, rate: float, tag: str, wall: float) -> LoadResult:
        # SIPp writes <scenario>_<pid>_rtt.csv and _.csv beside the scenario file.
        rtt_file = next(self.work.glob(f"{tag}_*_rtt.csv"), None)
        stat_file = next((p for p in self.work.glob(f"{tag}_*_.csv")), None)
        pdd, stamps = [], []
        if rtt_file:
            for row in csv.reader(rtt_file.read_text().splitlines()[1:], delimiter=";"):
                if len(row) >= 2 and row[0].strip():
                    with contextlib.suppress(ValueError):
                        stamps.append(float(row[0]))
                        pdd.append(float(row[1]))
        ok = failed = placed = 0
        if stat_file:
            rows = list(csv.reader(stat_file.read_text().splitlines(), delimiter=";"))
            head, last = rows[0], rows[-1]
            col = {name: i for i, name in enumerate(head)}
            ok = int(last[col["SuccessfulCall(C)"]])
            failed = int(last[col["FailedCall(C)"]])
            placed = int(last[col["TotalCallCreated"]])
        span = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
        achieved = (len(stamps) - 1) / span if span > 0 else 0.0
        return LoadResult(label, rate, placed, ok, failed, achieved, pdd, wall)


@contextlib.contextmanager
def static_dialplan(box: Sandbox, dest: str):
    """Asterisk alone: the inbound extension dials the buyer directly; restored on exit."""
    box.cli(f"dialplan remove extension {PATTERN}@{INBOUND}")
    try:
        box.cli(f"dialplan add extension {PATTERN},1,Dial({dest},30) into {INBOUND}")
        box.cli(f"dialplan add extension {PATTERN},2,Hangup() into {INBOUND}")
        yield
    finally:
        box.cli("dialplan reload")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) of the process and of its live child processes (a worker the
    controller starts counts as the controller's)."""
    if not pid:
        return 0.0
    fields = _stat(pid)
    if fields is None:
        return 0.0
    total = int(fields[11]) + int(fields[12])
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            child = _stat(int(entry))
            if child is not None and child[1] == str(pid):  # ppid
                total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


def stage_seconds(scrape: str) -> dict[str, float]:
    """ppcswitch_cpu_seconds_total{stage} from a /metrics body (empty before the counters existed)."""
    out = {}
    for line in scrape.splitlines():
        if line.startswith('ppcswitch_cpu_seconds_total{stage="'):
            out[line.split('"', 2)[1]] = float(line.rsplit(" ", 1)[1])
    return out


def fmt(r: LoadResult) -> list[str]:
    per_call = lambda cpu: f"{cpu / r.placed * 1000:.2f}" if r.placed else "-"  # noqa: E731
    return [f"{r.offered:g}", str(r.placed), f"{r.achieved:.1f}", str(r.failed),
            f"{r.pct(50):.1f}", f"{r.pct(99):.1f}", per_call(r.asterisk_cpu),
            per_call(r.controller_cpu) if r.controller_cpu else "-"]


def table(rows: list[LoadResult]) -> str:
    head = ["run", "offered/s", "placed", "achieved/s", "failed", "PDD p50 ms", "PDD p99 ms",
            "Asterisk CPU ms/call", "ppcswitch CPU ms/call"]
    body = [[r.label, *fmt(r)] for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [head, *body])


def histogram(text: str, name: str, labels: str = "") -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one Prometheus histogram in an exposition."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{") and labels in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return sorted(out)


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the bucket holding quantile q (what a histogram can tell)."""
    if not buckets or not buckets[-1][1]:
        return float("nan")
    want = q * buckets[-1][1]
    return next(le for le, n in buckets if n >= want)


def saturated(r: LoadResult, max_p99: float) -> bool:
    return r.failed > 0 or r.achieved < 0.97 * r.offered or r.pct(99) > max_p99


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, help="measure at this rate (calls/s) instead of ramping")
    ap.add_argument("--ramp-start", type=float, default=50)
    ap.add_argument("--ramp-step", type=float, default=50)
    ap.add_argument("--ramp-max", type=float, default=600)
    ap.add_argument("--ramp-seconds", type=float, default=15, help="length of each ramp step")
    ap.add_argument("--seconds", type=float, default=20, help="length of each measured run")
    ap.add_argument("--hold", type=float, default=1.0, help="seconds each answered call is held")
    ap.add_argument("--max-p99", type=float, default=100.0, help="ramp: PDD p99 (ms) counted as saturated")
    ap.add_argument("--buyers", type=int, default=1000)
    ap.add_argument("--numbers", type=int, default=10000)
    ap.add_argument("--restore-verbose", type=int, default=3, help="console verbosity set back afterwards")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/throughput.py needs root (the sandbox runs in a chroot)", file=sys.stderr)
        return 2

    box = Sandbox(load_settings().sandbox)
    box.acquire()
    try:
        with open(box.home / ".telephony.lock", "w") as lock:
            print("waiting for the telephony lock ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Production verbosity for both runs: the sandbox's console logs every dialplan step.
            box.cli("core set verbose 0")
            try:
                return run(box, args)
            finally:
                box.cli(f"core set verbose {args.restore_verbose}")
    finally:
        box.release()


def run(box: Sandbox, args) -> int:
    bench = Bench(box, args.hold)
    numbers = tracking_numbers(args.numbers)
    total = int(max(args.rate or 0, args.ramp_max) * max(args.seconds, args.ramp_seconds) * 1.2) + 1000
    bench.write_calls(numbers, callers(total))
    buyer = box.start_sipp_uas("answer")
    procs = [buyer]
    ctl = None
    try:
        rows: list[LoadResult] = []
        with static_dialplan(box, buyer.dest):
            rate = args.rate
            if rate is None:
                print("ramp (static dialplan, Asterisk alone):", flush=True)
                good = None
                r = args.ramp_start
                while r <= args.ramp_max:
                    res = bench.run("ramp", r, args.ramp_seconds)
                    print("  " + table([res]).splitlines()[1], flush=True)
                    if saturated(res, args.max_p99):
                        break
                    good = r
                    r += args.ramp_step
                rate = good or args.ramp_start
                print(f"saturation point: {rate:g} calls/s", flush=True)
            time.sleep(5)  # buyer timewaits drain
            rows.append(bench.run("static", rate, args.seconds))
        time.sleep(5)
        tmp = Path(tempfile.mkdtemp(prefix="ppcswitch-bench-"))
        cdr_file = box.root / "var/log/asterisk/cdr-csv/Master.csv"
        # Production settings: missed calls recovered from Asterisk's CDR file.
        # Production settings: the default reload interval (the tests' controller polls faster).
        ctl = ControllerProcess(tmp, box.ami_settings(), PPCSWITCH_RECOVERY_CDR_FILE=str(cdr_file),
                                PPCSWITCH_ROUTING_RELOAD_INTERVAL=str(load_settings(env={}).routing.reload_interval))
        t0 = time.monotonic()
        on = asyncio.run(seed_network(ctl.db_url, buyer.port, args.buyers, numbers))
        print(f"seeded {args.buyers} buyers, {len(numbers)} tracking numbers in {time.monotonic() - t0:.0f} s; on: {on}",
              flush=True)
        ctl.start()
        time.sleep(2)
        _, cdr_offset = read_new_rows(str(cdr_file), 0)
        stages0, cpu0 = stage_seconds(ctl.metrics()), cpu_seconds(ctl.proc.pid)
        res = bench.run("ppcswitch", rate, args.seconds, ctl.proc.pid)
        rows.append(res)
        time.sleep(3)  # the last calls' CDRs
        asterisk_calls = len({r.linkedid for r in read_new_rows(str(cdr_file), cdr_offset)[0]})
        stored = wait_stored(ctl.db_url, asterisk_calls)
        scrape = ctl.metrics()
        # Settling lags the calls a little: the split covers the run and the settling after it.
        stages = {k: v - stages0.get(k, 0.0) for k, v in stage_seconds(scrape).items()}
        split_cpu = cpu_seconds(ctl.proc.pid) - cpu0
        ctl.stop()
        ctl = None
    finally:
        if ctl is not None:
            ctl.stop()
        for p in procs:
            box.stop_sipp(p)
        # Calls an overload left behind would stay up (no media, so no RTP timeout): we hold the
        # telephony lock, so every channel left is ours.
        time.sleep(2)
        box.cli("channel request hangup all")
    static, ppc = rows
    print()
    print(table(rows))
    print()
    ratio = ppc.achieved / static.achieved if static.achieved else float("nan")
    added = ppc.pct(99) - static.pct(99)
    print(f"throughput ratio ppcswitch/static: {ratio:.3f} (aim >= 0.97)")
    print(f"added PDD: p50 {ppc.pct(50) - static.pct(50):+.1f} ms, p99 {added:+.1f} ms (aim < 5 ms)")
    agi = histogram(scrape, "ppcswitch_agi_request_seconds", 'script="inbound"')
    pauses = histogram(scrape, "ppcswitch_gc_pause_seconds")
    if agi:
        print(f"controller's share (its /metrics): FastAGI inbound request p50 <= {quantile(agi, .5) * 1000:g} ms, "
              f"p99 <= {quantile(agi, .99) * 1000:g} ms; garbage collector pauses: {int(pauses[-1][1]) if pauses else 0}, "
              f"p99 <= {quantile(pauses, .99) * 1000:g} ms")
    if ppc.placed:
        # The run's CPU leaves out the calls still being tracked and settled when SIPp ends (a
        # controller behind its AMI events does that work later): this one counts until all are stored.
        total = split_cpu / ppc.placed * 1000
        print(f"controller CPU per call, the run and the settling after it: {total:.2f} ms")
        if stages:
            per = {k: v / ppc.placed * 1000 for k, v in stages.items()}
            print("  by stage (its ppcswitch_cpu_seconds_total): " + ", ".join(
                f"{k} {v:.2f} ms" for k, v in sorted(per.items())) + f", other {total - sum(per.values()):.2f} ms")
    print(f"call records stored by ppcswitch: {stored}; calls in Asterisk's own CDRs for that run: {asterisk_calls}; "
          f"SIPp placed {ppc.placed}")
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (a shared machine is noisy: "
          "compare the ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
