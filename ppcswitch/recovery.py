"""Nothing lost: calls the controller missed are recovered from Asterisk's own CDR file.

While the controller is down, or its AMI link is, calls still run (the dialplan
falls back) and end without an AMI Hangup reaching the tracker. Asterisk writes
a CDR row for each of them itself (cdr_csv, `usegmtime = yes`, `loguniqueid =
yes`; asterisk/cdr.conf). After every AMI login, and every `recovery.interval`
seconds, `Recovery.resync`:

1. asks Asterisk which calls are live (AMI CoreShowChannels) and when it
   started (CoreStatus);
2. forgets tracked calls that Asterisk has not had for two passes (they ended
   unseen; one pass could be mere event lag), or at once when Asterisk was
   restarted since the last pass (a new Asterisk has none of the old calls), and
   rebuilds the live buyer-leg counts (concurrency caps) from the live calls,
   adopting calls the controller did not route (started while it was down);
3. reads CDR rows that are new since the last pass, newer than the last stored
   call (less a margin) and than `recovery.max_age_hours`, and stores one
   record for each call that is neither stored, nor tracked, nor still live;
4. after a restart, finishes the old calls that have no CDR row either (a killed
   Asterisk writes none) from what the tracker saw: ended when the AMI link
   dropped, with the end reason "Asterisk restart" (tracker.CUT_BY_RESTART).

A call is keyed by linkedid (the caller channel's uniqueid, which CDR rows
carry), and storing is idempotent per linkedid, so a call seen both ways is
stored once. Parsing and record building are pure; I/O is in `Recovery`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from sqlalchemy import select

from ppcswitch.calls import Attempt, CallRecord, Outcome
from ppcswitch.numbers import read_caller, to_e164
from ppcswitch.routing.model import Network
from ppcswitch.storage import models as t
from ppcswitch.storage.models_recovery import RecoveryState

log = logging.getLogger(__name__)

# cdr_csv's columns with loguniqueid and loguserfield on (asterisk/cdr.conf).
COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
           "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield")
# Dialplan contexts a trunk call runs in (dialplans/ppcswitch.conf).
CALL_CONTEXTS = ("ppcswitch-inbound", "ppcswitch-dial", "ppcswitch-fallback")
DIAL_STATUS = {"ANSWERED": "ANSWER", "BUSY": "BUSY", "NO ANSWER": "NOANSWER", "FAILED": "CHANUNAVAIL",
               "CONGESTION": "CONGESTION"}
# AMI events lag the CDR's clock a little: calls ending this close before the last heartbeat are checked too.
HEARTBEAT_MARGIN = timedelta(seconds=10)
HEARTBEAT_SECONDS = 5.0


@dataclass(frozen=True)
class CdrRow:
    linkedid: str  # the CDR's uniqueid: its party A, the caller leg, whose uniqueid is the call's linkedid
    src: str
    dst: str
    context: str
    app: str
    app_data: str
    start: datetime
    answer: datetime | None
    end: datetime
    billsec: int
    disposition: str


def _when(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    # "YYYY-MM-DD HH:MM:SS" only (strptime's format, at a tenth of its cost: read on every call).
    if len(text) != 19 or text[10] != " " or not text[:4].isdigit():
        raise ValueError(f"not a CDR time: {text!r}")
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)  # usegmtime = yes


def parse_cdr_line(line: str) -> CdrRow | None:
    """One Master.csv line -> CdrRow; None for lines that are no trunk call or not readable."""
    try:
        fields = next(csv.reader(io.StringIO(line)))
    except (StopIteration, csv.Error):
        return None
    if len(fields) < len(COLUMNS):
        return None
    f = dict(zip(COLUMNS, fields))
    if f["dcontext"] not in CALL_CONTEXTS or not f["uniqueid"]:
        return None
    try:
        start, end = _when(f["start"]), _when(f["end"])
        if start is None or end is None:
            return None
        return CdrRow(f["uniqueid"], f["src"], f["dst"], f["dcontext"], f["lastapp"], f["lastdata"], start,
                      _when(f["answer"]), end, int(f["billsec"] or 0), f["disposition"])
    except ValueError:
        return None


def read_new_rows(path: str, offset: int) -> tuple[list[CdrRow], int]:
    """Rows appended to the CDR file since offset, and the new offset (a shorter file was rotated:
    read it from the start). Only whole lines are read; a line being written waits for the next pass."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < offset:
            offset = 0
        f.seek(offset)
        data = f.read(size - offset)
    end = data.rfind(b"\n") + 1
    rows = [r for line in data[:end].decode("utf-8", "replace").splitlines() if (r := parse_cdr_line(line))]
    return rows, offset + end


