"""Real-time bidding against real local HTTP buyer servers (aiohttp on 127.0.0.1, started here)."""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import pytest
from aiohttp import web

from ppcswitch import channel_vars as cv
from ppcswitch.routing.model import Buyer, Campaign, CampaignBuyer, Network, Publisher, RtbBuyer, TrackingNumber
from ppcswitch.routing.service import Router
from ppcswitch.rtb.auction import Auctioneer, read_bid

NUMBER = "+18005550100"


async def start_server(handlers: dict):
    """One aiohttp app with a route per buyer behaviour; returns (runner, base url, seen pings)."""
    seen: list[tuple[str, dict]] = []
    app = web.Application()

    def wrap(name, fn):
        async def handler(request):
            seen.append((name, await request.json()))
            return await fn(request)
        return handler

    for name, fn in handlers.items():
        app.router.add_post(f"/{name}", wrap(name, fn))
    async def post(request):
        return await _record_post(request, seen)

    app.router.add_post("/post", post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}", seen


async def _record_post(request, seen):
    seen.append(("post", await request.json()))
    return web.Response(status=204)


def bid(amount, **kw):
    async def handler(_request):
        return web.json_response({"bid": True, "amount": amount, "expires_in": 30, **kw})
    return handler


def slow(seconds, amount):
    async def handler(_request):
        await asyncio.sleep(seconds)
        return web.json_response({"bid": True, "amount": amount})
    return handler


async def failing(_request):
    return web.Response(status=500, text="boom")


async def malformed(_request):
    return web.Response(status=200, text="{not json", content_type="application/json")


async def wrong_types(_request):
    return web.json_response({"bid": True, "amount": {"$": 99}, "destination": ["sip:x@evil"]})


async def huge(_request):
    return web.Response(status=200, body=b'{"bid": true, "amount": "99.00", "pad": "' + b"x" * 200_000 + b'"}')


async def redirect(_request):
    raise web.HTTPFound("http://127.0.0.1:1/elsewhere")


async def elsewhere(_request):
    return web.json_response({"bid": True, "amount": "500.00", "destination": "sip:+15550001111@203.0.113.9"})


def network(base, specs, static_revenue=2000, budget=0.5) -> Network:
    buyers = {1: Buyer(1, "Static", "PJSIP/ppcswitch-buyer/sip:static@127.0.0.1:5071", revenue_cents=static_revenue)}
    links = [CampaignBuyer(1, 1)]
    for i, (path, timeout, floor) in enumerate(specs, 2):
        buyers[i] = Buyer(i, path, f"PJSIP/ppcswitch-buyer/sip:{path}@127.0.0.1:{5070 + i}", revenue_cents=0,
                          rtb=RtbBuyer(f"{base}/{path}", f"{base}/post", timeout=timeout, floor_cents=floor))
        links.append(CampaignBuyer(i, 1))
    return Network(buyers=buyers, publishers={7: Publisher(7, "P")},
                   campaigns={5: Campaign(5, "HVAC", buyers=tuple(links), rtb_budget=budget)},
                   numbers={NUMBER: TrackingNumber(NUMBER, 5, 7)})


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_highest_valid_bid_wins_slow_cut_at_timeout_and_auction_within_budget(http):
    runner, base, seen = await start_server({
        "fast": bid("12.50"), "better": bid("30.00", number="+15550002222"), "slow": slow(2.0, "90.00"),
        "failing": failing, "malformed": malformed, "wrong_types": wrong_types, "huge": huge,
        "redirect": redirect, "elsewhere": elsewhere, "low": bid("3.00")})
    try:
        specs = [("fast", 0.3, 0), ("better", 0.3, 0), ("slow", 0.2, 0), ("failing", 0.3, 0), ("malformed", 0.3, 0),
                 ("wrong_types", 0.3, 0), ("huge", 0.3, 0), ("redirect", 0.3, 0), ("elsewhere", 0.3, 0),
                 ("low", 0.3, 500)]
        net = network(base, specs, static_revenue=2000, budget=0.5)
        router = Router(net, rng=random.Random(1))
        router.rtb = Auctioneer(http)
        start = time.monotonic()
        v = await router.first_async("L1", router.facts(NUMBER, "+14155550123"))
        wall = time.monotonic() - start
        assert wall < 0.5, wall  # the auction's wall time stays within the 0.5 s budget
        call = router.routes.get("L1")
        outcome = {r["buyer_id"]: r for r in call.decision.auction}
        names = {b.id: b.name for b in net.buyers.values()}
        got = {names[k]: r["outcome"] for k, r in outcome.items()}
        assert got == {"fast": "bid", "better": "bid", "slow": "timeout", "failing": "http_500",
                       "malformed": "malformed", "wrong_types": "malformed", "huge": "too_large",
                       "redirect": "redirect", "elsewhere": "malformed", "low": "below_floor"}
        assert 150 <= outcome[4]["ms"] <= 350  # the slow buyer was cut at its own 0.2 s timeout
        # The best bid (30.00) first, then the static buyer (20.00), then 12.50; the rest are out.
        assert call.decision.candidates == (3, 1, 2)
        assert v[cv.BUYER_ID] == "3" and v[cv.DEST] == "PJSIP/ppcswitch-buyer/sip:+15550002222@127.0.0.1:5073"
        skipped = dict(call.decision.trace)
        assert skipped[4] == "no_bid:timeout" and skipped[11] == "no_bid:below_floor"
        # Pings carry no caller number unless allowed; the state and area code are there.
        ping = dict(seen)["fast"]
        assert "caller" not in ping and ping["caller_state"] == "CA" and ping["caller_area_code"] == "415"
    finally:
        await runner.cleanup()


