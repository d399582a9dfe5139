"""The sandbox Asterisk with our configuration: modules, dialplan, endpoints,
AMI, what listens where, and the refusal and fallback paths of a call."""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import subprocess
import time

import pytest

from ppcswitch import channel_vars, sandbox as sb
from ppcswitch.config import SandboxSettings, Settings

DIALPLAN = sb.DIALPLAN_DIR / "ppcswitch.conf"
CONTEXTS = ("ppcswitch-inbound", "ppcswitch-dial", "ppcswitch-fallback", "ppcswitch-nowhere")


# -- without Asterisk ---------------------------------------------------------


def run_cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    sb.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(settings, args)


def unbuilt_settings(tmp_path) -> Settings:
    return Settings(sandbox=SandboxSettings(root=str(tmp_path / "root")))


def test_up_refuses_without_root(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run_cli(["sandbox", "up"], unbuilt_settings(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "needs root" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "root").exists()


def test_up_refuses_without_mmdebstrap(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert run_cli(["sandbox", "up"], unbuilt_settings(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "apt-get install mmdebstrap" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    "caller, display, header",
    [
        ("+442071234567", None, "<sip:+442071234567@127.0.0.2>"),
        ("anonymous", "Anonymous", '"Anonymous" <sip:anonymous@127.0.0.2>'),
        ("", None, "<sip:127.0.0.2>"),
        ("4155550123", 'Dave "the" O\\Brien', '"Dave \\"the\\" O\\\\Brien" <sip:4155550123@127.0.0.2>'),
        ("a b", None, "<sip:a%20b@127.0.0.2>"),
    ],
)
def test_from_header(caller, display, header):
    assert sb.from_header(caller, display) == header


def test_parse_caller():
    assert sb.parse_caller("+14155550123") == ("+14155550123", None)
    assert sb.parse_caller("Alice <+14155550123>") == ("+14155550123", "Alice")
    assert sb.parse_caller('"O\\"Brien, J" <442071234567>') == ("442071234567", 'O"Brien, J')


# -- against the sandbox Asterisk ---------------------------------------------


class Ami:
    """Just enough AMI over a raw socket: login, actions, and the events seen meanwhile."""

    def __init__(self, username: str, secret: str, source: str | None = None, host: str = sb.AMI_HOST):
        self.sock = socket.create_connection((host, sb.AMI_PORT), timeout=5,
                                             source_address=(source, 0) if source else None)
        self.buf = b""
        self.events: list[dict[str, str]] = []
        self.next_id = 0
        self.banner = self._line(time.monotonic() + 5)
        self.login = self.action("Login", Username=username, Secret=secret)

    def _line(self, deadline: float) -> str:
        while b"\r\n" not in self.buf:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("AMI closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def _block(self, deadline: float) -> dict[str, str]:
        block: dict[str, str] = {}
        while line := self._line(deadline):
            key, _, value = line.partition(": ")
            if key == "ChanVariable":  # several per event: keep them as ChanVariable(NAME)
                name, _, value = value.partition("=")
                key = f"ChanVariable({name})"
            block.setdefault(key, value)
        return block

    def action(self, name: str, **fields: str) -> dict[str, str]:
        self.next_id += 1
        action_id = str(self.next_id)
        lines = [f"Action: {name}", f"ActionID: {action_id}", *(f"{k}: {v}" for k, v in fields.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + 5
        while True:
            block = self._block(deadline)
            if "Event" in block and block.get("ActionID") != action_id:
                self.events.append(block)
            elif block.get("ActionID") == action_id and "Response" in block:
                return block

    def wait_event(self, pred, timeout: float = 10.0) -> dict[str, str]:
        seen = [e for e in self.events if pred(e)]
        deadline = time.monotonic() + timeout
        while not seen:
            block = self._block(deadline)
            if "Event" in block:
                self.events.append(block)
                if pred(block):
                    return block
        return seen[0]

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with pytest.raises((TimeoutError, socket.timeout)):
            while True:
                block = self._block(deadline)
                if "Event" in block:
                    self.events.append(block)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ami(sandbox_ami):
    conn = Ami(sandbox_ami.username, sandbox_ami.secret, host=sandbox_ami.host)
    assert conn.login.get("Response") == "Success", conn.login
    yield conn
    conn.close()


@pytest.fixture
def fallback_dest(ami):
    """Set the PPC_FALLBACK_DEST global the way the controller does (AMI Setvar); cleared after."""

    def set_dest(value: str) -> None:
        assert ami.action("Setvar", Variable=channel_vars.FALLBACK_DEST, Value=value)["Response"] == "Success"

    set_dest("")
    yield set_dest
    set_dest("")


def unique_caller() -> str:
    """A caller ID no other call has, so events can be told apart from other sessions' calls."""
    return "+1555" + "".join(random.choices("0123456789", k=7))


def channel_of(ami: Ami, caller: str) -> dict[str, str]:
    return ami.wait_event(lambda e: e["Event"] == "Newchannel" and e["CallerIDNum"] == caller)


def no_controller(box) -> None:
    with socket.socket() as s:
        if s.connect_ex((box.agi_host, sb.AGI_PORT)) == 0:
            pytest.skip(f"something listens on {box.agi_host}:{sb.AGI_PORT}; these tests need the controller absent")


def messages_log(box) -> str:
    return (box.log_dir / "messages").read_text(errors="replace")


def show(box, command: str) -> dict[str, str]:
    """`key : value` lines of a pjsip show command."""
    return {m[1]: m[2].strip() for m in re.finditer(r"^\s*(\w+)\s+:\s(.*)$", box.cli(command), re.M)}


@pytest.mark.asterisk
def test_loads_exactly_our_modules(sandbox):
    wanted = set(re.findall(r"^load\s*=>\s*(\S+)", (sb.ASTERISK_DIR / "modules.conf").read_text(), re.M))
    loaded = {line.split()[0] for line in sandbox.cli("module show").splitlines() if line.split()[:1]
              and line.split()[0].endswith(".so")}
    assert loaded == wanted
    pjsip = sandbox.cli("module show like pjsip")
    assert re.search(r"^chan_pjsip\.so .*Running", pjsip, re.M)
    assert "res_pjsip_endpoint_identifier_ip.so" in pjsip
    assert "endpoint_identifier_user" not in pjsip and "endpoint_identifier_anonymous" not in pjsip


@pytest.mark.asterisk
def test_every_dialplan_application_and_function_is_loaded(sandbox):
    text = DIALPLAN.read_text()
    apps = set(re.findall(r"^\s*(?:exten\s*=>\s*[^,]+,|same\s*=>\s*)[^,]+,\s*(\w+)\(", text, re.M))
    functions = set(re.findall(r"\$\{([A-Z_]+)\(", text))
    assert {"AGI", "Dial", "Playback", "UserEvent", "Hangup"} <= apps and {"CHANNEL", "GLOBAL"} <= functions
    for app in sorted(apps):
        assert f"Info about Application '{app}'" in sandbox.cli(f"core show application {app}"), app
    for func in sorted(functions):
        assert f"Info about Function '{func}'" in sandbox.cli(f"core show function {func}"), func


@pytest.mark.asterisk
def test_dialplan_contexts_and_globals(sandbox):
    for context in CONTEXTS:
        out = sandbox.cli(f"dialplan show {context}")
        assert f"Context '{context}' created by 'pbx_config'" in out, out
    assert "PPC_AGI_URL=agi://127.0.0.1:4573" in (sb.ASTERISK_DIR / "extensions.conf").read_text()  # as shipped
    assert f"PPC_AGI_URL=agi://{sandbox.agi_host}:4573" in sandbox.cli("dialplan show globals")  # this instance's


@pytest.mark.asterisk
def test_trunk_and_buyer_endpoints(sandbox):
    trunk = show(sandbox, "pjsip show endpoint sandbox-carrier")
    assert trunk["context"] == "ppcswitch-inbound"
    assert trunk["identify_by"] == "ip"
    assert trunk["direct_media"] == "false"
    assert trunk["allow"] == "(ulaw|alaw)"
    identifies = sandbox.cli("pjsip show identifies")
    assert re.search(r"Identify:\s+sandbox-carrier/sandbox-carrier\s+Match:\s+127\.0\.0\.2/32", identifies)
    buyer = show(sandbox, "pjsip show endpoint ppcswitch-buyer")
    assert buyer["context"] == "ppcswitch-nowhere"
    assert buyer["direct_media"] == "false" and buyer["aors"] == ""
    assert "ppcswitch-buyer" not in identifies


@pytest.mark.asterisk
def test_ami_user_login_acl_and_permissions(sandbox, sandbox_ami, ami):
    assert ami.banner.startswith("Asterisk Call Manager/")
    assert ami.action("CoreShowChannels")["Response"] == "Success"
    assert ami.action("Setvar", Variable="PPC_SANDBOX_TEST", Value="1")["Response"] == "Success"
    for forbidden in (dict(name="Command", Command="core show version"),
                      dict(name="Originate", Channel="Local/1@ppcswitch-nowhere", Application="Hangup"),
                      dict(name="Reload")):
        response = ami.action(forbidden.pop("name"), **forbidden)
        assert response["Response"] == "Error" and "Permission denied" in response["Message"]

    wrong = Ami(sandbox_ami.username, sandbox_ami.secret + "x", host=sandbox_ami.host)
    assert wrong.login["Response"] == "Error" and "Authentication failed" in wrong.login["Message"]
    wrong.close()
    # Right secret, but from another address than 127.0.0.1: the user's permit/deny refuses it.
    elsewhere = Ami(sandbox_ami.username, sandbox_ami.secret, source=sb.TRUNK_IP, host=sandbox_ami.host)
    assert elsewhere.login["Response"] == "Error"
    elsewhere.close()

    user = sandbox.cli(f"manager show user {sandbox_ami.username}")
    assert re.search(r"write perm: call,reporting$", user, re.M)
    assert set(re.search(r"read perm: (\S+)", user)[1].split(",")) == {"system", "call", "cdr", "user", "reporting"}
    assert f"channelvars = {','.join(channel_vars.AMI_CHANNELVARS)}" in (sb.ASTERISK_DIR / "manager.conf").read_text()


@pytest.mark.asterisk
def test_sip_and_manager_listen_on_loopback_only(sandbox):
    pid = sandbox.pid()
    sockets = [line.split() for line in subprocess.run(["ss", "-H", "-ltnup"], capture_output=True, text=True,
                                                       check=True).stdout.splitlines()]
    ours = [(f[0], f[4]) for f in sockets if f"pid={pid}," in f[-1]]
    assert ("tcp", f"{sandbox.ip}:5038") in ours and ("udp", f"{sandbox.ip}:5060") in ours
    # Every TCP listener of Asterisk (AMI, no HTTP) is on loopback; nothing listens on
    # 5060/5038 beyond loopback (SIPp callers bind 127.0.0.2:5060 and such).
    assert all(addr.startswith(f"{sandbox.ip}:") for proto, addr in ours if proto == "tcp"), ours
    assert all(f[4].startswith("127.") for f in sockets if f[4].rsplit(":", 1)[1] in ("5060", "5038")), sockets


@pytest.mark.asterisk
def test_invite_from_unknown_address_is_refused_without_a_channel(sandbox, sipp_call, ami):
    caller = unique_caller()
    result = sipp_call("+18005550100", caller=caller, source_ip=sb.STRANGER_IP)
    assert result.code in (401, 403), result
    assert not result.answered and result.exit_code == 1
    ami.drain(0.5)
    assert not [e for e in ami.events if e.get("CallerIDNum") == caller], ami.events
    assert re.search(rf"{re.escape(caller)}@127\.0\.0\.3>' failed for '127\.0\.0\.3:\d+' .*No matching endpoint found",
                     messages_log(sandbox))


@pytest.mark.asterisk
def test_non_number_is_refused_before_any_channel(sandbox, sipp_call, ami):
    # chan_pjsip answers 404 itself when no extension matches: the dialplan's `i` is never reached.
    caller = unique_caller()
    result = sipp_call("sales", caller=caller)
    assert result.code == 404, result
    ami.drain(0.3)
    assert not [e for e in ami.events if e.get("CallerIDNum") == caller], ami.events


@pytest.mark.asterisk
def test_controller_unreachable_takes_the_fallback_message(sandbox, sipp_call, ami, fallback_dest):
    no_controller(sandbox)
    caller = unique_caller()
    result = sipp_call("+18005550100", caller=caller)
    assert result.code == 503 and result.early_media, result  # Progress, Playback, Hangup(34)
    assert result.exit_code == 1

    linkedid = channel_of(ami, caller)["Linkedid"]
    ours = lambda event: event.get("Linkedid", event.get("LinkedID")) == linkedid  # noqa: E731
    fallback = ami.wait_event(lambda e: ours(e) and e.get("UserEvent") == channel_vars.FALLBACK_EVENT)
    assert fallback["AGIStatus"] == "FAILURE"
    hangup = ami.wait_event(lambda e: ours(e) and e["Event"] == "Hangup")
    assert hangup["Cause"] == "34" and hangup["Channel"].startswith("PJSIP/sandbox-carrier-")
    cdr = ami.wait_event(lambda e: ours(e) and e["Event"] == "Cdr")  # cdr_manager's LinkedID mapping
    assert cdr["Source"] == caller and cdr["Disposition"] in ("NO ANSWER", "CONGESTION", "FAILED")
    # Nothing was dialled: the caller's channel only, no Dial at all.
    assert [e["Channel"] for e in ami.events if ours(e) and e["Event"] == "Newchannel"] == [hangup["Channel"]]
    assert not [e for e in ami.events if ours(e) and e["Event"] == "DialBegin"]
    assert f"Connecting to '{sandbox.agi_host}:4573' failed" in messages_log(sandbox)


@pytest.mark.asterisk
def test_fallback_dest_reaches_a_buyer(sandbox, sipp_buyer, sipp_call, ami, fallback_dest):
    no_controller(sandbox)
    buyer = sipp_buyer("answer")
    fallback_dest(buyer.dest)
    result = sipp_call("+18005550100", caller="+442071234567", display='O"Brien', seconds=0.3)
    assert result.answered and result.hangup == "caller" and result.exit_code == 0, result
    dial = ami.wait_event(lambda e: e["Event"] == "DialEnd" and e["CallerIDNum"] == "+442071234567")
    assert dial["DialStatus"] == "ANSWER" and dial["DestChannel"].startswith("PJSIP/ppcswitch-buyer-")
    time.sleep(0.2)
    [invite] = buyer.invites()
    assert f"sip:buyer@127.0.0.1:{buyer.port}" in invite and "+442071234567" in invite
    assert any(line.startswith("BYE ") for line in buyer.log_lines())


@pytest.mark.asterisk
@pytest.mark.parametrize("caller, display", [("anonymous", "Anonymous"), ("", None), ("+442071234567", None),
                                             ("4155550123", 'Dave "the" O\\Brien')])
def test_odd_caller_ids_are_carried(sandbox, sipp_buyer, sipp_call, fallback_dest, caller, display):
    no_controller(sandbox)
    buyer = sipp_buyer("answer")
    fallback_dest(buyer.dest)
    result = sipp_call("18005550100", caller=caller, display=display, seconds=0.1)
    assert result.answered and result.exit_code == 0, result
    assert len(buyer.invites()) == 1


@pytest.mark.asterisk
def test_busy_buyer_then_fallback_message(sandbox, sipp_buyer, sipp_call, ami, fallback_dest):
    no_controller(sandbox)
    buyer = sipp_buyer("busy")
    fallback_dest(buyer.dest)
    caller = unique_caller()
    result = sipp_call("+18005550100", caller=caller)
    assert result.code == 503 and result.early_media, result
    dial = ami.wait_event(lambda e: e["Event"] == "DialEnd" and e["CallerIDNum"] == caller)
    assert dial["DialStatus"] == "BUSY"
    assert len(buyer.invites()) == 1


@pytest.mark.asterisk
def test_hangup_over_ami_reaches_caller_and_buyer(sandbox, sipp, ami, fallback_dest):
    no_controller(sandbox)
    buyer = sipp.buyer("answer")
    fallback_dest(buyer.dest)
    caller = unique_caller()
    call = sipp.start_call("+18005550100", caller=caller, seconds=30)
    # The ppcswitch AMI user only gets the events the tracker needs (manager.conf eventfilter).
    bridged = ami.wait_event(lambda e: e["Event"] == "DialEnd" and e["CallerIDNum"] == caller
                             and e.get("DialStatus") == "ANSWER")
    time.sleep(0.3)  # let the bridge form
    assert ami.action("Hangup", Channel=bridged["Channel"], Cause="16")["Response"] == "Success"
    result = sipp.result(call, timeout=10)
    assert result.answered and result.hangup == "remote" and result.exit_code == 0, result
    time.sleep(0.2)
    assert any(line.startswith("BYE ") for line in buyer.log_lines())
