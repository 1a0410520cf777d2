"""The service's side of the segment layers: uploads sealed segments to the object store,
deletes WAL segments once their offsets are published (and older than the WAL retention),
deletes segments that left the log, keeps the local segment cache within its budget, and
serves Kafka fetches and timestamp lookups for offsets that are no longer in the WAL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from bisect import bisect_left
from collections import OrderedDict
from pathlib import Path

from app.config import TieringConfig
from app.storage import metrics
from app.storage.fileutil import remove_large
from app.storage.log import HEADER_SIZE, first_record_at_or_after, parse_header
from app.storage.segments import LOCAL, UPLOADED, BatchIndex, Registry, SegmentRow
from app.storage.tier.objectstore import ObjectNotFound, ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

_INDEX_CACHE = 512
_MAX_BACKOFF_S = 30.0


class Tiering:
    def __init__(
        self,
        registry: Registry,
        store: ObjectStore,
        cfg: TieringConfig,
        cache_dir: Path,
        search_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.search_dir = search_dir
        self._indexes: OrderedDict[str, BatchIndex] = OrderedDict()
        self._used: dict[str, float] = {}
        # Segments a cleaner run reads: eviction shrinks files before unlinking them.
        self._pinned: set[str] = set()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backoff = 0.0
        self.store_ok = True
        self.last_error: str | None = None

    def local_path(self, row: SegmentRow) -> Path:
        return self.cache_dir / row.object_key

    def kick(self) -> None:
        self._kick.set()

    async def pin_local(self, rows: list[SegmentRow]) -> list[Path]:
        """The rows' files in the local cache, downloaded if they are only in the object
        store, kept from eviction until `unpin`."""
        paths = []
        self._pinned.update(r.object_key for r in rows)
        for row in rows:
            path = self.local_path(row)
            if not path.exists():
                await self.store.get_file(row.object_key, path)
            self._used[row.object_key] = time.time()
            paths.append(path)
        return paths

    def unpin(self, rows: list[SegmentRow]) -> None:
        self._pinned.difference_update(r.object_key for r in rows)

    async def start(self) -> None:
        await self.store.start()
        self._task = asyncio.create_task(self._loop(), name="tiering")

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store.close()

    async def _loop(self) -> None:
        # A flag as well as cancel(): on 3.11, a wait_for() whose inner wait finishes as the
        # task is cancelled swallows the cancellation, and a kick during stop() did that.
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.interval_ms / 1000 + self._backoff):
                    await self._kick.wait()
            if self._stopping:
                return
            self._kick.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("segment upload/cleanup pass failed")

    async def run_once(self) -> None:
        try:
            await self._upload_pending()
            await self._delete_pending()
            self._backoff = 0.0
            self.store_ok = True
        except ObjectStoreError as exc:
            # The WAL keeps everything meanwhile; try again later, less often.
            self._backoff = min(max(self._backoff * 2, 0.5), _MAX_BACKOFF_S)
            self.store_ok = False
            self.last_error = str(exc)
            log.warning("object store unavailable (%s); retrying in %.1fs", exc, self._backoff)
        await asyncio.to_thread(self._evict_cache)

    async def _upload_pending(self) -> None:
        for row in self.registry.segments(states=(LOCAL,)):
            path = self.local_path(row)
            if not path.exists():
                log.error("segment %s is missing from the local cache", row.object_key)
                continue
            await self.store.put_file(row.object_key, path)
            if self.registry.set_state(row.id, UPLOADED, expect=LOCAL):
                metrics.SEGMENTS_PUBLISHED.inc()

    async def _delete_pending(self) -> None:
        for row in self.registry.deletable():
            if row.object_key in self._pinned:
                # A cleaner run is reading the file (truncating it would kill that process
                # with SIGBUS): deleted after it unpins.
                continue
            await self.store.delete(row.object_key)
            self.forget_local(row)
            self.registry.forget(row.id)

    def forget_local(self, row: SegmentRow) -> None:
        self._indexes.pop(row.object_key, None)
        self._used.pop(row.object_key, None)
        remove_large(self.local_path(row))
        if self.search_dir is not None:
            shutil.rmtree(self.search_dir / row.object_key, ignore_errors=True)

    def _evict_cache(self) -> None:
        """Drop the least recently used uploaded segments from local disk over the budget."""
        rows = self.registry.segments(states=(UPLOADED,))
        rows = [r for r in rows if self.local_path(r).exists()]
        total = sum(r.size for r in rows)
        rows = [r for r in rows if r.object_key not in self._pinned]
        if total <= self.cfg.segment_cache_bytes:
            return
        rows.sort(key=lambda r: self._used.get(r.object_key, r.created_ms / 1000))
        for r in rows:
            if total <= self.cfg.segment_cache_bytes:
                break
            if r.object_key in self._pinned:
                continue  # pinned after this pass listed it (it runs in a thread)
            remove_large(self.local_path(r))
            self._used.pop(r.object_key, None)
            total -= r.size

    def published_end(self, topic: str, partition: int) -> int:
        """Every offset from the first live segment up to this one is in an uploaded
        segment."""
        end = -1
        for row in self.registry.segments(topic, partition):
            if row.state != UPLOADED or (end >= 0 and row.base_offset > end):
                break
            end = max(end, row.next_offset)
        return end

    def first_base(self, topic: str, partition: int) -> int | None:
        rows = self.registry.segments(topic, partition)
        return rows[0].base_offset if rows else None

    # -- cold reads --------------------------------------------------------------------

    async def _read_section(self, row: SegmentRow, start: int, length: int) -> tuple[bytes, bool]:
        """Bytes of the segment object, from the local cache if it is there; the flag says
        whether the object store served them."""
        path = self.local_path(row)
        self._used[row.object_key] = time.time()
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return await self.store.get_range(row.object_key, start, length), True
        try:
            return os.pread(fd, length, start), False
        finally:
            os.close(fd)

    async def batch_index(self, row: SegmentRow) -> BatchIndex:
        idx = self._indexes.get(row.object_key)
        if idx is not None:
            self._indexes.move_to_end(row.object_key)
            return idx
        sections = row.manifest["sections"]
        sec = sections["index"]
        data = b""
        if sec["size"]:
            # A cleaned segment may hold no batch: nothing to read.
            data, _remote = await self._read_section(row, sec["offset"], sec["size"])
        idx = BatchIndex.from_bytes(data, sections["batches"]["size"])
        self._indexes[row.object_key] = idx
        if len(self._indexes) > _INDEX_CACHE:
            self._indexes.popitem(last=False)
        return idx

    async def read(
        self, topic: str, partition: int, offset: int, max_bytes: int, stop_offset: int
    ) -> tuple[list[bytes], int]:
        """Whole batches from the first segment holding a batch at or after `offset` (at most
        `max_bytes`, the first batch always whole, none starting at or after `stop_offset`),
        exactly as they are stored. Segments with no batch at or after `offset` (a cleaned
        segment may hold gaps, or no batch at all) are skipped. Returns the batches and, when
        there are none, where to go on reading: past the segments looked at (the WAL holds
        what follows), or `stop_offset` when the next batch starts there or later."""
        misses = 0
        while offset < stop_offset:
            row = self.registry.find(topic, partition, offset)
            if row is None:
                return [], offset
            try:
                idx = await self.batch_index(row)
                if bisect_left(idx.lasts, offset) == len(idx.lasts):
                    offset = row.next_offset
                    continue
                span = idx.span(offset, max_bytes, stop_offset=stop_offset, base=row.base_offset)
                if span is None:
                    return [], stop_offset
                base = row.manifest["sections"]["batches"]["offset"]
                data, remote = await self._read_section(row, base + span[0], span[1] - span[0])
            except ObjectNotFound:
                # Merged, cleaned or deleted by retention between the lookup and the read:
                # look again (a merge or cleaner run put the offsets in another segment).
                misses += 1
                if misses > 2:
                    return [], stop_offset
                continue
            if idx.lasts[bisect_left(idx.positions, span[1]) - 1] >= stop_offset:
                data = _before(data, stop_offset)
            if not data:
                return [], stop_offset
            (metrics.FETCH_OBJECT_STORE if remote else metrics.FETCH_SEGMENT_CACHE).inc(len(data))
            return [data], offset
        return [], stop_offset

    async def offset_for_timestamp(
        self, topic: str, partition: int, ts: int, log_start: int, end: int
    ) -> tuple[int, int] | None:
        """The first record at or after `ts` in the segments below `end` (the WAL's start,
        or the end of the cleaned offsets when that is higher)."""
        for row in self.registry.segments(topic, partition):
            if row.base_offset >= end:
                break
            if row.max_timestamp < ts or row.last_offset < log_start:
                continue
            idx = await self.batch_index(row)
            for i, max_ts in enumerate(idx.max_timestamps):
                if max_ts < ts or idx.lasts[i] < log_start:
                    continue
                base = row.manifest["sections"]["batches"]["offset"]
                start = idx.positions[i]
                data, _ = await self._read_section(row, base + start, idx.end_of(i) - start)
                found = first_record_at_or_after(data, ts, log_start)
                if found is not None:
                    return found
        return None

    async def max_timestamp(self, topic: str, partition: int, end: int) -> tuple[int, int]:
        """(timestamp, last offset of its batch) of the largest timestamp in the segments
        below `end`."""
        best = (-1, -1)
        for row in self.registry.segments(topic, partition):
            if row.base_offset >= end or row.max_timestamp <= best[0]:
                continue
            idx = await self.batch_index(row)
            for i, max_ts in enumerate(idx.max_timestamps):
                if max_ts > best[0]:
                    best = (max_ts, idx.lasts[i])
        return best


def _before(data: bytes, stop_offset: int) -> bytes:
    """The batches of `data` that start below `stop_offset`. The batch index has no base
    offsets, and in a cleaned segment a batch need not start right after the one before it,
    so the index alone may take one batch too many."""
    pos = 0
    while pos + HEADER_SIZE <= len(data):
        h = parse_header(data, pos)
        if h.base_offset >= stop_offset:
            return data[:pos]
        pos += h.size
    return data
