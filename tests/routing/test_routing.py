"""The routing decision for this slice: number -> campaign/publisher -> buyers in priority order."""

import dataclasses

from ppcswitch import channel_vars as cv
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network, Publisher, TrackingNumber
from ppcswitch.routing.service import Router


def network(**buyer_overrides):
    buyers = {
        1: Buyer(1, "A", "PJSIP/ppcswitch-buyer/sip:a@127.0.0.1:5071", ring_timeout=15, concurrency_cap=2),
        2: Buyer(2, "B", "PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:5072", ring_timeout=20),
        3: Buyer(3, "C", "PJSIP/ppcswitch-buyer/sip:c@127.0.0.1:5073", paused=True),
    }
    for bid, changes in buyer_overrides.items():
        buyers[int(bid[1:])] = dataclasses.replace(buyers[int(bid[1:])], **changes)
    return Network(
        buyers=buyers,
        publishers={7: Publisher(7, "P", payout_cents=1000)},
        campaigns={5: Campaign(5, "HVAC", buyers=(CampaignBuyer(2, 2), CampaignBuyer(3, 1), CampaignBuyer(1, 1)))},
        numbers={"+18005550100": TrackingNumber("+18005550100", 5, 7)},
    )


def test_known_number_routes_to_first_buyer_skipping_paused():
    r = Router(network())
    v = r.first("L1", r.facts("8005550100", "+15551230000"))
    assert v[cv.ROUTE_STATUS] == "ROUTE" and v[cv.BUYER_ID] == "1" and v[cv.ATTEMPT] == "1"
    assert v[cv.DEST] == "PJSIP/ppcswitch-buyer/sip:a@127.0.0.1:5071" and v[cv.DIAL_TIMEOUT] == "15"
    assert v[cv.CAMPAIGN_ID] == "5" and v[cv.PUBLISHER_ID] == "7"
    assert (3, "paused") in r.routes.get("L1").decision.trace
    # Busy: the next buyer; then nothing left.
    v2 = r.next("L1", "BUSY")
    assert v2[cv.BUYER_ID] == "2" and v2[cv.ATTEMPT] == "2"
    assert r.next("L1", "NOANSWER") == {cv.ROUTE_STATUS: "NOBUYER", cv.HANGUP_CAUSE: "34"}


def test_unknown_number_and_anonymous_caller_are_rejected():
    r = Router(network())
    assert r.first("L1", r.facts("+18009999999", "+15551230000")) == {cv.ROUTE_STATUS: "REJECT", cv.HANGUP_CAUSE: "1"}
    assert r.first("L2", r.facts("not-a-number;Dial(x)", "+15551230000"))[cv.ROUTE_STATUS] == "REJECT"
    for anon in ("anonymous", "", "Restricted", "unknown"):
        assert r.first("L3", r.facts("+18005550100", anon)) == {cv.ROUTE_STATUS: "REJECT", cv.HANGUP_CAUSE: "21"}
    allowed = Router(network(), allow_anonymous=True)
    assert allowed.first("L4", allowed.facts("+18005550100", "anonymous"))[cv.ROUTE_STATUS] == "ROUTE"


def test_concurrency_cap_counts_live_legs_and_overflows():
    r = Router(network())
    got = [r.first(f"L{i}", r.facts("+18005550100", "+15551230000"))[cv.BUYER_ID] for i in range(4)]
    assert got == ["1", "1", "2", "2"]  # buyer 1 is capped at 2 live calls
    r.live.release("L0", 1)
    assert r.first("L9", r.facts("+18005550100", "+15551230000"))[cv.BUYER_ID] == "1"


def test_no_eligible_buyer():
    r = Router(network(b1={"paused": True}, b2={"paused": True}))
    assert r.first("L1", r.facts("+18005550100", "+15551230000"))[cv.ROUTE_STATUS] == "NOBUYER"


def test_next_for_unknown_call_sets_nothing():
    assert Router(network()).next("nope", "BUSY") == {}
