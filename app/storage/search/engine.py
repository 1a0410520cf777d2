"""Search over a topic's sealed and open search segments: plans which indexes can match,
runs one task per index in the search pool's processes, merges the hits by the sort key and
reads each hit's record back from the log (any layer), exactly as stored.

Consistency with the indexer: a partition's open segment holds offsets from its checkpoint's
`open_base`, a segment being packaged (the checkpoint's `sealing`) the range below it, and
sealed segments everything below that. Planning reads the checkpoint first and takes only
sealed segments below those, so a seal meanwhile cannot count a record twice; if an
unpublished index is gone by the time it is searched (published), that partition alone is
planned again from that index's base.

Read committed (the default): each index's task gets the partition's transactions that
overlap its offsets, taken from the PartitionLog when the task is made: aborted ones
(producer id, first offset, marker offset) and open ones (producer id, first offset, no end).
Their documents are left out of hits, totals and aggregations (execute.py). A sealed or
merged segment [base, last] no longer holds the documents of aborted transactions with a
marker at or below `last` (deleted when it was sealed or merged, index/aborts.py), so it gets
only those with a marker past `last`; the open segment and one being packaged get all. Records
of other producers are not held back by an open transaction (no cut at the last stable
offset): only the open segment's offsets from the log end at that moment on are left out, as
a transaction begun after it is in none of the exclusions.

In either isolation, an index holding offsets below the log start is cut there: those records
are deleted, and the aborted transactions among them are no longer listed."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import SearchConfig
from app.storage import metrics
from app.storage.errors import StorageError, UnknownTopic
from app.storage.index import SEALING, open_index_dir
from app.storage.log import PartitionLog, Record, batch_span, records_at
from app.storage.process import worker_started
from app.storage.search import execute as search_exec
from app.storage.search.execute import AggTask, Exclusion, SegmentTask
from app.storage.search.lanes import Lanes
from app.storage.segments import Registry, SegmentRow, extract_tantivy
from app.storage.tier import ObjectNotFound

_REPLANS = 5
SEARCH_NICE = 10


class SearchTimeout(StorageError):
    pass


class _Straddled(Exception):
    pass


class SearchFailed(StorageError):
    """Tantivy could not run the query (it panicked on it)."""


@dataclass(frozen=True)
class IndexRef:
    """One index to search: a sealed segment's extracted Tantivy files or an open segment."""

    topic: str
    partition: int
    index_dir: Path
    min_offset: int | None = None
    generation: int = 0
    span: tuple[int, int] | None = None  # a sealed segment's min and max timestamp
    first: int = 0  # the offsets the index may hold: first .. last (None: the open segment)
    last: int | None = None


@dataclass
class Hit:
    topic: str
    partition: int
    offset: int
    timestamp: int
    sort_value: float | int
    rank: int
    record: Record | None = None


def rank(topics: Sequence[str], topic: str, partition: int) -> int:
    """A (topic, partition)'s place in the hit order: by topic name, then partition."""
    return (sorted(topics).index(topic) << 24) | partition


@dataclass
class SearchResult:
    total: int
    hits: list[Hit]
    segments: int


