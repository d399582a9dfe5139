"""Routing rules against the real sandbox Asterisk with SIPp callers and buyers.

A concurrency cap counted at the buyer's own SIPp under 30 simultaneous calls,
a buyer closed by its schedule, and a ZIP code keyed in as RFC 2833 DTMF.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ppcswitch.sandbox import TRUNK_IP, from_header
from ppcswitch.storage import db, repo_routing

NUMBER = "+18005550100"
CALLER = "+14155550123"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def current_dialplan(sandbox, sipp):
    """This checkout's dialplan and SIPp scenarios in the running sandbox (it may predate them)."""
    etc = sandbox.etc_dir
    shutil.copyfile(ROOT / "dialplans/ppcswitch.conf", etc / "ppcswitch.conf")
    scenarios = sandbox.in_root(sandbox.sipp_dir)
    for src in (ROOT / "ppcswitch/sipp").glob("*.xml"):
        shutil.copyfile(src, scenarios / src.name)
    for module in ("app_read.so", "app_stack.so"):  # asterisk/modules.conf, for a sandbox started before them
        if module.split(".")[0] not in sandbox.cli(f"module show like {module}"):
            sandbox.cli(f"module load {module}")
    sandbox.cli("dialplan reload")
    return sandbox


def buyer(name, proc, **kw):
    return {"name": name, "destination": proc.dest.split("/", 2)[2], "ring_timeout": 3, "min_duration": 1, **kw}


