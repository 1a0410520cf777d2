"""The service's end of an indexer worker's pipe (WorkerPipe) on the service's event loop,
against a plain multiprocessing Connection as the worker holds it."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from app.storage.index.pipe import WorkerPipe

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_worker_that_does_not_read_gets_every_message_later_in_order(loop: str) -> None:
    parent, child = multiprocessing.Pipe()
    n = 20_000  # far more than the socket buffer holds

    async def main() -> None:
        pipe = WorkerPipe(parent, lambda _msg: None, "w")
        for i in range(n):
            pipe.send(("drop", [(f"topic-{i}", i % 4)]))
        assert not pipe.closed
        # The worker's side reads in a thread while the loop writes out what is queued.
        got = await asyncio.to_thread(lambda: [child.recv() for _ in range(n)])
        assert got == [("drop", [(f"topic-{i}", i % 4)]) for i in range(n)]
        assert not pipe.closed
        pipe.close()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", LOOPS)
def test_reports_arrive_whole_however_the_bytes_are_split(loop: str) -> None:
    parent, child = multiprocessing.Pipe()
    big = {"parts": {(f"topic-{i}", i % 4): (i, i, i) for i in range(50_000)}}
    sent = [("progress", {"n": 0}), ("progress", big), ("progress", {"n": 2})]

    async def main() -> None:
        got: list[Any] = []
        pipe = WorkerPipe(parent, got.append, "w")
        # A large report is written in several pieces; the loop sees each as it comes.
        await asyncio.to_thread(lambda: [child.send(m) for m in sent])
        await _until(lambda: len(got) == len(sent))
        assert got == sent and not pipe.closed
        pipe.close()

    LOOPS[loop](main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_closed_worker_end_closes_the_pipe_with_its_cause(loop: str) -> None:
    parent, child = multiprocessing.Pipe()

    async def main() -> None:
        got: list[Any] = []
        pipe = WorkerPipe(parent, got.append, "w")
        child.send(("progress", {}))
        child.close()
        await _until(lambda: pipe.closed)
        assert got == [("progress", {})]
        assert pipe.lost == "it closed its pipe"
        pipe.send(("state", {}))  # a no-op once closed

    LOOPS[loop](main())


def test_a_failing_handler_does_not_lose_the_pipe() -> None:
    parent, child = multiprocessing.Pipe()

    async def main() -> None:
        got: list[Any] = []

        def handle(msg: Any) -> None:
            got.append(msg)
            if msg == "bad":
                raise KeyError(msg)

        pipe = WorkerPipe(parent, handle, "w")
        for msg in ("bad", "good"):
            child.send(msg)
        await _until(lambda: len(got) == 2)
        assert not pipe.closed
        pipe.close()

    uvloop.run(main())
