"""`ppcswitch db|campaign|publisher|buyer|number|calls|demo` commands.

Bad input prints one clear line and exits 2; database trouble exits 1.
Writes go through a Writer like everywhere else, so a controller writing at
the same time only makes us wait, never fail.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from ppcswitch.cli import fraud as fraud_cli  # block/allow lists, quality report, campaign fraud settings
from ppcswitch.cli import routing as routing_cli  # rules, RTB, ZIP prompt, call routing traces
from ppcswitch.cli import common
from ppcswitch.cli.common import Action, Context, call_to_json, command
from ppcswitch.money import format_cents
from ppcswitch.storage import repo, repo_routing
from ppcswitch.storage import models as t
from ppcswitch.storage.db import upgrade
from ppcswitch.storage.validate import int_range


# --- commands --------------------------------------------------------------

async def _db_upgrade(ctx: Context, args) -> int:
    print(f"database at revision {await upgrade(ctx.settings.database.url)}")
    return 0


async def _campaign_add(ctx: Context, args) -> int:
    row = await ctx.writer.run(lambda s: repo.create_campaign(s, args.name))
    print(f"campaign {row.name!r} created (id {row.id})")
    return 0


async def _campaign_add_buyer(ctx: Context, args) -> int:
    link = await ctx.writer.run(lambda s: repo.add_campaign_buyer(s, args.campaign, args.buyer, args.priority))
    print(f"buyer {args.buyer.strip()!r} added to campaign {args.campaign.strip()!r} (priority {link.priority})")
    return 0


async def _publisher_add(ctx: Context, args) -> int:
    row = await ctx.writer.run(lambda s: repo.create_publisher(s, args.name, payout=args.payout))
    print(f"publisher {row.name!r} created (id {row.id}, payout {format_cents(row.payout_cents)})")
    return 0


async def _buyer_add(ctx: Context, args) -> int:
    row = await ctx.writer.run(lambda s: repo.create_buyer(
        s, args.name, args.destination, revenue=args.revenue, ring_timeout=args.ring_timeout,
        concurrency_cap=args.cap, min_duration=args.min_duration, paused=args.paused))
    print(f"buyer {row.name!r} created (id {row.id}, {row.destination}, revenue {format_cents(row.revenue_cents)}"
          f"{', paused' if row.paused else ''})")
    return 0


def _buyer_paused(paused: bool) -> Action:
    async def action(ctx: Context, args) -> int:
        row = await ctx.writer.run(lambda s: repo.set_buyer_paused(s, args.name, paused))
        print(f"buyer {row.name!r} {'paused' if paused else 'resumed'}")
        return 0
    return action


async def _number_add(ctx: Context, args) -> int:
    row = await ctx.writer.run(lambda s: repo.add_tracking_number(
        s, args.number, args.campaign, args.publisher, region=ctx.settings.routing.default_region))
    print(f"tracking number {row.number} added (campaign {args.campaign.strip()!r}, "
          f"publisher {args.publisher.strip()!r})")
    return 0


async def _calls_list(ctx: Context, args) -> int:
    limit = int_range(args.limit, "limit", 1, 100000)
    async with ctx.sessionmaker() as session:
        records = await repo.list_calls(session, limit=limit)
        traces = await repo_routing.get_traces(session, [r.linkedid for r in records])
    if args.json:
        print(json.dumps([{**call_to_json(r), "routing": traces.get(r.linkedid)} for r in records], indent=2))
        return 0
    if not records:
        print("no calls")
    for r in records:
        print(f"{r.started_at:%Y-%m-%d %H:%M:%S}Z  {r.linkedid:<18} {r.tracking_number:<14} {r.caller:<16} "
              f"{r.outcome:<13} buyer={r.buyer_id if r.buyer_id is not None else '-':<4} "
              f"{r.connected_seconds:>5}s {'billable' if r.billable else '-':<8} "
              f"rev {format_cents(r.revenue_cents)} pay {format_cents(r.payout_cents)}")
    return 0


# The local sandbox dials these SIPp buyers; `demo seed` must stay idempotent.
DEMO_CAMPAIGN = "HVAC"
DEMO_PUBLISHER = ("Demo Publisher", "10.00")
DEMO_BUYERS = (
    dict(name="Buyer A", destination="sip:buyer-a@127.0.0.1:5071", revenue="40.00", min_duration=60,
         ring_timeout=15, concurrency_cap=10, priority=1),
    dict(name="Buyer B", destination="sip:buyer-b@127.0.0.1:5072", revenue="35.00", min_duration=60,
         ring_timeout=15, concurrency_cap=None, priority=2),
)
DEMO_NUMBER = "+18005550100"


async def seed_demo(session, region: str = "US") -> list[str]:
    """Create whatever part of the demo network is missing; returns what was created."""
    created = []

    async def exists(model, **where) -> bool:
        return await session.scalar(select(model.id).filter_by(**where)) is not None

    if not await exists(t.Campaign, name=DEMO_CAMPAIGN):
        await repo.create_campaign(session, DEMO_CAMPAIGN)
        created.append(f"campaign {DEMO_CAMPAIGN!r}")
    if not await exists(t.Publisher, name=DEMO_PUBLISHER[0]):
        await repo.create_publisher(session, DEMO_PUBLISHER[0], payout=DEMO_PUBLISHER[1])
        created.append(f"publisher {DEMO_PUBLISHER[0]!r}")
    campaign = await repo.get_campaign(session, DEMO_CAMPAIGN)
    for spec in DEMO_BUYERS:
        spec = dict(spec)
        priority = spec.pop("priority")
        if not await exists(t.Buyer, name=spec["name"]):
            await repo.create_buyer(session, **spec)
            created.append(f"buyer {spec['name']!r}")
        buyer = await repo.get_buyer(session, spec["name"])
        if not await exists(t.CampaignBuyer, campaign_id=campaign.id, buyer_id=buyer.id):
            await repo.add_campaign_buyer(session, campaign.id, buyer.id, priority)
            created.append(f"{spec['name']!r} on {DEMO_CAMPAIGN!r}")
    if not await exists(t.TrackingNumber, number=DEMO_NUMBER):
        await repo.add_tracking_number(session, DEMO_NUMBER, DEMO_CAMPAIGN, DEMO_PUBLISHER[0], region=region)
        created.append(f"tracking number {DEMO_NUMBER}")
    return created


async def _demo_seed(ctx: Context, args) -> int:
    created = await ctx.writer.run(lambda s: seed_demo(s, ctx.settings.routing.default_region))
    print("demo network: " + (", ".join(created) + " created" if created else "already complete, nothing changed"))
    return 0


# --- registration ----------------------------------------------------------

def add_cli(sub) -> None:
    def group(name: str, help: str):
        return common.group(sub, name, help)

    db = group("db", "database schema")
    command(db, "upgrade", _db_upgrade, "migrate the database to the newest schema", migrate=False)

    campaign = group("campaign", "campaigns")
    p = command(campaign, "add", _campaign_add, "create a campaign")
    p.add_argument("name")
    p = command(campaign, "add-buyer", _campaign_add_buyer, "let a buyer take a campaign's calls")
    p.add_argument("campaign")
    p.add_argument("buyer")
    p.add_argument("--priority", default="1", help="lower is tried first (default 1)")

    publisher = group("publisher", "publishers")
    p = command(publisher, "add", _publisher_add, "create a publisher")
    p.add_argument("name")
    p.add_argument("--payout", default="0", help="paid per billable call, e.g. 12.50 (default 0)")

    buyer = group("buyer", "buyers")
    p = command(buyer, "add", _buyer_add, "create a buyer")
    p.add_argument("name")
    p.add_argument("--destination", required=True, help="sip:user@host[:port] or pjsip:ENDPOINT")
    p.add_argument("--revenue", default="0", help="paid by the buyer per billable call, e.g. 40.00 (default 0)")
    p.add_argument("--cap", default=None, help="most concurrent calls (default: no cap)")
    p.add_argument("--ring-timeout", default="30", help="seconds to ring (default 30)")
    p.add_argument("--min-duration", default="60", help="connected seconds for a billable call (default 60)")
    p.add_argument("--paused", action="store_true", help="create it paused")
    for name, paused in (("pause", True), ("resume", False)):
        p = command(buyer, name, _buyer_paused(paused), f"{name} a buyer")
        p.add_argument("name")

    number = group("number", "tracking numbers")
    p = command(number, "add", _number_add, "add a tracking number")
    p.add_argument("number")
    p.add_argument("--campaign", required=True)
    p.add_argument("--publisher", required=True)

    calls = group("calls", "call records")
    p = command(calls, "list", _calls_list, "show recent calls, newest first")
    p.add_argument("--limit", default="20")
    p.add_argument("--json", action="store_true", help="JSON with every field (times ISO 8601, money in cents)")
    routing_cli.add_commands(command, group, buyer, calls, campaign, publisher)
    fraud_cli.add_commands(command, group, campaign)

    demo = group("demo", "demo network for the local sandbox")
    command(demo, "seed", _demo_seed, "create the demo campaign, publisher, buyers and number (idempotent)")
