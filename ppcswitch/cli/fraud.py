"""CLI for fraud and call quality.

    ppcswitch fraud block +1415555 [--campaign HVAC] [--note "robocaller range"]
    ppcswitch fraud allow +14155550123 --campaign HVAC      # let one caller through a network block
    ppcswitch fraud unlist block +1415555                     # remove an entry
    ppcswitch fraud list
    ppcswitch fraud report [--days 7]                         # per-publisher quality (JSON)
    ppcswitch fraud signals LINKEDID                          # a call's score, explanation, talk time...
    ppcswitch campaign fraud HVAC --challenge on --record on --block-score 80
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from ppcswitch.fraud import store
from ppcswitch.cli.common import on_off
from ppcswitch.storage.repo import UNSET
from ppcswitch.storage.validate import ValidationError


def _entry(kind):
    async def run(ctx, args) -> int:
        await ctx.writer.run(lambda s: store.add_entry(s, kind, args.pattern, args.campaign, args.note))
        print(f"{kind}ed {args.pattern}" + (f" on campaign {args.campaign!r}" if args.campaign else " on the network"))
        return 0

    return run


async def _unlist(ctx, args) -> int:
    n = await ctx.writer.run(lambda s: store.remove_entry(s, args.kind, args.pattern, args.campaign))
    if not n:
        raise ValidationError("pattern", f"{args.pattern} is not on the {args.kind} list")
    print(f"removed {args.pattern} from the {args.kind} list")
    return 0


async def _list(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        for e in await store.list_entries(s):
            print(f"{e.kind:6} {e.pattern:16} {'campaign ' + str(e.campaign_id) if e.campaign_id else 'network'}")
    return 0


async def _report(ctx, args) -> int:
    since = datetime.now(timezone.utc) - timedelta(days=float(args.days))
    async with ctx.sessionmaker() as s:
        print(json.dumps(await store.publisher_quality(s, since), indent=2))
    return 0


async def _signals(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        found = await store.get_signals(s, args.linkedid)
    if found is None:
        raise ValidationError("linkedid", f"no signals stored for call {args.linkedid!r}")
    print(json.dumps(found, indent=2))
    return 0


async def _campaign_fraud(ctx, args) -> int:
    kw = {}
    for key in ("challenge", "record"):
        value = on_off(getattr(args, key), key)
        if value is not UNSET:
            kw[key] = value
    if args.block_score is not None:
        text = args.block_score.strip().lower()
        try:
            kw["block_score"] = None if text in ("", "none", "off") else int(text)
        except ValueError:
            raise ValidationError("block_score", f"a whole number from 1 to 100, or none; got {args.block_score!r}") from None
    row = await ctx.writer.run(lambda s: store.set_campaign(s, args.name, **kw))
    print(json.dumps({"campaign": args.name, "challenge": row.challenge, "record": row.record,
                      "block_score": row.block_score}, indent=2))
    return 0


def add_commands(command, group, campaign) -> None:
    fraud = group("fraud", "fraud prevention: block/allow lists, quality report, call signals")
    for kind in ("block", "allow"):
        p = command(fraud, kind, _entry(kind), f"{kind} a caller number or prefix (E.164, or 'anonymous')")
        p.add_argument("pattern")
        p.add_argument("--campaign", default=None, help="this campaign only (default: the whole network)")
        p.add_argument("--note", default="")
    p = command(fraud, "unlist", _unlist, "remove a block or allow entry")
    p.add_argument("kind", choices=("block", "allow"))
    p.add_argument("pattern")
    p.add_argument("--campaign", default=None)
    command(fraud, "list", _list, "show the block and allow lists")
    p = command(fraud, "report", _report, "per-publisher quality: flagged rate, attestation mix, clustering, repeats")
    p.add_argument("--days", default="7")
    p = command(fraud, "signals", _signals, "one call's fraud score, explanation and signals (JSON)")
    p.add_argument("linkedid")
    p = command(campaign, "fraud", _campaign_fraud, "press-1 challenge, recording, pre-routing block score")
    p.add_argument("name")
    p.add_argument("--challenge", metavar="on|off")
    p.add_argument("--record", metavar="on|off")
    p.add_argument("--block-score", metavar="N|none", help="refuse calls scoring at least N before routing")
