"""IVR publisher code against the real sandbox Asterisk: a SIPp caller keys the code as RFC 2833 DTMF at
a number that asks for one; the record (read back through `ppcswitch calls list --json`) is that
publisher's, with its payout. A wrong code is asked for again; wrong twice, the number's publisher."""

from __future__ import annotations

import time

from ppcswitch.attribution import codes
from ppcswitch.storage import repo
from test_routing_e2e import NUMBER, buyer, current_dialplan, set_rules, uac  # noqa: F401 (fixture)


def keyed_call(sandbox, sipp) -> str:
    """One call with uac_code.xml: 123 at the prompt, 456 when asked again; returns SIPp's log."""
    caller = uac(sandbox, "uac_code.xml", calls=1, hold_ms=2000)
    sipp.procs.append(caller)
    caller.wait(40)
    return "\n".join(caller.log_lines())


def test_publisher_code_keyed_by_dtmf_after_a_wrong_one_makes_it_that_publishers_call(controller, sipp,
                                                                                       current_dialplan):
    b = sipp.buyer("answer")
    controller.seed([buyer("Buyer", b, revenue="40.00")], publisher_payout="10.00")

    async def setup(s):
        await repo.create_publisher(s, "Acme", payout="7.00")
        await codes.set_code(s, "456", "Acme", "radio-1")  # a sub-ID code of Acme
        await codes.set_code(s, "789", "Acme")  # codes are 3 digits: Read() ends at the third
        await codes.set_number_asks(s, NUMBER, True)

    set_rules(controller, setup)
    controller.start()
    ids = controller.ids()
    log_start = current_dialplan.log_path.stat().st_size

    log = keyed_call(current_dialplan, sipp)
    assert "FINAL 200" in log and "SECOND CODE SENT" in log, log
    [c] = controller.wait_calls(1)
    assert c["outcome"] == "connected" and c["buyer_id"] == ids["Buyer"] and len(b.invites()) == 1
    assert c["publisher_id"] == ids["publisher:Acme"]
    assert c["billable"] and c["payout_cents"] == 700  # Acme's payout, not the number's publisher's 10.00
    assert c["sub_id"] == "radio-1"
    assert c["attribution"] == {"ivr_code": "456", "ivr_code_status": "matched", "source": "ivr"}
    assert c["routing"]["publisher_code"] == "456" and c["routing"]["code_publisher_id"] == ids["publisher:Acme"]
    with open(current_dialplan.log_path, "rb") as f:
        f.seek(log_start)
        console = f.read().decode(errors="replace")
    assert "Playing 'please-try-again" in console, console[-3000:]  # 123 is no code: asked again

    # Without code 456 the same caller keys two wrong codes: the number's own publisher takes the call.
    set_rules(controller, lambda s: codes.remove_code(s, "456"))
    time.sleep(1.0)  # the controller reloads its snapshot every 0.3 s (routing.reload_interval)
    log = keyed_call(current_dialplan, sipp)
    assert "FINAL 200" in log and "SECOND CODE SENT" in log, log
    calls = controller.wait_calls(2)
    assert len(calls) == 2, calls
    c = max(calls, key=lambda x: x["started_at"])
    assert c["outcome"] == "connected" and len(b.invites()) == 2
    assert c["publisher_id"] == ids["publisher:Pub"] and c["billable"] and c["payout_cents"] == 1000
    assert c["sub_id"] == "" and c["attribution"] == {"ivr_code": "456", "ivr_code_status": "unknown"}
