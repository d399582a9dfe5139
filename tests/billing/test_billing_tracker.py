"""The tracker hands billing what a winning RTB bid says about price and minimum (narrow unit test)."""

from types import SimpleNamespace

from test_tracker import L, failover_stream, make


def test_accepted_bid_price_and_minimum_reach_the_record():
    router, tracker, records = make()
    router.first(L, router.facts("+18005550100", "+15551230000"))
    router.next(L, "BUSY")
    router.routes.get(L).decision.bids[2] = SimpleNamespace(amount_cents=5500, min_duration=30)
    for e in failover_stream(talk=45):
        tracker.handle(e)
    [r] = records
    assert (r.revenue_override_cents, r.min_duration_override) == (5500, 30)


def test_without_a_bid_there_is_no_override():
    router, tracker, records = make()
    router.first(L, router.facts("+18005550100", "+15551230000"))
    router.next(L, "BUSY")
    for e in failover_stream():
        tracker.handle(e)
    assert (records[0].revenue_override_cents, records[0].min_duration_override) == (None, None)
