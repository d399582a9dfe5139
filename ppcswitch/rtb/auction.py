"""Real-time bidding (ping/post) for buyers reached over HTTP.

The decision parts are pure: what a ping says (`ping_payload`), whether a
response is a usable bid (`read_bid`), and how bids mix with static buyers
(`apply_bids`). The I/O is `Auctioneer`: one shared aiohttp session, every RTB
candidate pinged in parallel, each cut at its own timeout and all of them at
the campaign's budget, and a post of the outcome after the call. Anything a
buyer's server does wrong (slow, failing, redirecting, huge, malformed, wrong
types) is a no-bid with a reason in the trace, never an error in routing.

Ping body (JSON): {"call_id", "campaign", "publisher_id", "caller_state",
"caller_area_code", "zip"?, "sub_id"?, "click_id"?, "caller"? (only with
share_caller)}: the call's attribution lets buyers price by traffic source.
Bid (JSON): {"bid": true, "amount": "12.50", "destination": "sip:...@host"
or "number": "+1555...", "expires_in": 30, "min_duration": 60, "bid_id": "..."}.
A destination must be on the host of the buyer's own configured destination,
and a number is dialled there: a bid can never point Asterisk elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ppcswitch.money import MoneyError, parse_cents
from ppcswitch.routing.engine import CAUSE_NO_CIRCUIT, DecisionStatus
from ppcswitch.routing.model import Buyer, Network

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # a bid is a few hundred bytes; more is hostile
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SIP = re.compile(r"^sip:(?P<user>[A-Za-z0-9+_.\-]{1,64})@(?P<hostport>[A-Za-z0-9.\-]{1,253}(?::[0-9]{1,5})?)$")


@dataclass(frozen=True)
class Bid:
    buyer_id: int
    amount_cents: int
    dial_target: str  # PJSIP/... on the buyer's own host
    expires_at: float  # epoch seconds
    min_duration: int | None = None
    bid_id: str = ""


@dataclass
class PingResult:
    buyer_id: int
    outcome: str  # bid | no_bid | below_floor | timeout | budget | http_<status> | redirect | too_large | malformed | error
    ms: int = 0
    bid: Bid | None = None
    detail: str = ""

    def to_trace(self) -> dict:
        out = {"buyer_id": self.buyer_id, "outcome": self.outcome, "ms": self.ms}
        if self.bid:
            out["amount_cents"] = self.bid.amount_cents
            out["bid_id"] = self.bid.bid_id
            if self.bid.min_duration is not None:
                out["min_duration"] = self.bid.min_duration
        if self.detail:
            out["detail"] = self.detail[:200]
        return out


def metric_outcome(outcome: str) -> str | None:
    """A ping's outcome as ppcswitch_rtb_pings_total counts it (None: no ping was sent)."""
    if outcome == "ping_cap":
        return None
    if outcome in ("bid", "no_bid", "timeout", "error"):
        return outcome
    return {"below_floor": "no_bid", "budget": "timeout"}.get(outcome, "error")


def ping_payload(call_id: str, facts, campaign_name: str, publisher_id: int | None, share_caller: bool) -> dict:
    """The call's non-personal facts; the full caller number only for buyers allowed to see it."""
    body = {"call_id": call_id, "campaign": campaign_name, "publisher_id": publisher_id,
            "caller_state": facts.state, "caller_area_code": facts.area_code}
    if facts.zip_code:
        body["zip"] = facts.zip_code
    # Attribution (pool lease, SIP headers, IVR code): set only when the call has it.
    if facts.sub_id:
        body["sub_id"] = facts.sub_id
    if facts.click_id:
        body["click_id"] = facts.click_id
    if share_caller and facts.caller_valid:
        body["caller"] = facts.caller
    return body


def _buyer_host(buyer: Buyer) -> tuple[str, str] | None:
    """(Dial prefix, host[:port]) of a buyer's configured sip: destination."""
    prefix, sep, uri = buyer.dial_target.rpartition("/")
    m = _SIP.match(uri) if sep else None
    return (prefix, m["hostport"]) if m else None


