"""`ppcswitch sandbox cluster`: several Asterisk nodes behind Kamailio, one PostgreSQL, on one machine.

The reference topology of "Running several nodes" (README), built from the sandbox's Debian
root (ppcswitch/sandbox.py) and runnable beside the single-node sandbox, which it leaves alone:

    carriers (127.0.0.2) --SIP--> Kamailio 127.0.1.10:5060 (the only SIP entry)
                                     | dispatcher, round robin; OPTIONS + /healthz probes
                       +-------------+-------------+
                       v                           v
          node1: Asterisk 127.0.1.11:5060   node2: Asterisk 127.0.1.12:5060
                 controller 127.0.1.11             controller 127.0.1.12
                 (FastAGI 4573, HTTP 8080)         (FastAGI 4573, HTTP 8080)
                       +-------------+-------------+
                                     v
                  PostgreSQL 127.0.0.1:5432, database ppcswitch_cluster

Each node has its own configuration directory in the root (/etc/ppcswitch-cluster/nodeN,
generated from asterisk/ and dialplans/), its own spool, log and CDR file, and a unique
`systemname`, so call ids never collide. Kamailio (Debian's `kamailio` and
`kamailio-utils-modules`, installed into the sandbox root on first use) runs
deploy/cluster/kamailio.cfg with generated ppcswitch-local.cfg, ppcswitch-health.cfg,
dispatcher.list and address.list (the trunks of asterisk/pjsip.conf and pjsip_trunks.conf:
the same file an operator fills on a single box). Media flows directly between carrier,
node and buyer. State (PIDs, logs, each controller's TOML) lives in <sandbox>/cluster/.
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ppcswitch.config import SandboxSettings
from ppcswitch.sandbox import (ASTERISK_DIR, DIALPLAN_DIR, REPO, SECRET_INCLUDE, SIPP_SCENARIOS, TRUNK_IP, Sandbox,
                               SandboxError, alive, instance_files, port_in_use, read_text, udp_bound)

KAMAILIO_CFG = REPO / "deploy" / "cluster" / "kamailio.cfg"
KAMAILIO_PACKAGES = ("kamailio", "kamailio-utils-modules")  # utils: http_client, for the /healthz probe
EDGE_IP, SIP_PORT = "127.0.1.10", 5060
NODE_IPS = ("127.0.1.11", "127.0.1.12")
AGI_PORT, HTTP_PORT, AMI_PORT, ASTERISK_HTTP_PORT = 4573, 8080, 5038, 8088
BUYER_NETWORK = "127.0.0.1/32"  # where the sandbox's SIPp buyers live (they may send BYE to a node)
DATABASE = "ppcswitch_cluster"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
ETC, RUN, LOG, SPOOL, LIB, CACHE = (f"/{d}/ppcswitch-cluster" for d in ("etc", "run", "var/log", "var/spool",
                                                                          "var/lib", "var/cache"))
SIPP_DIR = "/tmp/ppcswitch-cluster-sipp"
TRUNK_HEADER = "X-PPC-Trunk"


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    index: int

    @property
    def sip_uri(self) -> str:
        return f"sip:{self.ip}:{SIP_PORT}"

    @property
    def health_url(self) -> str:
        return f"http://{self.ip}:{HTTP_PORT}/healthz"

    @property
    def etc(self) -> str:
        return f"{ETC}/{self.name}"

    @property
    def cdr_in_root(self) -> str:
        return f"{LOG}/{self.name}/cdr-csv/Master.csv"

    @property
    def rtp_range(self) -> tuple[int, int]:
        start = 20000 + 5000 * self.index
        return start, start + 4999


def nodes(count: int = 2) -> list[Node]:
    return [Node(f"node{i + 1}", NODE_IPS[i], i) for i in range(count)]


# -- trunks: what the edge knows a carrier by ---------------------------------------------------


def read_trunks(*paths: Path) -> dict[str, list[str]]:
    """{trunk: [address or network, ...]} from the identify sections of pjsip files (the
    `match =` of each section naming an `endpoint`), as an operator writes them for a single box."""
    trunks: dict[str, list[str]] = {}
    for path in paths:
        section: dict[str, str] = {}
        for raw in read_text(path).splitlines() + ["[end]"]:
            line = raw.split(";", 1)[0].strip()
            if line.startswith("["):
                if section.get("endpoint") and section.get("match"):
                    trunks.setdefault(section["endpoint"], []).extend(
                        m.strip() for m in section["match"].split(",") if m.strip())
                section = {}
            elif "=" in line:
                key, _, value = line.partition("=")
                section[key.strip()] = value.strip()
    return trunks


def address_file(trunks: dict[str, list[str]], node_ips: list[str]) -> str:
    """Kamailio's permissions address file: trunks in group 1 tagged with their name, nodes in group 2.
    A trunk name is what the node receives in X-PPC-Trunk: letters, digits, '_', '-', '.' only."""
    lines = ["# Generated by ppcswitch (ppcswitch/cluster.py): group 1 = trunks (tag: name), group 2 = nodes",
             "# (groupid) (address) (netmask) (port) (tag)"]
    for name, matches in sorted(trunks.items()):
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise SandboxError(f"trunk name {name!r}: use letters, digits, '_', '-' or '.' (it goes in {TRUNK_HEADER})")
        for match in matches:
            try:
                net = ipaddress.ip_network(match, strict=False)
            except ValueError:
                raise SandboxError(f"trunk {name}: match {match!r} is not an address or network "
                                   "(the edge matches carriers by address only)") from None
            lines.append(f"1 {net.network_address} {net.prefixlen} 0 {name}")
    lines += [f"2 {ip} 32 0 node{i + 1}" for i, ip in enumerate(node_ips)]
    return "\n".join(lines) + "\n"


# -- generated configuration ------------------------------------------------------------------


def kamailio_local(listen: str, run_dir: str, etc: str, private: str = "") -> str:
    """private: the edge's address towards the nodes when it is not `listen` (two networks)."""
    towards_nodes = (f"listen=udp:{private}\n# Send from the address whose network the destination is on.\nmhomed=1\n"
                     if private else "")
    return (f"# Generated by ppcswitch (ppcswitch/cluster.py): this site's values for kamailio.cfg.\n"
            f"listen=udp:{listen}\n{towards_nodes}"
            f'#!define CTL_SOCKET "unix:{run_dir}/kamailio_ctl"\n'
            f'#!define RPC_FIFO "{run_dir}/kamailio_rpc.fifo"\n'
            f'#!define DISPATCHER_LIST "{etc}/dispatcher.list"\n'
            f'#!define ADDRESS_FILE "{etc}/address.list"\n')