class SearchEngine:
    def __init__(
        self,
        storage: Any,
        registry: Registry,
        data_dir: Path,
        cfg: SearchConfig | None = None,
    ) -> None:
        cfg = cfg or SearchConfig()
        self.storage = storage
        self.registry = registry
        self.data_dir = data_dir
        self.cache_dir = data_dir / "search"
        self.workers = max(cfg.workers, 1)
        self.timeout_s = cfg.timeout_ms / 1000
        self._pool: ProcessPoolExecutor | None = None
        self.lanes = Lanes(self.workers)
        self._extracting: dict[str, asyncio.Lock] = {}

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_search_process_started,
                initargs=(os.getpid(),),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # -- planning ----------------------------------------------------------------------

    def _partitions(self, topic: str, partitions: Sequence[int] | None) -> list[int]:
        meta = self.storage.metadata.get(topic)
        if meta is None:
            raise UnknownTopic(topic)
        if not partitions:
            return list(range(meta.partitions))
        return [p for p in partitions if 0 <= p < meta.partitions]

    def _plan_partition(
        self, topic: str, partition: int, from_offset: int, lo: int, hi: int
    ) -> tuple[list[SegmentRow], list[IndexRef]]:
        """Sealed segments from `from_offset` up to the unpublished ones (the checkpoint is
        read first, so a segment published after it is not also searched as open), then
        the segment being packaged, if any, and the open segment."""
        cp = self.registry.checkpoint(topic, partition)
        frozen = cp.open_state.get(SEALING) if cp is not None else None
        below = 2**63 - 1 if cp is None else frozen["base"] if frozen else cp.open_base
        live = self.registry.in_time_range(topic, partition, lo, hi)
        if any(r.base_offset < from_offset <= r.last_offset for r in live):
            # A merge took what a re-plan looks for into a segment already searched.
            raise _Straddled
        rows = [r for r in live if from_offset <= r.base_offset < below]
        if cp is None:
            return rows, []
        pdir = self.data_dir / "index" / f"{topic}-{partition}"
        refs = []
        if frozen and frozen["base"] >= from_offset:
            b = frozen["base"]
            refs.append(
                IndexRef(
                    topic,
                    partition,
                    open_index_dir(pdir, b),
                    min_offset=b,
                    generation=b,
                    first=b,
                    last=cp.open_base - 1,
                )
            )
        if cp.indexed_offset > cp.open_base:
            b = cp.open_base
            refs.append(
                IndexRef(
                    topic, partition, open_index_dir(pdir, b), min_offset=b, generation=b, first=b
                )
            )
        return rows, refs

    async def _local_index(self, row: SegmentRow) -> IndexRef:
        """The segment's Tantivy files, extracted into the search cache (downloading the
        segment into the local segment cache first if it is only in the object store)."""
        dest = self.cache_dir / row.object_key
        if not (dest / "meta.json").exists():
            lock = self._extracting.setdefault(row.object_key, asyncio.Lock())
            async with lock:
                if not (dest / "meta.json").exists():
                    seg = self.storage.tiering.local_path(row)
                    if not seg.exists():
                        await self.storage.objects.get_file(row.object_key, seg)
                    await asyncio.to_thread(_extract, seg, row.manifest, dest)
            self._extracting.pop(row.object_key, None)
        return IndexRef(
            row.topic,
            row.partition,
            dest,
            span=(row.min_timestamp, row.max_timestamp),
            first=row.base_offset,
            last=row.last_offset,
        )

    def _isolation(
        self, ref: IndexRef, read_committed: bool
    ) -> tuple[tuple[Exclusion, ...], int | None, int | None]:
        """(exclusions, start offset, end offset) of the index's task."""
        plog = self.storage.log(ref.topic, ref.partition)
        start = start_bound(plog, ref.first)
        if not read_committed:
            return (), start, None
        # Only a sealed segment's IndexRef has no min_offset.
        exclude, end = exclusions(plog, ref.first, ref.last, sealed=ref.min_offset is None)
        return exclude, start, end

    # -- running -----------------------------------------------------------------------

    async def _run(self, fn: Any, tasks: list[Any], heavy: bool = False) -> list[Any]:
        """`fn` (a list of tasks in, their answers out) in the pool, one job per search
        process the search may hold (lanes.py): a job costs ~0.6 ms of pickling and
        hand-over, and a search plans ten and more indexes."""
        pool = self.pool()
        n = self.lanes.jobs(heavy)
        jobs = [tasks[i::n] for i in range(min(n, len(tasks)))]
        runs = [self.lanes.run(pool, fn, job, heavy) for job in jobs]
        try:
            answers = await asyncio.wait_for(asyncio.gather(*runs), self.timeout_s)
        except TimeoutError:
            raise SearchTimeout(
                f"search over {len(tasks)} segment indexes took over {self.timeout_s:g}s"
            ) from None
        results: list[Any] = [None] * len(tasks)
        for i, answer in enumerate(answers):
            results[i::n] = answer
        return results

    async def _execute(
        self,
        fn: Any,
        make_task: Any,
        topics: Sequence[str],
        partitions: Sequence[int] | None,
        start_ms: int | None,
        end_ms: int | None,
        heavy: bool = False,
    ) -> list[tuple[IndexRef, Any, Any]]:
        """Run `fn(make_task(ref))` for every index that may hold matches. An open segment
        that was sealed meanwhile answers None (or `vanished`): that partition is planned
        again from that segment's base, and only its new indexes are searched."""
        lo = start_ms if start_ms is not None else -(2**63)
        hi = end_ms if end_ms is not None else 2**63 - 1
        everything = [(t, p, 0) for t in topics for p in self._partitions(t, partitions)]
        pending = everything
        done: list[tuple[IndexRef, Any, Any]] = []
        for _attempt in range(_REPLANS):
            refs: list[IndexRef] = []
            try:
                for topic, p, from_offset in pending:
                    rows, unsealed = self._plan_partition(topic, p, from_offset, lo, hi)
                    refs += [await self._local_index(r) for r in rows]
                    refs += unsealed
            except (ObjectNotFound, FileNotFoundError, _Straddled):
                # A planned segment was deleted (merge, retention) before it was fetched, or
                # merged into one that starts below a re-plan's base.
                pending, done = everything, []
                await asyncio.sleep(0.01)
                continue
            tasks = [make_task(r) for r in refs]
            results = await self._run(fn, tasks, heavy)
            vanished: dict[tuple[str, int], int] = {}
            restart = False
            for ref, task, res in zip(refs, tasks, results, strict=True):
                error = (
                    res.get("__error__") if isinstance(res, dict) else getattr(res, "error", None)
                )
                if error:
                    raise SearchFailed(error)
                if res is None or getattr(res, "vanished", False):
                    if ref.min_offset is None:
                        # A sealed segment merged away or deleted: its records may be in
                        # a segment that overlaps others already searched. Start over.
                        restart = True
                        break
                    key = (ref.topic, ref.partition)
                    vanished[key] = min(vanished.get(key, ref.min_offset), ref.min_offset)
                else:
                    done.append((ref, task, res))
            if restart:
                pending, done = everything, []
            else:
                # The partition is planned again from its lowest vanished index, which takes
                # in the unpublished indexes above it again: drop their answers.
                done = [
                    d
                    for d in done
                    if d[0].min_offset is None
                    or d[0].min_offset < vanished.get((d[0].topic, d[0].partition), 2**63)
                ]
                pending = [(t, p, base) for (t, p), base in vanished.items()]
            if not pending:
                return done
            await asyncio.sleep(0.01)
        raise SearchTimeout("the indexer kept sealing the segments being searched")

    @staticmethod
    def _count(done: list[tuple[IndexRef, Any, Any]]) -> None:
        metrics.SEARCH_SEGMENTS_OPENED.inc(len(done))

    async def search(
        self,
        topics: Sequence[str],
        query: str,
        *,
        partitions: Sequence[int] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        sort_field: str | None = "timestamp",
        descending: bool = True,
        after: tuple[int, int, int] | None = None,
        limit: int = 20,
        skip: int = 0,
        read_committed: bool = True,
        heavy: bool = False,
    ) -> SearchResult:
        def task(r: IndexRef) -> SegmentTask:
            exclude, start_offset, end_offset = self._isolation(r, read_committed)
            return SegmentTask(
                index_dir=str(r.index_dir),
                rank=rank(topics, r.topic, r.partition),
                query=query,
                start_ms=start_ms,
                end_ms=end_ms,
                min_offset=r.min_offset,
                generation=r.generation,
                sort_field=sort_field,
                descending=descending,
                after=after,
                limit=limit + skip,
                bound=None if r.span is None else r.span[1] if descending else r.span[0],
                exclude=exclude,
                end_offset=end_offset,
                start_offset=start_offset,
            )

        done = await self._execute(
            search_exec.search_many, task, topics, partitions, start_ms, end_ms, heavy
        )
        self._count(done)
        total = sum(res.total for _r, _t, res in done)
        merged = [
            Hit(ref.topic, ref.partition, h[1], h[2], h[0], t.rank)
            for ref, t, res in done
            for h in res.hits
        ]
        merged.sort(key=_sort_key(sort_field, descending))
        page = merged[skip : skip + limit]
        await self._attach_records(page)
        return SearchResult(total, page, len(done))

    async def aggregate(
        self,
        topics: Sequence[str],
        query: str,
        agg: dict[str, Any],
        *,
        partitions: Sequence[int] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        read_committed: bool = True,
        heavy: bool = True,
    ) -> list[dict[str, Any]]:
        def task(r: IndexRef) -> AggTask:
            exclude, start_offset, end_offset = self._isolation(r, read_committed)
            return AggTask(
                index_dir=str(r.index_dir),
                query=query,
                agg=agg,
                start_ms=start_ms,
                end_ms=end_ms,
                min_offset=r.min_offset,
                generation=r.generation,
                exclude=exclude,
                end_offset=end_offset,
                start_offset=start_offset,
            )

        done = await self._execute(
            search_exec.aggregate_many, task, topics, partitions, start_ms, end_ms, heavy
        )
        self._count(done)
        return [res for _r, _t, res in done]

    async def _attach_records(self, hits: list[Hit]) -> None:
        """Read each hit's record back from the log: the batch holding it, from any layer,
        decoding only the hits' records of it."""
        for hit in hits:
            if hit.record is not None:
                continue
            with contextlib.suppress(StorageError):
                plog = self.storage.log(hit.topic, hit.partition)
                data = await self.storage.read(plog, hit.offset, 1)
                if not data:
                    continue
                raw = bytes(data[0])
                first, last = batch_span(raw)
                same = [
                    h
                    for h in hits
                    if h.topic == hit.topic
                    and h.partition == hit.partition
                    and first <= h.offset <= last
                ]
                recs = records_at(raw, [h.offset for h in same])
                for h in same:
                    h.record = recs.get(h.offset)


