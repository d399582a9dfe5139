"""Attribution with real calls: SIPp -> sandbox Asterisk (the repository's dialplan) -> agi .../attribution
and .../route -> SIPp buyer; the record read back through `ppcswitch calls list --json`."""

from __future__ import annotations

import asyncio
import shutil
import time

from ppcswitch import sandbox as sb
from ppcswitch.attribution import store
from ppcswitch.storage import db

POOL_NUMBERS = ("+18005550160", "+18005550161")
CALLER = "+14155550123"


def buyer(name, proc, **kw):
    return {"name": name, "destination": proc.dest.split("/", 2)[2], "ring_timeout": 3, **kw}


def current_dialplan(box) -> None:
    """Load this checkout's dialplan and SIPp scenarios into the (maybe already running) sandbox."""
    etc = box.etc_dir
    shutil.copyfile(sb.DIALPLAN_DIR / "ppcswitch.conf", etc / "ppcswitch.conf")
    box.cli("dialplan reload")
    if "res_pjsip_header_funcs.so" not in box.cli("module show like res_pjsip_header_funcs"):
        box.cli("module load res_pjsip_header_funcs.so")  # PJSIP_HEADER (asterisk/modules.conf)
    scenarios = box.in_root(box.sipp_dir)
    for src in sb.SIPP_SCENARIOS.glob("*.xml"):
        shutil.copyfile(src, scenarios / src.name)


def header_call(sipp, number: str, sub_id: str, click_id: str, seconds: float = 1.0):
    """One call from the sandbox trunk carrying X-Sub-Id / X-Click-Id."""
    box = sipp.box
    args = [box.sip_target, "-sf", f"{box.sipp_dir}/uac_headers.xml", "-i", sb.TRUNK_IP,
            "-s", number, "-m", "1", "-l", "1", "-d", str(int(seconds * 1000)),
            "-set", "from", sb.from_header(CALLER, None, sb.TRUNK_IP), "-set", "subid", sub_id,
            "-set", "clickid", click_id]
    proc = box._start_sipp("uac-headers", args)
    proc.number = number
    sipp.procs.append(proc)
    return box.call_result(proc, 60)


def seed_pool(controller, lease_seconds: int = 600) -> str:
    """Pool "fb" of campaign HVAC / publisher Pub with POOL_NUMBERS; returns its public key."""
    async def go():
        engine = db.make_engine(controller.db_url)
        try:
            async with db.make_sessionmaker(engine)() as s, s.begin():
                pool = await store.create_pool(s, "fb", "HVAC", "Pub", lease_seconds)
                for n in POOL_NUMBERS:
                    await store.add_pool_number(s, "fb", n)
                return pool.public_key
        finally:
            await engine.dispose()

    return asyncio.run(go())


def by_number(calls, number):
    return [c for c in calls if c["tracking_number"] == number]


def test_sip_headers_attribute_the_call_and_bad_values_are_cut_and_cleaned(controller, sipp, sandbox):
    current_dialplan(sandbox)
    a = sipp.buyer("answer")
    controller.seed([buyer("Buyer A", a, revenue="40.00", min_duration=1)])
    controller.start()

    ok = header_call(sipp, "+18005550100", "fb-123", "abc")
    assert ok.answered, ok
    # Asterisk hands over no header longer than its 4 KB read buffer: a 5,000-character
    # one is dropped (the call routes unattributed by it); a 3,000-character one is cut.
    long = header_call(sipp, "+18005550100", "s" * 5000, "c" * 3000)
    assert long.answered, long
    evil = header_call(sipp, "+18005550100", "x${EXTEN},1);Hangup()|&'\"\\", "a;b=c,d")
    assert evil.answered, evil

    calls = sorted(controller.wait_calls(3), key=lambda c: c["started_at"])
    assert [(c["sub_id"], c["click_id"]) for c in calls] == [
        ("fb-123", "abc"), ("", "c" * 128), ("xEXTEN1Hangup", "abcd")]
    assert all(c["outcome"] == "connected" and c["attribution"]["source"] == "sip" for c in calls)
    assert len(a.invites()) == 3
