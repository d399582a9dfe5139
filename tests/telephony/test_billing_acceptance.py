"""Acceptance: a network configured through the documented CLI, 61 real SIP calls, every call billed once.

SIPp callers call the sandbox Asterisk, the controller routes them to SIPp buyers, and each call's
outcome is compared with what the README's rules give, worked out here (not with ppcswitch's code):
overlapping repeat callers in both end orders, duration tiers at their edge, a burst against a buyer's
daily budget, a campaign link's daily cap, a campaign's concurrency, a publisher's payout budget, a
caller on a live call with a buyer that has a duplicate rule, real-time bidding wins billed at their
bids, a controller restart part-way. Then the totals of the report, statements, invoices and
/metrics (revenue and payout counters against the ledger, RTB pings) must agree to the cent.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from metrics_scrape import samples

HVAC, PLUMB, SOLAR, ROOF = "+18005550100", "+18005550101", "+18005550102", "+18005550103"

# The network, in the README's words (amounts in cents).
A_TIERS = [(0, 20_00), (10, 45_00)]  # buyer A: `rule set revenue --buyer A --mode tiers --tiers 0:20.00,10:45.00`
MIN = {"A": 5, "B": 5, "D": 5, "E": 6, "F": 6, "R": 5, "S": 5}  # --min-duration
FLAT = {"B": 30_00, "D": 25_00, "E": 15_00, "F": 12_00, "S": 10_00}
BID = 50_00  # R's bidder answers 50.00 (its configured --revenue is 5.00): billed at the bid
PUB_PAYOUT, OWN_PAYOUT, PCT = 10_00, 8_00, 40  # Pub flat revshare; Own flat on its own criteria; Pct 40 % of revenue
OWN_MIN = 5


def revenue_for(buyer: str, seconds: int) -> int:
    """What a billable call of `seconds` connected seconds bills `buyer` (0 below its minimum)."""
    if seconds < MIN[buyer]:
        return 0
    if buyer == "A":
        return max(c for s, c in A_TIERS if seconds >= s)
    if buyer == "R":
        return BID
    return FLAT[buyer]


def payout_for(publisher: str, revenue: int, seconds: int) -> int:
    if publisher == "Pub":  # revshare: only when the buyer pays
        return PUB_PAYOUT if revenue else 0
    if publisher == "Pct":  # 40 % of the revenue, rounded half up to the cent
        return (revenue * PCT * 100 + 5000) // 10000 if revenue else 0
    return OWN_PAYOUT if seconds >= OWN_MIN else 0  # Own: paid on its own criteria


class Bidder(BaseHTTPRequestHandler):
    pings: list[dict] = []
    posts: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/ping":
            Bidder.pings.append(body)
            out = json.dumps({"bid": True, "amount": f"{BID / 100:.2f}", "bid_id": f"b-{len(Bidder.pings)}"}).encode()
        else:
            Bidder.posts.append(body)
            out = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def bidder():
    Bidder.pings, Bidder.posts = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Bidder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Net:
    def __init__(self, controller, sipp):
        self.ctl, self.sipp = controller, sipp
        self.placed: list[dict] = []  # every call: number, caller, seconds, expected buyer / money
        self.n = 0

    def cli(self, *args: str) -> str:
        out = self.ctl.cli(*args)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        if self.ctl.proc is not None and args[0] in ("buyer", "publisher", "campaign", "rule"):
            time.sleep(0.7)  # a CLI edit reaches the running controller within routing.reload_interval (0.3 s)
        return out.stdout

    def caller(self) -> str:
        self.n += 1
        return f"+1415556{self.n:04d}"

    def phase(self, calls: list[tuple], gap: float = 0.0) -> list[dict]:
        """Place calls [(number, caller, seconds, expected buyer or None, publisher), ...], `gap` seconds
        apart, and wait until all have ended and are stored."""
        procs = []
        for number, caller, seconds, buyer, publisher in calls:
            procs.append((self.sipp.start_call(number, caller=caller, seconds=seconds),
                          dict(number=number, caller=caller, seconds=seconds, buyer=buyer, publisher=publisher)))
            if gap:
                time.sleep(gap)
        for proc, spec in procs:
            spec["result"] = self.sipp.result(proc, timeout=90)
            self.placed.append(spec)
        # Stored means settled (a caller's later call may wait for its earlier one to settle first).
        db_file = self.ctl.db_url.split(":///", 1)[1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(db_file, timeout=5) as db:
                if db.execute("SELECT count(*) FROM calls").fetchone()[0] >= len(self.placed):
                    break
            time.sleep(0.2)
        self.stored = self.ctl.calls()
        return [spec for _, spec in procs]

    def buyer_of(self, spec: dict) -> str | None:
        """The buyer a placed call was connected to (from the last phase's stored calls), or None."""
        mine = [c for c in self.stored if c["caller"] == spec["caller"]]
        assert len(mine) == 1, mine
        return self.names.get(mine[0]["buyer_id"]) if mine[0]["buyer_id"] else None


def test_every_call_billed_once_by_its_rules_overlaps_bursts_restart(controller, sipp, bidder):
    buyers = {name: sipp.buyer("answer") for name in ("A", "B", "D", "E", "F", "R", "S")}
    controller.seed([], numbers=())  # schema only; the network comes from the CLI, as an operator makes it
    net = Net(controller, sipp)
    cli = net.cli
    dest = {name: b.dest.split("/", 2)[2] for name, b in buyers.items()}
    for c in ("Plumb", "Solar", "Roof"):
        cli("campaign", "add", c)
    cli("publisher", "add", "Pct", "--payout", "0")
    cli("publisher", "add", "Own", "--payout", "8.00")
    cli("rule", "set", "payout", "--publisher", "Pct", "--mode", "percent", "--percent", "40")
    cli("rule", "set", "payout", "--publisher", "Own", "--only-when-buyer-pays", "no", "--min-duration", "5")
    revenue = {"A": "20.00", "B": "30.00", "D": "25.00", "E": "15.00", "F": "12.00", "R": "5.00", "S": "10.00"}
    for name in buyers:
        extra = ["--cap", "5"] if name == "A" else []
        cli("buyer", "add", name, "--destination", dest[name], "--revenue", revenue[name], "--min-duration",
            str(MIN[name]), "--ring-timeout", "5", *extra)
    for campaign, name, prio in (("HVAC", "A", 1), ("HVAC", "B", 2), ("Plumb", "D", 1), ("Plumb", "E", 2),
                                 ("Solar", "R", 1), ("Solar", "S", 2), ("Roof", "F", 1)):
        cli("campaign", "add-buyer", campaign, name, "--priority", str(prio))
    cli("rule", "set", "revenue", "--buyer", "A", "--mode", "tiers", "--tiers", "0:20.00,10:45.00")
    cli("buyer", "rules", "A", "--set", "budget_daily=1000.00")
    cli("rule", "set", "revenue", "--campaign", "HVAC", "--unique-window", "1h")
    cli("buyer", "rules", "B", "--campaign", "HVAC", "--set", "cap_daily=5")
    cli("buyer", "rules", "D", "--set", "duplicate_window=1h")
    cli("campaign", "caps", "Plumb", "--set", "concurrency=3")
    cli("rule", "set", "revenue", "--campaign", "Roof", "--unique-days", "1")
    cli("buyer", "rtb", "R", "--ping-url", f"{bidder}/ping", "--post-url", f"{bidder}/post", "--timeout-ms", "300")
    cli("buyer", "rtb", "R", "--timeout-ms", "800")  # one setting alone: the others are kept
    for number, campaign, publisher in ((HVAC, "HVAC", "Pub"), (PLUMB, "Plumb", "Pct"), (SOLAR, "Solar", "Own"),
                                        (ROOF, "Roof", "Pub")):
        cli("number", "add", number, "--campaign", campaign, "--publisher", publisher)
    controller.start()
    net.names = {v: k for k, v in controller.ids().items() if not k.startswith(("campaign:", "publisher:"))}
    ph = net.phase

    # P0, traffic: 10 callers call Roof 3 times each, all 30 calls up at once, in this order: 8 s
    # (billable), 3 s (below F's 6 s), 8 s again (a repeat within the campaign's 1-day unique window:
    # not billable, although it overlaps the first and ends about when it does).
    roof = [net.caller() for _ in range(10)]
    ph([(ROOF, c, 8, "F", "Pub") for c in roof] + [(ROOF, c, 3, "F", "Pub") for c in roof]
       + [(ROOF, c, 8, "F", "Pub") for c in roof], gap=0.1)
    for spec in net.placed[20:30]:
        spec["duplicate"] = True

    # P1, overlapping repeat callers on HVAC (unique window 1 h on the revenue side): X's second call
    # (2 s later) ends first, Y's ends last; either way the first call is the original.
    x, y = net.caller(), net.caller()
    p1 = ph([(HVAC, x, 15, "A", "Pub"), (HVAC, x, 9, "A", "Pub"), (HVAC, y, 7, "A", "Pub"), (HVAC, y, 15, "A", "Pub")],
            gap=1.0)
    p1[1]["duplicate"] = p1[3]["duplicate"] = True

    # P2, A's tiers at their edge (10 s): 7 s -> 20.00, 13 s -> 45.00; 3 s is below A's minimum.
    ph([(HVAC, net.caller(), 7, "A", "Pub"), (HVAC, net.caller(), 13, "A", "Pub"), (HVAC, net.caller(), 3, "A", "Pub")])

    # P3, a burst against A's daily budget: 100.00 left, each call may cost 45.00 (the top tier), so two
    # are held and the other two go to B.
    spent_a = sum(expected(s)[0] for s in net.placed if s["buyer"] == "A")
    cli("buyer", "rules", "A", "--set", f"budget_daily={(spent_a + 100_00) / 100:.2f}")
    burst = ph([(HVAC, net.caller(), 12, None, "Pub") for _ in range(4)])
    on_a = [s for s in burst if net.buyer_of(s) == "A"]
    assert len(on_a) == 2, [net.buyer_of(s) for s in burst]
    for s in burst:
        s["buyer"] = "A" if s in on_a else "B"
    # 10.00 left of A's budget: the next call goes to B.
    ph([(HVAC, net.caller(), 12, "B", "Pub")])

    # P4, B's daily cap on the HVAC link (5): 3 used, so of 3 simultaneous calls 2 connect, 1 finds no buyer
    # (A's budget cannot take a 45.00 call).
    p4 = ph([(HVAC, net.caller(), 6, None, "Pub") for _ in range(3)])
    got = [net.buyer_of(s) for s in p4]
    assert sorted(got, key=str) == sorted(["B", "B", None], key=str), got
    for s, b in zip(p4, got):
        s["buyer"] = b

    # P5, Plumb: the campaign's concurrency (3) holds against a burst of 4; a caller on a live call with D
    # (duplicate window 1 h) is not offered to D again but to E; then the publisher Pct's payout budget.
    p5 = ph([(PLUMB, net.caller(), 8, None, "Pct") for _ in range(4)])
    got = [net.buyer_of(s) for s in p5]
    assert sorted(got, key=str) == sorted(["D", "D", "D", None], key=str), got
    for s, b in zip(p5, got):
        s["buyer"] = b
    z = net.caller()
    ph([(PLUMB, z, 14, "D", "Pct"), (PLUMB, z, 7, "E", "Pct")], gap=3.0)
    paid = sum(expected(s)[1] for s in net.placed if s["publisher"] == "Pct")
    cli("publisher", "caps", "Pct", "--set", f"budget_daily={(paid + 15_00) / 100:.2f}")
    # 15.00 left: a call to D may cost 10.00 of payout (40 % of 25.00), one to E 6.00: one call is held at D,
    # the others would pass the budget at D (20.00) and at E (16.00).
    p5c = ph([(PLUMB, net.caller(), 8, None, "Pct") for _ in range(3)])
    got = [net.buyer_of(s) for s in p5c]
    assert sorted(got, key=str) == sorted(["D", None, None], key=str), got
    for s, b in zip(p5c, got):
        s["buyer"] = b

    # P6, real-time bidding on Solar (publisher Own): R bids 50.00 and is billed 50.00, not its 5.00.
    ph([(SOLAR, net.caller(), 8, "R", "Own"), (SOLAR, net.caller(), 3, "R", "Own"), (SOLAR, net.caller(), 8, "R", "Own")],
       gap=1.0)  # in this order: the bidder's posts are matched to its bids by bid_id

    time.sleep(0.5)  # the last settled call's counters are fed right after its commit
    before_restart = settled_totals(net)
    scrape = samples(controller.metrics())
    assert metric_sum(scrape, "ppcswitch_revenue_cents_total") == before_restart[0]
    assert metric_sum(scrape, "ppcswitch_payout_cents_total") == before_restart[1]
    assert metric_sum(scrape, "ppcswitch_rtb_pings_total") == len(Bidder.pings) == 3

    # P7, a controller restart part-way: the counts are rebuilt from the stored calls, so A's budget (10.00
    # left), B's link cap (5 of 5), D's duplicate history and Pct's budget hold as if it never stopped.
    controller.stop()
    controller.start()
    cli("buyer", "rules", "B", "--campaign", "HVAC", "--set", "cap_daily=6")  # room for one more at B
    cli("publisher", "caps", "Pct", "--set", "budget_daily=1000.00")
    ph([(HVAC, net.caller(), 6, "B", "Pub")])
    ph([(HVAC, net.caller(), 6, None, "Pub")])  # B full again, A's budget spent: no buyer
    ph([(PLUMB, z, 7, "E", "Pct")])  # z was on D 1 minute ago: D is skipped, E takes it
    assert len(net.placed) >= 60

    # Call by call: the stored record against the README's rules.
    calls = controller.calls()
    stored = {c["caller"]: [] for c in calls}
    for c in sorted(calls, key=lambda c: c["started_at"]):
        stored[c["caller"]].append(c)
    ids = net.names
    pids = {k.split(":", 1)[1]: v for k, v in controller.ids().items() if k.startswith("publisher:")}
    seen: dict[str, int] = {}
    diffs = []
    for spec in net.placed:
        i = seen.get(spec["caller"], 0)
        seen[spec["caller"]] = i + 1
        rec = stored[spec["caller"]][i]
        got_buyer = ids.get(rec["buyer_id"]) if rec["buyer_id"] else None
        rev, pay = expected(spec, rec["connected_ms"] // 1000)
        want = (spec["buyer"], rev, pay, bool(rev))
        have = (got_buyer, rec["revenue_cents"], rec["payout_cents"], rec["billable"])
        if spec["buyer"] is not None:
            assert abs(rec["connected_ms"] / 1000 - spec["seconds"]) < 1.5, rec
        if want != have:
            diffs.append((spec["number"], spec["caller"], spec["seconds"], want, have, rec["billing_reasons"]))
    assert diffs == []

    # Totals: the period report, statements and invoices agree with the calls, to the cent.
    rev_total = sum(c["revenue_cents"] for c in calls)
    pay_total = sum(c["payout_cents"] for c in calls)
    today = datetime.now(timezone.utc).date()
    span = ["--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1))]
    rows = {(r["group"], r["name"]): r for r in csv.DictReader(io.StringIO(cli("report", "period", *span, "--csv")))}
    assert cents(rows[("total", "total")]["receivable"]) == rev_total
    assert cents(rows[("total", "total")]["payable"]) == pay_total
    for pub in ("Pub", "Pct", "Own"):
        st = list(csv.reader(io.StringIO(cli("report", "statement", pub, *span, "--csv"))))
        assert cents(st[-1][5]) == sum(c["payout_cents"] for c in calls if c["publisher_id"] == pids[pub]), pub
    for name in ("A", "B", "D", "E", "F", "R"):
        inv = list(csv.reader(io.StringIO(cli("report", "invoice", name, *span, "--csv"))))
        assert cents(inv[-1][5]) == sum(c["revenue_cents"] for c in calls if ids.get(c["buyer_id"]) == name)
    # /metrics since the restart against what the ledger booked since then.
    after = samples(controller.metrics())
    assert metric_sum(after, "ppcswitch_revenue_cents_total") == rev_total - before_restart[0]
    assert metric_sum(after, "ppcswitch_payout_cents_total") == pay_total - before_restart[1]
    # RTB: every ping counted, the winner told what it was billed (its bid) once the call was settled.
    posts = sorted(Bidder.posts, key=lambda p: p["bid_id"])
    assert [(p["won"], p["billable"], p["amount_cents"], p["bid_cents"]) for p in posts] == [
        (True, True, BID, BID), (True, False, 0, BID), (True, True, BID, BID)]


def expected(spec: dict, seconds: int | None = None) -> tuple[int, int]:
    """(revenue, payout) the README's rules give this call."""
    seconds = spec["seconds"] if seconds is None else seconds
    if spec["buyer"] is None:
        return 0, 0
    rev = 0 if spec.get("duplicate") else revenue_for(spec["buyer"], seconds)
    return rev, payout_for(spec["publisher"], rev, seconds)


def settled_totals(net: Net) -> tuple[int, int]:
    calls = net.ctl.calls()
    return sum(c["revenue_cents"] for c in calls), sum(c["payout_cents"] for c in calls)


def metric_sum(scrape: dict, name: str) -> int:
    return int(sum(v for (n, _), v in scrape.items() if n == name))


def cents(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("-").partition(".")
    return sign * (int(whole) * 100 + int((frac + "00")[:2]))
