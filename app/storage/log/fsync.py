"""Group commit: one background task fsyncs every log with unsynced writes in a worker thread,
so concurrent produce requests share one fsync and the event loop never blocks on disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from app.storage import metrics

log = logging.getLogger(__name__)

FSYNC_MODES = ("always", "interval", "never")


@dataclass
class SyncWork:
    """What one log needs synced, captured on the event loop. The file descriptors are
    duplicates owned by the worker thread, so the log may close or delete its files
    meanwhile without the thread touching a reused descriptor."""

    end_offset: int
    jobs: list[Callable[[], None]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


class Syncable(Protocol):
    def sync_prepare(self) -> SyncWork: ...

    def sync_done(self, end_offset: int, error: BaseException | None) -> None: ...


class FsyncScheduler:
    def __init__(self, mode: str = "always", interval_ms: int = 1000) -> None:
        if mode not in FSYNC_MODES:
            raise ValueError(f"fsync mode must be one of {FSYNC_MODES}, not {mode!r}")
        self.mode = mode
        self.interval_ms = interval_ms
        self.fsync_calls = 0  # os.fsync calls made, for tests and metrics
        self.rounds = 0
        self._dirty: dict[Syncable, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False

    @property
    def durable_on_ack(self) -> bool:
        return self.mode == "always"

    def mark_dirty(self, target: Syncable, urgent: bool) -> None:
        """`target` has data or files to sync. Urgent work (a waiting producer in mode
        always, a rolled segment in any mode) starts a round now; the rest waits for the
        interval timer or close. Without a running loop urgent work is done inline."""
        self._dirty[target] = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if urgent:
                self._dirty.pop(target, None)
                self._sync_inline(target)
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            if self._stopping:
                return
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="fsync-scheduler")
        if urgent and self._wake is not None:
            self._wake.set()

    def forget(self, target: Syncable) -> None:
        self._dirty.pop(target, None)

    def _sync_inline(self, target: Syncable) -> None:
        work = target.sync_prepare()
        errors = self._execute([work])
        target.sync_done(work.end_offset, errors[0])

    async def _run(self) -> None:
        wake = self._wake
        assert wake is not None
        timeout = self.interval_ms / 1000 if self.mode == "interval" else None
        while True:
            if not wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
            wake.clear()
            await self._round()
            if self._stopping:
                if not self._dirty:
                    return
                wake.set()

    async def _round(self) -> None:
        targets = list(self._dirty)
        self._dirty.clear()
        if not targets:
            return
        prepared: list[tuple[Syncable, SyncWork]] = []
        for t in targets:
            try:
                prepared.append((t, t.sync_prepare()))
            except Exception:
                log.exception("preparing fsync failed")
        self.rounds += 1
        errors = await asyncio.to_thread(self._execute, [w for _, w in prepared])
        for (t, w), err in zip(prepared, errors, strict=True):
            try:
                t.sync_done(w.end_offset, err)
            except Exception:
                log.exception("completing fsync failed")

    def _execute(self, works: list[SyncWork]) -> list[BaseException | None]:
        """Runs in a worker thread: os.fsync releases the GIL."""
        errors: list[BaseException | None] = []
        for w in works:
            for job in w.jobs:
                try:
                    job()
                except Exception:
                    log.exception("background file write failed")
            error: BaseException | None = None
            for fd in w.fds:
                try:
                    with metrics.WAL_FSYNC_SECONDS.time():
                        os.fsync(fd)
                    self.fsync_calls += 1
                except OSError as exc:
                    log.error("fsync failed: %s", exc)
                    error = exc
                finally:
                    os.close(fd)
            errors.append(error)
        return errors

    async def close(self) -> None:
        """Finish outstanding work and stop the task; logs left dirty are synced by their
        own close()."""
        self._stopping = True
        task = self._task
        if task is None or task.done():
            return
        if task.get_loop() is not asyncio.get_running_loop():
            return
        if self._wake is not None:
            self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
