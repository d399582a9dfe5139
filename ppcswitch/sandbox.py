"""`ppcswitch sandbox`: a real Asterisk 22 and SIPp in a Debian chroot, on loopback.

The root is built once with mmdebstrap (settings.sandbox.root) and reused.
Asterisk runs from it with the repository's asterisk/ and dialplans/ files;
SIP listens on 127.0.0.1:5060, AMI on 127.0.0.1:5038, the trunk
`sandbox-carrier` is whoever sends from 127.0.0.2, buyers are SIPp UAS on
127.0.0.1. State (pidfiles, logs, the AMI secret) lives next to the root.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ppcswitch.config import AmiSettings, SandboxSettings

REPO = Path(__file__).resolve().parents[1]
ASTERISK_DIR = REPO / "asterisk"
DIALPLAN_DIR = REPO / "dialplans"
SIPP_SCENARIOS = Path(__file__).resolve().parent / "sipp"

# kamailio and kamailio-utils-modules (http_client): the edge of `ppcswitch sandbox cluster`, which
# installs them into a root built before they were listed here.
PACKAGES = ("asterisk", "asterisk-modules", "sip-tester", "asterisk-core-sounds-en-gsm", "kamailio",
            "kamailio-utils-modules")
SIP_HOST, SIP_PORT = "127.0.0.1", 5060
AMI_HOST, AMI_PORT, AMI_USER = "127.0.0.1", 5038, "ppcswitch"
TRUNK_IP = "127.0.0.2"  # matched by the sandbox-carrier identify
STRANGER_IP = "127.0.0.3"  # matches no endpoint
BUYER_IP = "127.0.0.1"
SECRET_INCLUDE = "manager_ppcswitch.conf"  # #included by asterisk/manager.conf
SIPP_DIR_IN_ROOT = "/tmp/ppcswitch-sipp"  # scenarios and SIPp logs, as seen in the chroot
BUYER_KINDS = ("answer", "busy", "noanswer", "talk")
# Further Asterisk instances from the same root, each with its own configuration, directories and
# loopback address (SIP 5060, AMI 5038, HTTP 8088, its controller's FastAGI 4573 all on it), so
# they run beside the sandbox and each other. The test suite uses "tests": it runs while
# `ppcswitch dev` (the sandbox itself, 127.0.0.1) does. name -> (address, RTP ports).
INSTANCES = {"tests": ("127.0.4.1", (30000, 34999))}
AGI_PORT = 4573  # the controller's FastAGI port in each instance's dialplan (PPC_AGI_URL)


class SandboxError(RuntimeError):
    """The sandbox cannot do what was asked; the message is one line for the user."""


@dataclass
class CallResult:
    """Outcome of one SIPp caller, read from its log (see ppcswitch/sipp/uac_call.xml)."""

    number: str
    code: int | None  # final response: 200 when answered, else the failure code; None: none came
    provisional: tuple[int, ...]  # 180 / 183 seen before it
    hangup: str | None  # "caller" (we sent BYE) or "remote" (Asterisk sent BYE); answered calls only
    exit_code: int  # SIPp's: 0 answered and hung up cleanly, 1 failed, negative: killed
    seconds: float
    log: str
    errors: str

    @property
    def answered(self) -> bool:
        return self.code == 200

    @property
    def early_media(self) -> bool:
        return 183 in self.provisional

    def __str__(self) -> str:
        if self.code is None:
            return f"{self.number}: no final response (SIPp exit {self.exit_code}) after {self.seconds:.1f} s"
        early = " after early media" if self.early_media else " after ringing" if 180 in self.provisional else ""
        if self.answered:
            by = {"caller": "by the caller", "remote": "by Asterisk"}.get(self.hangup or "", "uncleanly")
            return f"{self.number}: answered{early}, hung up {by}, {self.seconds:.1f} s"
        return f"{self.number}: refused with {self.code}{early}, {self.seconds:.1f} s"


class SippProcess(subprocess.Popen):
    """A SIPp run in the chroot; `log_lines()` are its scenario's <log> lines."""

    log_path: Path
    error_path: Path
    output_path: Path
    pid_path: Path
    label: str
    started: float
    port: int = 0  # buyers: where they listen
    dest: str = ""  # buyers: the Dial() target reaching them
    number: str = ""  # callers: the number dialled
    stats_path: Path | None = None  # load callers: SIPp's statistics file (-trace_stat)

    def log_lines(self) -> list[str]:
        return read_text(self.log_path).splitlines()

    def invites(self) -> list[str]:
        """Buyers: one "INVITE <call-id> <request-uri> <from>" line per call received."""
        return [line for line in self.log_lines() if line.startswith("INVITE ")]


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def udp_bound(ip: str, port: int) -> bool:
    """Whether a UDP socket is bound to ip:port (read from /proc/net/udp)."""
    want = "%08X:%04X" % (int.from_bytes(socket.inet_aton(ip), "little"), port)
    return any(line.split()[1] == want for line in read_text(Path("/proc/net/udp")).splitlines()[1:])


