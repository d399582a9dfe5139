"""The single database writer.

Every write (call records, configuration changes) is a job queued here and run
one at a time, in submission order. A job is an async function of an
AsyncSession, or a SyncJob: a plain function of a (sync) Session. With SQLite,
SyncJobs run on the writer's own thread and connection (pysqlite), a whole group
in one hop: the writes of every finished call are SyncJobs, because through
aiosqlite each statement was a round trip through the event loop, which cost
the loop more than the routing of the call. With PostgreSQL (or an in-memory
database) a SyncJob runs on the async session through run_sync. Jobs already waiting when the writer is
free share one transaction (group commit, up to batch_max); if any of them
fails, the transaction is rolled back and each job runs again alone, so a
failing job fails only itself. Finished calls go further (SyncJob `many`): a group
settles its calls together in multi-row statements, and the writer waits up to
bulk_linger for a group to fill, since a group costs nearly the same whatever
its size. One writer means SQLite never sees two of our
writers competing, and jobs commit in submission order. Transient
failures (SQLite busy, PostgreSQL connection loss or restart) are retried with
back-off until they succeed: a call record is never dropped because the
database was briefly unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Generic, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from ppcswitch.cpu import CPU, SETTLE

log = logging.getLogger(__name__)
T = TypeVar("T")
Job = Callable[[AsyncSession], Awaitable[T]]

# PostgreSQL SQLSTATEs worth retrying: connection exceptions (08xxx), serialization
# failure, deadlock, shutdown / starting up, out of resources (53xxx).
_PG_TRANSIENT = ("08", "40001", "40P01", "57P01", "57P02", "57P03", "53")


class SyncJob(Generic[T]):
    """A writer job written as a plain function of a sync Session (see the module's docstring).

    Awaiting it on an AsyncSession runs it through run_sync, so it is also an ordinary job.

    `many=(run_many, item)`: the job can also run in bulk. Jobs of one group whose run_many is the
    same function run as one call run_many(session, [item, ...]), which returns their results in
    order (multi-row statements instead of one round of statements per job; see run_sync_jobs);
    a job running alone (a group that failed is run again job by job) runs fn. The writer waits up
    to its `bulk_linger` for more of them before it starts such a group."""

    __slots__ = ("fn", "many")

    def __init__(self, fn: Callable[[Session], T],
                 many: tuple[Callable[[Session, list[Any]], list[Any]], Any] | None = None) -> None:
        self.fn = fn
        self.many = many

    async def __call__(self, session: AsyncSession) -> T:
        return await session.run_sync(self.fn)


def run_sync_jobs(session: Session, jobs: list[SyncJob[Any]]) -> list[Any]:
    """Run SyncJobs on one session, results in their order. A run of neighbouring bulk jobs (with
    `many`) runs kind by kind (one run_many call per kind, kinds in the order they first came):
    bulk jobs of different kinds (a call's settlement, its fraud signals) must not depend on each
    other. A job without `many` is run alone, after every job before it and before every job after."""
    out: list[Any] = [None] * len(jobs)
    i = 0
    while i < len(jobs):
        if jobs[i].many is None:
            out[i] = jobs[i].fn(session)
            i += 1
            continue
        j = i
        kinds: dict[Any, list[int]] = {}
        while j < len(jobs) and jobs[j].many is not None:
            kinds.setdefault(jobs[j].many[0], []).append(j)  # type: ignore[index]
            j += 1
        for run_many, where in kinds.items():
            if len(where) == 1:
                out[where[0]] = jobs[where[0]].fn(session)
                continue
            results = run_many(session, [jobs[k].many[1] for k in where])  # type: ignore[index]
            if len(results) != len(where):
                raise RuntimeError(f"{run_many!r} returned {len(results)} results for {len(where)} jobs")
            for k, result in zip(where, results):
                out[k] = result
        i = j
    return out


class WriterStopped(RuntimeError):
    """The writer is stopping or stopped and accepts no more jobs."""


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves, so the job is worth running again."""
    # Raw socket errors and timeouts, e.g. PostgreSQL refusing connections while it restarts.
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(code, str) and code.startswith(_PG_TRANSIENT):
        return True
    # SQLite: "database is locked" / "database table is locked" (SQLITE_BUSY / SQLITE_LOCKED).
    # Other OperationalErrors, like "no such table", are bugs and must not be retried forever.
    return isinstance(exc, OperationalError) and "locked" in str(orig).lower()


class Writer:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], max_queue: int = 10000,
                 *, retry_min: float = 0.05, retry_max: float = 5.0, give_up_after: float | None = None,
                 batch_max: int = 32, sync_sessionmaker: sessionmaker[Session] | None = None,
                 bulk_max: int = 500, bulk_linger: float = 0.2):
        """give_up_after: seconds of transient failures after which a job fails (None: retry forever).
        sync_sessionmaker: sessions on the same database for SyncJobs, run on the writer's thread.
        bulk_max, bulk_linger: a group that starts with a bulk job (SyncJob with `many`: finished
        calls) takes up to bulk_max jobs, and waits up to bulk_linger seconds for them to queue."""
        self._sessionmaker = sessionmaker
        self._sync_sessionmaker = sync_sessionmaker
        self._thread: ThreadPoolExecutor | None = None
        self._held: tuple[Job[Any], asyncio.Future[Any]] | None = None  # taken from the queue for the next group
        self._queue: asyncio.Queue[tuple[Job[Any], asyncio.Future[Any]]] = asyncio.Queue(max_queue)
        self._retry_min, self._retry_max, self._give_up_after = retry_min, retry_max, give_up_after
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = 0  # jobs running now (one transaction)
        self._batch_max = max(1, batch_max)
        self._bulk_max = max(self._batch_max, bulk_max)
        self._bulk_linger = bulk_linger
        self.last_write_seconds = 0.0  # duration of the last finished job, retries included
        self.retries = 0  # transient failures retried so far

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        return self._queue.qsize() + self._busy + (self._held is not None)

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            if self._sync_sessionmaker is not None and self._thread is None:
                # One thread: the SQLite connection stays on it, and jobs stay in order.
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="ppcswitch-db-writer")
            self._task = asyncio.create_task(self._run(), name="ppcswitch-db-writer")

    def submit(self, job: Job[T]) -> asyncio.Future[T]:
        """Queue `job`; raises asyncio.QueueFull when the queue is full (see submit_wait)."""
        if self._stopping or self._task is None:
            raise WriterStopped("the database writer is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, fut))
        return fut

    async def submit_wait(self, job: Job[T]) -> asyncio.Future[T]:
        """Queue `job`, waiting for room when the queue is full; returns its future."""
        if self._stopping or self._task is None:
            raise WriterStopped("the database writer is not running")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, fut))
        return fut

    async def run(self, job: Job[T]) -> T:
        """Queue `job` and wait for its result."""
        return await (await self.submit_wait(job))

    async def stop(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish every queued one, then stop.

        With a timeout, jobs still queued after it (the database stayed down)
        fail with WriterStopped; they are logged, being the only data lost.
        """
        if self._task is None:
            return
        self._stopping = True
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            log.error("database writer stopped with %d unwritten jobs", self.depth)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._held is not None:
            _job, fut = self._held
            self._held = None
            if not fut.done():
                fut.set_exception(WriterStopped("the database writer stopped before this job ran"))
            self._queue.task_done()
        while not self._queue.empty():
            _job, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(WriterStopped("the database writer stopped before this job ran"))
            self._queue.task_done()

    def _threaded(self, job: Job[Any]) -> bool:
        return self._thread is not None and isinstance(job, SyncJob)

    async def _run(self) -> None:
        while True:
            if self._held is not None:
                batch, self._held = [self._held], None
            else:
                batch = [await self._queue.get()]
            # Group commit: jobs already waiting share one transaction (a backlog clears several
            # times faster: a session, BEGIN and COMMIT per job were a good part of each write).
            # A group is all SyncJobs for the writer's thread or all other jobs, so order is kept.
            threaded = self._threaded(batch[0][0])
            limit = self._batch_max
            if getattr(batch[0][0], "many", None) is not None:
                # Finished calls settle in bulk: a few multi-row statements per group, whatever its
                # size, so a short wait for more of them saves the writer most of its work.
                limit = self._bulk_max
                if self._bulk_linger > 0 and self._queue.qsize() < limit - 1 and not self._stopping:
                    self._busy = 1  # counted in depth while it waits
                    try:
                        await asyncio.sleep(self._bulk_linger)
                    except asyncio.CancelledError:
                        self._busy = 0
                        self._held = batch[0]  # stop() fails it with the jobs still queued
                        raise
            while len(batch) < limit and not self._queue.empty():
                item = self._queue.get_nowait()
                if self._threaded(item[0]) != threaded:
                    self._held = item
                    break
                batch.append(item)
            self._busy = len(batch)
            started = time.monotonic()
            try:
                if len(batch) > 1:
                    try:
                        results = await self._execute_many([job for job, _ in batch], threaded)
                    except asyncio.CancelledError:
                        raise
                    except BaseException:  # noqa: BLE001  one job failed: each alone, so only it fails
                        for job, fut in batch:
                            await self._run_one(job, fut)
                    else:
                        for (_, fut), result in zip(batch, results):
                            if not fut.done():
                                fut.set_result(result)
                else:
                    await self._run_one(*batch[0])
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(WriterStopped("the database writer stopped while running this job"))
                raise
            finally:
                self.last_write_seconds = time.monotonic() - started
                self._busy = 0
                for _ in batch:
                    self._queue.task_done()

    async def _run_one(self, job: Job[Any], fut: asyncio.Future[Any]) -> None:
        try:
            if self._threaded(job):
                result = (await self._execute_many([job], True))[0]
            else:
                result = await self._execute(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failing job fails only itself
            if not fut.done():
                fut.set_exception(exc)
            else:
                log.exception("database job failed", exc_info=exc)
        else:
            if not fut.done():
                fut.set_result(result)

    async def _execute_many(self, jobs: list[Job[Any]], threaded: bool = False) -> list[Any]:
        if threaded:
            loop = asyncio.get_running_loop()
            return await self._retrying(lambda: loop.run_in_executor(self._thread, self._in_thread, jobs))

        async def all_of(session: AsyncSession) -> list[Any]:
            out: list[Any] = []
            i = 0
            while i < len(jobs):  # neighbouring SyncJobs in one run_sync (and in bulk where they can)
                j = i
                while j < len(jobs) and isinstance(jobs[j], SyncJob):
                    j += 1
                if j > i:
                    out.extend(await session.run_sync(run_sync_jobs, jobs[i:j]))
                    i = j
                else:
                    out.append(await jobs[i](session))
                    i += 1
            return out

        return await self._execute(all_of)

    def _in_thread(self, jobs: list[SyncJob[Any]]) -> list[Any]:
        """On the writer's thread: the jobs in one transaction (rolled back if one fails)."""
        assert self._sync_sessionmaker is not None
        stage = CPU.enter(SETTLE)
        try:
            with self._sync_sessionmaker() as session, session.begin():
                return run_sync_jobs(session, jobs)
        finally:
            CPU.leave(stage)

    async def _execute(self, job: Job[T]) -> T:
        async def attempt() -> T:
            async with self._sessionmaker() as session:
                async with session.begin():
                    return await job(session)

        return await self._retrying(lambda: CPU.measured(SETTLE, attempt()))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        delay, first_failure = self._retry_min, None
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                first_failure = first_failure or time.monotonic()
                if self._give_up_after is not None and time.monotonic() - first_failure >= self._give_up_after:
                    raise
                self.retries += 1
                log.warning("database write failed (%s), retrying in %.2fs", exc.__class__.__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
