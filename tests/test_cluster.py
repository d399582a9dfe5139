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
import re
import signal
import subprocess
import sys
import time

import pytest

from fixtures_asterisk import _unavailable
from ppcswitch.cluster import Cluster
from ppcswitch.config import load_settings
from ppcswitch.sandbox import STRANGER_IP, TRUNK_IP, SandboxError, free_udp_port
from ppcswitch.storage import db, repo, snapshot

NUMBER = "+18005550100"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(load_settings().sandbox, database="ppcswitch_cluster_test")
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