def free_udp_port(ip: str = BUYER_IP) -> int:
    """A UDP port nobody uses on ip right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def port_in_use(kind: int, ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


def from_header(caller: str, display: str | None = None, host: str = TRUNK_IP) -> str:
    """A From name-addr (without tag) for caller ID `caller`; "" gives a URI without user."""
    user = urllib.parse.quote(caller, safe="+-_.!~*'()&=$,;?/")
    uri = f"sip:{user}@{host}" if user else f"sip:{host}"
    if display is None:
        return f"<{uri}>"
    quoted = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{uri}>'


def instance_files(name: str, ip: str, dirs: dict[str, str], rtp: tuple[int, int]) -> dict[str, str]:
    """An instance's /etc/asterisk files: the repository's asterisk/ and dialplans/ with its own
    directories (`dirs`: asterisk.conf's astetcdir, astrundir, ...), everything listening on `ip`,
    the dialplan's FastAGI on ip:4573 and its own RTP ports."""
    files = {p.name: p.read_text() for p in sorted(ASTERISK_DIR.glob("*.conf")) + sorted(DIALPLAN_DIR.glob("*.conf"))}
    # The stock "[directories](!)" is a template, which Asterisk does not read: an instance's must be read.
    text = files["asterisk.conf"].replace("[directories](!)", "[directories]", 1)
    for key, value in dirs.items():
        text = _sub(text, rf"^{key} => .*$", f"{key} => {value}")
    files["asterisk.conf"] = text
    files["manager.conf"] = _sub(files["manager.conf"], r"^bindaddr = .*$", f"bindaddr = {ip}")
    # manager.conf's permit stays 127.0.0.1: a connection to any loopback address comes from it.
    files["http.conf"] = _sub(files["http.conf"], r"^bindaddr = .*$", f"bindaddr = {ip}")
    files["extensions.conf"] = _sub(files["extensions.conf"], r"^PPC_AGI_URL=.*$", f"PPC_AGI_URL=agi://{ip}:{AGI_PORT}")
    files["pjsip.conf"] = _sub(files["pjsip.conf"], r"^bind = .*$", f"bind = {ip}:{SIP_PORT}")
    files["rtp.conf"] = _sub(_sub(files["rtp.conf"], r"^rtpstart = .*$", f"rtpstart = {rtp[0]}"),
                             r"^rtpend = .*$", f"rtpend = {rtp[1]}")
    return files


def _sub(text: str, pattern: str, repl: str) -> str:
    out, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    if n != 1:
        raise SandboxError(f"cannot generate the instance configuration: {pattern!r} not found")
    return out


class Sandbox:
    def __init__(self, settings: SandboxSettings | None = None, instance: str = ""):
        """instance="": the sandbox (`ppcswitch sandbox up`, `ppcswitch dev`) on 127.0.0.1 with
        Debian's directories; a name of INSTANCES: another Asterisk from the same root, beside it."""
        self.settings = settings or SandboxSettings()
        self.root = Path(self.settings.root).resolve()  # as /proc/PID/root shows it
        self.home = self.root.parent  # our state, outside the chroot
        self.instance = instance
        state = self.home / "instances" / instance if instance else self.home
        self.pid_path = state / "asterisk.pid"
        self.log_path = state / "asterisk.log"
        self.secret_path = self.home / "ami_secret"
        self.sipp_pids = state / "sipp"
        self.sessions = state / "sessions"  # PIDs of test sessions using Asterisk (acquire)
        self.session_owned = state / "session-owned"  # Asterisk was started by a session
        self._proc: subprocess.Popen | None = None  # Asterisk, when this process started it
        if instance:
            if instance not in INSTANCES:
                raise SandboxError(f"no sandbox instance {instance!r} (known: {', '.join(INSTANCES)})")
            self.ip, self.rtp_range = INSTANCES[instance]
            base = "ppcswitch-sandbox/" + instance
            self.dirs = {"astetcdir": f"/etc/{base}", "astvarlibdir": f"/var/lib/{base}", "astdbdir": f"/var/lib/{base}",
                         "astkeydir": f"/var/lib/{base}", "astspooldir": f"/var/spool/{base}",
                         "astrundir": f"/run/{base}", "astlogdir": f"/var/log/{base}", "astcachedir": f"/var/cache/{base}"}
            self.sipp_dir = f"{SIPP_DIR_IN_ROOT}-{instance}"  # scenarios and SIPp logs, as seen in the chroot
        else:
            self.ip, self.rtp_range = SIP_HOST, (10000, 20000)
            self.dirs = {"astetcdir": "/etc/asterisk", "astspooldir": "/var/spool/asterisk", "astrundir": "/run/asterisk",
                         "astlogdir": "/var/log/asterisk"}
            self.sipp_dir = SIPP_DIR_IN_ROOT  # scenarios and SIPp logs, as seen in the chroot
        self.sip_target = f"{self.ip}:{SIP_PORT}"  # where SIPp callers send
        self.agi_host = self.ip  # where this instance's dialplan looks for the controller (port AGI_PORT)

    def in_root(self, path: str) -> Path:
        """A path inside the chroot, as the host sees it."""
        return self.root / path.lstrip("/")

    @property
    def etc_dir(self) -> Path:
        """This instance's Asterisk configuration directory (host path)."""
        return self.in_root(self.dirs["astetcdir"])

    @property
    def log_dir(self) -> Path:
        """Asterisk's logs (messages, security, cdr-csv/) of this instance (host path)."""
        return self.in_root(self.dirs["astlogdir"])

    @property
    def spool_dir(self) -> Path:
        return self.in_root(self.dirs["astspooldir"])

    @property
    def cdr_file(self) -> Path:
        return self.log_dir / "cdr-csv" / "Master.csv"

    def _asterisk(self, *args: str) -> list[str]:
        """`asterisk ARGS` in the chroot, with this instance's configuration."""
        conf = ["-C", f"{self.dirs['astetcdir']}/asterisk.conf"] if self.instance else []
        return ["chroot", str(self.root), "asterisk", *conf, *args]

    # -- building ---------------------------------------------------------

    def is_built(self, root: Path | None = None) -> bool:
        root = root or self.root
        return (root / "usr/sbin/asterisk").exists() and (root / "usr/bin/sipp").exists()

    @staticmethod
    def require_root() -> None:
        if os.geteuid() != 0:
            raise SandboxError("ppcswitch sandbox needs root (chroot and mount): run it with sudo")

    def check_can_run(self) -> None:
        """Raise SandboxError unless we can build (if needed) and run the sandbox."""
        self.require_root()
        if not self.is_built() and shutil.which("mmdebstrap") is None:
            raise SandboxError("mmdebstrap is not installed: apt-get install mmdebstrap")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise build/start/stop between processes (CLI, test sessions)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def build(self, out=print) -> bool:
        """Build the root unless it exists; True if it was built now."""
        self.check_can_run()
        with self._lock():
            if self.is_built():
                return False
            if self.root.exists():
                raise SandboxError(f"{self.root} exists but has no Asterisk/SIPp: remove it and run again")
            # Build beside the target and rename when complete: a failed build is never reused.
            tmp = Path(tempfile.mkdtemp(prefix=".root-build-", dir=self.home))
            os.chmod(tmp, 0o755)  # it becomes "/" for the asterisk user
            cmd = ["mmdebstrap", "--variant=apt", '--aptopt=Acquire::Check-Valid-Until "false"',
                   "--include=" + ",".join(PACKAGES), self.settings.suite, str(tmp)]
            if self.settings.mirror:
                cmd.append(self.settings.mirror)
            build_log = self.home / "build.log"
            out(f"building {self.root} (Debian {self.settings.suite}, log in {build_log}) ...")
            started = time.monotonic()
            try:
                with open(build_log, "wb") as log:
                    rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
                if rc != 0 or not self.is_built(tmp):
                    lines = read_text(build_log).strip().splitlines()
                    why = next((line for line in lines if line.startswith("E: ")), lines[-1] if lines else "")
                    raise SandboxError(f"mmdebstrap failed (exit {rc}): {why} (see {build_log})")
                tmp.rename(self.root)
            except BaseException:
                self._remove_failed_build(tmp)
                raise
            out(f"built {self.root} in {time.monotonic() - started:.0f} s")
            return True

    @staticmethod
    def _remove_failed_build(tmp: Path) -> None:
        # Never recurse into a build whose /proc, /sys or /dev is still mounted.
        if not _mounts_under(tmp):
            shutil.rmtree(tmp, ignore_errors=True)

    # -- configuration ----------------------------------------------------

    def _ids(self, name: str) -> tuple[int, int]:
        """uid and gid of a user of the chroot (its own /etc/passwd)."""
        for line in read_text(self.root / "etc/passwd").splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
        raise SandboxError(f"user {name!r} missing from {self.root}/etc/passwd")

    def ami_secret(self) -> str:
        """The AMI secret, generated once and kept root-only beside the root."""
        try:
            secret = self.secret_path.read_text().strip()
            if secret:
                return secret
        except FileNotFoundError:
            pass
        self.home.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(24)
        fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return secret

    def ami_settings(self) -> AmiSettings:
        """AMI settings for a controller talking to the sandbox."""
        return AmiSettings(host=self.ip, port=AMI_PORT, username=AMI_USER, secret=self.ami_secret())

    def install_config(self) -> None:
        """Put exactly our asterisk/*.conf and dialplans/*.conf in ROOT/etc/asterisk."""
        if not (ASTERISK_DIR / "modules.conf").exists() or not DIALPLAN_DIR.is_dir():
            raise SandboxError(f"no asterisk/ and dialplans/ beside the package in {REPO}: run from a source checkout")
        if self.instance:
            return self._install_instance_config()
        etc, dist = self.root / "etc/asterisk", self.root / "etc/asterisk.dist"
        if etc.exists() and not dist.exists():
            etc.rename(dist)  # Debian's stock files, kept aside once
        etc.mkdir(mode=0o755, exist_ok=True)
        for old in etc.iterdir():
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        for src in sorted(ASTERISK_DIR.glob("*.conf")) + sorted(DIALPLAN_DIR.glob("*.conf")):
            shutil.copyfile(src, etc / src.name)
            os.chmod(etc / src.name, 0o644)
        uid, gid = self._ids("asterisk")
        include = etc / SECRET_INCLUDE
        include.write_text(f"secret = {self.ami_secret()}\n")
        os.chown(include, 0, gid)
        os.chmod(include, 0o640)
        # Asterisk's run directory (/run is empty in a chroot).
        run = self.root / "run/asterisk"
        run.mkdir(parents=True, exist_ok=True)
        os.chown(run, uid, gid)
        # Without the hostname in /etc/hosts every Dial waits on DNS.
        hosts = self.root / "etc/hosts"
        name = socket.gethostname()
        text = read_text(hosts)
        if not any(name in line.split()[1:] for line in text.splitlines() if not line.startswith("#")):
            hosts.write_text(text + ("" if text.endswith("\n") or not text else "\n") + f"127.0.1.1\t{name}\n")
        scenarios = self.root / self.sipp_dir.lstrip("/")
        scenarios.mkdir(parents=True, exist_ok=True)
        for src in SIPP_SCENARIOS.glob("*.xml"):
            shutil.copyfile(src, scenarios / src.name)

    def _install_instance_config(self) -> None:
        uid, gid = self._ids("asterisk")
        etc = self.etc_dir
        shutil.rmtree(etc, ignore_errors=True)
        etc.mkdir(parents=True, mode=0o755)
        for name, text in instance_files(self.instance, self.ip, self.dirs, self.rtp_range).items():
            (etc / name).write_text(text)
            os.chmod(etc / name, 0o644)
        include = etc / SECRET_INCLUDE
        include.write_text(f"secret = {self.ami_secret()}\n")
        os.chown(include, 0, gid)
        os.chmod(include, 0o640)
        for key in ("astvarlibdir", "astspooldir", "astrundir", "astlogdir", "astcachedir"):
            d = self.in_root(self.dirs[key])
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
        # cdr_csv writes into an existing directory only; recordings go below the spool.
        for d in (self.cdr_file.parent, self.spool_dir / "monitor/ppcswitch"):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        scenarios = self.in_root(self.sipp_dir)
        scenarios.mkdir(parents=True, exist_ok=True)
        for src in SIPP_SCENARIOS.glob("*.xml"):
            shutil.copyfile(src, scenarios / src.name)

    # -- Asterisk ---------------------------------------------------------

    def pid(self) -> int | None:
        """Asterisk's PID if it runs from our root."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._ours(pid, "asterisk") else None

    def _ours(self, pid: int, comm: str) -> bool:
        try:
            return (alive(pid) and Path(f"/proc/{pid}/comm").read_text().strip() == comm
                    and os.readlink(f"/proc/{pid}/root") == str(self.root))
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.pid() is not None

    def mount_proc(self) -> None:
        proc = self.root / "proc"
        if not _is_mounted(proc):
            subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)

    def _root_in_use(self) -> bool:
        """Whether a process other than ours still runs from the root (the cluster's nodes)."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and entry.name != str(os.getpid()):
                with contextlib.suppress(OSError):
                    if os.readlink(entry / "root") == str(self.root) and alive(int(entry.name)):
                        return True
        return False

    def umount_proc(self) -> None:
        proc = self.root / "proc"
        if _is_mounted(proc) and not self._root_in_use() and subprocess.call(["umount", str(proc)], stderr=subprocess.DEVNULL) != 0:
            subprocess.call(["umount", "-l", str(proc)])

    def start(self, timeout: float = 60.0) -> int:
        """Start Asterisk (if not running) and wait until it is fully booted; returns its PID.

        Asterisk started (or found running) this way is left running for `down`."""
        self.check_can_run()
        with self._lock():
            self.session_owned.unlink(missing_ok=True)
            return self._start(timeout)

    def acquire(self, timeout: float = 60.0) -> int:
        """For test sessions sharing the sandbox: build and start if needed, register this
        process; the last session to release() stops Asterisk if a session started it."""
        self.check_can_run()
        self.build()
        with self._lock():
            started = self.pid() is None
            pid = self._start(timeout)
            if started:
                self.session_owned.touch()
            self.sessions.mkdir(exist_ok=True)
            (self.sessions / str(os.getpid())).touch()
            return pid

    def release(self) -> None:
        with self._lock():
            (self.sessions / str(os.getpid())).unlink(missing_ok=True)
            others = [f for f in self.sessions.iterdir() if alive(int(f.name))] if self.sessions.is_dir() else []
            if not others and self.session_owned.exists():
                self._stop()

    def _start(self, timeout: float, fresh: bool = True) -> int:
        """fresh=False (a restart, see `stopped`): keep SIPp's logs and Asterisk's console log
        of the run before."""
        if not self.is_built():
            raise SandboxError(f"no sandbox root at {self.root}: run `ppcswitch sandbox up`")
        pid = self.pid()
        if pid:
            return pid
        for kind, port, what in ((socket.SOCK_DGRAM, SIP_PORT, "udp"), (socket.SOCK_STREAM, AMI_PORT, "tcp")):
            if port_in_use(kind, self.ip, port):
                raise SandboxError(f"{self.ip}:{port}/{what} is already in use by another program")
        self.install_config()
        if fresh:
            shutil.rmtree(self.root / self.sipp_dir.lstrip("/") / "logs", ignore_errors=True)
        self.mount_proc()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb" if fresh else "ab") as log:  # fresh: this run's console only
            # -f: stay in the foreground so the PID is ours; -n: no colours in the log.
            self._proc = subprocess.Popen(
                self._asterisk("-f", "-n"), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_booted(time.monotonic() + timeout)
        except BaseException:
            self._stop_asterisk(self._proc.pid)
            self.pid_path.unlink(missing_ok=True)
            raise
        return self._proc.pid

    def _wait_booted(self, deadline: float) -> None:
        ctl = self.in_root(self.dirs["astrundir"]) / "asterisk.ctl"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SandboxError(f"Asterisk exited with status {self._proc.returncode} while starting; see {self.log_path}")
            if ctl.exists():
                with contextlib.suppress(SandboxError):
                    if "fully booted" in self.cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic())):
                        return
            time.sleep(0.1)
        raise SandboxError(f"Asterisk did not finish booting in time; see {self.log_path}")

    def _stop_asterisk(self, pid: int, timeout: float = 10.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 5.0)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        proc = self._proc if self._proc is not None and self._proc.pid == pid else None
        if proc is not None:  # our child: reap it
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop SIPp runs and Asterisk by PID, unmount proc; True if Asterisk was running."""
        self.require_root()
        with self._lock():
            return self._stop(timeout)

    def _stop(self, timeout: float = 10.0) -> bool:
        self.stop_all_sipp()
        pid = self.pid()
        if pid:
            self._stop_asterisk(pid, timeout)
        if pid and alive(pid):
            raise SandboxError(f"Asterisk (pid {pid}) did not stop")
        self.pid_path.unlink(missing_ok=True)
        self._proc = None
        self.session_owned.unlink(missing_ok=True)
        shutil.rmtree(self.sessions, ignore_errors=True)
        self.umount_proc()
        return pid is not None

    @contextlib.contextmanager
    def stopped(self, hard: bool = False, timeout: float = 60.0) -> Iterator[int]:
        """Asterisk down for the body of the with-block, then started again (fault tests).

        hard=False: SIGTERM, what `systemctl stop asterisk` sends (Asterisk hangs its calls up and
        writes their CDRs); hard=True: SIGKILL, a crash (no BYE, no CDR, the AMI link just drops).
        Yields the stopped PID. SIPp runs and their logs are left alone, and the sandbox lock is
        held throughout, so no other session starts Asterisk meanwhile."""
        self.require_root()
        with self._lock():
            pid = self.pid()
            if pid is None:
                raise SandboxError("the sandbox is not running: ppcswitch sandbox up")
            if hard:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(pid, 10.0)
            else:
                self._stop_asterisk(pid, timeout)
            if alive(pid):
                raise SandboxError(f"Asterisk (pid {pid}) did not stop")
            self.pid_path.unlink(missing_ok=True)
            try:
                yield pid
            finally:
                self._start(timeout, fresh=False)

    def cli(self, command: str, timeout: float = 15.0) -> str:
        """Output of `asterisk -rx command` in the chroot."""
        try:
            res = subprocess.run(self._asterisk("-rx", command),
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SandboxError(f"asterisk -rx {command!r} timed out") from None
        if res.returncode != 0 or res.stdout.startswith("Unable to connect"):
            raise SandboxError(f"asterisk -rx {command!r} failed: {(res.stdout + res.stderr).strip()}")
        return res.stdout

    def version(self) -> str:
        """E.g. "Asterisk 22.10.1+dfsg+~cs6.17.60671434-1"."""
        return self.cli("core show version").split(" built by ")[0].strip()

    # -- SIPp -------------------------------------------------------------

    def _start_sipp(self, label: str, args: list[str]) -> SippProcess:
        if not self.is_running():
            raise SandboxError("the sandbox is not running: ppcswitch sandbox up")
        name = f"{label}-{uuid.uuid4().hex[:8]}"
        logs = f"{self.sipp_dir}/logs"
        (self.root / logs.lstrip("/")).mkdir(parents=True, exist_ok=True)
        host_logs = self.root / logs.lstrip("/")
        cmd = ["chroot", str(self.root), "sipp", *args, "-nostdin",
               "-trace_logs", "-log_file", f"{logs}/{name}.log",
               "-trace_err", "-error_file", f"{logs}/{name}.err"]
        with open(host_logs / f"{name}.out", "wb") as out:
            proc = SippProcess(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
        proc.label, proc.started = label, time.monotonic()
        proc.log_path, proc.error_path = host_logs / f"{name}.log", host_logs / f"{name}.err"
        proc.output_path = host_logs / f"{name}.out"
        self.sipp_pids.mkdir(parents=True, exist_ok=True)
        proc.pid_path = self.sipp_pids / str(proc.pid)
        proc.pid_path.write_text(" ".join(cmd) + "\n")
        return proc

    def start_sipp_uas(self, kind: str = "answer", port: int | None = None, ip: str = BUYER_IP,
                       max_calls: int | None = None, timeout: float = 5.0) -> SippProcess:
        """Start a buyer (answer | busy | noanswer | talk: answers and speaks) on ip:port; returns once it listens.

        Dial it as PJSIP/ppcswitch-buyer/sip:buyer@ip:port (see `proc.dest`)."""
        if kind not in BUYER_KINDS:
            raise ValueError(f"buyer kind must be one of {BUYER_KINDS}, not {kind!r}")
        port = port or free_udp_port(ip)
        args = ["-sf", f"{self.sipp_dir}/uas_{kind}.xml", "-i", ip, "-p", str(port)]
        if max_calls:
            args += ["-m", str(max_calls)]
        proc = self._start_sipp(f"uas-{kind}-{port}", args)
        proc.port, proc.dest = port, f"PJSIP/ppcswitch-buyer/sip:buyer@{ip}:{port}"
        deadline = time.monotonic() + timeout
        while not udp_bound(ip, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = read_text(proc.output_path).strip().splitlines()[-1:] or ["no output"]
                self.stop_sipp(proc)
                raise SandboxError(f"SIPp buyer on {ip}:{port} did not start: {out[0]}")
            time.sleep(0.02)
        return proc

    def start_sipp_uac(self, number: str, caller: str = "+14155550123", display: str | None = None,
                       seconds: float = 1.0, source_ip: str = TRUNK_IP, from_host: str | None = None,
                       target: str | None = None) -> SippProcess:
        """Start one call from source_ip to Asterisk (or `target`, host:port); read it with `call_result()`."""
        args = [target or self.sip_target, "-sf", f"{self.sipp_dir}/uac_call.xml", "-i", source_ip,
                "-s", number, "-m", "1", "-l", "1", "-d", str(int(seconds * 1000)),
                "-set", "from", from_header(caller, display, from_host or source_ip)]
        proc = self._start_sipp("uac", args)
        proc.number = number
        return proc

    def start_sipp_uac_load(self, calls: list[tuple[str, str]], rate: float, seconds: float = 1.0,
                            source_ip: str = TRUNK_IP, extra: tuple[str, ...] = ()) -> SippProcess:
        """One SIPp offering len(calls) calls, given as (dialled number, caller number), at `rate`
        per second, each held `seconds` once answered (ppcswitch/sipp/uac_load_logged.xml: its
        log tells each call's outcome by caller number). SIPp's own statistics file, dumped every
        second and at the end, is `proc.stats_path`; `extra` are more SIPp options."""
        scenario = "uac_load_logged.xml"
        scenarios = self.root / self.sipp_dir.lstrip("/")
        scenarios.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SIPP_SCENARIOS / scenario, scenarios / scenario)  # the sandbox may predate it
        logs = f"{self.sipp_dir}/logs"
        (self.root / logs.lstrip("/")).mkdir(parents=True, exist_ok=True)
        name = f"load-{uuid.uuid4().hex[:8]}"
        with open(self.root / logs.lstrip("/") / f"{name}.csv", "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{number};{caller}\n" for number, caller in calls))
        args = [self.sip_target, "-sf", f"{self.sipp_dir}/{scenario}", "-i", source_ip,
                "-inf", f"{logs}/{name}.csv", "-r", f"{rate:g}", "-m", str(len(calls)),
                "-l", str(len(calls)), "-d", str(int(seconds * 1000)),
                "-trace_stat", "-stf", f"{logs}/{name}.stats.csv", "-fd", "1", *extra]
        proc = self._start_sipp(name, args)
        proc.stats_path = self.root / logs.lstrip("/") / f"{name}.stats.csv"
        return proc

    def call_result(self, proc: SippProcess, timeout: float = 60.0) -> CallResult:
        """Wait for a caller started by start_sipp_uac (killing it after timeout)."""
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self.stop_sipp(proc)
        log = read_text(proc.log_path)
        finals = re.findall(r"^FINAL (\d{3})$", log, re.M)
        hangups = re.findall(r"^HANGUP (\w+)$", log, re.M)
        return CallResult(
            number=proc.number, code=int(finals[-1]) if finals else None,
            provisional=tuple(int(c) for c in re.findall(r"^PROVISIONAL (\d{3})$", log, re.M)),
            hangup=hangups[-1] if hangups else None, exit_code=proc.returncode,
            seconds=time.monotonic() - proc.started, log=log, errors=read_text(proc.error_path))

    def run_sipp_uac(self, number: str, timeout: float = 60.0, **kwargs) -> CallResult:
        """Place one call and wait for its outcome; kwargs as for start_sipp_uac."""
        return self.call_result(self.start_sipp_uac(number, **kwargs), timeout)

    def stop_sipp(self, proc: subprocess.Popen, timeout: float = 3.0) -> None:
        """Stop one SIPp run by PID (SIGTERM, then SIGKILL) and forget it."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        (self.sipp_pids / str(proc.pid)).unlink(missing_ok=True)

    def stop_all_sipp(self) -> None:
        """Stop SIPp runs recorded by any process (e.g. left by an interrupted test run)."""
        if not self.sipp_pids.is_dir():
            return
        for entry in self.sipp_pids.iterdir():
            with contextlib.suppress(ValueError, ProcessLookupError):
                pid = int(entry.name)
                if self._ours(pid, "sipp"):
                    os.kill(pid, signal.SIGTERM)
                    deadline = time.monotonic() + 3
                    while alive(pid) and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
            entry.unlink(missing_ok=True)


# -- command line -------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"ppcswitch sandbox: {message}", file=sys.stderr)
    return 2


def cmd_up(box: Sandbox) -> int:
    started = time.monotonic()
    try:
        box.check_can_run()
        if box.is_running():
            print(f"sandbox already running (pid {box.pid()}), root {box.root}")
            return 0
        box.build()
        pid = box.start()
    except SandboxError as exc:
        return _fail(str(exc))
    version = box.version().split("+")[0]
    print(f"sandbox up in {time.monotonic() - started:.1f} s: {version} (pid {pid}), SIP {SIP_HOST}:{SIP_PORT}, "
          f"AMI {AMI_USER}@{AMI_HOST}:{AMI_PORT} (secret in {box.secret_path}), log {box.log_path}")
    return 0


def cmd_down(box: Sandbox) -> int:
    try:
        was_running = box.stop()
    except SandboxError as exc:
        return _fail(str(exc))
    print("sandbox stopped" if was_running else "sandbox was not running")
    return 0


def cmd_status(box: Sandbox) -> int:
    if os.geteuid() != 0:
        return _fail("ppcswitch sandbox needs root (chroot and mount): run it with sudo")
    pid = box.pid()
    if pid is None:
        print(f"sandbox stopped; root {box.root} ({'built' if box.is_built() else 'not built'})")
        return 3
    try:
        version = box.version()
    except SandboxError as exc:
        version = f"version unknown ({exc})"
    print(f"sandbox running (pid {pid}): {version}; root {box.root}; log {box.log_path}")
    return 0


def cmd_shell(box: Sandbox) -> int:
    if os.geteuid() != 0 or not box.is_running():
        return _fail("the sandbox is not running: ppcswitch sandbox up")
    return subprocess.call(["chroot", str(box.root), "asterisk", "-r"])


def parse_caller(text: str) -> tuple[str, str | None]:
    """'+4420...' or 'Name <+4420...>' -> (number, display name or None)."""
    m = re.fullmatch(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<]*?))\s*<([^>]*)>\s*', text)
    if not m:
        return text, None
    display = re.sub(r"\\(.)", r"\1", m.group(1)) if m.group(1) is not None else m.group(2)
    return m.group(3), display