def set_rules(controller, fn):
    async def go():
        engine = db.make_engine(controller.db_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                await fn(s)
        finally:
            await engine.dispose()

    asyncio.run(go())


def uac(sandbox, scenario: str, calls: int, hold_ms: int, caller: str = CALLER, rate: int = 100):
    """A SIPp caller placing `calls` calls at once (all within a second) with `scenario`."""
    args = [sandbox.sip_target, "-sf", f"{sandbox.sipp_dir}/{scenario}", "-i", TRUNK_IP, "-s", NUMBER,
            "-m", str(calls), "-l", str(calls), "-r", str(rate), "-rp", "1000", "-d", str(hold_ms),
            "-set", "from", from_header(caller)]
    return sandbox._start_sipp("uac-routing", args)


def max_simultaneous(buyer_proc) -> int:
    """Most calls the buyer's SIPp held at once, from its own log (INVITE ... BYE per call)."""
    live = peak = 0
    for line in buyer_proc.log_lines():
        if line.startswith("INVITE "):
            live += 1
            peak = max(peak, live)
        elif line.startswith("BYE "):
            live -= 1
    return peak


def test_concurrency_cap_of_5_holds_at_the_buyer_under_30_simultaneous_calls(controller, sipp, current_dialplan):
    capped, overflow = sipp.buyer("answer"), sipp.buyer("answer")
    controller.seed([buyer("Capped", capped, concurrency_cap=5), buyer("Overflow", overflow)])
    controller.start()
    ids = controller.ids()

    caller = uac(current_dialplan, "uac_call.xml", calls=30, hold_ms=4000)
    sipp.procs.append(caller)
    caller.wait(60)
    finals = re.findall(r"^FINAL (\d{3})$", "\n".join(caller.log_lines()), re.M)
    assert finals.count("200") == 30, finals

    assert max_simultaneous(capped) == 5  # counted at the buyer's SIPp, not by us
    assert len(capped.invites()) == 5 and len(overflow.invites()) == 25
    records = controller.wait_calls(30, timeout=20)
    assert len(records) == 30 and all(r["outcome"] == "connected" for r in records)
    by_buyer = {ids["Capped"]: 0, ids["Overflow"]: 0}
    for r in records:
        by_buyer[r["buyer_id"]] += 1
    assert by_buyer == {ids["Capped"]: 5, ids["Overflow"]: 25}
    # Every overflow call says why the capped buyer was passed over.
    overflowed = [r for r in records if r["buyer_id"] == ids["Overflow"]]
    assert all([ids["Capped"], "concurrency_cap:5"] in r["routing"]["skipped"] for r in overflowed), overflowed[0]


def test_buyer_closed_by_schedule_is_skipped(controller, sipp, current_dialplan):
    closed, open_ = sipp.buyer("answer"), sipp.buyer("answer")
    controller.seed([buyer("Closed", closed), buyer("Open", open_)])
    # Open only on the day after tomorrow in its own zone: closed now, whatever the hour.
    tz = "America/Chicago"
    day = (datetime.now(ZoneInfo(tz)) + timedelta(days=2)).strftime("%a").lower()

    async def rules(s):
        await repo_routing.set_buyer_rules(s, "Closed", {"timezone": tz, "hours": f"{day} 00:00-24:00"})
        await repo_routing.set_buyer_rules(s, "Open", {"timezone": tz, "hours": "mon-sun 00:00-24:00"})

    set_rules(controller, rules)
    controller.start()
    ids = controller.ids()
    result = sipp.call(NUMBER, caller=CALLER, seconds=1)
    assert result.answered, result
    [c] = controller.wait_calls(1)
    assert c["buyer_id"] == ids["Open"]
    assert len(closed.invites()) == 0 and len(open_.invites()) == 1
    assert c["routing"]["skipped"] == [[ids["Closed"], "closed:schedule"]]
    assert c["routing"]["winner"] == ids["Open"]


def test_zip_keyed_in_by_dtmf_routes_to_the_buyer_serving_that_state(controller, sipp, current_dialplan):
    california, new_york = sipp.buyer("answer"), sipp.buyer("answer")
    controller.seed([buyer("California", california), buyer("New York", new_york)])

    async def rules(s):
        await repo_routing.set_campaign_routing(s, "HVAC", zip_prompt=True)
        await repo_routing.set_buyer_rules(s, "California", {"states_allowed": ["CA"]})
        await repo_routing.set_buyer_rules(s, "New York", {"states_allowed": ["NY"]})

    set_rules(controller, rules)
    controller.start()
    ids = controller.ids()
    # A San Francisco caller (area code: CA) keys in 12345, Schenectady NY: the ZIP wins.
    caller = uac(current_dialplan, "uac_zip.xml", calls=1, hold_ms=3000)
    sipp.procs.append(caller)
    caller.wait(30)
    log = "\n".join(caller.log_lines())
    assert "FINAL 200" in log and "ZIP SENT" in log, log
    [c] = controller.wait_calls(1)
    assert len(new_york.invites()) == 1 and len(california.invites()) == 0
    assert c["buyer_id"] == ids["New York"] and c["outcome"] == "connected"
    assert c["routing"]["zip"] == "12345" and c["routing"]["caller_state"] == "NY"
    assert c["routing"]["skipped"] == [[ids["California"], "state_not_allowed:NY"]]


def test_whisper_is_played_to_the_buyer_before_the_caller_is_connected(controller, sipp, current_dialplan):
    b = sipp.buyer("answer")
    controller.seed([buyer("Whispered", b)])
    set_rules(controller, lambda s: repo_routing.set_campaign_routing(s, "HVAC", whisper="beep"))
    controller.start()
    log_start = current_dialplan.log_path.stat().st_size
    result = sipp.call(NUMBER, caller=CALLER, seconds=2)
    assert result.answered, result
    [c] = controller.wait_calls(1)
    assert c["outcome"] == "connected" and len(b.invites()) == 1
    with open(current_dialplan.log_path, "rb") as f:
        f.seek(log_start)
        console = f.read().decode(errors="replace")
    # The Gosub ran on the buyer's leg (PJSIP/ppcswitch-buyer-...), not on the caller's.
    assert re.search(r"ppcswitch-buyer-\w+> Playing 'beep", console), console[-2000:]
