"""Admission to the search pool's processes, so a cheap search never waits behind expensive
ones: ProcessPoolExecutor runs its queue in order, and a few expensive searches (phrases,
ranges, aggregations over every record) queued there would hold every simple one behind
them for seconds.

A job is submitted only when a process is free for it (one job per process at a time, so
none waits inside the pool); expensive (`heavy`) jobs may hold at most all processes but
one, and a freed process goes to a waiting cheap job first. With a single search process
the two share it: a cheap job then waits for at most the one job running, never a queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


class Lanes:
    def __init__(self, slots: int) -> None:
        self.slots = max(slots, 1)
        self.heavy_slots = max(self.slots - 1, 1)
        self.busy = 0
        self.heavy_busy = 0
        self._waiting: dict[bool, deque[asyncio.Future[None]]] = {False: deque(), True: deque()}

    def jobs(self, heavy: bool) -> int:
        """How many jobs one search's tasks are split into: as many as processes it may
        hold at once."""
        return self.heavy_slots if heavy else self.slots

    def _free(self, heavy: bool) -> bool:
        return self.busy < self.slots and (not heavy or self.heavy_busy < self.heavy_slots)

    def _take(self, heavy: bool) -> None:
        self.busy += 1
        self.heavy_busy += heavy

    async def acquire(self, heavy: bool) -> None:
        # Cheap jobs pass waiting heavy ones; within a lane, first come first served.
        ahead = self._waiting[heavy] or (heavy and self._waiting[False])
        if not ahead and self._free(heavy):
            self._take(heavy)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[heavy].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(heavy)  # granted just before the cancel
            else:
                with contextlib.suppress(ValueError):
                    self._waiting[heavy].remove(waiter)
            raise

    def release(self, heavy: bool) -> None:
        self.busy -= 1
        self.heavy_busy -= heavy
        for lane in (False, True):
            queue = self._waiting[lane]
            while queue and self._free(lane):
                waiter = queue.popleft()
                if not waiter.done():
                    self._take(lane)
                    waiter.set_result(None)

    async def run(self, pool: Executor, fn: Callable[[Any], Any], job: Any, heavy: bool) -> Any:
        """`fn(job)` in the pool once a process is free for it. The slot is held until the
        process is done with the job, even when the search gave up on it (timeout): the
        process is busy until then."""
        await self.acquire(heavy)
        loop = asyncio.get_running_loop()
        try:
            future = pool.submit(fn, job)
        except BaseException:
            self.release(heavy)
            raise

        def done(_f: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                loop.call_soon_threadsafe(self.release, heavy)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)
