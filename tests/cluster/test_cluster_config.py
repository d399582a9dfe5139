"""Cluster configuration generated from what the operator already has (ppcswitch/cluster.py): the
edge's address file from the pjsip trunk files, each node's Asterisk files, and the CLI that
writes them for real servers. Fast: no process is started (tests/telephony/test_cluster.py runs them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ppcswitch.cluster import Node, address_file, edge_files, node_files, read_trunks
from ppcswitch.sandbox import ASTERISK_DIR, SandboxError

TRUNKS = """
[carrier-a](ppcswitch-trunk)

[carrier-a](ppcswitch-trunk-identify)
endpoint = carrier-a
match = 198.51.100.7, 198.51.100.64/28 ; two ranges

[carrier-b-identify]
type = identify
endpoint = carrier-b
match = 203.0.113.45
"""


def test_trunks_come_from_pjsip_identify_sections(tmp_path):
    path = tmp_path / "pjsip_trunks.conf"
    path.write_text(TRUNKS)
    trunks = read_trunks(ASTERISK_DIR / "pjsip.conf", path)
    assert trunks == {"sandbox-carrier": ["127.0.0.2"], "carrier-a": ["198.51.100.7", "198.51.100.64/28"],
                      "carrier-b": ["203.0.113.45"]}
    lines = [line for line in address_file(trunks, ["10.0.0.11"]).splitlines() if not line.startswith("#")]
    assert lines == ["1 198.51.100.7 32 0 carrier-a", "1 198.51.100.64 28 0 carrier-a", "1 203.0.113.45 32 0 carrier-b",
                     "1 127.0.0.2 32 0 sandbox-carrier", "2 10.0.0.11 32 0 node1"]
    assert read_trunks(ASTERISK_DIR / "pjsip_trunks.conf") == {}  # the shipped file is only an example


@pytest.mark.parametrize("trunks, why", [({"bad name": ["1.2.3.4"]}, "trunk name"),
                                         ({"carrier": ["carrier.example.com"]}, "not an address")])
def test_what_the_edge_cannot_match_is_refused_with_the_reason(trunks, why):
    with pytest.raises(SandboxError, match=why):
        address_file(trunks, [])


def test_a_node_for_a_real_server_keeps_debian_paths_and_trusts_only_the_edge():
    files = node_files(Node("node1", "10.0.0.11", 0), "10.0.0.10", None, sandbox=False, buyer_networks=("192.0.2.0/24",))
    assert "systemname = node1" in files["asterisk.conf"]
    assert "astlogdir => /var/log/asterisk" in files["asterisk.conf"]
    assert "bindaddr = 127.0.0.1" in files["manager.conf"]  # the controller is on the same server
    pjsip = files["pjsip.conf"]
    assert "bind = 10.0.0.11:5060" in pjsip and "match = 10.0.0.10" in pjsip
    assert "sandbox-carrier" not in pjsip and "permit = 192.0.2.0/24" in pjsip
    assert "manager_ppcswitch.conf" not in files  # the operator's own secret stays theirs
    assert "X-PPC-Trunk" in files["ppcswitch-edge.conf"] and "#include ppcswitch-edge.conf" in files["extensions.conf"]


def test_sandbox_nodes_get_their_own_directories_addresses_and_rtp_ranges():
    a, b = (node_files(Node(f"node{i + 1}", f"127.0.1.1{i + 1}", i), "127.0.1.10", "s") for i in range(2))
    assert "[directories]\n" in a["asterisk.conf"]  # read, not a template
    assert "astrundir => /run/ppcswitch-cluster/node1" in a["asterisk.conf"]
    assert "PPC_AGI_URL=agi://127.0.1.12:4573" in b["extensions.conf"]
    assert a["rtp.conf"] != b["rtp.conf"] and a["manager_ppcswitch.conf"] == "secret = s\n"


def test_edge_config_cli_writes_kamailios_files(tmp_path):
    trunks = tmp_path / "trunks.conf"
    trunks.write_text(TRUNKS)
    out = subprocess.run([sys.executable, "-m", "ppcswitch", "cluster", "edge-config", "--listen", "203.0.113.10",
                          "--private", "10.0.0.10", "--node", "node1=10.0.0.11", "--node", "node2=10.0.0.12",
                          "--trunks", str(trunks), "--out", str(tmp_path / "edge")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    edge = tmp_path / "edge"
    assert (edge / "kamailio.cfg").read_text() == (Path(__file__).parents[2] / "deploy/cluster/kamailio.cfg").read_text()
    assert "1 sip:10.0.0.12:5060 0 0 duid=node2;socket=udp:10.0.0.10:5060" in (edge / "dispatcher.list").read_text()
    assert "http://10.0.0.11:8080/healthz" in (edge / "ppcswitch-health.cfg").read_text()
    assert "listen=udp:203.0.113.10:5060" in (edge / "ppcswitch-local.cfg").read_text()
    bad = subprocess.run([sys.executable, "-m", "ppcswitch", "cluster", "edge-config", "--listen", "203.0.113.10",
                          "--node", "node1", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=ADDRESS" in bad.stderr and not (tmp_path / "x").exists()


def test_the_example_matches_what_edge_config_writes(tmp_path):
    example = Path(__file__).parents[2] / "deploy/cluster/example/edge"
    trunks = tmp_path / "trunks.conf"
    trunks.write_text(TRUNKS)
    files = edge_files("203.0.113.10", ["node1=10.0.0.11", "node2=10.0.0.12"], [trunks], private="10.0.0.10")
    assert {p.name: p.read_text() for p in example.iterdir()} == {k: v for k, v in files.items() if k != "kamailio.cfg"}


def test_shared_reservations_settings_are_checked():
    from ppcswitch.config import ConfigError, load_settings

    pg = {"PPCSWITCH_DATABASE_URL": "postgresql+asyncpg://ppcswitch@10.0.0.20/ppcswitch"}
    assert load_settings(env={}).cluster.reservations == "memory"
    assert load_settings(env={**pg, "PPCSWITCH_CLUSTER_RESERVATIONS": "postgresql"}).cluster.reservations == "postgresql"
    for env, why in (({"PPCSWITCH_CLUSTER_RESERVATIONS": "redis"}, "memory or postgresql"),
                     ({"PPCSWITCH_CLUSTER_RESERVATIONS": "postgresql"}, "needs database.url on PostgreSQL"),
                     ({**pg, "PPCSWITCH_CLUSTER_LEASE_SECONDS": "1"}, "at least 3")):
        with pytest.raises(ConfigError, match=why):
            load_settings(env=env)
