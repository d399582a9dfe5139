"""CLI for routing rules: `buyer rules|rtb`, `campaign routing`, `calls show`.

    ppcswitch buyer rules "Cool Air" --set timezone=America/Chicago --set "hours=mon-fri 08:00-18:00" \\
        --set states_allowed=TX,OK --set cap_daily=20 --set budget_daily=800.00 --set duplicate_days=30
    ppcswitch buyer rules "Cool Air" --campaign HVAC --set weight=3      # this campaign only
    ppcswitch buyer rules "Cool Air" --unset cap_daily                     # show / remove rules
    ppcswitch buyer rtb "Bidder" --ping-url http://127.0.0.1:9000/ping --timeout-ms 300 --floor 10.00
    ppcswitch campaign routing HVAC --zip-prompt on --repeat-caller on --whisper custom/hvac-whisper
    ppcswitch calls show LINKEDID                                           # record + routing trace
"""

from __future__ import annotations

import json

from ppcswitch.cli.common import call_to_json, on_off
from ppcswitch.money import format_cents
from ppcswitch.storage import repo, repo_routing
from ppcswitch.storage.repo import UNSET
from ppcswitch.storage.validate import ValidationError

_LISTS = ("closed_dates", "states_allowed", "states_denied", "area_codes_allowed", "area_codes_denied")


def _changes(args) -> dict:
    out: dict = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError("set", f"expected KEY=VALUE, got {item!r}")
        if key in _LISTS:
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "paused":
            out[key] = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            out[key] = value.strip()
    for key in args.unset or []:
        out[key.strip()] = None
    return out


async def _buyer_rules(ctx, args) -> int:
    changes = _changes(args)
    if changes:
        rules = await ctx.writer.run(lambda s: repo_routing.set_buyer_rules(s, args.name, changes, args.campaign))
    else:
        async with ctx.sessionmaker() as s:
            rules = await repo_routing.get_buyer_rules(s, args.name, args.campaign)
    print(json.dumps(rules, indent=2, sort_keys=True))
    return 0


async def _buyer_rtb(ctx, args) -> int:
    if args.off:
        await ctx.writer.run(lambda s: repo_routing.remove_buyer_rtb(s, args.name))
        print(f"buyer {args.name!r} is no longer reached by real-time bidding")
        return 0
    # Options not given keep what is set (a buyer bidding already); a new bidder needs --ping-url.
    row = await ctx.writer.run(lambda s: repo_routing.update_buyer_rtb(
        s, args.name, ping_url=args.ping_url, post_url=args.post_url, timeout_ms=args.timeout_ms, floor=args.floor,
        share_caller=args.share_caller))
    print(f"buyer {args.name!r} bids by real-time bidding at {row.ping_url} (timeout {row.timeout_ms} ms, "
          f"floor {format_cents(row.floor_cents)}, post {row.post_url or '-'}, caller shared: "
          f"{'yes' if row.share_caller else 'no'})")
    return 0


async def _caps(ctx, args, scope: str) -> int:
    changes = _changes(args)
    kw = {scope: args.name}
    if changes:
        caps = await ctx.writer.run(lambda s: repo_routing.set_limits(s, changes, **kw))
    else:
        async with ctx.sessionmaker() as s:
            caps = await repo_routing.get_limits(s, **kw)
    print(json.dumps(caps, indent=2, sort_keys=True))
    return 0


async def _campaign_caps(ctx, args) -> int:
    return await _caps(ctx, args, "campaign")


async def _publisher_caps(ctx, args) -> int:
    return await _caps(ctx, args, "publisher")


async def _campaign_routing(ctx, args) -> int:
    kw = {"zip_prompt": on_off(args.zip_prompt, "zip_prompt"),
          "repeat_caller": on_off(args.repeat_caller, "repeat_caller")}
    if args.whisper is not None:
        kw["whisper"] = args.whisper
    if args.rtb_budget_ms is not None:
        kw["rtb_budget_ms"] = args.rtb_budget_ms
    kw = {k: v for k, v in kw.items() if v is not UNSET}
    if kw:
        await ctx.writer.run(lambda s: repo_routing.set_campaign_routing(s, args.name, **kw))
    async with ctx.sessionmaker() as s:
        print(json.dumps(await repo_routing.get_campaign_routing(s, args.name), indent=2))
    return 0


async def _calls_show(ctx, args) -> int:

    async with ctx.sessionmaker() as s:
        record = await repo.get_call(s, args.linkedid)
        trace = await repo_routing.get_trace(s, args.linkedid)
    if record is None:
        raise ValidationError("linkedid", f"no call {args.linkedid!r}")
    print(json.dumps({**call_to_json(record), "routing": trace}, indent=2))
    return 0


def add_commands(command, group, buyer, calls, campaign, publisher=None) -> None:
    p = command(buyer, "rules", _buyer_rules, "show or change a buyer's routing rules (schedule, geography, caps...)")
    p.add_argument("name")
    p.add_argument("--campaign", default=None, help="override for this campaign only")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="timezone, hours, closed_dates, states_allowed/denied, area_codes_allowed/denied, "
                        "cap_hourly/daily/monthly/total, budget_daily/monthly, cap_counts (routed|connected|"
                        "billable), concurrency (on a campaign link), duplicate_days, duplicate_window (30m, 12h, "
                        "7d), min_gap_seconds, weight, paused, priority (lists comma-separated)")
    p.add_argument("--unset", action="append", metavar="KEY", help="remove a rule")
    p = command(buyer, "rtb", _buyer_rtb, "reach a buyer by real-time bidding (ping/post)")
    p.add_argument("name")
    p.add_argument("--ping-url", help="required for a new bidder; kept when not given")
    p.add_argument("--post-url", default=None, help="'' = none")
    p.add_argument("--timeout-ms", default=None, help="default 300 for a new bidder")
    p.add_argument("--floor", default=None, help="lowest bid accepted, e.g. 10.00 (default 0)")
    p.add_argument("--share-caller", dest="share_caller", action="store_const", const=True, default=None,
                   help="send the full caller number in pings")
    p.add_argument("--no-share-caller", dest="share_caller", action="store_const", const=False)
    p.add_argument("--off", action="store_true", help="stop bidding for this buyer")
    p = command(campaign, "routing", _campaign_routing, "ZIP prompt, repeat callers, whisper, RTB budget")
    p.add_argument("name")
    p.add_argument("--zip-prompt", metavar="on|off")
    p.add_argument("--repeat-caller", metavar="on|off")
    p.add_argument("--whisper", metavar="SOUND", help="Asterisk sound played to the buyer on answer ('' = none)")
    p.add_argument("--rtb-budget-ms")
    for group_, name, action in ((campaign, "campaign", _campaign_caps), (publisher, "publisher", _publisher_caps)):
        if group_ is None:
            continue
        p = command(group_, "caps", action, f"show or change the caps and budgets of a whole {name}")
        p.add_argument("name")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="concurrency, cap_hourly/daily/monthly/total, budget_daily/monthly (" +
                            ("payout" if name == "publisher" else "revenue") +
                            "), cap_counts (routed|connected|billable), timezone")
        p.add_argument("--unset", action="append", metavar="KEY", help="remove a cap")
    p = command(calls, "show", _calls_show, "one call with its routing trace (JSON)")
    p.add_argument("linkedid")