def group_calls(rows: Iterable[CdrRow]) -> dict[str, list[CdrRow]]:
    calls: dict[str, list[CdrRow]] = {}
    for row in rows:
        calls.setdefault(row.linkedid, []).append(row)
    for group in calls.values():
        group.sort(key=lambda r: (r.start, r.end))
    return calls


def _buyer_for(app_data: str, network: Network) -> int | None:
    target = app_data.split(",", 1)[0]
    return next((b.id for b in network.buyers.values() if b.dial_target == target), None)


def record_from_cdr(rows: list[CdrRow], network: Network, region: str = "US") -> CallRecord:
    """The call record of one call from its CDR rows (Asterisk's view: second resolution)."""
    first = rows[0]
    tracking = to_e164(first.dst, region)
    number = network.numbers.get(tracking) if tracking else None
    caller = read_caller(first.src, region)
    attempts: list[Attempt] = []
    for row in rows:
        if row.app == "Dial" and row.app_data.startswith("PJSIP/"):
            status = DIAL_STATUS.get(row.disposition, row.disposition)
            attempts.append(Attempt(len(attempts) + 1, _buyer_for(row.app_data, network), status, row.start,
                                    row.answer if status == "ANSWER" else None, row.end))
    answered = next((a for a in attempts if a.answered_at), None)
    connected_ms = 0
    if answered:
        outcome = Outcome.CONNECTED
        connected_ms = next(r.billsec for r in rows if r.app == "Dial" and r.answer == answered.answered_at) * 1000
    elif any(r.context == "ppcswitch-fallback" for r in rows):
        outcome = Outcome.FALLBACK
    elif tracking is None or number is None:
        outcome = Outcome.REJECTED
    elif attempts:
        outcome = Outcome.NOT_CONNECTED
    elif rows[-1].app == "Playback":
        outcome = Outcome.NO_BUYER
    else:
        outcome = Outcome.ABANDONED
    # Billable or not and the money are decided when the call is settled (billing.ledger), as for
    # every other call: the record leaves here with none.
    reject_reason, reasons = "", []
    if outcome == Outcome.REJECTED:
        reject_reason = "unknown_tracking_number" if tracking else "invalid_number"
        reasons = [f"rejected:{reject_reason}"]
    return CallRecord(
        linkedid=first.linkedid, tracking_number=tracking or first.dst[:64], caller=caller.value,
        caller_valid=caller.valid, started_at=first.start, ended_at=max(r.end for r in rows), outcome=outcome,
        publisher_id=number.publisher_id if number else None, campaign_id=number.campaign_id if number else None,
        buyer_id=answered.buyer_id if answered else None, answered_at=answered.answered_at if answered else None,
        connected_ms=connected_ms, hangup_cause=None, hangup_cause_text="", reject_reason=reject_reason,
        billing_reasons=reasons, attempts=attempts)


@dataclass(frozen=True)
class LiveChannel:
    linkedid: str
    uniqueid: str
    app: str
    app_data: str


def live_channels(events: Iterable[Any]) -> list[LiveChannel]:
    """CoreShowChannel events (a CoreShowChannels answer) -> the live channels."""
    out = []
    for e in events:
        if hasattr(e, "get") and e.get("Event") == "CoreShowChannel":
            out.append(LiveChannel(str(e.get("Linkedid", "")), str(e.get("Uniqueid", "")),
                                   str(e.get("Application", "")), str(e.get("ApplicationData", ""))))
    return out