def exclusions(
    plog: PartitionLog, first: int, last: int | None, sealed: bool = False
) -> tuple[tuple[Exclusion, ...], int | None]:
    """The partition's transactions to leave out of an index holding offsets first..last
    (None: the open segment, also given the offset to stop at, the log end now). A `sealed`
    (or merged) segment's aborted transactions with a marker at or below `last` were deleted
    from it (index/aborts.py). Open ones are read first: one aborted between the reads is
    then in both lists, never in neither."""
    ongoing = plog.open_transactions()
    end = plog.log_end_offset
    hi = end if last is None else last + 1
    settled = last if sealed and last is not None else -1
    out: list[Exclusion] = [
        (a.producer_id, a.first_offset, a.last_offset)
        for a in plog.aborted_transactions(first, hi)
        if a.last_offset > settled
    ]
    out += [(pid, start, None) for pid, start in ongoing.items() if start < hi]
    return tuple(out), end if last is None else None


def start_bound(plog: PartitionLog, first: int) -> int | None:
    """The log start, if an index holding offsets from `first` has records below it."""
    start = plog.log_start_offset
    return start if first < start else None


def _sort_key(sort_field: str | None, descending: bool) -> Any:
    """The total order of hits; execute.py's cursor conditions follow the same order."""
    sign = -1 if descending else 1
    if sort_field is None:
        return lambda h: (-h.sort_value, h.rank, h.offset)
    if sort_field == "offset":
        return lambda h: (sign * h.offset, sign * h.rank)
    return lambda h: (sign * h.timestamp, sign * h.rank, sign * h.offset)


def _extract(segment: Path, manifest: dict[str, Any], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".{os.getpid()}.{time.monotonic_ns()}")
    extract_tantivy(segment, manifest, tmp)
    try:
        os.replace(tmp, dest)
    except OSError:
        # Another extraction of the same segment won the race.
        shutil.rmtree(tmp, ignore_errors=True)


def _search_process_started(parent_pid: int) -> None:
    # Searches yield the CPU to the broker and the indexer (index/worker.py NICE): under
    # eight clients searching this kept the produce-ack p99 at 25 ms instead of 81 ms.
    worker_started(parent_pid, SEARCH_NICE)