def cmd_call(box: Sandbox, args: argparse.Namespace) -> int:
    number, display = parse_caller(args.caller)
    try:
        box.require_root()
        result = box.run_sipp_uac(args.number, caller=number, display=display, seconds=args.seconds,
                                  source_ip=args.source, timeout=args.seconds + 90)
    except SandboxError as exc:
        return _fail(str(exc))
    print(result)
    return 0 if result.answered else 1


def add_cli(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """`ppcswitch sandbox ...`; returns its subcommands (the cluster topology adds its own)."""
    parser = sub.add_parser("sandbox", help="local Asterisk + SIPp sandbox (root)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = parser.add_subparsers(dest="sandbox_command", required=True)
    p = cmds.add_parser("up", help="build the root once, install the config, start Asterisk")
    p.set_defaults(func=lambda settings, args: cmd_up(Sandbox(settings.sandbox)))
    p = cmds.add_parser("down", help="stop Asterisk and SIPp, unmount proc")
    p.set_defaults(func=lambda settings, args: cmd_down(Sandbox(settings.sandbox)))
    p = cmds.add_parser("status", help="running or not (exit 3 when stopped), PID, version")
    p.set_defaults(func=lambda settings, args: cmd_status(Sandbox(settings.sandbox)))
    p = cmds.add_parser("shell", help="Asterisk console (asterisk -r)")
    p.set_defaults(func=lambda settings, args: cmd_shell(Sandbox(settings.sandbox)))
    p = cmds.add_parser("call", help="place one test call with SIPp and print the outcome")
    p.add_argument("number", help="dialled number, e.g. +18005550100")
    p.add_argument("--caller", default="+14155550123", help='caller ID: NUMBER or "Name <NUMBER>"')
    p.add_argument("--seconds", type=float, default=5.0, help="hold time once answered (default 5)")
    p.add_argument("--source", default=TRUNK_IP,
                   help=f"source address (default {TRUNK_IP}, the sandbox trunk; {STRANGER_IP} is no trunk)")
    p.set_defaults(func=lambda settings, args: cmd_call(Sandbox(settings.sandbox), args))
    return cmds
