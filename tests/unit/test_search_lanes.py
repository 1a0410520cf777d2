"""The search pool's lanes: cheap jobs never queue behind expensive ones, expensive ones
keep one process free, slots come back when a job ends (even one given up on)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.storage.search.lanes import Lanes


def _work(seconds: float) -> float:
    time.sleep(seconds)
    return time.monotonic()


async def test_a_cheap_job_runs_at_once_beside_queued_heavy_ones() -> None:
    lanes = Lanes(2)
    with ThreadPoolExecutor(2) as pool:
        heavy = [asyncio.ensure_future(lanes.run(pool, _work, 0.3, True)) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert (lanes.busy, lanes.heavy_busy) == (1, 1)  # one process stays free
        started = time.monotonic()
        finished = await lanes.run(pool, _work, 0.0, False)
        assert finished - started < 0.1
        ends = sorted(await asyncio.gather(*heavy))
        # One heavy job at a time: 4 x 0.3 s one after another.
        assert ends[-1] - ends[0] >= 0.85
    assert (lanes.busy, lanes.heavy_busy) == (0, 0)


async def test_cheap_jobs_go_first_when_a_slot_frees() -> None:
    lanes = Lanes(1)
    order: list[str] = []
    with ThreadPoolExecutor(1) as pool:

        async def job(name: str, heavy: bool) -> None:
            await lanes.run(pool, _work, 0.05, heavy)
            order.append(name)

        first = asyncio.ensure_future(job("h1", True))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(job("h2", True)), asyncio.ensure_future(job("c", False))]
        await asyncio.gather(first, *rest)
    assert order == ["h1", "c", "h2"]


async def test_a_job_given_up_on_holds_its_slot_until_it_ends() -> None:
    lanes = Lanes(2)
    with ThreadPoolExecutor(2) as pool:
        task = asyncio.ensure_future(lanes.run(pool, _work, 0.3, False))
        waiting = asyncio.ensure_future(lanes.run(pool, _work, 0.0, True))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(task, 0.01)
        assert lanes.busy == 1  # the thread still runs it; the heavy job has the other
        await waiting
        await asyncio.sleep(0.4)
        assert (lanes.busy, lanes.heavy_busy) == (0, 0)


async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue() -> None:
    lanes = Lanes(1)
    with ThreadPoolExecutor(1) as pool:
        running = asyncio.ensure_future(lanes.run(pool, _work, 0.1, True))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(lanes.run(pool, _work, 0.0, True))
        await asyncio.sleep(0.01)
        queued.cancel()
        await running
        await asyncio.sleep(0.01)
    assert (lanes.busy, lanes.heavy_busy) == (0, 0)
    assert not any(lanes._waiting.values())