async def test_outcome_is_posted_after_the_call_and_pings_can_be_capped(http):
    from datetime import UTC, datetime

    from ppcswitch.calls import CallRecord

    runner, base, seen = await start_server({"fast": bid("25.00", bid_id="b-1")})
    try:
        net = network(base, [("fast", 0.3, 0)], static_revenue=100)
        router = Router(net, rng=random.Random(1))
        router.rtb = Auctioneer(http, max_pings_per_minute=1)
        v = await router.first_async("L1", router.facts(NUMBER, "+14155550123"))
        assert v[cv.BUYER_ID] == "2"
        now = datetime.now(UTC)
        router.routes.pop("L1")
        record = CallRecord("L1", NUMBER, "+14155550123", True, now, now, "connected", 7, 5, 2,
                            answered_at=now, connected_ms=95_000)
        trace, route = router.finished(record)
        assert trace["winner"] == 2 and trace["bids"][0]["amount_cents"] == 2500
        await asyncio.sleep(0.05)
        assert not [body for name, body in seen if name == "post"]  # nothing before the call is settled
        record.billable, record.revenue_cents = True, 2500  # as billing.ledger.settle_sync decides it
        router.settled(record, route)
        await router.rtb.close()
        posts = [body for name, body in seen if name == "post"]
        assert posts == [{"call_id": "L1", "bid_id": "b-1", "won": True, "connected_seconds": 95, "billable": True,
                          "amount_cents": 2500, "bid_cents": 2500}]
        # Second call in the same minute: the publisher's ping cap is used up, the static buyer gets it.
        v = await router.first_async("L2", router.facts(NUMBER, "+14155550124"))
        assert v[cv.BUYER_ID] == "1"
        assert router.routes.get("L2").decision.auction == [{"buyer_id": 2, "outcome": "ping_cap", "ms": 0}]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("body,outcome", [
    (b'{"bid": true, "amount": "12.345"}', "malformed"),
    (b'{"bid": true, "amount": true}', "malformed"),
    (b'{"bid": true, "amount": "1e3"}', "malformed"),
    (b'{"bid": true, "amount": "5.00", "expires_in": -1}', "malformed"),
    (b'{"bid": true, "amount": "5.00", "destination": "sip:a@127.0.0.1:5072;x=y"}', "malformed"),
    (b'{"bid": false}', "no_bid"),
    (b'[1, 2]', "malformed"),
    (b'{"bid": true, "amount": 12.5}', "bid"),
    (b'{"bid": true, "amount": "5.00", "destination": "sip:other@127.0.0.1:5071"}', "bid"),
])
def test_bid_reading_trusts_nothing(body, outcome):
    buyer = Buyer(9, "B", "PJSIP/ppcswitch-buyer/sip:b@127.0.0.1:5071", rtb=RtbBuyer("http://127.0.0.1:1/"))
    got, why, _ = read_bid(buyer, body, time.time())
    assert why == outcome
    if outcome == "bid" and b"12.5" in body:
        assert got.amount_cents == 1250 and got.dial_target == buyer.dial_target