def kamailio_nodes(node_list: list[Node], socket: str = "") -> tuple[str, str]:
    """(dispatcher.list, ppcswitch-health.cfg) for these nodes; socket: the edge's own address
    calls to the nodes leave from (udp:ADDRESS:PORT), when it has several."""
    attrs = f";socket={socket}" if socket else ""
    ds = "# Generated by ppcswitch: set 1 = the Asterisk nodes (setid uri flags priority attrs)\n" + "".join(
        f"1 {n.sip_uri} 0 0 duid={n.name}{attrs}\n" for n in node_list)
    checks = "".join(f'\t$var(dst) = "{n.sip_uri}";\n\t$var(url) = "{n.health_url}";\n\troute(CHECK_NODE);\n'
                     for n in node_list)
    health = ("# Generated by ppcswitch: each node's controller, probed every second (kamailio.cfg, CHECK_NODE).\n"
              f"route[NODE_HEALTH] {{\n{checks}}}\n")
    return ds, health


EDGE_DIALPLAN = f"""; ppcswitch cluster node: calls come from the edge (Kamailio) only, which names the
; carrier's trunk in {TRUNK_HEADER}; only the edge's address reaches this context (pjsip.conf), so
; the header is trusted from it alone. A call without it never reaches the controller.
; (FILTER: a leading "-" is the character itself; elsewhere it makes a range.)
[ppcswitch-edge]
exten => _[+0-9].,1,Set(PPC_TRUNK=${{FILTER(-0-9A-Za-z_.,${{PJSIP_HEADER(read,{TRUNK_HEADER})}})}})
 same => n,GotoIf($["${{PPC_TRUNK}}" = ""]?refuse)
 same => n,Set(CHANNEL(accountcode)=${{PPC_TRUNK}})
 same => n,Goto(ppcswitch-inbound,${{EXTEN}},1)
 same => n(refuse),Hangup(21)
exten => i,1,Hangup(21)
"""


def node_files(node: Node, edge_ip: str, secret: str | None, sandbox: bool = True,
               buyer_networks: tuple[str, ...] = (BUYER_NETWORK,)) -> dict[str, str]:
    """This node's /etc/asterisk files, from the repository's asterisk/ and dialplans/ with its
    systemname and SIP on its own address; its only trunk is the edge. sandbox=True (nodes sharing
    one machine): its own directories and AMI/HTTP/FastAGI on its address too; sandbox=False (a
    node per server): Debian's paths, AMI/HTTP/FastAGI on loopback as on a single box.
    buyer_networks: who besides the edge may send SIP requests (buyers' BYEs); empty: no ACL."""
    files = {p.name: p.read_text() for p in sorted(ASTERISK_DIR.glob("*.conf")) + sorted(DIALPLAN_DIR.glob("*.conf"))}
    if not sandbox:
        return _node_common(files, node, edge_ip, secret, buyer_networks)
    dirs = {"astetcdir": node.etc, "astvarlibdir": f"{LIB}/{node.name}", "astdbdir": f"{LIB}/{node.name}",
            "astkeydir": f"{LIB}/{node.name}", "astspooldir": f"{SPOOL}/{node.name}",
            "astrundir": f"{RUN}/{node.name}", "astlogdir": f"{LOG}/{node.name}",
            "astcachedir": f"{CACHE}/{node.name}"}
    # The same as any further instance of the sandbox root (ppcswitch.sandbox.instance_files): its own
    # directories, AMI, HTTP and the dialplan's FastAGI on its address, its own RTP ports.
    files = instance_files(node.name, node.ip, dirs, node.rtp_range)
    # A cluster node takes AMI logins from any loopback address (unlike the single sandbox).
    files["manager.conf"] = _sub(files["manager.conf"], r"^permit = 127\.0\.0\.1/255\.255\.255\.255$",
                                 "permit = 127.0.0.0/255.0.0.0")
    return _node_common(files, node, edge_ip, secret, buyer_networks)


