"""`ppcswitch code ...`: IVR publisher codes keyed in by callers at shared numbers."""

from __future__ import annotations

import json

from sqlalchemy import select

from ppcswitch.attribution.codes import list_codes, remove_code, set_code, set_number_asks
from ppcswitch.cli.common import command, group
from ppcswitch.storage import models as t


async def _add(ctx, args) -> int:
    row = await ctx.writer.run(lambda s: set_code(s, args.code, args.publisher, args.sub_id or ""))
    sub = f", sub-ID {row.sub_id!r}" if row.sub_id else ""
    print(f"publisher code {row.code}: publisher {args.publisher.strip()!r}{sub}")
    return 0


async def _remove(ctx, args) -> int:
    await ctx.writer.run(lambda s: remove_code(s, args.code))
    print(f"publisher code {args.code} removed")
    return 0


async def _list(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        rows = await list_codes(s)
        asking = list(await s.scalars(select(t.TrackingNumber.number).where(t.TrackingNumber.ask_publisher_code)
                                      .order_by(t.TrackingNumber.number)))
    if args.json:
        print(json.dumps({"codes": rows, "numbers_asking": asking}, indent=2))
        return 0
    for r in rows:
        print(f"{r['code']:>8}  {r['publisher']}" + (f"  sub-ID {r['sub_id']}" if r["sub_id"] else ""))
    print(f"numbers asking for a code: {', '.join(asking) if asking else 'none'}")
    return 0


async def _ask(ctx, args) -> int:
    region = ctx.settings.routing.default_region
    row = await ctx.writer.run(lambda s: set_number_asks(s, args.number, args.state == "on", region=region))
    print(f"{row.number} {'asks' if row.ask_publisher_code else 'no longer asks'} callers for a publisher code")
    return 0


def add_cli(sub) -> None:
    codes = group(sub, "code", "IVR publisher codes keyed in by callers at shared numbers")
    p = command(codes, "add", _add, "add a publisher code (or a sub-ID code with --sub-id), or change where one points")
    p.add_argument("code", help="1 to 8 digits")
    p.add_argument("--publisher", required=True)
    p.add_argument("--sub-id", help="the sub-ID calls with this code are attributed to")
    p = command(codes, "remove", _remove, "remove a code")
    p.add_argument("code")
    p = command(codes, "list", _list, "codes, their publishers and sub-IDs, and the numbers that ask for one")
    p.add_argument("--json", action="store_true")
    p = command(codes, "ask", _ask, "make a tracking number ask its callers for a publisher code (on) or not (off)")
    p.add_argument("number")
    p.add_argument("state", choices=("on", "off"))
