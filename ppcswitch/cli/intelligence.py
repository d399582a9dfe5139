"""`ppcswitch intelligence ...`: phrase rules, transcripts, search, the queue.

    ppcswitch intelligence phrase add sale "sign you up" --side buyer [--campaign HVAC]
    ppcswitch intelligence phrase off appointment "schedule" --campaign HVAC   # a default switched off there
    ppcswitch intelligence phrase remove sale "sign you up" --side buyer [--campaign HVAC]
    ppcswitch intelligence phrase list [--campaign HVAC]
    ppcswitch intelligence transcript LINKEDID [--json]
    ppcswitch intelligence search "water heater" [--disposition sale] [--max-score 40] [--json]
    ppcswitch intelligence queue                  # waiting, oldest, failed
    ppcswitch intelligence retry LINKEDID         # a failed or skipped call queued again
    ppcswitch intelligence transcribe FILE.wav    # run the configured engine on a file (no database)
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone

from sqlalchemy import select

from ppcswitch.intelligence import rules as pr
from ppcswitch.intelligence import store
from ppcswitch.storage import repo
from ppcswitch.cli.common import command
from ppcswitch.storage.models_intelligence import FAILED, PENDING, SKIPPED, Transcript
from ppcswitch.storage.validate import ValidationError


def _phrase(enabled: bool):
    async def action(ctx, args) -> int:
        await ctx.writer.run(lambda s: store.set_phrase(s, args.disposition, args.phrase, args.side, args.campaign,
                                                        enabled=enabled))
        where = f"campaign {args.campaign!r}" if args.campaign else "every campaign"
        print(f"{'added' if enabled else 'switched off'}: {args.disposition} when {args.side} says "
              f"\"{pr.normalise(args.phrase)}\" ({where})")
        return 0
    return action


async def _phrase_remove(ctx, args) -> int:
    n = await ctx.writer.run(lambda s: store.remove_phrase(s, args.disposition, args.phrase, args.side, args.campaign))
    if not n:
        raise ValidationError("phrase", "no such phrase rule (shipped defaults are switched off with `phrase off`)")
    print("removed")
    return 0


async def _phrase_list(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        cid = (await repo.get_campaign(s, args.campaign)).id if args.campaign else None
        rows = await store.phrase_rows(s)
    defaults = {(r.disposition, r.phrase, r.side) for r in pr.defaults()}
    for r in pr.effective(rows, cid):
        origin = "default" if (r.disposition, r.phrase, r.side) in defaults and r.campaign_id is None and not any(
            (x.disposition, x.phrase, x.side) == (r.disposition, r.phrase, r.side) for x in rows) else \
            ("campaign" if r.campaign_id is not None else "network")
        print(f"{r.disposition:18} {r.side:6} {r.phrase!r:40} {origin}")
    return 0


def _fmt_time(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:05.2f}"


async def _transcript(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        t = await store.get_transcript(s, args.linkedid)
    if t is None:
        raise ValidationError("linkedid", f"no transcript for call {args.linkedid!r} (not recorded, or past retention)")
    if args.json:
        print(json.dumps(t, indent=2, default=str))
        return 0
    print(f"call {t['linkedid']}: {t['status']}" + (f" ({t['error']})" if t["error"] else ""))
    if t["status"] == "done":
        print(f"AI score {t['ai_score']}/100; dispositions: {', '.join(t['dispositions']) or 'none'}; "
              f"{t['redactions']} redaction(s); engine {t['engine']}")
        for r in t["score_reasons"]:
            print(f"  {r['points']:+4d} {r['reason']}: {r['detail']}")
        for seg in t["segments"]:
            print(f"[{_fmt_time(seg['start'])}] {seg['side']:6} {seg['text']}")
    return 0


async def _search(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        rows, total = await store.search(s, args.words, disposition=args.disposition or "", max_score=args.max_score,
                                         limit=args.limit)
    if args.json:
        print(json.dumps({"total": total, "calls": rows}, indent=2, default=str))
        return 0
    for r in rows:
        m = r["match"]
        print(f"{r['started_at']:%Y-%m-%d %H:%M:%S}Z {r['linkedid']} score {r['ai_score']} "
              f"[{','.join(r['dispositions'])}]  " + (f"{m['side']}: {m['text']}" if m else ""))
    print(f"{total} call(s)")
    return 0


async def _queue(ctx, args) -> int:
    async with ctx.sessionmaker() as s:
        depth, oldest = await store.queue_stats(s)
        bad = await store.queue_rows(s, (FAILED, SKIPPED), limit=20)
    lag = (datetime.now(timezone.utc) - oldest).total_seconds() if oldest else 0
    print(f"{depth} call(s) waiting; oldest queued {lag:.0f} s ago")
    for r in bad:
        print(f"{r.status:8} {r.linkedid} attempts {r.attempts}: {r.error}")
    return 0


async def _retry(ctx, args) -> int:
    async def job(s):
        row = await s.scalar(select(Transcript).where(Transcript.linkedid == args.linkedid))
        if row is None:
            raise ValidationError("linkedid", f"call {args.linkedid!r} has no transcript row")
        row.status, row.attempts, row.error, row.next_try_at = PENDING, 0, "", datetime.now(timezone.utc)
        await s.flush()

    await ctx.writer.run(job)
    print(f"{args.linkedid} queued again")
    return 0


def _transcribe(settings, args) -> int:
    from ppcswitch.intelligence.engine import EngineError, load_engine
    from ppcswitch.intelligence.redact import redact

    try:
        engine = load_engine(args.engine or settings.intelligence.engine)
        started = time.process_time()
        segments = engine.transcribe(args.file)
    except (EngineError, OSError) as exc:
        print(f"ppcswitch: {exc}", file=sys.stderr)
        return 2
    cpu = time.process_time() - started
    for seg in segments:
        print(f"[{_fmt_time(seg.start)}-{_fmt_time(seg.end)}] {redact(seg.text, settings.intelligence.redact_min_digits)[0]}")
    print(f"({engine.name}, {cpu:.2f} CPU seconds)", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    group = sub.add_parser("intelligence", help="call transcripts, dispositions, AI score (on this machine)") \
        .add_subparsers(dest="intelligence_command", required=True, metavar="COMMAND")

    phrase = group.add_parser("phrase", help="phrase rules that set dispositions").add_subparsers(
        dest="phrase_command", required=True, metavar="COMMAND")
    for name, action, help in (("add", _phrase(True), "a phrase that sets a disposition"),
                               ("off", _phrase(False), "switch a phrase (e.g. a shipped default) off"),
                               ("remove", _phrase_remove, "delete a phrase rule")):
        p = command(phrase, name, action, help)
        p.add_argument("disposition", help="e.g. sale, wrong_number, or your own (letters, digits, _)")
        p.add_argument("phrase")
        p.add_argument("--side", choices=pr.SIDES, default=pr.ANY, help="who says it (default: any)")
        p.add_argument("--campaign", default=None, help="this campaign only (default: every campaign)")
    p = command(phrase, "list", _phrase_list, "the phrase rules that apply (defaults included)")
    p.add_argument("--campaign", default=None)
    p = command(group, "transcript", _transcript, "a call's transcript, dispositions and AI score")
    p.add_argument("linkedid")
    p.add_argument("--json", action="store_true")
    p = command(group, "search", _search, "transcribed calls that said these words")
    p.add_argument("words")
    p.add_argument("--disposition")
    p.add_argument("--max-score", dest="max_score", type=int)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    command(group, "queue", _queue, "the transcription queue: waiting, oldest, failed")
    p = command(group, "retry", _retry, "queue a failed or skipped call again")
    p.add_argument("linkedid")
    p = group.add_parser("transcribe", help="transcribe a WAV file with the configured engine (no database)")
    p.set_defaults(func=_transcribe)
    p.add_argument("file")
    p.add_argument("--engine", help="instead of intelligence.engine")