def _node_common(files: dict[str, str], node: Node, edge_ip: str, secret: str | None,
                 buyer_networks: tuple[str, ...]) -> dict[str, str]:
    files["asterisk.conf"] = files["asterisk.conf"].replace(
        "[options]\n", f"[options]\n; Uniqueids and linkedids start with it: unique across the cluster.\nsystemname = {node.name}\n", 1)
    files["extensions.conf"] += "\n#include ppcswitch-edge.conf\n"
    files["ppcswitch-edge.conf"] = EDGE_DIALPLAN
    files["modules.conf"] += "\n; Cluster node: SIP requests only from the edge (and buyers), pjsip.conf [ppcswitch-acl].\nload => res_pjsip_acl.so\n"
    pjsip = _sub(files["pjsip.conf"], r"^bind = .*$", f"bind = {node.ip}:{SIP_PORT}")
    cut = pjsip.index("; The sandbox's own carrier")
    files["pjsip.conf"] = pjsip[:cut] + f"""; Cluster node: the edge (Kamailio, {edge_ip}) is the only trunk. Carriers are identified
; there (deploy/cluster/kamailio.cfg), which names each call's trunk in {TRUNK_HEADER}.
[ppcswitch-edge](ppcswitch-trunk)
context = ppcswitch-edge

[ppcswitch-edge](ppcswitch-trunk-identify)
endpoint = ppcswitch-edge
match = {edge_ip}
"""
    if buyer_networks:
        files["pjsip.conf"] += (
            "\n; SIP requests from anywhere but the edge and the buyers (who send BYEs and re-INVITEs\n"
            "; within the calls they answer) are refused with 403 before any endpoint is looked up.\n"
            f"[ppcswitch-acl]\ntype = acl\ndeny = 0.0.0.0/0.0.0.0\npermit = {edge_ip}/32\n"
            + "".join(f"permit = {net}\n" for net in buyer_networks))
    files["pjsip_trunks.conf"] = "; Cluster node: trunks are the edge's (address.list), not the node's.\n"
    if secret is not None:
        files[SECRET_INCLUDE] = f"secret = {secret}\n"
    return files


def _sub(text: str, pattern: str, repl: str) -> str:
    out, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    if n != 1:
        raise SandboxError(f"cannot generate the node configuration: {pattern!r} not found")
    return out


def controller_toml(node: Node, root: Path, secret: str, database_url: str) -> str:
    monitor = f"{SPOOL}/{node.name}/monitor/ppcswitch"
    return f"""# Generated by ppcswitch sandbox cluster: the controller of {node.name}.
[database]
url = "{database_url}"
[agi]
host = "{node.ip}"
port = {AGI_PORT}
[ami]
host = "{node.ip}"
port = {AMI_PORT}
username = "ppcswitch"
secret = "{secret}"
reconnect_max = 2.0
[http]
host = "{node.ip}"
port = {HTTP_PORT}
[recovery]
cdr_file = "{root}{node.cdr_in_root}"
interval = 10.0
[recording]
directory = "{monitor}"
local_directory = "{root}{monitor}"
[cluster]
node = "{node.name}"
reservations = "postgresql"
lease_seconds = 15.0
"""


# -- a PostgreSQL server of its own (drills restart it) -------------------------------------------


