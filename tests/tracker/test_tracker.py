"""Call tracker on a recorded-shape event stream (narrow unit test; the real
proof is tests/telephony/test_call_e2e.py against Asterisk)."""

from ppcswitch.calls import Outcome
from ppcswitch.routing.service import Router
from ppcswitch.tracker.tracker import CallTracker
from test_routing import network

T0 = 1_700_000_000.0
L = "1700000000.1"


def ev(name, t, **kw):
    return {"Event": name, "Timestamp": f"{T0 + t:.6f}", "Linkedid": L, **kw}


def failover_stream(talk=75.0):
    caller = dict(Uniqueid=L, Channel="PJSIP/sandbox-carrier-00000001")
    return [
        ev("Newchannel", 0, Exten="+18005550100", CallerIDNum="+15551230000", **caller),
        ev("Newchannel", 0.1, Uniqueid="1700000000.2"),
        ev("DialBegin", 0.1, DestUniqueid="1700000000.2", ChanVariable=["PPC_ATTEMPT=1", "PPC_BUYER_ID=1"], **caller),
        ev("DialEnd", 0.2, DestUniqueid="1700000000.2", DialStatus="BUSY", ChanVariable=["PPC_ATTEMPT=1", "PPC_BUYER_ID=1"], **caller),
        ev("Hangup", 0.2, Uniqueid="1700000000.2", Cause="17"),
        ev("UserEvent", 0.2, UserEvent="PPCAttempt", Attempt="1", BuyerID="1", DialStatus="BUSY", **caller),
        ev("Newchannel", 0.3, Uniqueid="1700000000.3"),
        ev("DialBegin", 0.3, DestUniqueid="1700000000.3", ChanVariable=["PPC_ATTEMPT=2", "PPC_BUYER_ID=2"], **caller),
        ev("DialEnd", 1.0, DestUniqueid="1700000000.3", DialStatus="ANSWER", ChanVariable=["PPC_ATTEMPT=2", "PPC_BUYER_ID=2"], **caller),
        ev("Hangup", 1.0 + talk, Cause="16", **{"Cause-txt": "Normal Clearing"}, **caller),
        ev("Hangup", 1.01 + talk, Uniqueid="1700000000.3", Cause="16"),
    ]


def make():
    router = Router(network())
    records = []
    tracker = CallTracker(router.routes, router.live, lambda: router.network, records.append)
    return router, tracker, records


def test_failover_call_gives_one_record_with_both_attempts():
    router, tracker, records = make()
    router.first(L, router.facts("+18005550100", "+15551230000"))
    router.next(L, "BUSY")
    stream = failover_stream()
    for e in stream + stream:  # replayed events change nothing
        tracker.handle(e)
    assert len(records) == 1
    r = records[0]
    assert r.outcome == Outcome.CONNECTED and r.buyer_id == 2 and r.campaign_id == 5 and r.publisher_id == 7
    assert [(a.seq, a.buyer_id, a.dial_status) for a in r.attempts] == [(1, 1, "BUSY"), (2, 2, "ANSWER")]
    assert r.connected_ms == 75000 and r.hangup_cause == 16
    # Billable or not is decided once, when the call is settled (billing.ledger), not here.
    assert not r.billable and (r.revenue_cents, r.payout_cents, r.billing_reasons) == (0, 0, [])
    assert router.live.snapshot() == {} and len(router.routes) == 0 and not tracker.calls


def test_the_tracker_gives_no_provisional_verdict():
    """A short call leaves the tracker with its connected time and no verdict: settlement alone says
    it is not billable (test_ledger, test_billing_e2e)."""
    router, tracker, records = make()
    router.first(L, router.facts("+18005550100", "+15551230000"))
    for e in failover_stream(talk=47.4):
        tracker.handle(e)
    assert not records[0].billable and records[0].billing_reasons == [] and records[0].revenue_cents == 0
    assert records[0].connected_ms == 47400


def test_malformed_events_are_skipped():
    router, tracker, records = make()
    for e in [{}, {"Event": "Hangup"}, {"Event": "DialBegin", "Linkedid": "x"}, {"Event": "Newchannel", "Linkedid": L, "Timestamp": "nan?"}]:
        tracker.handle(e)
    assert records == [] and L in tracker.calls  # kept, waiting for its Hangup