def read_bid(buyer: Buyer, body: bytes, now: float) -> tuple[Bid | None, str, str]:
    """(bid, outcome, detail) from a 200 response body. Pure: no trust in anything it says."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, "malformed", f"not JSON: {exc}"[:120]
    if not isinstance(data, dict):
        return None, "malformed", "not a JSON object"
    if data.get("bid") is False or data.get("bid") is None and "amount" not in data:
        return None, "no_bid", ""
    amount = data.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (str, int, float)):
        return None, "malformed", f"amount: {amount!r}"[:120]
    try:
        # A JSON number is read through its text, never as a float sum.
        cents = parse_cents(amount if isinstance(amount, str) else str(Decimal(str(amount))))
    except (MoneyError, InvalidOperation) as exc:
        return None, "malformed", f"amount: {exc}"[:120]
    host = _buyer_host(buyer)
    if host is None:
        return None, "malformed", "buyer has no sip: destination to bid on"
    prefix, hostport = host
    dest, number = data.get("destination"), data.get("number")
    if isinstance(dest, str) and dest:
        m = _SIP.match(dest)
        if not m or m["hostport"] != hostport:
            return None, "malformed", f"destination not on the buyer's host {hostport}"
        target = f"{prefix}/{dest}"
    elif isinstance(number, str) and _E164.match(number):
        target = f"{prefix}/sip:{number}@{hostport}"
    elif dest is None and number is None:
        target = buyer.dial_target
    else:
        return None, "malformed", "destination/number"
    expires_in = data.get("expires_in", 30)
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or not 0 < expires_in <= 3600:
        return None, "malformed", f"expires_in: {expires_in!r}"[:120]
    min_duration = data.get("min_duration")
    if min_duration is not None and (isinstance(min_duration, bool) or not isinstance(min_duration, int)
                                     or not 0 <= min_duration <= 86400):
        return None, "malformed", f"min_duration: {min_duration!r}"[:120]
    bid_id = data.get("bid_id", "")
    bid_id = str(bid_id)[:100] if isinstance(bid_id, (str, int)) else ""
    bid = Bid(buyer.id, cents, target, now + float(expires_in), min_duration, bid_id)
    if buyer.rtb is not None and cents < buyer.rtb.floor_cents:
        return bid, "below_floor", f"{cents}<{buyer.rtb.floor_cents}"
    return bid, "bid", ""


def apply_bids(decision, network: Network, results: list[PingResult], now: float) -> None:
    """Keep RTB candidates that bid; inside each priority tier, order buyers by what they pay.

    Static buyers count at their configured revenue, bidders at their bid; ties keep the
    order routing chose (weights, repeat caller)."""
    campaign = network.campaigns.get(decision.campaign_id)
    by_buyer = {r.buyer_id: r for r in results}
    kept = []
    for bid_id in decision.candidates:
        buyer = network.buyers.get(bid_id)
        if buyer is None or buyer.rtb is None:
            kept.append(bid_id)
            continue
        r = by_buyer.get(bid_id)
        if r is None or r.outcome != "bid" or r.bid is None or r.bid.expires_at <= now:
            decision.trace.append((bid_id, f"no_bid:{r.outcome if r else 'not_pinged'}"))
            continue
        decision.bids[bid_id] = r.bid
        kept.append(bid_id)
    decision.auction = [r.to_trace() for r in results]

    def tier(b: int) -> int:
        link = campaign.links.get(b) if campaign else None
        return link.priority if link else 0

    def value(b: int) -> int:
        bid = decision.bids.get(b)
        return bid.amount_cents if bid else network.buyers[b].revenue_cents

    if decision.bids:
        order = {b: i for i, b in enumerate(kept)}
        kept.sort(key=lambda b: (tier(b), -value(b), order[b]))
    decision.candidates = tuple(kept)
    if not kept and decision.status == DecisionStatus.ROUTE:
        decision.status = DecisionStatus.NO_BUYER
        decision.hangup_cause = CAUSE_NO_CIRCUIT


class Auctioneer:
    """Pings and posts over one shared aiohttp session (created by the app)."""

    def __init__(self, session, max_pings_per_minute: int = 0, clock=time.time) -> None:
        self.session = session
        self.max_pings_per_minute = max_pings_per_minute  # per publisher; 0: no cap
        self.clock = clock
        self._window: dict[int | None, tuple[int, int]] = {}  # publisher -> (minute, pings)
        self._posts: set[asyncio.Task] = set()

    def _allow(self, publisher_id: int | None, pings: int) -> bool:
        if not self.max_pings_per_minute:
            return True
        minute = int(self.clock() // 60)
        start, used = self._window.get(publisher_id, (minute, 0))
        if start != minute:
            used = 0
        if used + pings > self.max_pings_per_minute:
            return False
        self._window[publisher_id] = (minute, used + pings)
        return True

    async def run(self, network: Network, call_id: str, facts, decision) -> list[PingResult]:
        """Ping every RTB candidate of the decision at once; returns one result per buyer."""
        bidders = [network.buyers[b] for b in decision.candidates
                   if b in network.buyers and network.buyers[b].rtb is not None]
        if not bidders:
            return []
        if not self._allow(decision.publisher_id, len(bidders)):
            return [PingResult(b.id, "ping_cap") for b in bidders]
        campaign = network.campaigns.get(decision.campaign_id)
        budget = campaign.rtb_budget if campaign else 1.0
        name = campaign.name if campaign else ""
        tasks = {asyncio.ensure_future(self._ping(b, ping_payload(call_id, facts, name, decision.publisher_id,
                                                                  b.rtb.share_caller))): b for b in bidders}
        done, pending = await asyncio.wait(tasks, timeout=budget)
        results = []
        for task, buyer in tasks.items():
            if task in pending:
                task.cancel()
                results.append(PingResult(buyer.id, "budget", int(budget * 1000)))
            else:
                results.append(task.result())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for r in results:
            if r.outcome not in ("bid", "no_bid"):
                log.info("rtb: buyer %s no bid for %s: %s %s", r.buyer_id, call_id, r.outcome, r.detail)
        return results

    async def _ping(self, buyer: Buyer, payload: dict) -> PingResult:
        import aiohttp

        start = time.monotonic()
        ms = lambda: int((time.monotonic() - start) * 1000)  # noqa: E731
        try:
            async with asyncio.timeout(buyer.rtb.timeout):
                async with self.session.post(buyer.rtb.ping_url, json=payload, allow_redirects=False) as resp:
                    if 300 <= resp.status < 400:
                        return PingResult(buyer.id, "redirect", ms())
                    if resp.status == 204:
                        return PingResult(buyer.id, "no_bid", ms())
                    if resp.status != 200:
                        return PingResult(buyer.id, f"http_{resp.status}", ms())
                    if (resp.content_length or 0) > MAX_BODY:
                        return PingResult(buyer.id, "too_large", ms())
                    body = await resp.content.read(MAX_BODY + 1)
                    if len(body) > MAX_BODY:
                        return PingResult(buyer.id, "too_large", ms())
        except TimeoutError:
            return PingResult(buyer.id, "timeout", ms())
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return PingResult(buyer.id, "error", ms(), detail=str(exc)[:200])
        bid, outcome, detail = read_bid(buyer, body, self.clock())
        return PingResult(buyer.id, outcome, ms(), bid if outcome == "bid" else None, detail)

    def post(self, buyer: Buyer, bid: Bid | None, record) -> None:
        """Tell a bidder how its call went, once the call is settled (never waited for): `billable`
        and `amount_cents` are what the ledger billed it (its bid when it won a billable call, else 0);
        `bid_cents` is what it bid."""
        if buyer.rtb is None or not buyer.rtb.post_url:
            return
        won = record.buyer_id == buyer.id
        billable = bool(record.billable and won)
        body = {"call_id": record.linkedid, "bid_id": bid.bid_id if bid else "", "won": won,
                "connected_seconds": record.connected_seconds if won else 0,
                "billable": billable,
                "amount_cents": record.revenue_cents if billable else 0,
                "bid_cents": bid.amount_cents if bid else 0}
        task = asyncio.ensure_future(self._post(buyer, body))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _post(self, buyer: Buyer, body: dict) -> None:
        import aiohttp

        try:
            async with asyncio.timeout(max(buyer.rtb.timeout, 2.0)):
                async with self.session.post(buyer.rtb.post_url, json=body, allow_redirects=False) as resp:
                    await resp.content.read(MAX_BODY)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("rtb: post to buyer %s failed: %s", buyer.id, exc)

    async def close(self) -> None:
        if self._posts:
            await asyncio.wait(self._posts, timeout=2)
