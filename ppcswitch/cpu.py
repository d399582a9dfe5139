"""The controller's CPU time split by stage, from its own counters (`ppcswitch_cpu_seconds_total{stage}`).

Stages: `agi` (FastAGI requests: headers, the routing decision, the answer), `ami` (AMI events:
parsing and the call tracker, fraud scoring of a finished call), `settle` (the finished-call pipeline
on the event loop and the database writer, on its thread or on the loop). The rest of the process's
CPU (the event loop itself, sockets, the panel, timers) is what `process CPU - the stages` leaves:
bench/throughput.py prints it as "other".

Each thread keeps its own stage and totals (time.thread_time, the thread's CPU), so the writer's
thread and the event loop never share a counter. Stages nest: time spent in an inner stage is
counted there and not in the outer one.
"""

from __future__ import annotations

import threading
from time import thread_time
from typing import Any, Awaitable, Generator

AGI, AMI, SETTLE = "agi", "ami", "settle"
STAGES = (AGI, AMI, SETTLE)


class _Thread:
    __slots__ = ("current", "since", "stack", "totals")

    def __init__(self) -> None:
        self.current: str | None = None
        self.since = 0.0
        self.stack: list[str | None] = []
        self.totals: dict[str, float] = dict.fromkeys(STAGES, 0.0)


class CpuStages:
    def __init__(self) -> None:
        self._local = threading.local()
        self._threads: list[_Thread] = []
        self._lock = threading.Lock()

    def _mine(self) -> _Thread:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _Thread()
            with self._lock:
                self._threads.append(state)
        return state

    def enter(self, stage: str) -> _Thread:
        """Start counting this thread's CPU for `stage`; give the result to leave()."""
        state = self._mine()
        now = thread_time()
        if state.current is not None:
            state.totals[state.current] += now - state.since
        state.stack.append(state.current)
        state.current, state.since = stage, now
        return state

    @staticmethod
    def leave(state: _Thread) -> None:
        now = thread_time()
        state.totals[state.current] += now - state.since  # type: ignore[index]
        state.current, state.since = state.stack.pop(), now

    def totals(self) -> dict[str, float]:
        """CPU seconds per stage so far, every thread summed."""
        out = dict.fromkeys(STAGES, 0.0)
        with self._lock:
            threads = list(self._threads)
        for state in threads:
            for stage, seconds in state.totals.items():
                out[stage] += seconds
        return out

    def measured(self, stage: str, awaitable: Awaitable[Any]) -> "_Measured":
        """`await stages.measured(stage, coro)`: the coroutine's own CPU (each of its steps) in `stage`."""
        return _Measured(self, stage, awaitable)

    def render(self, out: list[str]) -> None:
        """The metric family, for Metrics.extend."""
        out.append("# HELP ppcswitch_cpu_seconds_total CPU seconds the controller spent, by stage (agi, ami, settle; "
                   "the rest of the process CPU is the event loop and everything else)\n"
                   "# TYPE ppcswitch_cpu_seconds_total counter\n")
        for stage, seconds in self.totals().items():
            out.append(f'ppcswitch_cpu_seconds_total{{stage="{stage}"}} {seconds!r}\n')


class _Measured:
    """Drives a coroutine step by step, each step counted in one stage (an asyncio task runs the
    steps: the time between them, spent on other work, is not counted)."""

    __slots__ = ("stages", "stage", "coro")

    def __init__(self, stages: CpuStages, stage: str, awaitable: Awaitable[Any]) -> None:
        self.stages, self.stage, self.coro = stages, stage, awaitable.__await__()

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, enter, leave, stage = self.coro, self.stages.enter, self.stages.leave, self.stage
        value: Any = None
        error: BaseException | None = None
        while True:
            state = enter(stage)
            try:
                if error is not None:
                    step, error = coro.throw(error), None
                else:
                    step = coro.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                leave(state)
            try:
                value = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001  (cancellation included): into the coroutine
                value, error = None, exc


# The process's one set of counters.
CPU = CpuStages()
