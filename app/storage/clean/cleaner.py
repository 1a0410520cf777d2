"""The log cleaner's service side: every `cleaner_interval_ms` it looks at each partition of
a topic whose cleanup.policy has compact, plans a run over its sealed search segments, has the
pool process rewrite them (job.py) and swaps the results into the registry.

A run covers a prefix of the partition's live segments, from the first one, of those whose
last offset is below the last stable offset and that hold nothing younger than
min.compaction.lag.ms. The dirty part starts at the partition's cleaner checkpoint; a run is
due when its share of the range's bytes reaches min.cleanable.dirty.ratio, or when a dirty
segment's newest record is older than max.compaction.lag.ms. One partition at a time.

Crash safety: the results are written to the segment cache under new names and swapped in
with `Registry.replace_many` (old rows `deleting`, new rows `local`, the checkpoint) in one
transaction. Before it, the new files are unregistered and removed at the next start
(`Storage._remove_orphans`); nothing is uploaded before the swap, so the object store gets no
orphans. After it, the tiering loop uploads the new segments and only then deletes the old
objects (`Registry.deletable` holds a deleting row back while a local row overlaps it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from app.config import CleanerConfig
from app.storage import metrics
from app.storage.clean.job import CleanJob, CleanResult, SourceSegment, run_clean
from app.storage.fileutil import remove_large
from app.storage.log import PartitionLog
from app.storage.process import worker_started
from app.storage.segments import CleanerState, Registry, SegmentRow
from app.storage.tier import Tiering

log = logging.getLogger(__name__)

CLEANER_NICE = 10
# Kafka's OffsetMap holds a 16-byte digest and an 8-byte offset per slot; here a dict entry
# of a 16-byte digest and an int measured 143 bytes (bench/cleaner_job.py, 1M keys).
BYTES_PER_ENTRY = 144

Job = Callable[[CleanJob], CleanResult]


@dataclass(frozen=True)
class CleanPlan:
    topic: str
    partition: int
    rows: list[SegmentRow]  # the cleanable range, a prefix of the live segments
    dirty_from: int  # the cleaner checkpoint
    dirty_ratio: float
    due: bool


def plan_clean(
    plog: PartitionLog, rows: list[SegmentRow], state: CleanerState | None, now_ms: int
) -> CleanPlan | None:
    """The cleanable range of a compacted partition and whether to clean it now; None when
    it has nothing cleanable. `rows` are its live segments in offset order."""
    cfg = plog.config
    bound = plog.last_stable_offset
    # Never the segment holding the log's last offset: Kafka never cleans the active segment,
    # so the last batch survives and a consumer reading to the end always gets a batch to
    # step past what was cleaned away (an empty fetch below the high watermark stalls it).
    bound = min(bound, plog.high_watermark - 1)
    lag_edge = now_ms - cfg.min_compaction_lag_ms
    cleanable: list[SegmentRow] = []
    for row in rows:
        if row.last_offset >= bound or row.largest_timestamp > lag_edge:
            break
        cleanable.append(row)
    if not cleanable:
        return None
    dirty_from = state.cleaned_end if state is not None else 0
    dirty = [r for r in cleanable if r.last_offset >= dirty_from]
    total = sum(r.size for r in cleanable)
    ratio = sum(r.size for r in dirty) / total if total else 0.0
    # From the earliest record of a dirty segment, as Kafka measures max.compaction.lag.ms.
    overdue = any(
        now_ms - (r.min_timestamp if r.min_timestamp >= 0 else r.largest_timestamp)
        > cfg.max_compaction_lag_ms
        for r in dirty
    )
    due = bool(dirty) and (ratio >= cfg.min_cleanable_dirty_ratio or overdue)
    return CleanPlan(plog.topic, plog.partition, cleanable, dirty_from, ratio, due)


class Cleaner:
    def __init__(
        self,
        registry: Registry,
        tiering: Tiering,
        logs: Callable[[], dict[tuple[str, int], PartitionLog]],
        cfg: CleanerConfig,
        job: Job = run_clean,
    ) -> None:
        self.registry = registry
        self.tiering = tiering
        self.logs = logs
        self.cfg = cfg
        self.job = job
        self.dirty_ratios: dict[tuple[str, int], float] = {}
        self._pool: ProcessPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing: set[tuple[str, int]] = set()

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_cleaner_process_started,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def start(self) -> None:
        if self.cfg.enabled:
            self._task = asyncio.create_task(self._loop(), name="log-cleaner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._drop_pool(kill=True)

    def _drop_pool(self, kill: bool) -> None:
        """Forget the pool; with `kill`, stop its process at once (shutdown() cannot stop a
        running job, and interpreter exit would wait for it). A run cut off leaves only
        unregistered files, removed at the next start."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            for proc in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_ms / 1000)
            try:
                await self.run_once()
            except Exception:
                log.exception("log cleaner pass failed")

    def status(self, topic: str, partition: int) -> tuple[float | None, int | None]:
        """(dirty ratio, time of the last compaction in ms) of a partition, None if unknown."""
        state = self.registry.cleaner_state(topic, partition)
        ratio = self.dirty_ratios.get((topic, partition))
        if ratio is None and state is not None:
            ratio = state.dirty_ratio
        return ratio, state.last_run_ms if state is not None else None

    async def run_once(self, now_ms: int | None = None) -> int:
        """One pass over the compacted partitions; returns how many were cleaned."""
        logs = self.logs()
        for key in [k for k in self.dirty_ratios if k not in logs or not logs[k].config.compact]:
            del self.dirty_ratios[key]
            with contextlib.suppress(KeyError):
                metrics.CLEANER_DIRTY_RATIO.remove(key[0], str(key[1]))
        cleaned = 0
        for key, plog in logs.items():
            if not plog.config.compact:
                continue
            try:
                cleaned += await self._maybe_clean(plog, now_ms)
                self._failing.discard(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                if key not in self._failing:
                    self._failing.add(key)
                    log.warning("%s-%d: cleaning failed; retrying", *key, exc_info=True)
                else:
                    log.debug("%s-%d: cleaning failed again", *key, exc_info=True)
        return cleaned

    def _plan(self, plog: PartitionLog, now_ms: int) -> CleanPlan | None:
        rows = self.registry.segments(plog.topic, plog.partition)
        state = self.registry.cleaner_state(plog.topic, plog.partition)
        plan = plan_clean(plog, rows, state, now_ms)
        ratio = plan.dirty_ratio if plan is not None else 0.0
        self.dirty_ratios[(plog.topic, plog.partition)] = ratio
        metrics.CLEANER_DIRTY_RATIO.labels(plog.topic, str(plog.partition)).set(ratio)
        return plan

    async def _maybe_clean(self, plog: PartitionLog, now: int | None) -> int:
        now_ms = int(time.time() * 1000) if now is None else now
        plan = self._plan(plog, now_ms)
        if plan is None or not plan.due:
            return 0
        rows = plan.rows
        paths = await self.tiering.pin_local(rows)
        try:
            job = CleanJob(
                topic=plan.topic,
                partition=plan.partition,
                sources=tuple(
                    SourceSegment(r.object_key, p, r.base_offset, r.last_offset, r.max_timestamp)
                    for r, p in zip(rows, paths, strict=True)
                ),
                dirty_from=plan.dirty_from,
                now_ms=now_ms,
                delete_retention_ms=plog.config.delete_retention_ms,
                aborted=tuple(plog.aborted_transactions(rows[0].base_offset, rows[-1].next_offset)),
                map_entries=max(self.cfg.dedupe_buffer_bytes // BYTES_PER_ENTRY, 1),
                out_dir=self.tiering.cache_dir,
            )
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(self.pool(), self.job, job)
            except BrokenProcessPool:
                # Its process died (killed, out of memory): the next run starts a new one.
                self._drop_pool(kill=False)
                raise
        finally:
            self.tiering.unpin(rows)
        return int(self._swap(plog, plan, result, now_ms))

    def _swap(self, plog: PartitionLog, plan: CleanPlan, result: CleanResult, now_ms: int) -> bool:
        by_key = {r.object_key: r for r in plan.rows}
        old_ids: list[int] = []
        new_rows: list[SegmentRow] = []
        written: list[Path] = []
        for seg in result.segments:
            if seg.path is None or seg.manifest is None:
                continue
            written.append(seg.path)
            old_ids.append(by_key[seg.source_key].id)
            key = seg.path.relative_to(self.tiering.cache_dir).as_posix()
            new_rows.append(SegmentRow.sealed(key, seg.manifest))
        state = CleanerState(
            plan.topic, plan.partition, result.cleaned_end, now_ms, plan.dirty_ratio
        )
        if not self.registry.replace_many(
            old_ids, new_rows, state, read_ids=[r.id for r in plan.rows]
        ):
            # A merge, retention or a topic delete got to the sources first.
            log.info(
                "%s-%d: segments changed while cleaning; next time", plan.topic, plan.partition
            )
            for path in written:
                remove_large(path)
            return False
        plog.compacted_end = max(plog.compacted_end, result.cleaned_end)
        if new_rows:
            self.tiering.kick()
        metrics.CLEANER_RUNS.inc()
        metrics.CLEANER_BYTES.labels("read").inc(result.bytes_read)
        metrics.CLEANER_BYTES.labels("written").inc(result.bytes_written)
        self._plan(plog, now_ms)
        log.debug(
            "%s-%d: cleaned below %d: %d records kept, %d removed",
            plan.topic,
            plan.partition,
            result.cleaned_end,
            result.records_kept,
            result.records_removed,
        )
        return True


def _cleaner_process_started(parent_pid: int) -> None:
    # Cleaning yields the CPU to the broker and the indexer, like searches (search/engine.py).
    worker_started(parent_pid, CLEANER_NICE)
