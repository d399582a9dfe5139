"""`ppcswitch pool ...`, `ppcswitch postback ...`, `ppcswitch attribution report`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from ppcswitch.attribution import store
from ppcswitch.money import format_cents
from ppcswitch.cli.common import command as cmd
from ppcswitch.storage.validate import ValidationError


async def _pool_add(ctx, args) -> int:
    pool = await ctx.writer.run(lambda s: store.create_pool(s, args.name, args.campaign, args.publisher,
                                                            args.lease_seconds))
    print(f"pool {pool.name!r} added; its landing pages use the key {pool.public_key}")
    return 0


async def _pool_number(ctx, args) -> int:
    region = ctx.settings.routing.default_region
    number = await ctx.writer.run(lambda s: store.add_pool_number(s, args.pool, args.number, region=region))
    print(f"{number} is in pool {args.pool!r}")
    return 0


async def _pool_list(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        pools = await store.list_pools(s)
    if args.json:
        print(json.dumps(pools, indent=2))
        return 0
    for p in pools:
        warn = "  <- grow this pool" if p["shortages"] else ""
        print(f"{p['name']}: {len(p['numbers'])} numbers, lease {p['lease_seconds']} s, key {p['key']}, "
              f"shortages {p['shortages']}{warn}")
    return 0


async def _postback_set(ctx, args) -> int:
    kind, owner = ("publisher", args.publisher) if args.publisher else ("buyer", args.buyer)
    secret = await ctx.writer.run(lambda s: store.set_target(s, kind, owner, args.url, args.secret or ""))
    print(f"{kind} {owner!r}: postbacks to {args.url}, signed with the secret {secret}")
    return 0


async def _postback_log(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        log = await store.log_for_call(s, args.linkedid)
    if args.json:
        print(json.dumps(log, indent=2))
        return 0
    for row in log:
        print(f"#{row['id']} {row['event']} {row['kind']} {row['owner_id']} {row['status']} {row['url']}")
        for a in row["attempts"]:
            print(f"    {a['at']} {a['status_code'] or '-'} {a['ms']} ms {a['error']}")
    return 0


async def _postback_resend(ctx, args) -> int:
    await ctx.writer.run(lambda s: store.resend(s, args.id))
    print(f"postback {args.id} will be sent again by the running controller")
    return 0


async def _report(ctx, args) -> int:
    try:
        start = datetime.fromisoformat(args.date_from).replace(tzinfo=timezone.utc)
        end = datetime.fromisoformat(args.date_to or args.date_from).replace(tzinfo=timezone.utc) + timedelta(days=1)
    except ValueError:
        raise ValidationError("from", "dates are YYYY-MM-DD (UTC days)") from None
    async with ctx.sessionmaker() as s:
        publisher_id = None
        if args.publisher:
            from ppcswitch.storage import repo

            publisher_id = (await repo.get_publisher(s, args.publisher)).id
        rows = await store.sub_id_report(s, publisher_id, start, end)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("publisher_id,sub_id,calls,billable,conversion_rate,payout")
    for r in rows:
        print(f"{r['publisher_id']},{r['sub_id']},{r['calls']},{r['billable']},{r['conversion_rate']},"
              f"{format_cents(r['payout_cents'])}")
    return 0


def add_cli(sub) -> None:
    pool = sub.add_parser("pool", help="number pools for dynamic number insertion").add_subparsers(
        dest="pool_command", required=True, metavar="COMMAND")
    p = cmd(pool, "add", _pool_add, "a pool of a campaign and publisher; prints its public key")
    p.add_argument("name")
    p.add_argument("--campaign", required=True)
    p.add_argument("--publisher", required=True)
    p.add_argument("--lease-seconds", type=int, default=900, help="how long a visitor keeps a number (renewed)")
    p = cmd(pool, "add-number", _pool_number, "put a number in a pool (a new tracking number if needed)")
    p.add_argument("pool")
    p.add_argument("number")
    p = cmd(pool, "list", _pool_list, "pools, their numbers, keys and shortages (leases that reused a live one)")
    p.add_argument("--json", action="store_true")

    pb = sub.add_parser("postback", help="publisher postbacks and buyer webhooks").add_subparsers(
        dest="postback_command", required=True, metavar="COMMAND")
    p = cmd(pb, "set", _postback_set, "set a publisher's postback URL template or a buyer's webhook")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--publisher")
    who.add_argument("--buyer")
    p.add_argument("--url", required=True, help="placeholders: {call_id} {sub_id} {click_id} {payout} {revenue} ...")
    p.add_argument("--secret", help="HMAC secret (default: a new random one, printed)")
    p = cmd(pb, "log", _postback_log, "a call's postbacks and every delivery attempt")
    p.add_argument("linkedid")
    p.add_argument("--json", action="store_true")
    p = cmd(pb, "resend", _postback_resend, "send a postback again (by its id in the log)")
    p.add_argument("id", type=int)

    att = sub.add_parser("attribution", help="attribution reports").add_subparsers(
        dest="attribution_command", required=True, metavar="COMMAND")
    p = cmd(att, "report", _report, "calls, billable calls, conversion rate and payout per publisher and sub-ID")
    p.add_argument("--from", dest="date_from", required=True, help="first UTC day, e.g. 2026-11-01")
    p.add_argument("--to", dest="date_to", help="last UTC day, included (default: the first day)")
    p.add_argument("--publisher")
    p.add_argument("--json", action="store_true")
    add_provider_cli(sub)


def _provider(settings):
    from ppcswitch.attribution.providers import TelnyxProvider

    a = settings.attribution
    return TelnyxProvider(a.provider_api_key, a.provider_url, connection_id=a.provider_connection_id)


def _provider_cmd(settings, args) -> int:
    import asyncio
    import sys

    from ppcswitch.attribution.providers import ProviderError

    async def go() -> int:
        p = _provider(settings)
        if args.provider_command == "search":
            for n in await p.search(args.area_code, args.limit):
                monthly = format_cents(n.monthly_cents) if n.monthly_cents is not None else "?"
                print(f"{n.number}  {n.region}  {monthly}/month")
        elif args.provider_command == "order":
            order = await p.order(args.numbers)
            print(f"order {order.id}: {order.status}: {', '.join(order.numbers)}")
            print("add them with `ppcswitch number add` or `ppcswitch pool add-number` once active")
        else:
            await p.release(args.number)
            print(f"{args.number} released at the carrier (remove it here with `ppcswitch number remove`)")
        return 0

    try:
        return asyncio.run(go())
    except ProviderError as exc:
        print(f"ppcswitch: {exc}", file=sys.stderr)
        return 2


def add_provider_cli(sub) -> None:
    prov = sub.add_parser("provider", help="carrier number API (Telnyx): search, order, release").add_subparsers(
        dest="provider_command", required=True, metavar="COMMAND")
    p = prov.add_parser("search", help="numbers available in an area code")
    p.add_argument("area_code")
    p.add_argument("--limit", type=int, default=10)
    p = prov.add_parser("order", help="order numbers (E.164)")
    p.add_argument("numbers", nargs="+")
    p = prov.add_parser("release", help="give a number back to the carrier")
    p.add_argument("number")
    for name in ("search", "order", "release"):
        prov.choices[name].set_defaults(func=_provider_cmd)
