"""Several nodes: real Kamailio in front of two real Asterisk nodes, two controllers, one PostgreSQL.

`ppcswitch sandbox cluster` (ppcswitch/cluster.py) brings the topology up once for the module
on its own database (ppcswitch_cluster_test, dropped at the end) and takes it down by PID. SIPp
callers send to the edge only (127.0.1.10) from the sandbox trunk's address, a SIPp buyer
answers. What is checked is what an operator would see: calls spread over both nodes and stored
once each in the shared database; a node whose controller stops gets no new calls until it is
back; a call a controller missed is recovered from its own node's CDR file, once; addresses
that are no trunk are refused at the edge, and a node refuses SIP that does not come through it.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from fixtures_asterisk import _unavailable
from ppcswitch.cluster import Cluster, PrivatePostgres
from ppcswitch.config import load_settings
from ppcswitch.sandbox import STRANGER_IP, TRUNK_IP, SandboxError, free_udp_port
from ppcswitch.storage import db, repo, snapshot

pytestmark = pytest.mark.asterisk  # real Kamailio, Asterisk nodes, controllers and SIPp: slow

NUMBER = "+18005550100"


@pytest.fixture(scope="module")
def private_pg():
    """The cluster's PostgreSQL: a server of this module's own (the restart drill stops it), never
    the machine's shared one."""
    if os.geteuid() != 0:
        _unavailable("the cluster needs root")
    pg = PrivatePostgres(Path(tempfile.mkdtemp(prefix="ppcswitch-cluster-pg-")))
    try:
        pg.init()
        pg.start()
    except SandboxError as exc:
        pg.destroy()
        _unavailable(f"private PostgreSQL unavailable: {exc}")
    yield pg
    pg.destroy()


@pytest.fixture(scope="module")
def cluster(private_pg):
    c = Cluster(load_settings().sandbox, database="ppcswitch_cluster_test", pg_admin=private_pg.admin_dsn)
    c.pg = private_pg
    c.home.mkdir(parents=True, exist_ok=True)
    with open(c.home / ".tests.lock", "w") as lock:  # one cluster test session at a time on this machine
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield from _cluster(c)


def _cluster(c: Cluster):
    try:
        c.check_can_run()
        if c.is_running() or any(c.asterisk_pid(n) or c.controller_pid(n) for n in c.nodes):
            _unavailable("a cluster is already running: ppcswitch sandbox cluster down")
        c.drop_database()  # a run interrupted before its teardown
        c.up(out=lambda *_: None)
    except SandboxError as exc:
        c.down()
        _unavailable(f"cluster unavailable: {exc}")
    buyer = c.start_sipp_uas("answer", port=free_udp_port())
    before = {n.name: c.health(n)["config_version"] for n in c.nodes}
    asyncio.run(_seed(c.database_url, buyer.dest.split("/", 2)[2]))
    c.buyer = buyer
    deadline = time.monotonic() + 10  # both controllers reload the network (routing.reload_interval)
    while any(c.health(n)["config_version"] == before[n.name] for n in c.nodes) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield c
    finally:
        c.down()
        c.drop_database()


async def _seed(url: str, buyer_uri: str) -> None:
    engine = db.make_engine(url)
    try:
        async with db.make_sessionmaker(engine)() as s, s.begin():
            await repo.create_campaign(s, "HVAC")
            await repo.create_publisher(s, "Pub", payout="10.00")
            await repo.create_buyer(s, name="Cool Air", destination=buyer_uri, revenue="40.00", min_duration=1)
            await repo.add_campaign_buyer(s, "HVAC", "Cool Air", 1)
            await repo.add_tracking_number(s, NUMBER, "HVAC", "Pub")
    finally:
        await engine.dispose()


