"""The indexer supervisor, in the service: starts `workers` indexer processes (see
worker.py), spreads partitions over them, tells them each partition's high watermark,
restarts any that die, turns their reports into metrics and answers status questions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from app.storage import metrics
from app.storage.index.partition_indexer import WorkerConfig
from app.storage.index.pipe import WorkerPipe
from app.storage.index.worker import worker_main

log = logging.getLogger(__name__)

TICK_S = 0.05
# Samples of (high watermark, time it was first seen) kept per partition for lag in seconds.
_MAX_SAMPLES = 4096

# (high watermark, log start, age at which the open search segment is sealed) by partition.
PartitionState = Callable[[], dict[tuple[str, int], tuple[int, int, int]]]


@dataclass
class PartitionProgress:
    indexed: int = 0
    open_base: int = 0
    last_commit_ms: int = 0
    high_watermark: int = 0
    samples: deque[tuple[int, float]] = field(default_factory=deque)
    rate: deque[tuple[float, int]] = field(default_factory=deque)

    def lag_seconds(self, now: float) -> float:
        for hw, seen in self.samples:
            if hw > self.indexed:
                return max(now - seen, 0.0)
        return 0.0


@dataclass
class _Worker:
    index: int
    process: BaseProcess | None = None
    pipe: WorkerPipe | None = None
    sent: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)
    restarts: int = 0
    started_at: float = 0.0
    # A state message the worker has not answered yet: at most one is in flight, so a
    # worker busy sealing a large segment can never fill the pipe and block the loop here.
    awaiting: bool = False


class Indexer:
    def __init__(
        self,
        cfg: WorkerConfig,
        partitions: PartitionState,
        log_level: str = "INFO",
        on_sealed: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.partitions = partitions
        self.log_level = log_level
        self.on_sealed = on_sealed
        self.progress: dict[tuple[str, int], PartitionProgress] = {}
        self._workers = [_Worker(i) for i in range(cfg.index.workers)]
        self._ctx = multiprocessing.get_context("spawn")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.errors = 0

    def worker_for(self, topic: str, partition: int) -> int:
        # A topic's partitions go round-robin from a per-topic start, so they spread evenly.
        # (Hashing "topic+partition" does not: CRC-32 is linear, and partitions 0 and 1 of
        # every topic had the same parity, so two workers got one of them each never.)
        return (zlib.crc32(topic.encode()) + partition) % len(self._workers)

    async def start(self) -> None:
        for w in self._workers:
            self._spawn(w)
        self._task = asyncio.create_task(self._loop(), name="indexer")

    def _spawn(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker_main,
            args=(child, self.cfg, self.log_level, os.getpid()),
            name=f"chronik-indexer-{w.index}",
            daemon=True,
        )
        proc.start()
        child.close()

        def on_message(msg: tuple[str, dict[str, Any]]) -> None:
            w.awaiting = False
            self._handle(msg)

        w.pipe = WorkerPipe(parent, on_message, f"indexer worker {w.index}")
        w.process, w.sent, w.started_at = proc, {}, time.monotonic()
        w.awaiting = False

    def _detach(self, w: _Worker) -> None:
        if w.pipe is not None:
            w.pipe.close()
            w.pipe = None

    def _handle(self, msg: tuple[str, dict[str, Any]]) -> None:
        if msg[0] != "progress":
            return
        body = msg[1]
        now = time.monotonic()
        for key, (indexed, open_base, last_commit) in body["parts"].items():
            p = self.progress.setdefault(key, PartitionProgress())
            if indexed != p.indexed:
                p.rate.append((now, indexed - p.indexed))
            p.indexed, p.open_base, p.last_commit_ms = indexed, open_base, last_commit
            while p.samples and p.samples[0][0] <= indexed:
                p.samples.popleft()
        metrics.INDEXER_RECORDS.inc(body["records"])
        metrics.INDEXER_ERRORS.inc(body["errors"])
        self.errors += body["errors"]
        for s in body["commit_seconds"]:
            metrics.INDEXER_COMMIT_SECONDS.observe(s)
        if body["sealed"] and self.on_sealed is not None:
            self.on_sealed()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                self._tick()
            except Exception:
                log.exception("indexer supervision failed")
            await asyncio.sleep(TICK_S)

    def _tick(self) -> None:
        now = time.monotonic()
        states = self.partitions()
        by_worker: list[dict[tuple[str, int], tuple[int, int, int]]] = [{} for _ in self._workers]
        for key, st in states.items():
            by_worker[self.worker_for(*key)][key] = st
            p = self.progress.setdefault(key, PartitionProgress())
            hw = st[0]
            if hw > p.high_watermark:
                p.high_watermark = hw
                if hw > p.indexed:
                    p.samples.append((hw, now))
                    if len(p.samples) > _MAX_SAMPLES:
                        p.samples.popleft()
            while p.rate and now - p.rate[0][0] > 60:
                p.rate.popleft()
            labels = (key[0], str(key[1]))
            metrics.INDEXER_LAG_RECORDS.labels(*labels).set(max(hw - p.indexed, 0))
            metrics.INDEXER_LAG_SECONDS.labels(*labels).set(p.lag_seconds(now))
        for key in [k for k in self.progress if k not in states]:
            del self.progress[key]
            with contextlib.suppress(KeyError):
                metrics.INDEXER_LAG_RECORDS.remove(key[0], str(key[1]))
                metrics.INDEXER_LAG_SECONDS.remove(key[0], str(key[1]))
        for w, wanted in zip(self._workers, by_worker, strict=True):
            cause = self._failure(w)
            if cause is not None:
                self._restart(w, cause)
                continue
            assert w.pipe is not None
            if w.awaiting:
                continue
            changed = {k: v for k, v in wanted.items() if w.sent.get(k) != v}
            gone = [k for k in w.sent if k not in wanted]
            if not changed and not gone:
                continue
            if gone:
                w.pipe.send(("drop", gone))
            if changed:
                w.pipe.send(("state", changed))
            w.awaiting = True
            for k in gone:
                del w.sent[k]
            w.sent.update(changed)

    def drop_now(self, keys: list[tuple[str, int]]) -> None:
        """A deleted topic's partitions leave their worker before anything else it is sent,
        so a topic re-created under the same name starts from nothing. (Left to the next
        tick, a delete and re-create between two ticks would look like no change at all.)"""
        by_worker: dict[int, list[tuple[str, int]]] = {}
        for key in keys:
            by_worker.setdefault(self.worker_for(*key), []).append(key)
        for index, mine in by_worker.items():
            w = self._workers[index]
            for key in mine:
                w.sent.pop(key, None)
            if w.pipe is not None:
                w.pipe.send(("drop", mine))

    @staticmethod
    def _failure(w: _Worker) -> str | None:
        """Why the worker must be restarted, or None while it is healthy."""
        proc = w.process
        if proc is None:
            return "was never started"
        if not proc.is_alive():
            code = proc.exitcode
            if code is not None and code < 0:
                with contextlib.suppress(ValueError):
                    return f"was killed by {signal.Signals(-code).name}"
            return f"exited with code {code}"
        if w.pipe is None or w.pipe.closed:
            return (w.pipe.lost if w.pipe is not None else None) or "lost its pipe"
        return None

    def _restart(self, w: _Worker, cause: str) -> None:
        if self._stopping:
            return
        log.warning(
            "indexer worker %d (pid %s) %s; restarting it",
            w.index,
            w.process.pid if w.process is not None else None,
            cause,
        )
        if w.process is not None:
            # Killed before its pipe is closed: a live one must not go on indexing beside its
            # successor, nor log a reset pipe on its way out.
            if w.process.is_alive():
                w.process.kill()
            w.process.join(timeout=5)
        self._detach(w)
        w.restarts += 1
        metrics.INDEXER_WORKER_RESTARTS.inc()
        metrics.INDEXER_ERRORS.inc()
        self.errors += 1
        self._spawn(w)

    async def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for w in self._workers:
            if w.pipe is not None:
                w.pipe.send(("stop",))
        deadline = time.monotonic() + timeout
        for w in self._workers:
            proc = w.process
            if proc is None:
                continue
            await asyncio.to_thread(proc.join, max(deadline - time.monotonic(), 0.1))
            if proc.is_alive():
                log.warning("indexer worker %d did not stop; killing it", w.index)
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
            self._detach(w)

    def status(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        workers = []
        for w in self._workers:
            proc = w.process
            workers.append(
                {
                    "worker": w.index,
                    "pid": proc.pid if proc is not None else None,
                    "alive": bool(proc is not None and proc.is_alive()),
                    "restarts": w.restarts,
                    "partitions": len(w.sent),
                    "uptime_s": round(now - w.started_at, 1),
                }
            )
        return workers

    def max_lag_seconds(self) -> float:
        now = time.monotonic()
        return max((p.lag_seconds(now) for p in self.progress.values()), default=0.0)

    def records_per_second(self, key: tuple[str, int]) -> float:
        p = self.progress.get(key)
        if p is None or not p.rate:
            return 0.0
        return sum(n for _t, n in p.rate) / 60.0
