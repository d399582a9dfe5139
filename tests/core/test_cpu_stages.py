"""The controller's CPU counters by stage (ppcswitch.cpu): nested stages count once, a measured
coroutine counts only its own steps, and /metrics shows them under a new name."""

from __future__ import annotations

import asyncio
import time

from ppcswitch.cpu import AGI, AMI, SETTLE, CpuStages
from ppcswitch.metrics import Metrics


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_nested_stages_count_each_second_once():
    cpu = CpuStages()
    outer = cpu.enter(AMI)
    spin(0.02)
    inner = cpu.enter(SETTLE)
    spin(0.03)
    cpu.leave(inner)
    spin(0.02)
    cpu.leave(outer)
    spin(0.02)  # outside every stage: "other"
    totals = cpu.totals()
    assert 0.035 <= totals[AMI] < 0.06
    assert 0.025 <= totals[SETTLE] < 0.05
    assert totals[AGI] == 0


async def test_a_measured_coroutine_counts_its_own_steps_not_the_waits():
    cpu = CpuStages()

    async def request():
        spin(0.02)
        await asyncio.sleep(0.05)  # waiting is no CPU of the request
        spin(0.02)
        return "answer"

    async def elsewhere():
        await asyncio.sleep(0.01)
        spin(0.03)  # other work on the loop while the request waits

    answer, _ = await asyncio.gather(cpu.measured(AGI, request()), elsewhere())
    assert answer == "answer"
    assert 0.035 <= cpu.totals()[AGI] < 0.06


async def test_a_measured_coroutine_sees_its_cancellation():
    cpu = CpuStages()
    seen = []

    async def request():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    task = asyncio.ensure_future(cpu.measured(AGI, request()))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert seen == ["cancelled"] and task.cancelled()


def test_metrics_expose_the_stages():
    body = Metrics().render().decode()
    for stage in (AGI, AMI, SETTLE):
        assert f'ppcswitch_cpu_seconds_total{{stage="{stage}"}}' in body
