"""`ppcswitch report|ledger|rule|rerate` commands.

Bad input prints one clear line and exits 2 (ppcswitch.cli.common.run);
writes go through a Writer, reads through a plain session.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ppcswitch.billing import ledger, reports
from ppcswitch.billing.ledger import BillingError
from ppcswitch.billing.rerate import rerate
from ppcswitch.money import MoneyError, format_cents, parse_cents
from ppcswitch.storage import repo
from ppcswitch.cli import common
from ppcswitch.cli.common import run


def _period(ctx, args) -> reports.Period:
    return reports.period(args.date_from, args.date_to or args.date_from, args.tz or ctx.settings.billing.report_timezone)


def _signed_cents(text: str) -> int:
    text = (text or "").strip()
    sign = -1 if text.startswith("-") else 1
    try:
        return sign * parse_cents(text.lstrip("+-"))
    except MoneyError as exc:
        raise BillingError("amount", str(exc)) from None


def _out(text: str, path: str | None) -> None:
    if path:
        Path(path).write_text(text)
        print(f"written to {path}", file=sys.stderr)
    else:
        sys.stdout.write(text)


async def _report(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        rep = await reports.period_report(s, _period(ctx, args), ctx.settings.billing.currency)
    _out(reports.report_csv(rep) if args.csv else reports.report_table(rep), args.output)
    return 0


def _statement(party: str):
    async def action(ctx, args) -> int:
        async with ctx.sessionmaker() as s:
            row = await (repo.get_publisher if party == "publisher" else repo.get_buyer)(s, args.name)
            st = await reports.statement(s, party, row.id, _period(ctx, args), ctx.settings.billing.currency)
        _out(reports.statement_csv(st) if args.csv else reports.statement_html(st), args.output)
        return 0
    return action


async def _ledger_list(ctx, args) -> int:
    p = _period(ctx, args)
    async with ctx.sessionmaker() as s:
        rows = await ledger.entries(s, p.start, p.end)
    for e in rows:
        print(f"{e.booked_at:%Y-%m-%d %H:%M:%S}Z {e.kind:<10} {e.account:<10} buyer={e.buyer_id:<4} "
              f"publisher={e.publisher_id:<4} {format_cents(e.amount_cents):>10}  {e.key}  {e.reason} {e.user}".rstrip())
    if not rows:
        print("no ledger entries in this period")
    return 0


async def _dispute(ctx, args) -> int:
    booked = await ctx.writer.run(lambda s: ledger.dispute(
        s, args.linkedid, user=args.user, reason=args.reason,
        window_days=ctx.settings.billing.dispute_window_days))
    print("dispute booked: " + ", ".join(f"{e.account} {format_cents(e.amount_cents)}" for e in booked))
    return 0


async def _adjust(ctx, args) -> int:
    if bool(args.buyer) == bool(args.publisher):
        raise BillingError("party", "give exactly one of --buyer or --publisher")
    account, party = ("receivable", args.buyer) if args.buyer else ("payable", args.publisher)
    amount = _signed_cents(args.amount)
    e = await ctx.writer.run(lambda s: ledger.adjust(s, account=account, party_id=party, amount_cents=amount,
                                                     reason=args.reason, user=args.user))
    print(f"adjustment booked: {account} {format_cents(e.amount_cents)} ({e.key})")
    return 0


async def _close(ctx, args) -> int:
    p = _period(ctx, args)
    await ctx.writer.run(lambda s: ledger.close_period(s, p.start, p.end, user=args.user))
    print(f"period closed: {p.label} ({p.start:%Y-%m-%d %H:%M}Z to {p.end:%Y-%m-%d %H:%M}Z)")
    return 0


_RULE_OPTIONS = ("min_duration", "unique_days", "unique_window", "unique_counts_unbillable", "require_geo", "quality_threshold",
                 "mode", "tiers", "percent", "only_when_buyer_pays", "min_ai_score", "deny_dispositions")


async def _rule_set(ctx, args) -> int:
    side = args.side
    party_name = args.buyer if side == "revenue" else args.publisher
    if (args.buyer and side != "revenue") or (args.publisher and side != "payout"):
        raise BillingError("rule", "--buyer goes with the revenue side, --publisher with the payout side")
    values = {k: getattr(args, k) for k in _RULE_OPTIONS if getattr(args, k) is not None}
    if args.amount is not None:
        values["flat_cents"] = _signed_cents(args.amount)
    if "percent" in values:
        pct = values.pop("percent")
        try:
            values["percent_bp"] = int(parse_cents(pct))  # "25.5" % -> 2550 basis points, exactly
        except MoneyError as exc:
            raise BillingError("percent", str(exc)) from None
    for flag in ("unique_counts_unbillable", "require_geo", "only_when_buyer_pays"):
        if flag in values:
            values[flag] = values[flag] == "yes"
    if not values:
        raise BillingError("rule", "nothing to set; see ppcswitch rule set --help")

    async def job(s):
        campaign_id = (await repo.get_campaign(s, args.campaign)).id if args.campaign else 0
        party_id = 0
        if party_name:
            party_id = (await (repo.get_buyer if side == "revenue" else repo.get_publisher)(s, party_name)).id
        return await ledger.set_rule(s, side, campaign_id=campaign_id, party_id=party_id, **values)

    await ctx.writer.run(job)
    print(f"{side} rule set for {args.campaign or 'every campaign'} / {party_name or 'every party'}: "
          + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0


async def _rule_show(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        campaign = (await repo.get_campaign(s, args.campaign)).id if args.campaign else 0
        buyer = (await repo.get_buyer(s, args.buyer)).id if args.buyer else 0
        publisher = (await repo.get_publisher(s, args.publisher)).id if args.publisher else 0
        revenue, payout = await ledger.rules_for(s, campaign, buyer, publisher)
    for side, rule in (("revenue", revenue), ("payout", payout)):
        print(f"{side}: " + ", ".join(f"{k}={v}" for k, v in rule.__dict__.items()))
    return 0


async def _rerate(ctx, args) -> int:
    p = _period(ctx, args)
    if args.apply:
        res = await ctx.writer.run(lambda s: rerate(s, p, apply=True, user=args.user or ""))
    else:
        async with ctx.sessionmaker() as s:
            res = await rerate(s, p)
    for c in res.changes:
        print(f"{c.started_at:%Y-%m-%d %H:%M:%S}Z {c.linkedid}: revenue {format_cents(c.old_revenue_cents)} -> "
              f"{format_cents(c.new_revenue_cents)}, payout {format_cents(c.old_payout_cents)} -> "
              f"{format_cents(c.new_payout_cents)}  {','.join(c.old_reasons) or '-'} -> {','.join(c.new_reasons) or '-'}")
    print(f"{res.calls_checked} calls checked, {len(res.changes)} changed: revenue "
          f"{format_cents(res.revenue_delta_cents)}, payout {format_cents(res.payout_delta_cents)}, margin "
          f"{format_cents(res.margin_delta_cents)} ({'applied as ledger corrections' if res.applied else 'dry run; add --apply --user NAME to book it'})")
    return 0


def add_cli(sub) -> None:
    def command(group_sub, name, action, help, period=True):
        p = common.command(group_sub, name, action, help)
        if period:
            p.add_argument("--from", dest="date_from", required=True, help="first day, e.g. 2026-11-01")
            p.add_argument("--to", dest="date_to", help="last day, included (default: the first day)")
            p.add_argument("--tz", help="time zone of the days (default: billing.report_timezone)")
        return p

    def group(name, help):
        return common.group(sub, name, help)

    report = group("report", "money reports for a period (CSV or table), statements and invoices")
    p = command(report, "period", _report, "owed per publisher, receivable per buyer, margin, billable rate")
    p.add_argument("--csv", action="store_true", help="CSV instead of a table")
    p.add_argument("-o", "--output", help="write to this file")
    for party, name in (("publisher", "statement"), ("buyer", "invoice")):
        p = command(report, name, _statement(party), f"a {party}'s {name} (printable HTML, or CSV)")
        p.add_argument("name", help=f"{party} name")
        p.add_argument("--csv", action="store_true", help="CSV instead of HTML")
        p.add_argument("-o", "--output", help="write to this file")

    led = group("ledger", "the immutable ledger: entries, disputes, adjustments, closed periods")
    command(led, "list", _ledger_list, "entries booked in a period")
    p = command(led, "dispute", _dispute, "a buyer disputes a call: reverse its revenue (and revshare payout)",
                period=False)
    p.add_argument("linkedid")
    p.add_argument("--user", required=True)
    p.add_argument("--reason", required=True)
    p = command(led, "adjust", _adjust, "manual correction, e.g. --publisher Acme --amount -2.50", period=False)
    p.add_argument("--buyer")
    p.add_argument("--publisher")
    p.add_argument("--amount", required=True, help="signed amount, e.g. 12.50 or -2.50")
    p.add_argument("--user", required=True)
    p.add_argument("--reason", required=True)
    p = command(led, "close", _close, "close a period: no more entries may be booked in it")
    p.add_argument("--user", required=True)

    rule = group("rule", "conversion rules (revenue: buyer side, payout: publisher side)")
    p = command(rule, "set", _rule_set, "set a rule for a campaign, buyer/publisher, or both", period=False)
    p.add_argument("side", choices=["revenue", "payout"])
    p.add_argument("--campaign")
    p.add_argument("--buyer", help="revenue side: this buyer only")
    p.add_argument("--publisher", help="payout side: this publisher only")
    p.add_argument("--min-duration", dest="min_duration", help="connected seconds")
    p.add_argument("--unique-days", dest="unique_days", help="same caller within N days is not billable again")
    p.add_argument("--unique-window", dest="unique_window",
                   help="the same in minutes, hours or days: 30m, 12h, 7d (wins over --unique-days)")
    p.add_argument("--unique-counts-unbillable", dest="unique_counts_unbillable", choices=["yes", "no"])
    p.add_argument("--require-geo", dest="require_geo", choices=["yes", "no"])
    p.add_argument("--quality-threshold", dest="quality_threshold", help="score at/above which a call is flagged")
    p.add_argument("--mode", choices=["flat", "tiers", "percent"])
    p.add_argument("--amount", help="flat amount per call, e.g. 40.00")
    p.add_argument("--tiers", help="by duration, e.g. 0:10.00,90:25.00")
    p.add_argument("--percent", help="payout: percent of revenue, e.g. 25 or 12.5")
    p.add_argument("--only-when-buyer-pays", dest="only_when_buyer_pays", choices=["yes", "no"])
    p.add_argument("--min-ai-score", dest="min_ai_score",
                   help="a transcribed call whose AI score (0-100) is below this is not billable")
    p.add_argument("--deny-dispositions", dest="deny_dispositions",
                   help="a transcribed call with any of these dispositions is not billable, e.g. wrong_number,stop_calling"
                        " ('' clears)")
    p = command(rule, "show", _rule_show, "the rules that apply to a campaign/buyer/publisher", period=False)
    p.add_argument("--campaign")
    p.add_argument("--buyer")
    p.add_argument("--publisher")

    p = sub.add_parser("rerate", help="re-run qualification for a period with today's rules (dry run by default)")
    p.set_defaults(func=lambda settings, args: run(settings, _rerate, args))
    p.add_argument("--from", dest="date_from", required=True)
    p.add_argument("--to", dest="date_to")
    p.add_argument("--tz")
    p.add_argument("--apply", action="store_true", help="book the differences as ledger corrections")
    p.add_argument("--user", help="who applies it (required with --apply)")