class PrivatePostgres:
    """A throwaway PostgreSQL server in `directory` (initdb with the machine's binaries, run as
    user postgres, trust on 127.0.0.1:`port`): fault drills stop and restart it while the
    machine's own server, which other programs use, is never touched. Stopped by its PID."""

    def __init__(self, directory: Path, port: int = 0, bindir: str | None = None, user: str = "postgres"):
        self.dir = Path(directory)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.user = user
        self.bindir = Path(bindir or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)),
                                          Path("/usr/lib/postgresql/15/bin")))
        self.port = port or self._free_port()

    @staticmethod
    def _free_port(start: int = 25432) -> int:
        """A port nobody listens on, below Linux's ephemeral range (32768-60999): a port in it may be
        any client connection's at the moment the server binds."""
        import socket

        for port in range(start, start + 400):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            if not Path(f"/tmp/.s.PGSQL.{port}").exists():
                return port
        raise SandboxError("no free port for a private PostgreSQL")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        res = subprocess.run(["runuser", "-u", self.user, "--", *cmd], capture_output=True, text=True,
                             timeout=timeout, cwd="/")
        if res.returncode != 0:
            raise SandboxError(f"{Path(cmd[0]).name} failed: {(res.stderr or res.stdout).strip()[-300:]}")
        return res

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        if not (self.bindir / "initdb").exists():
            raise SandboxError(f"no PostgreSQL binaries in {self.bindir}")
        import pwd

        pw = pwd.getpwnam(self.user)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._as_user(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "--no-sync", "-E", "UTF8")

    def pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None

    def start(self, timeout: float = 60) -> None:
        if self.pid():
            return
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off -c full_page_writes=off "
                "-c max_connections=60 -c shared_buffers=32MB")
        self._as_user(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                      "-t", str(int(timeout)), "start", timeout=timeout + 10)

    def stop(self, mode: str = "fast") -> None:
        """mode: smart | fast (what `systemctl restart` does) | immediate (a crash)."""
        if self.pid():
            self._as_user(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(SandboxError):
            self.stop("immediate")
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- processes --------------------------------------------------------------------------------


class Cluster(Sandbox):
    """The cluster's processes, run from the sandbox root; SIPp callers send to the edge."""

    def __init__(self, settings: SandboxSettings | None = None, node_count: int = 2, database: str = DATABASE,
                 pg_admin: str = PG_ADMIN, state: str = "cluster"):
        super().__init__(settings)
        self.home = self.root.parent / state
        self.nodes = nodes(node_count)
        self.database = database
        self.pg_admin = pg_admin
        base = pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        self.database_url = f"{base}/{database}"
        self.sip_target = f"{EDGE_IP}:{SIP_PORT}"
        self.sipp_dir = SIPP_DIR
        self.sipp_pids = self.home / "sipp"
        self.secret_path = self.home / "ami_secret"
        self.pid_path = self.home / "kamailio.pid"
        self.log_path = self.home / "kamailio.log"
        self.procs: dict[str, subprocess.Popen] = {}  # started by this process: reaped on stop

    # -- paths
    def node_home(self, node: Node) -> Path:
        return self.home / node.name

    def config_path(self, node: Node) -> Path:
        return self.node_home(node) / "ppcswitch.toml"

    def cdr_path(self, node: Node) -> Path:
        return self.root / node.cdr_in_root.lstrip("/")

    def _pidfile(self, what: str) -> Path:
        kind, _, node = what.partition(":")
        return self.home / f"{kind}.pid" if not node else self.home / node / f"{kind}.pid"

    def _pid(self, what: str, comm: str, in_root: bool = True) -> int | None:
        try:
            pid = int(self._pidfile(what).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if in_root:
            return pid if self._ours(pid, comm) else None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        return pid if alive(pid) and str(self.config_path_by(what)).encode() in cmdline else None

    def config_path_by(self, what: str) -> Path:
        return self.home / what.partition(":")[2] / "ppcswitch.toml"

    def kamailio_pid(self) -> int | None:
        return self._pid("kamailio", "kamailio")

    def asterisk_pid(self, node: Node) -> int | None:
        return self._pid(f"asterisk:{node.name}", "asterisk")

    def controller_pid(self, node: Node) -> int | None:
        return self._pid(f"controller:{node.name}", "", in_root=False)

    def is_running(self) -> bool:  # SIPp may run while the edge does
        return self.kamailio_pid() is not None

    def pid(self) -> int | None:  # not the single node's Asterisk
        return self.kamailio_pid()

    # -- install
    def install_kamailio(self, out=print) -> None:
        if (self.root / "usr/sbin/kamailio").exists() and (
                self.root / "usr/lib/x86_64-linux-gnu/kamailio/modules/http_client.so").exists():
            return
        out(f"installing {' '.join(KAMAILIO_PACKAGES)} into {self.root} ...")
        policy = self.root / "usr/sbin/policy-rc.d"  # no service starts inside the root
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *KAMAILIO_PACKAGES]):
                res = subprocess.run(["chroot", str(self.root), *cmd], env=env, capture_output=True, text=True,
                                     timeout=900)
                if res.returncode != 0:
                    raise SandboxError(f"{' '.join(cmd)} in the sandbox root failed: "
                                       f"{(res.stderr or res.stdout).strip().splitlines()[-1:]}")
        finally:
            policy.unlink(missing_ok=True)

    def secret(self) -> str:
        return self.ami_secret()  # secret_path is the cluster's own

    def install(self) -> None:
        """Write every node's and the edge's configuration into the root, and each controller's TOML."""
        if not KAMAILIO_CFG.exists():
            raise SandboxError(f"no {KAMAILIO_CFG}: run from a source checkout")
        uid, gid = self._ids("asterisk")
        kuid, kgid = self._ids("kamailio")
        secret = self.secret()
        for node in self.nodes:
            etc = self.root / node.etc.lstrip("/")
            shutil.rmtree(etc, ignore_errors=True)
            etc.mkdir(parents=True, mode=0o755)
            for name, text in node_files(node, EDGE_IP, secret, sandbox=True).items():
                (etc / name).write_text(text)
                os.chmod(etc / name, 0o644)
            os.chown(etc / SECRET_INCLUDE, 0, gid)
            os.chmod(etc / SECRET_INCLUDE, 0o640)
            for base in (RUN, LOG, SPOOL, LIB, CACHE):
                d = self.root / base.lstrip("/") / node.name
                d.mkdir(parents=True, exist_ok=True)
                os.chown(d, uid, gid)
            # cdr_csv writes into an existing directory only (Debian's package makes the stock one).
            for d in (self.root / SPOOL.lstrip("/") / node.name / "monitor/ppcswitch", self.cdr_path(node).parent):
                d.mkdir(parents=True, exist_ok=True)
                os.chown(d, uid, gid)
            home = self.node_home(node)
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.config_path(node), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(controller_toml(node, self.root, secret, self.database_url))
        etc = self.root / ETC.lstrip("/") / "kamailio"
        etc.mkdir(parents=True, exist_ok=True)
        run = self.root / RUN.lstrip("/") / "kamailio"
        run.mkdir(parents=True, exist_ok=True)
        os.chown(run, kuid, kgid)
        ds, health = kamailio_nodes(self.nodes)
        trunks = read_trunks(ASTERISK_DIR / "pjsip.conf", ASTERISK_DIR / "pjsip_trunks.conf")
        generated = {"kamailio.cfg": KAMAILIO_CFG.read_text(), "dispatcher.list": ds, "ppcswitch-health.cfg": health,
                     "address.list": address_file(trunks, [n.ip for n in self.nodes]),
                     "ppcswitch-local.cfg": kamailio_local(f"{EDGE_IP}:{SIP_PORT}", f"{RUN}/kamailio", f"{ETC}/kamailio")}
        for name, text in generated.items():
            (etc / name).write_text(text)
            os.chmod(etc / name, 0o644)
        scenarios = self.root / SIPP_DIR.lstrip("/")
        scenarios.mkdir(parents=True, exist_ok=True)
        for src in SIPP_SCENARIOS.glob("*.xml"):
            shutil.copyfile(src, scenarios / src.name)

    # -- database
    def create_database(self) -> None:
        import asyncpg

        from ppcswitch.storage import db

        async def go():
            conn = await asyncpg.connect(self.pg_admin, timeout=5)
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database):
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()
            await db.upgrade(self.database_url)  # once, before two controllers would both try

        try:
            asyncio.run(go())
        except (OSError, asyncio.TimeoutError) as exc:
            raise SandboxError(f"PostgreSQL unreachable at {self.pg_admin}: {exc}") from None

    def drop_database(self) -> None:
        import asyncpg

        if self.database in ("test", "postgres", DATABASE) or not self.database.startswith("ppcswitch_cluster"):
            raise SandboxError(f"refusing to drop the database {self.database!r}")

        async def go():
            conn = await asyncpg.connect(self.pg_admin, timeout=5)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(go())

    # -- start / stop
    def _spawn(self, what: str, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env)
        self._pidfile(what).write_text(f"{proc.pid}\n")
        self.procs[what] = proc
        return proc

    def asterisk_cli(self, node: Node, command: str, timeout: float = 15.0) -> str:
        res = subprocess.run(["chroot", str(self.root), "asterisk", "-C", f"{node.etc}/asterisk.conf", "-rx", command],
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0 or res.stdout.startswith("Unable to connect"):
            raise SandboxError(f"{node.name}: asterisk -rx {command!r} failed: {(res.stdout + res.stderr).strip()}")
        return res.stdout

    def start_asterisk(self, node: Node, timeout: float = 60.0) -> int:
        pid = self.asterisk_pid(node)
        if pid:
            return pid
        if udp_bound(node.ip, SIP_PORT) or port_in_use(1, node.ip, AMI_PORT):  # 1: SOCK_STREAM
            raise SandboxError(f"{node.ip}:{SIP_PORT}/udp or :{AMI_PORT}/tcp is already in use by another program")
        self.mount_proc()
        proc = self._spawn(f"asterisk:{node.name}", ["chroot", str(self.root), "asterisk", "-C",
                                                      f"{node.etc}/asterisk.conf", "-f", "-n"],
                           self.node_home(node) / "asterisk.log")
        deadline = time.monotonic() + timeout
        ctl = self.root / RUN.lstrip("/") / node.name / "asterisk.ctl"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(f"{node.name}: Asterisk exited with {proc.returncode}; see {self.node_home(node)}/asterisk.log")
            if ctl.exists():
                with contextlib.suppress(SandboxError, subprocess.TimeoutExpired):
                    if "fully booted" in self.asterisk_cli(node, "core waitfullybooted", timeout=5):
                        return proc.pid
            time.sleep(0.1)
        raise SandboxError(f"{node.name}: Asterisk did not boot in {timeout:.0f} s")

    def start_controller(self, node: Node, timeout: float = 30.0, env: dict | None = None) -> int:
        pid = self.controller_pid(node)
        if pid:
            return pid
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               **(env or {})}
        env.pop("PPCSWITCH_CONFIG", None)
        proc = self._spawn(f"controller:{node.name}",
                           [sys.executable, "-m", "ppcswitch", "--config", str(self.config_path(node)), "serve"],
                           self.node_home(node) / "controller.log", env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(f"{node.name}: controller exited with {proc.returncode}; see "
                                   f"{self.node_home(node)}/controller.log")
            if (self.health(node) or {}).get("ami_connected"):
                return proc.pid
            time.sleep(0.1)
        raise SandboxError(f"{node.name}: controller not ready in {timeout:.0f} s; see {self.node_home(node)}/controller.log")

    def health(self, node: Node) -> dict | None:
        try:
            with urllib.request.urlopen(node.health_url, timeout=1) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            with contextlib.suppress(ValueError):
                return json.loads(e.read())
            return None
        except (OSError, ValueError):
            return None

    def start_kamailio(self, timeout: float = 20.0) -> int:
        pid = self.kamailio_pid()
        if pid:
            return pid
        if udp_bound(EDGE_IP, SIP_PORT):
            raise SandboxError(f"{EDGE_IP}:{SIP_PORT}/udp is already in use by another program")
        cfg = f"{ETC}/kamailio/kamailio.cfg"
        check = subprocess.run(["chroot", str(self.root), "kamailio", "-c", "-f", cfg], capture_output=True, text=True)
        if check.returncode != 0:
            errors = [line for line in (check.stderr + check.stdout).splitlines() if "ERROR" in line or "CRITICAL" in line]
            raise SandboxError(f"kamailio.cfg does not load: {(errors or ['exit ' + str(check.returncode)])[0]}")
        self.mount_proc()
        proc = self._spawn("kamailio", ["chroot", str(self.root), "kamailio", "-DD", "-E", "-f", cfg,
                                        "-u", "kamailio", "-g", "kamailio", "-m", "64", "-M", "8"], self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(f"Kamailio exited with {proc.returncode}; see {self.log_path}")
            if udp_bound(EDGE_IP, SIP_PORT) and self.nodes_state() is not None:
                return proc.pid
            time.sleep(0.1)
        raise SandboxError(f"Kamailio did not start in {timeout:.0f} s; see {self.log_path}")

    def kamcmd(self, *args: str, timeout: float = 5.0) -> str:
        res = subprocess.run(["chroot", str(self.root), "kamcmd", "-s", f"unix:{RUN}/kamailio/kamailio_ctl", *args],
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise SandboxError(f"kamcmd {' '.join(args)} failed: {(res.stderr or res.stdout).strip()}")
        return res.stdout

    def nodes_state(self) -> dict[str, str] | None:
        """{node SIP URI: dispatcher flags (AP active, IP inactive, DX disabled...)}; None if Kamailio is not answering."""
        try:
            text = self.kamcmd("dispatcher.list")
        except (SandboxError, subprocess.TimeoutExpired):
            return None
        return dict(re.findall(r"URI: (\S+)\s+FLAGS: (\w+)", text))

    def wait_node_state(self, node: Node, active: bool, timeout: float = 10.0) -> float:
        """Seconds until Kamailio counts node as active (or not); raises after timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            flags = (self.nodes_state() or {}).get(node.sip_uri, "")
            if flags.startswith("A") == active and flags:
                return time.monotonic() - started
            time.sleep(0.1)
        raise SandboxError(f"{node.name} still {(self.nodes_state() or {}).get(node.sip_uri)} after {timeout:.0f} s")

    def _stop_pid(self, what: str, pid: int | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
        if pid is None:
            self._pidfile(what).unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        proc = self.procs.pop(what, None)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
            else:
                time.sleep(0.05)
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if proc is not None:
                proc.wait(5)
        elif proc is not None:
            proc.wait(5)
        self._pidfile(what).unlink(missing_ok=True)
        return True

    def stop_controller(self, node: Node, sig: int = signal.SIGTERM) -> bool:
        return self._stop_pid(f"controller:{node.name}", self.controller_pid(node), sig=sig)

    def stop_asterisk(self, node: Node, sig: int = signal.SIGTERM) -> bool:
        return self._stop_pid(f"asterisk:{node.name}", self.asterisk_pid(node), sig=sig)

    def up(self, out=print) -> None:
        self.check_can_run()
        self.build(out)
        with self._lock():
            self.install_kamailio(out)
            self.install()
            self.create_database()
            for node in self.nodes:
                self.start_asterisk(node)
            for node in self.nodes:
                self.start_controller(node)
            self.start_kamailio()
        for node in self.nodes:
            self.wait_node_state(node, True, timeout=15)

    def down(self) -> bool:
        self.require_root()
        with self._lock():
            self.stop_all_sipp()
            was = self.kamailio_pid() is not None
            self._stop_pid("kamailio", self.kamailio_pid())
            for node in self.nodes:
                was |= self.stop_controller(node)
                was |= self.stop_asterisk(node)
            self.umount_proc()
            return was

    def listening(self) -> list[str]:
        lines = [f"edge (Kamailio): SIP udp {EDGE_IP}:{SIP_PORT}, carriers = trunks of asterisk/pjsip*.conf "
                 f"(the sandbox trunk sends from {TRUNK_IP}); log {self.log_path}"]
        for n in self.nodes:
            lines.append(f"{n.name}: Asterisk SIP {n.ip}:{SIP_PORT} (edge only), AMI {n.ip}:{AMI_PORT}, metrics "
                         f"http://{n.ip}:{ASTERISK_HTTP_PORT}/metrics, RTP {n.rtp_range[0]}-{n.rtp_range[1]}, CDR "
                         f"{self.cdr_path(n)}; controller FastAGI {n.ip}:{AGI_PORT}, http://{n.ip}:{HTTP_PORT}/ "
                         f"(--config {self.config_path(n)})")
        lines.append(f"database: {self.database_url}")
        return lines


# -- command line ---------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"ppcswitch sandbox cluster: {message}", file=sys.stderr)
    return 2


def cmd_up(cluster: Cluster) -> int:
    started = time.monotonic()
    try:
        cluster.up()
    except SandboxError as exc:
        return _fail(f"{exc} (ppcswitch sandbox cluster down stops what started)")
    print(f"cluster up in {time.monotonic() - started:.1f} s:")
    for line in cluster.listening():
        print("  " + line)
    return 0


def cmd_down(cluster: Cluster) -> int:
    try:
        was = cluster.down()
    except SandboxError as exc:
        return _fail(str(exc))
    print("cluster stopped" if was else "cluster was not running")
    return 0


def cmd_status(cluster: Cluster) -> int:
    if os.geteuid() != 0:
        return _fail("needs root (chroot): run it with sudo")
    kam = cluster.kamailio_pid()
    state = cluster.nodes_state() if kam else None
    print(f"edge (Kamailio): {'running (pid %d)' % kam if kam else 'stopped'}, SIP {EDGE_IP}:{SIP_PORT}")
    up = bool(kam)
    for n in cluster.nodes:
        a, c = cluster.asterisk_pid(n), cluster.controller_pid(n)
        health = cluster.health(n) if c else None
        flags = (state or {}).get(n.sip_uri, "-")
        print(f"{n.name}: Asterisk {'pid %d' % a if a else 'stopped'} at {n.ip}:{SIP_PORT}; controller "
              f"{'pid %d' % c if c else 'stopped'} at http://{n.ip}:{HTTP_PORT}/ "
              f"({'AMI connected' if (health or {}).get('ami_connected') else 'not ready'}); "
              f"dispatcher {flags} ({'taking calls' if flags.startswith('A') else 'no new calls'})")
        up = up and bool(a and c)
    print(f"database: {cluster.database_url}")
    return 0 if up else 3


def add_cli(sandbox_cmds: argparse._SubParsersAction) -> None:
    parser = sandbox_cmds.add_parser("cluster", help="Kamailio + two Asterisk nodes + two controllers on PostgreSQL",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = parser.add_subparsers(dest="cluster_command", required=True)
    for name, func, text in (("up", cmd_up, "install Kamailio once, generate the configuration, start everything"),
                             ("down", cmd_down, "stop Kamailio, the controllers, the nodes and SIPp by PID"),
                             ("status", cmd_status, "what runs, and which nodes take calls (exit 3 unless all)")):
        p = cmds.add_parser(name, help=text)
        p.set_defaults(func=lambda settings, args, _f=func: _f(Cluster(settings.sandbox)))


# -- `ppcswitch cluster`: the same files for real servers ---------------------------------------


def _write(out: Path, files: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
        print("wrote", out / name)


def _address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SandboxError(f"{what}: {text!r} is not an IP address") from None


def edge_files(listen: str, node_specs: list[str], trunk_files: list[Path], health_port: int = HTTP_PORT,
               etc: str = "/etc/kamailio", run_dir: str = "/run/kamailio", private: str = "") -> dict[str, str]:
    """Kamailio's site files: listen=, the nodes (dispatcher.list, their /healthz), the trunks."""
    host, _, port = listen.partition(":")
    listen = f"{_address(host, '--listen')}:{int(port or SIP_PORT)}"
    if private:
        private = f"{_address(private, '--private')}:{SIP_PORT}"
    node_list = []
    for i, spec in enumerate(node_specs):
        name, sep, ip = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
            raise SandboxError(f"--node {spec!r}: expected NAME=ADDRESS, e.g. node1=10.0.0.11")
        node_list.append(Node(name, _address(ip, f"--node {name}"), i))
    if not node_list:
        raise SandboxError("give the nodes: --node node1=10.0.0.11 --node node2=10.0.0.12")
    for path in trunk_files:
        if not path.exists():
            raise SandboxError(f"no trunk file {path}")
    trunks = read_trunks(*trunk_files)
    ds, health = kamailio_nodes(node_list, f"udp:{private}" if private else "")
    if health_port != HTTP_PORT:
        health = health.replace(f":{HTTP_PORT}/healthz", f":{health_port}/healthz")
    return {"kamailio.cfg": KAMAILIO_CFG.read_text(), "ppcswitch-local.cfg": kamailio_local(listen, run_dir, etc, private),
            "ppcswitch-health.cfg": health, "dispatcher.list": ds,
            "address.list": address_file(trunks, [n.ip for n in node_list])}


def cmd_edge_config(args: argparse.Namespace) -> int:
    try:
        files = edge_files(args.listen, args.node, [Path(p) for p in args.trunks], args.health_port,
                           private=args.private or "")
    except SandboxError as exc:
        print(f"ppcswitch cluster: {exc}", file=sys.stderr)
        return 2
    _write(Path(args.out), files)
    return 0


def cmd_node_config(args: argparse.Namespace) -> int:
    try:
        node = Node(args.name, _address(args.address, "--address"), 0)
        edge = _address(args.edge, "--edge")
        for net in args.buyer_network:
            ipaddress.ip_network(net, strict=False)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", node.name):
            raise SandboxError(f"--name {node.name!r}: letters, digits, '_' and '-' only")
    except (SandboxError, ValueError) as exc:
        print(f"ppcswitch cluster: {exc}", file=sys.stderr)
        return 2
    _write(Path(args.out), node_files(node, edge, None, sandbox=False, buyer_networks=tuple(args.buyer_network)))
    return 0


def add_top_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("cluster", help="configuration files for several Asterisk nodes behind Kamailio",
                            description="Write the configuration of a cluster's edge (Kamailio) or of one node "
                                        "(README: Running several nodes).")
    cmds = parser.add_subparsers(dest="cluster_command", required=True)
    p = cmds.add_parser("edge-config", help="Kamailio's files: nodes, their health URLs, trunks from pjsip files")
    p.add_argument("--listen", required=True, help="address[:port] carriers send to, e.g. 203.0.113.10:5060")
    p.add_argument("--private", help="the edge's address on the nodes' network, when not --listen's")
    p.add_argument("--node", action="append", default=[], help="NAME=ADDRESS of a node (repeat), e.g. node1=10.0.0.11")
    p.add_argument("--trunks", action="append", default=None,
                   help="pjsip file with the carriers' identify sections (repeat; default asterisk/pjsip_trunks.conf)")
    p.add_argument("--health-port", type=int, default=HTTP_PORT, help="controllers' http.port (default 8080)")
    p.add_argument("--out", required=True, help="directory to write (then copy to /etc/kamailio/)")
    p.set_defaults(func=lambda settings, args: cmd_edge_config(
        argparse.Namespace(**{**vars(args), "trunks": args.trunks or [str(ASTERISK_DIR / "pjsip_trunks.conf")]})))
    p = cmds.add_parser("node-config", help="one node's /etc/asterisk: systemname, SIP on its address, the edge as its trunk")
    p.add_argument("--name", required=True, help="the node's name: its systemname and cluster.node, e.g. node1")
    p.add_argument("--address", required=True, help="the address the node's SIP binds to (the edge sends there)")
    p.add_argument("--edge", required=True, help="the edge's address as the node sees it")
    p.add_argument("--buyer-network", action="append", default=[],
                   help="network whose SIP requests (buyers' BYEs) the node also accepts (repeat; none: no ACL)")
    p.add_argument("--out", required=True, help="directory to write (then copy to /etc/asterisk/)")
    p.set_defaults(func=lambda settings, args: cmd_node_config(args))