def calls(c: Cluster) -> list[dict]:
    """The shared call log, read through one controller's configuration."""
    out = subprocess.run([sys.executable, "-m", "ppcswitch", "--config", str(c.config_path(c.nodes[0])),
                          "calls", "list", "--json", "--limit", "1000"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_calls(c: Cluster, callers: set[str], timeout: float = 20) -> dict[str, list[dict]]:
    """{caller: its records} once every caller has a record (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        by_caller = collections.defaultdict(list)
        for call in calls(c):
            by_caller[call["caller"]].append(call)
        if callers <= set(by_caller) or time.monotonic() > deadline:
            return {k: by_caller.get(k, []) for k in callers}
        time.sleep(0.3)


def node_of(call: dict) -> str:
    return call["linkedid"].split("-", 1)[0]  # systemname-epoch.sequence


def place(c: Cluster, callers: list[str], rate: float = 4, seconds: float = 0.5, number: str = NUMBER) -> dict[str, str]:
    """Offer one call per caller through the edge; {caller: SIPp's final code}."""
    proc = c.start_sipp_uac_load([(number, caller) for caller in callers], rate=rate, seconds=seconds)
    try:
        proc.wait(30 + len(callers) / rate)
    finally:
        c.stop_sipp(proc)
    return dict(re.findall(r"^(\+\d+) FINAL (\d+)$", "\n".join(proc.log_lines()), re.M))


def test_calls_spread_over_both_nodes_each_recorded_once(cluster):
    callers = [f"+1415555{2000 + i}" for i in range(8)]
    invites = len(cluster.buyer.invites())
    finals = place(cluster, callers)
    assert finals == {caller: "200" for caller in callers}
    assert len(cluster.buyer.invites()) - invites == len(callers)
    records = wait_calls(cluster, set(callers))
    assert {k: len(v) for k, v in records.items()} == {caller: 1 for caller in callers}
    assert {r[0]["outcome"] for r in records.values()} == {"connected"}
    per_node = collections.Counter(node_of(r[0]) for r in records.values())
    assert per_node == {"node1": 4, "node2": 4}  # round robin


def test_an_address_that_is_no_trunk_is_refused_at_the_edge(cluster):
    invites = len(cluster.buyer.invites())
    result = cluster.run_sipp_uac(NUMBER, caller="+14155553000", source_ip=STRANGER_IP, timeout=20)
    assert result.code == 403, result
    assert len(cluster.buyer.invites()) == invites
    assert "INVITE from 127.0.0.3" in cluster.log_path.read_text()  # refused by Kamailio itself


def test_a_node_refuses_sip_that_does_not_come_through_the_edge(cluster):
    invites = len(cluster.buyer.invites())
    node = cluster.nodes[0]
    # From the trunk's own address, which the edge accepts: straight to the node it is refused.
    result = cluster.run_sipp_uac(NUMBER, caller="+14155553001", source_ip=TRUNK_IP, target=f"{node.ip}:5060",
                                  timeout=20)
    assert result.code == 403, result
    assert len(cluster.buyer.invites()) == invites
    assert "+14155553001" not in {c["caller"] for c in calls(cluster)}


def test_a_node_whose_controller_stops_gets_no_calls_until_it_is_back(cluster):
    node1 = cluster.nodes[0]
    cluster.stop_controller(node1)
    try:
        assert cluster.wait_node_state(node1, active=False, timeout=5) < 3
        callers = [f"+1415555{4000 + i}" for i in range(4)]
        assert place(cluster, callers) == {caller: "200" for caller in callers}
        records = wait_calls(cluster, set(callers))
        assert {k: [node_of(r) for r in v] for k, v in records.items()} == {caller: ["node2"] for caller in callers}
    finally:
        cluster.start_controller(node1)
    assert cluster.wait_node_state(node1, active=True, timeout=10) < 5
    callers = [f"+1415555{4100 + i}" for i in range(4)]
    assert place(cluster, callers) == {caller: "200" for caller in callers}
    records = wait_calls(cluster, set(callers))
    assert collections.Counter(node_of(v[0]) for v in records.values()) == {"node1": 2, "node2": 2}


def test_a_call_its_controller_missed_is_recovered_from_its_node_once(cluster):
    caller = "+14155555000"
    invites = len(cluster.buyer.invites())
    proc = cluster.start_sipp_uac(NUMBER, caller=caller, seconds=4)
    deadline = time.monotonic() + 10
    while len(cluster.buyer.invites()) == invites and time.monotonic() < deadline:
        time.sleep(0.05)
    invite = cluster.buyer.invites()[invites]
    node = next(n for n in cluster.nodes if f"@{n.ip}>" in invite)  # the node that dialled the buyer
    time.sleep(0.5)
    cluster.stop_controller(node, sig=signal.SIGKILL)  # mid-call: its Hangup never reaches it
    try:
        result = cluster.call_result(proc, timeout=30)
        assert result.answered and result.hangup == "caller", result
        time.sleep(1)
        assert caller not in {c["caller"] for c in calls(cluster)}  # the other node's controller left it alone
    finally:
        cluster.start_controller(node)
    records = wait_calls(cluster, {caller}, timeout=20)[caller]
    assert len(records) == 1, records
    assert node_of(records[0]) == node.name and records[0]["outcome"] == "connected"
    time.sleep(1)
    assert sum(c["caller"] == caller for c in calls(cluster)) == 1


def test_a_killed_asterisk_node_gets_no_calls_until_it_is_back_and_its_bridged_call_counts_once(cluster):
    from ppcswitch.tracker.tracker import CUT_BY_RESTART

    caller = "+14155556000"
    invites = len(cluster.buyer.invites())
    proc = cluster.start_sipp_uac(NUMBER, caller=caller, seconds=3)
    deadline = time.monotonic() + 10
    while len(cluster.buyer.invites()) == invites and time.monotonic() < deadline:
        time.sleep(0.05)
    node = next(n for n in cluster.nodes if f"@{n.ip}>" in cluster.buyer.invites()[invites])
    other = next(n for n in cluster.nodes if n != node)
    time.sleep(1)  # bridged
    cluster.stop_asterisk(node, sig=signal.SIGKILL)  # a crash: no BYE, no CDR row
    try:
        assert cluster.wait_node_state(node, active=False, timeout=5) < 3  # the probe interval is 1 s
        callers = [f"+1415555{6100 + i}" for i in range(4)]
        assert place(cluster, callers) == {c: "200" for c in callers}
        records = wait_calls(cluster, set(callers))
        assert {k: [node_of(r) for r in v] for k, v in records.items()} == {c: [other.name] for c in callers}
    finally:
        cluster.stop_sipp(proc)
        cluster.start_asterisk(node)
    assert cluster.wait_node_state(node, active=True, timeout=15) < 10
    # The call the crash cut is recorded once, by its own node's controller, connected until the crash.
    [record] = wait_calls(cluster, {caller}, timeout=30)[caller]
    assert node_of(record) == node.name and record["outcome"] == "connected"
    assert record["hangup_cause_text"] == CUT_BY_RESTART and record["connected_ms"] >= 900
    callers = [f"+1415555{6200 + i}" for i in range(4)]
    assert place(cluster, callers) == {c: "200" for c in callers}
    records = wait_calls(cluster, set(callers))
    assert collections.Counter(node_of(v[0]) for v in records.values()) == {"node1": 2, "node2": 2}
    time.sleep(1)
    assert sum(c["caller"] == caller for c in calls(cluster)) == 1


def cdr_accountcodes(c: Cluster) -> dict[str, str]:
    """{linkedid: accountcode} from every node's own CDR file (the node sets it from X-PPC-Trunk)."""
    import csv

    out = {}
    for node in c.nodes:
        path = c.cdr_path(node)
        for row in csv.reader(path.read_text().splitlines() if path.exists() else []):
            if len(row) > 16:
                out[row[16]] = row[0]
    return out


def test_the_trunk_is_named_by_the_edge_never_by_the_carrier(cluster):
    scenario = cluster.root / cluster.sipp_dir.lstrip("/") / "uac_spoof_trunk.xml"
    text = (cluster.root / cluster.sipp_dir.lstrip("/") / "uac_call.xml").read_text()
    scenario.write_text(text.replace("      Max-Forwards: 70\n", "      Max-Forwards: 70\n      X-PPC-Trunk: other-carrier\n", 1))
    caller = "+14155557000"
    proc = cluster._start_sipp("uac", [cluster.sip_target, "-sf", f"{cluster.sipp_dir}/uac_spoof_trunk.xml", "-i",
                                       TRUNK_IP, "-s", NUMBER, "-m", "1", "-l", "1", "-d", "500",
                                       "-set", "from", f"<sip:{caller}@{TRUNK_IP}>"])
    proc.number = NUMBER
    assert cluster.call_result(proc, timeout=30).answered
    [record] = wait_calls(cluster, {caller})[caller]
    time.sleep(0.5)  # the CDR row is written as the call ends
    assert cdr_accountcodes(cluster).get(record["linkedid"]) == "sandbox-carrier"  # the edge's, not "other-carrier"


def test_a_buyers_concurrency_cap_and_daily_budget_hold_across_nodes(cluster):
    """Shared reservations (cluster.reservations = postgresql): simultaneous calls on both nodes."""
    from ppcswitch.storage import repo_routing

    capped, overflow, budget = (cluster.start_sipp_uas("answer", port=free_udp_port()) for _ in range(3))
    try:
        async def seed():
            engine = db.make_engine(cluster.database_url)
            try:
                async with db.make_sessionmaker(engine)() as s, s.begin():
                    for name, proc, extra in (("Capped", capped, {"concurrency_cap": 2}), ("Overflow", overflow, {}),
                                              ("Budget", budget, {})):
                        await repo.create_buyer(s, name=name, destination=proc.dest.split("/", 2)[2],
                                                revenue="40.00", min_duration=1, **extra)
                    await repo_routing.set_buyer_rules(s, "Budget", {"budget_daily": "100.00"})
                    for campaign, number, first in (("Caps", "+18005550101", "Capped"), ("Money", "+18005550102", "Budget")):
                        await repo.create_campaign(s, campaign)
                        await repo.add_campaign_buyer(s, campaign, first, 1)
                        await repo.add_campaign_buyer(s, campaign, "Overflow", 2)
                        await repo.add_tracking_number(s, number, campaign, "Pub")
            finally:
                await engine.dispose()

        before = {n.name: cluster.health(n)["config_version"] for n in cluster.nodes}
        asyncio.run(seed())
        deadline = time.monotonic() + 10
        while any(cluster.health(n)["config_version"] == before[n.name] for n in cluster.nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Eight calls at once, held 4 s: the cap of 2 is the cluster's, not each node's.
        callers = [f"+1415558{1000 + i}" for i in range(8)]
        assert place(cluster, callers, rate=40, seconds=4, number="+18005550101") == {c: "200" for c in callers}
        assert len(capped.invites()) == 2 and len(overflow.invites()) == 6
        records = wait_calls(cluster, set(callers))
        nodes_used = collections.Counter(node_of(v[0]) for v in records.values())
        assert nodes_used == {"node1": 4, "node2": 4}
        # A daily budget of 100.00 at 40.00 a call: two calls, whichever node takes them.
        callers = [f"+1415558{2000 + i}" for i in range(5)]
        assert place(cluster, callers, rate=2, seconds=1.5, number="+18005550102") == {c: "200" for c in callers}
        assert len(budget.invites()) == 2
        records = wait_calls(cluster, set(callers))
        billed = [v[0] for v in records.values() if v[0]["buyer_id"] and v[0]["revenue_cents"] and v[0]["billable"]]
        ids = cluster_ids(cluster)
        assert sum(r["revenue_cents"] for r in billed if r["buyer_id"] == ids["Budget"]) == 8000
    finally:
        for proc in (capped, overflow, budget):
            cluster.stop_sipp(proc)


def cluster_ids(c: Cluster) -> dict[str, int]:
    async def go():
        engine = db.make_engine(c.database_url)
        try:
            async with db.make_sessionmaker(engine)() as s:
                net = await snapshot.load_network(s, load_settings(env={}).routing)
                return {b.name: b.id for b in net.buyers.values()}
        finally:
            await engine.dispose()

    return asyncio.run(go())


# -- under sustained load: what a buyer's SIPp sees, what the ledger holds, fault drills -------------

LOAD_ARGS = ("-max_retrans", "2", "-recv_timeout", "10000")  # a call nobody answers fails in SIPp


def sipp_calls(proc) -> dict[str, list[str]]:
    """Caller number -> what the load caller logged for it, in order ("OFFER", "FINAL 200", ...)."""
    out: dict[str, list[str]] = {}
    for line in proc.log_lines():
        who, _, what = line.partition(" ")
        out.setdefault(who, []).append(what)
    return out


def most_at_once(buyer) -> int:
    """The most calls a SIPp buyer had up at once, from its own log (INVITE ... BYE per call, in order)."""
    up, most = set(), 0
    for line in buyer.log_lines():
        kind, _, rest = line.partition(" ")
        call_id = rest.split(" ", 1)[0]
        if kind == "INVITE":
            up.add(call_id)
            most = max(most, len(up))
        elif kind == "BYE":
            up.discard(call_id)
    return most


def sql(c: Cluster, query: str, *args) -> list:
    import asyncpg

    async def go():
        conn = await asyncpg.connect(c.database_url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=5)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def seed(c: Cluster, buyers: list[tuple[str, object, dict]], campaigns: list[tuple[str, str, list[str]]],
         rules: dict[str, dict] | None = None) -> dict[str, int]:
    """Buyers (name, SIPp buyer, create_buyer extras), campaigns (name, number, buyers in order),
    buyer rules; waits until both controllers have the new network; returns {buyer: id}."""
    from ppcswitch.storage import repo_routing

    async def go():
        engine = db.make_engine(c.database_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                for name, proc, extra in buyers:
                    await repo.create_buyer(s, name=name, destination=proc.dest.split("/", 2)[2],
                                            **{"revenue": "40.00", "min_duration": 1, **extra})
                for name, values in (rules or {}).items():
                    await repo_routing.set_buyer_rules(s, name, values)
                for campaign, number, names in campaigns:
                    await repo.create_campaign(s, campaign)
                    for i, name in enumerate(names):
                        await repo.add_campaign_buyer(s, campaign, name, i + 1)
                    await repo.add_tracking_number(s, number, campaign, "Pub")
        finally:
            await engine.dispose()

    before = {n.name: c.health(n)["config_version"] for n in c.nodes}
    asyncio.run(go())
    deadline = time.monotonic() + 10
    while any((c.health(n) or {}).get("config_version") == before[n.name] for n in c.nodes):
        assert time.monotonic() < deadline, "the controllers did not load the new network"
        time.sleep(0.1)
    return cluster_ids(c)


def every_call_once(c: Cluster, load, callers: list[str], hold: float, timeout: float = 60) -> dict:
    """After a load run: each call SIPp placed is in the shared call log at most once, once if it
    reached a buyer, with the outcome SIPp saw (connected for the hold when it ended cleanly).
    Returns SIPp's view by kind and the records by caller."""
    seen = sipp_calls(load)
    assert sorted(seen) == sorted(callers), "SIPp did not offer every call"
    answered = [x for x in callers if "FINAL 200" in seen[x]]
    clean = [x for x in answered if seen[x][-1] == "END caller"]
    cut = [x for x in answered if x not in clean]
    failed = [x for x in callers if x not in answered]
    deadline = time.monotonic() + timeout
    while True:
        stored = {r["caller"] for r in calls(c)}
        if set(answered) <= stored or time.monotonic() > deadline:
            break
        time.sleep(1)
    time.sleep(3)  # more recovery passes and queued writes: a second record would show up now
    rows = [r for r in calls(c) if r["caller"] in set(callers)]
    twice = [k for k, n in collections.Counter(r["caller"] for r in rows).items() if n > 1]
    assert not twice, f"stored twice: {twice}"
    by = {r["caller"]: r for r in rows}
    missing = sorted(set(answered) - set(by))
    assert not missing, f"answered by a buyer at SIPp, not in the call log: {missing}"
    for x in answered:
        assert by[x]["outcome"] == "connected" and by[x]["buyer_id"], by[x]
    for x in clean:
        assert abs(by[x]["connected_ms"] - hold * 1000) <= 1000 and by[x]["billable"], by[x]
    for x in failed:  # refused, or cut before an answer: never connected (stored or not)
        assert x not in by or by[x]["outcome"] != "connected", (seen[x], by[x])
    # Billed once: one receivable ledger entry per billable call, none for the others.
    entries = collections.Counter(r["linkedid"] for r in sql(
        c, "SELECT c.linkedid FROM ledger_entries e JOIN calls c ON c.id = e.call_id "
           "WHERE e.account = 'receivable' AND e.kind = 'call' AND c.caller = ANY($1::text[])", callers))
    assert entries == collections.Counter(r["linkedid"] for r in rows if r["billable"]), entries
    return {"seen": seen, "answered": answered, "clean": clean, "cut": cut, "failed": failed, "by": by}


def offered_at(i: int, rate: float) -> float:
    return i / rate  # SIPp offers call i this many seconds after it starts


@pytest.mark.asterisk
def test_under_load_a_buyers_cap_and_budget_hold_at_its_own_sipp_and_in_the_ledger(cluster):
    """Calls offered steadily for 12 s to both nodes: the capped buyer's SIPp never has more than
    its cap up at once, the budgeted buyer's SIPp gets exactly what the budget pays for, and the
    ledger bills exactly that."""
    cap2, spill, purse = (cluster.start_sipp_uas("answer", port=free_udp_port()) for _ in range(3))
    try:
        ids = seed(cluster, [("Cap2", cap2, {"concurrency_cap": 2}), ("Spill", spill, {}), ("Purse", purse, {})],
                   [("LoadCaps", "+18005550111", ["Cap2", "Spill"]), ("LoadMoney", "+18005550112", ["Purse", "Spill"])],
                   {"Purse": {"budget_daily": "100.00"}})
        rate, hold, n = 3.0, 3.0, 36
        callers = [f"+1415560{i:04d}" for i in range(n)]
        numbers = ["+18005550111" if i % 2 == 0 else "+18005550112" for i in range(n)]
        load = cluster.start_sipp_uac_load(list(zip(numbers, callers)), rate, hold, extra=LOAD_ARGS)
        try:
            load.wait(n / rate + hold + 40)
        finally:
            cluster.stop_sipp(load)
        got = every_call_once(cluster, load, callers, hold)
        assert got["clean"] == callers, {x: got["seen"][x] for x in callers if x not in got["clean"]}
        by = got["by"]
        assert collections.Counter(node_of(r) for r in by.values()) == {"node1": n // 2, "node2": n // 2}
        # At the buyers' own SIPp: two calls up at once at most (and reached), two calls for 100.00.
        assert most_at_once(cap2) == 2, cap2.log_lines()
        assert len(purse.invites()) == 2
        to = collections.Counter(r["buyer_id"] for r in by.values())
        assert to[ids["Cap2"]] == len(cap2.invites()) and to[ids["Purse"]] == 2
        assert to[ids["Spill"]] == n - len(cap2.invites()) - 2 == len(spill.invites())
        # In the ledger: 2 x 40.00 receivable from the budgeted buyer, whichever nodes took them.
        [(total, count)] = sql(cluster, "SELECT coalesce(sum(amount_cents), 0), count(*) FROM ledger_entries "
                                        "WHERE account = 'receivable' AND buyer_id = $1", ids["Purse"])
        assert (total, count) == (8000, 2)
        [(count,)] = sql(cluster, "SELECT count(*) FROM ledger_entries WHERE account = 'receivable' AND buyer_id = $1",
                         ids["Cap2"])
        assert count == len(cap2.invites())
        assert sql(cluster, "SELECT * FROM cluster_holds") == []  # every settled call let go of its holds
    finally:
        for proc in (cap2, spill, purse):
            cluster.stop_sipp(proc)


DRILL_RATE, DRILL_HOLD = 3.0, 2.0  # calls/s offered through the edge, seconds each is held once answered


def drill_load(c: Cluster, prefix: str, seconds: float, number: str = NUMBER):
    callers = [f"{prefix}{i:04d}" for i in range(int(seconds * DRILL_RATE))]
    load = c.start_sipp_uac_load([(number, x) for x in callers], DRILL_RATE, DRILL_HOLD, extra=LOAD_ARGS)
    return load, callers, time.monotonic()


def finish(c: Cluster, load, callers) -> None:
    try:
        load.wait(len(callers) / DRILL_RATE + DRILL_HOLD + 40)
    finally:
        c.stop_sipp(load)


@pytest.mark.asterisk
def test_drill_kill_9_one_asterisk_node_under_load(cluster):
    """kill -9 node1's Asterisk 6 s into 24 s of calls: new calls go to node2 within the probe
    interval (a call sent to the dead node before that fails over after 2 s); node1's bridged calls
    are recorded once, by its controller, when it is back; every call SIPp placed once."""
    from ppcswitch.tracker.tracker import CUT_BY_RESTART

    node, other = cluster.nodes
    load, callers, started = drill_load(cluster, "+1415561", 24)
    try:
        time.sleep(6)
        killed_at = time.monotonic() - started
        cluster.stop_asterisk(node, sig=signal.SIGKILL)
        assert cluster.wait_node_state(node, active=False, timeout=5) < 3
        time.sleep(8)
        back_from = time.monotonic() - started
        cluster.start_asterisk(node)
        assert cluster.wait_node_state(node, active=True, timeout=15) < 10
        finish(cluster, load, callers)
    finally:
        cluster.stop_sipp(load)
        cluster.start_asterisk(node)
    got = every_call_once(cluster, load, callers, DRILL_HOLD)
    by, seen = got["by"], got["seen"]
    # Offered from 3 s after the kill (probe + failover time) until node1 was back: all on node2, answered.
    between = [x for i, x in enumerate(callers) if killed_at + 3 < offered_at(i, DRILL_RATE) < back_from]
    assert len(between) >= 10 and set(between) <= set(got["clean"]), {x: seen[x] for x in between}
    assert {node_of(by[x]) for x in between} == {other.name}
    # The calls the crash cut: node1's, connected until the crash, said so, recorded once.
    assert got["cut"], "no bridged call was cut: the kill did not hit the load"
    for x in got["cut"]:
        assert node_of(by[x]) == node.name and by[x]["hangup_cause_text"] == CUT_BY_RESTART, by[x]
    assert {node_of(by[x]) for x in got["clean"]} == {"node1", "node2"}  # node1 took calls again at the end
    print(f"\nkill -9 Asterisk {node.name} at {killed_at:.1f} s: {len(callers)} offered, {len(got['clean'])} "
          f"answered and ended by the caller, {len(got['cut'])} cut, {len(got['failed'])} failed "
          f"({sorted({seen[x][-1] for x in got['failed']})})")


@pytest.mark.asterisk
def test_drill_kill_9_one_controller_under_load(cluster):
    """kill -9 node1's controller 4 s into 24 s of calls to a capped buyer: node1 gets no new calls,
    its holds stop counting within the lease (cluster.lease_seconds 15 s) while it is down, its
    bridged calls end on Asterisk and are recovered from node1's CDR file when it is back, once;
    nothing billed twice; every call SIPp placed once."""
    node, other = cluster.nodes
    buyer = cluster.start_sipp_uas("answer", port=free_udp_port())
    try:
        ids = seed(cluster, [("Held", buyer, {"concurrency_cap": 100})], [("Drill", "+18005550113", ["Held"])])
        load, callers, started = drill_load(cluster, "+1415562", 24, number="+18005550113")
        try:
            time.sleep(4)
            held = sql(cluster, "SELECT linkedid FROM cluster_holds WHERE node = $1 AND lease_until > now()", node.name)
            assert held, "node1 held nothing: the load did not reach it"
            cluster.stop_controller(node, sig=signal.SIGKILL)
            killed = time.monotonic()
            assert cluster.wait_node_state(node, active=False, timeout=5) < 3
            while sql(cluster, "SELECT 1 FROM cluster_holds WHERE node = $1 AND lease_until > now()", node.name):
                assert time.monotonic() - killed < 15 + 1.5, "a dead controller's holds outlived the lease"
                time.sleep(0.25)
            lapsed_after = time.monotonic() - killed
            cluster.start_controller(node)
            assert cluster.wait_node_state(node, active=True, timeout=10) < 5
            finish(cluster, load, callers)
        finally:
            cluster.stop_sipp(load)
            cluster.start_controller(node)
        got = every_call_once(cluster, load, callers, DRILL_HOLD)
        by = got["by"]
        # The calls node1 had bridged when its controller died: ended normally, recovered by node1.
        on_node1_then = [x for x in got["clean"] if node_of(by[x]) == node.name
                         and by[x]["linkedid"] in {h["linkedid"] for h in held}]
        assert on_node1_then, "no call of node1 was up at the kill"
        assert all(by[x]["buyer_id"] == ids["Held"] for x in got["answered"])
        assert sql(cluster, "SELECT * FROM cluster_holds WHERE linkedid = ANY($1::text[])",
                   [r["linkedid"] for r in by.values()]) == []
        print(f"\nkill -9 controller {node.name}: holds lapsed {lapsed_after:.1f} s after; {len(callers)} offered, "
              f"{len(got['clean'])} answered, {len(got['failed'])} failed")
    finally:
        cluster.stop_sipp(buyer)


def metric(c: Cluster, node, name: str) -> float:
    text = urllib.request.urlopen(f"http://{node.ip}:8080/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def retries(c: Cluster, node) -> tuple[float, float]:
    """(the writer's retried jobs, the shared reservations' retried writes) of node's controller."""
    return (metric(c, node, "ppcswitch_db_write_retries_total"), metric(c, node, "ppcswitch_cluster_write_retries_total"))


@pytest.mark.asterisk
def test_drill_restart_postgresql_under_load(cluster):
    """The cluster's PostgreSQL stopped (fast, as `systemctl restart` does) 5 s into 24 s of calls and
    started 5 s later: every call is routed from memory meanwhile (answered by the buyer), the
    writes queue and land once when it is back, and nothing stays held."""
    buyer = cluster.start_sipp_uas("answer", port=free_udp_port())
    try:
        ids = seed(cluster, [("Steady", buyer, {"concurrency_cap": 100})], [("Restart", "+18005550114", ["Steady"])])
        retried = {n.name: retries(cluster, n) for n in cluster.nodes}
        load, callers, started = drill_load(cluster, "+1415563", 24, number="+18005550114")
        try:
            time.sleep(5)
            down_at = time.monotonic() - started
            cluster.pg.stop("fast")
            time.sleep(5)
            cluster.pg.start()
            up_at = time.monotonic() - started
            finish(cluster, load, callers)
        finally:
            cluster.stop_sipp(load)
            cluster.pg.start()
        got = every_call_once(cluster, load, callers, DRILL_HOLD)
        assert got["clean"] == callers, {x: got["seen"][x] for x in callers if x not in got["clean"]}
        assert all(r["buyer_id"] == ids["Steady"] for r in got["by"].values())
        during = [x for i, x in enumerate(callers) if down_at < offered_at(i, DRILL_RATE) < up_at]
        assert len(during) >= 12
        linkedids = [r["linkedid"] for r in got["by"].values()]
        # Each call's shared counts landed once, its holds are gone, and both controllers are caught up.
        assert len(sql(cluster, "SELECT linkedid FROM cluster_settled WHERE linkedid = ANY($1::text[])",
                       linkedids)) == len(callers)
        assert sql(cluster, "SELECT * FROM cluster_holds WHERE linkedid = ANY($1::text[])", linkedids) == []
        for n in cluster.nodes:
            health = cluster.health(n)
            assert health["write_queue_depth"] == 0, health
            assert metric(cluster, n, "ppcswitch_cluster_write_queue_depth") == 0
            # The outage did hit both controllers' writes (the call records', the shared counts'): retried.
            now = retries(cluster, n)
            assert now[0] > retried[n.name][0] and now[1] > retried[n.name][1], (n.name, retried[n.name], now)
        print(f"\nPostgreSQL down from {down_at:.1f} s to {up_at:.1f} s: {len(callers)} offered, {len(during)} "
              "of them while it was down, all answered and stored once")
    finally:
        cluster.stop_sipp(buyer)


def two_at_once(c: Cluster, number: str, caller: str, holds: tuple[float, float], gap: float = 0.4) -> list:
    """Two calls of one caller through the edge, `gap` apart (round robin: one per node), held
    holds[0] and holds[1] once answered; [CallResult, CallResult] in the order they were placed."""
    first = c.start_sipp_uac(number, caller=caller, seconds=holds[0])
    time.sleep(gap)
    second = c.start_sipp_uac(number, caller=caller, seconds=holds[1])
    return [c.call_result(first, timeout=30), c.call_result(second, timeout=30)]


@pytest.mark.asterisk
def test_a_repeat_caller_on_two_nodes_at_once_is_routed_and_billed_as_one_duplicate_rule_says(cluster):
    """Routing's duplicate rule: the buyer gets the caller once, the other call goes to the next
    buyer. Billing's unique-caller rule: both calls reach the buyer, the one that started first is
    the original (billable) and the other the duplicate, though it ended first, on the other node."""
    from ppcswitch.billing import ledger

    dup, spare, uniq = (cluster.start_sipp_uas("answer", port=free_udp_port()) for _ in range(3))
    try:
        ids = seed(cluster, [("DupR", dup, {}), ("Spare", spare, {}), ("Uniq", uniq, {})],
                   [("Dups", "+18005550115", ["DupR", "Spare"]), ("Uniques", "+18005550116", ["Uniq"])],
                   {"DupR": {"duplicate_window": "1h"}})

        async def unique_rule():
            engine = db.make_engine(cluster.database_url)
            try:
                async with db.make_sessionmaker(engine)() as s, s.begin():
                    await ledger.set_rule(s, "revenue", party_id=ids["Uniq"], unique_window="1h")
            finally:
                await engine.dispose()

        asyncio.run(unique_rule())

        # Routing: one call to DupR, the other to the next buyer, whichever node each is on.
        caller = "+14155564000"
        results = two_at_once(cluster, "+18005550115", caller, (3.0, 3.0))
        assert all(r.answered for r in results), results
        assert len(dup.invites()) == 1 and len(spare.invites()) == 1
        records = [r for r in wait_calls(cluster, {caller})[caller]]
        deadline = time.monotonic() + 20
        while len(records) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            records = [r for r in calls(cluster) if r["caller"] == caller]
        assert len(records) == 2 and {node_of(r) for r in records} == {"node1", "node2"}, records
        assert sorted(r["buyer_id"] for r in records) == sorted([ids["DupR"], ids["Spare"]])
        assert all(r["billable"] for r in records)  # each is the caller's first call to its buyer

        # Billing: the first call is held 5 s, the second (0.4 s later, on the other node) 1.5 s.
        caller = "+14155564001"
        results = two_at_once(cluster, "+18005550116", caller, (5.0, 1.5))
        assert all(r.answered for r in results), results
        assert len(uniq.invites()) == 2  # no routing rule: both reach the buyer
        deadline = time.monotonic() + 30
        while True:
            records = sorted((r for r in calls(cluster) if r["caller"] == caller), key=lambda r: r["started_at"])
            if len(records) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(records) == 2 and {node_of(r) for r in records} == {"node1", "node2"}, records
        original, repeat = records
        assert original["connected_ms"] > repeat["connected_ms"]  # the first placed is the first started
        assert original["billable"] and original["revenue_cents"] == 4000, original
        assert not repeat["billable"] and repeat["revenue_cents"] == 0, repeat
        assert any(x.startswith("duplicate_caller:") for x in repeat["billing_reasons"]), repeat
        entries = sql(cluster, "SELECT c.linkedid, e.amount_cents FROM ledger_entries e JOIN calls c ON c.id = e.call_id "
                               "WHERE e.account = 'receivable' AND c.caller = $1", caller)
        assert [(e["linkedid"], e["amount_cents"]) for e in entries] == [(original["linkedid"], 4000)]
    finally:
        for proc in (dup, spare, uniq):
            cluster.stop_sipp(proc)