class Recovery:
    """Resynchronises the controller with Asterisk (see the module doc)."""

    def __init__(self, settings, tracker, network: Callable[[], Network], store: Callable[[CallRecord], None],
                 sessionmaker, writer, region: str = "US", node: str = "") -> None:
        self.settings = settings
        self.tracker = tracker
        self.network = network
        self.store = store
        self.sessionmaker = sessionmaker
        self.writer = writer
        self.floor: datetime | None = None  # calls ending before this were seen by a controller
        self.region = region
        self.node = node  # cluster.node: the heartbeat row is this node's (each node has its own CDR file)
        self.offset = 0
        self.pending: dict[str, list[CdrRow]] = {}  # CDR rows of calls not stored yet
        self.started = datetime.now(timezone.utc)
        self.recovered = 0  # calls stored from the CDR file
        self.adopted = 0  # live calls the controller did not route, counted after a (re)connect
        self._lock = asyncio.Lock()
        self._warned = False
        self._beat: asyncio.Future | None = None
        self._gone: set[str] = set()  # tracked calls Asterisk did not have at the last pass
        self.asterisk_started: str | None = None  # CoreStatus start time of the Asterisk last seen
        self.cut = 0  # calls finished as cut by an Asterisk restart (no Hangup, no CDR row)
        # True once the pass after the latest AMI login is done (set by the app's login hook): only
        # then may the heartbeat say "every call that ended before now was seen".
        self.synced = False
        self.seen_until: datetime | None = None  # the last heartbeat's T while synced (see beat)

    async def resync(self, ami) -> int:
        """One pass; returns how many calls were recovered. Never raises (logged)."""
        async with self._lock:
            try:
                live = await self._live(ami)
                dead: set[str] = set()
                lost_at = None
                if live is not None:
                    lost_at = await self._restarted(ami)
                    dead = self._rebuild_live(live, lost_at)
                count = await self._recover(live, dead)
                cut = sum(self.tracker.cut(k, lost_at) for k in dead if lost_at is not None)
                if cut:
                    self.cut += cut
                    log.warning("%d call(s) cut by the Asterisk restart, recorded as ended at %s", cut, lost_at)
                return count
            except Exception:
                log.exception("resynchronising with Asterisk failed; next pass in %ss", self.settings.interval)
                return 0

    async def _live(self, ami) -> list[LiveChannel] | None:
        if ami is None or not ami.connected:
            return None
        answer = await ami.action({"Action": "CoreShowChannels"}, timeout=10)
        return live_channels(answer if isinstance(answer, list) else [answer])

    async def _restarted(self, ami) -> datetime | None:
        """When the link to the Asterisk before was lost, if the one answering now is another
        process (CoreStatus: its start time changed since the last pass); else None."""
        try:
            resp = await ami.action({"Action": "CoreStatus"}, timeout=10)
        except (ConnectionError, asyncio.TimeoutError):
            return None
        started = " ".join(str(resp.get(k) or "") for k in ("CoreStartupDate", "CoreStartupTime")).strip()
        if not started:
            return None
        before, self.asterisk_started = self.asterisk_started, started
        if before is None or before == started:
            return None
        log.warning("Asterisk was restarted (up since %s): the calls it had before are over", started)
        return ami.lost_at or datetime.now(timezone.utc)

    def _rebuild_live(self, live: list[LiveChannel], restarted_lost_at: datetime | None = None) -> set[str]:
        """Returns the tracked calls a restarted Asterisk took down with it (for _recover, then cut)."""
        tracker, slots = self.tracker, self.tracker.live
        alive = {c.linkedid for c in live}
        dead: set[str] = set()
        if restarted_lost_at is not None:
            # Calls that started before the old Asterisk went away; a new call whose Hangup is
            # still queued started after it came back, and is left to its events.
            dead = {k for k, c in tracker.calls.items() if k not in alive and c.started_at < restarted_lost_at}
        # A tracked call Asterisk no longer has may only be behind in the event stream (AMI lags
        # under load): it is given up on only when it was already gone at the previous pass, and
        # only when the CDR file can record it (else the tracker's stale-call sweep closes it).
        gone = {k for k in tracker.calls if k not in alive} - dead
        lost, self._gone = gone & self._gone, gone
        if self.settings.cdr_file:
            for linkedid in lost:
                tracker.calls.pop(linkedid, None)
                tracker.routes.pop(linkedid)
                self._gone.discard(linkedid)
                log.warning("call %s ended unseen (AMI was down); its record comes from the CDR file", linkedid)
        slots.retain(alive)
        # Calls routed before a restart (or dialled by the fallback): count the buyer leg they have.
        for c in live:
            if c.uniqueid == c.linkedid and c.app == "Dial" and not slots.has_call(c.linkedid):
                buyer_id = _buyer_for(c.app_data, self.network())
                if buyer_id is not None:
                    slots.take(c.linkedid, 0, buyer_id)
                    self.adopted += 1
        return dead

    async def _recover(self, live: list[LiveChannel] | None, dead: set[str] = frozenset()) -> int:
        path = self.settings.cdr_file
        if not path:
            return 0
        try:
            rows, self.offset = await asyncio.to_thread(read_new_rows, path, self.offset)
        except OSError as exc:
            if not self._warned:
                log.error("cannot read the CDR file %s (recovery.cdr_file): %s", path, exc)
                self._warned = True
            return 0
        self._warned = False
        for row in rows:
            self.pending.setdefault(row.linkedid, []).append(row)
        if not self.pending:
            return 0
        floor = max(await self.load_floor(), datetime.now(timezone.utc) - timedelta(hours=self.settings.max_age_hours))
        for linkedid in [k for k in self.pending if k in self.tracker._finished]:
            del self.pending[linkedid]  # the tracker saw it end: its record is on the way
        busy = (set(self.tracker.calls) - dead) | {c.linkedid for c in live or ()}
        for linkedid in [k for k, v in self.pending.items() if max(r.end for r in v) < floor]:
            del self.pending[linkedid]
        candidates = [k for k in self.pending if k not in busy]
        stored = await self._stored(candidates)
        count = 0
        network = self.network()
        for linkedid in candidates:
            rows_ = self.pending.pop(linkedid)
            if linkedid in stored:
                continue
            # A dead call's CDR row wins over what the tracker saw; a call routed before the AMI login
            # keeps its routing trace (its route goes where on_record finds it).
            self.tracker.drop(linkedid)
            self.store(record_from_cdr(sorted(rows_, key=lambda r: (r.start, r.end)), network, self.region))
            count += 1
        if count:
            self.recovered += count
            log.warning("recovered %d call(s) from the CDR file %s", count, path)
        return count

    async def load_floor(self) -> datetime:
        """The previous run's last heartbeat (less a margin, never before that run's own floor); on a
        new database, this run's start (an empty database does not adopt Asterisk's history).
        Read once, before this run beats; this run then stores it as its own floor."""
        if self.floor is None:
            async with self.sessionmaker() as s:
                row = await s.get(RecoveryState, self.node)
            if row is None:
                self.floor = self.started
            else:
                alive, since = (d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in (row.alive_at, row.started_at))
                self.floor = max(alive - HEARTBEAT_MARGIN, since)
        return self.floor

    async def beat(self, ami=None) -> None:
        """Record (through the writer) "every call that ended before T was handed to the writer": T is
        now while the AMI link is up and the calls missed before its login are recovered (`synced`),
        else the last such moment (or this run's floor). A controller without its AMI link (no secret,
        Asterisk's manager unreachable) sees no call end, so it never tells the next run it did."""
        if self._beat is not None and not self._beat.done():
            return  # the database is slow: one heartbeat waiting is enough
        if ami is not None and ami.connected and self.synced:
            self.seen_until = datetime.now(timezone.utc)
        now = self.seen_until or self.floor or self.started

        async def job(session):
            row = await session.get(RecoveryState, self.node)
            if row is None:
                session.add(RecoveryState(node=self.node, alive_at=now, started_at=self.floor))
            else:
                row.alive_at, row.started_at = now, self.floor

        self._beat = await self.writer.submit_wait(job)
        self._beat.add_done_callback(lambda f: f.cancelled() or f.exception())  # failures: next beat

    async def _stored(self, linkedids: list[str]) -> set[str]:
        found: set[str] = set()
        async with self.sessionmaker() as s:
            for i in range(0, len(linkedids), 500):
                chunk = linkedids[i:i + 500]
                found.update(await s.scalars(select(t.Call.linkedid).where(t.Call.linkedid.in_(chunk))))
        return found

    async def run(self, ami) -> None:
        """Heartbeats, and periodic passes (the AMI login hook runs one at once).

        The heartbeat moves the recovery window (load_floor) only past calls this controller saw: see
        beat()."""
        await self.load_floor()
        next_pass = asyncio.get_running_loop().time() + self.settings.interval
        while True:
            try:
                await self.beat(ami)
            except Exception as exc:  # the writer is stopping or the database is down: next beat
                log.debug("recovery heartbeat not written: %s", exc)
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if asyncio.get_running_loop().time() >= next_pass:
                next_pass += self.settings.interval
                await self.resync(ami)

