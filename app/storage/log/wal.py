"""WAL segments in the Kafka log format: `{base:020d}.log` holds stored batches back to back,
`.index` / `.timeindex` hold the sparse indexes (written for sealed segments; the active
segment's indexes live in memory and are rebuilt by scanning on recovery)."""

from __future__ import annotations

import logging
import mmap
import os
import time
from bisect import bisect_right
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

from app.storage.fileutil import atomic_write, remove_large, remove_stale_tmp
from app.storage.log.batch import HEADER_SIZE, BatchHeader, check_batch, parse_header
from app.storage.log.indexes import OffsetIndex, TimeIndex

log = logging.getLogger(__name__)

INDEX_INTERVAL_BYTES = 4096
_SCAN_CHUNK = 32 * 1024
# Index entries store offsets relative to the segment base as u32.
MAX_RELATIVE_OFFSET = 2**31 - 1


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class Appended(NamedTuple):
    """A batch as written: where it landed and the offsets/timestamp it was given."""

    position: int
    size: int
    base_offset: int
    last_offset: int
    max_timestamp: int


class WalSegment:
    def __init__(self, directory: Path, base_offset: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.path = directory / segment_name(base_offset, ".log")
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.max_timestamp_offset = -1
        # Max timestamp of the first batch: segment.ms is measured from it, like Kafka.
        self.first_timestamp: int | None = None
        # Kafka's segment.ms counts from here when the first batch had no timestamp.
        self.created_ms = int(time.time() * 1000)
        self.offset_index = OffsetIndex()
        self.time_index = TimeIndex()
        self.sealed = False
        self.deleted = False
        self._bytes_since_index = 0
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"WalSegment({self.path.name}, size={self.size}, next={self.next_offset})"

    @property
    def index_path(self) -> Path:
        return self.directory / segment_name(self.base_offset, ".index")

    @property
    def time_index_path(self) -> Path:
        return self.directory / segment_name(self.base_offset, ".timeindex")

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1

    @property
    def fd(self) -> int:
        if self._fd is None:
            flags = os.O_RDONLY if self.sealed else os.O_RDWR | os.O_CREAT | os.O_APPEND
            self._fd = os.open(self.path, flags, 0o644)
        return self._fd

    @classmethod
    def create(cls, directory: Path, base_offset: int) -> WalSegment:
        seg = cls(directory, base_offset)
        seg._fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        for stale in (seg.index_path, seg.time_index_path):
            stale.unlink(missing_ok=True)
        return seg

    @classmethod
    def open_sealed(cls, directory: Path, base_offset: int) -> WalSegment:
        seg = cls(directory, base_offset)
        seg.sealed = True
        seg.size = os.stat(seg.path).st_size
        if not seg._load_indexes():
            # No usable index files means the segment was never sealed cleanly (a crash
            # right after a roll), so its tail may be torn just like an active segment's.
            seg._rebuild(verify_crc=True)
            seg._finish_time_index()
        return seg

    @classmethod
    def recover_active(cls, directory: Path, base_offset: int) -> WalSegment:
        """Open the last segment: check every batch's length and CRC, cut the file at the first
        bad one (a write torn by a crash) and rebuild the in-memory indexes."""
        seg = cls(directory, base_offset)
        seg.size = os.fstat(seg.fd).st_size
        seg._rebuild(verify_crc=True)
        # Index files saved by a clean close are stale as soon as we append; they are
        # written again when this segment is sealed.
        for stale in (seg.index_path, seg.time_index_path):
            stale.unlink(missing_ok=True)
        return seg

    def _rebuild(self, verify_crc: bool) -> None:
        self.offset_index = OffsetIndex()
        self.time_index = TimeIndex()
        self._bytes_since_index = 0
        self.next_offset = self.base_offset
        self.max_timestamp = self.max_timestamp_offset = -1
        self.first_timestamp = None
        valid_end = 0
        for pos, h in self._scan(0, verify_crc):
            self._track(pos, h.size, h.last_offset, h.max_timestamp)
            valid_end = pos + h.size
        if valid_end < self.size:
            log.warning(
                "%s: dropping %d bytes after offset %d at position %d (torn or corrupt tail)",
                self.path,
                self.size - valid_end,
                self.next_offset - 1,
                valid_end,
            )
            fd = os.open(self.path, os.O_RDWR)
            try:
                os.ftruncate(fd, valid_end)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.size = valid_end

    def _scan(self, start: int, verify_crc: bool) -> Iterator[tuple[int, BatchHeader]]:
        """Batches from `start` while they are whole, contiguous in offsets and (optionally)
        pass their CRC."""
        if self.size <= start:
            return
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            limit = min(self.size, len(mm))
            pos = start
            expected = None if start else self.base_offset
            while pos < limit:
                h = check_batch(mm, pos, limit, verify_crc)
                if h is None or (expected is not None and h.base_offset != expected):
                    return
                yield pos, h
                expected = h.next_offset
                pos += h.size

    def _load_indexes(self) -> bool:
        """Use the saved indexes of a sealed segment if they fit its file; then only the
        batches after the last index entry need reading."""
        try:
            oi = OffsetIndex.from_bytes(self.index_path.read_bytes(), self.size)
            ti_bytes = self.time_index_path.read_bytes()
        except FileNotFoundError:
            return False
        if oi is None:
            return False
        start = 0
        expected_last = None
        last = oi.last()
        if last is not None:
            rel, start = last
            expected_last = self.base_offset + rel
        ti = TimeIndex.from_bytes(ti_bytes, MAX_RELATIVE_OFFSET)
        if ti is None:
            return False
        end = start
        tail_max_ts, tail_max_off = -1, -1
        next_offset = self.base_offset
        for pos, h in self._scan(start, verify_crc=False):
            if pos == start and expected_last is not None and h.last_offset != expected_last:
                return False
            if h.max_timestamp > tail_max_ts:
                tail_max_ts, tail_max_off = h.max_timestamp, h.last_offset
            next_offset = h.next_offset
            end = pos + h.size
        if end != self.size:
            return False
        ti_last = ti.last()
        if ti_last is not None and ti_last[1] > next_offset - 1 - self.base_offset:
            return False
        self.offset_index, self.time_index, self.next_offset = oi, ti, next_offset
        if ti_last is not None:
            self.max_timestamp = ti_last[0]
            self.max_timestamp_offset = self.base_offset + ti_last[1]
        if tail_max_ts > self.max_timestamp:
            self.max_timestamp, self.max_timestamp_offset = tail_max_ts, tail_max_off
        return True

    def _track(self, position: int, size: int, last_offset: int, max_timestamp: int) -> None:
        if self.first_timestamp is None:
            self.first_timestamp = max_timestamp
        if max_timestamp > self.max_timestamp:
            self.max_timestamp, self.max_timestamp_offset = max_timestamp, last_offset
        if self._bytes_since_index > INDEX_INTERVAL_BYTES:
            self.offset_index.append(last_offset - self.base_offset, position)
            self.time_index.maybe_append(
                self.max_timestamp, self.max_timestamp_offset - self.base_offset
            )
            self._bytes_since_index = 0
        self._bytes_since_index += size
        self.next_offset = last_offset + 1

    def largest_timestamp(self) -> int:
        """What retention.ms measures from: the max timestamp, or, when no batch had one,
        the file's last write (as in Kafka), so records without a timestamp never look old."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        try:
            return os.stat(self.path).st_mtime_ns // 1_000_000
        except FileNotFoundError:
            return self.created_ms

    def roll_age(self, now_ms: int, incoming_ts: int) -> int:
        """How old the segment is for segment.ms: Kafka counts from the first batch's max
        timestamp, or from the segment's creation if that batch had none."""
        if self.first_timestamp is not None and self.first_timestamp >= 0:
            return incoming_ts - self.first_timestamp
        return now_ms - self.created_ms

    def append(self, data: bytes | bytearray | memoryview, batches: list[Appended]) -> None:
        """Write `data` (the batches, back to back) at the end of the file: page cache only,
        durability is the fsync scheduler's job. A failed write is cut back off."""
        fd = self.fd
        start = self.size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.ftruncate(fd, start)
            raise
        for b in batches:
            self._track(b.position, b.size, b.last_offset, b.max_timestamp)
        self.size = start + len(data)

    def _finish_time_index(self) -> None:
        if self.max_timestamp_offset >= 0:
            self.time_index.maybe_append(
                self.max_timestamp, self.max_timestamp_offset - self.base_offset
            )

    def seal(self) -> None:
        """Stop appending. The last time index entry then always names the max timestamp, so
        recovery can take it from the file."""
        self._finish_time_index()
        self.sealed = True

    def save_indexes(self) -> None:
        if self.deleted:
            return
        atomic_write(self.index_path, self.offset_index.to_bytes(), sync=False)
        atomic_write(self.time_index_path, self.time_index.to_bytes(), sync=False)

    def iter_headers(self, start: int, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
        """Headers of the stored batches from position `start`, reading in chunks."""
        fd = self.fd
        limit = self.size if end is None else end
        pos = start
        while pos < limit:
            chunk = os.pread(fd, min(_SCAN_CHUNK, limit - pos), pos)
            off = 0
            while off + HEADER_SIZE <= len(chunk):
                h = parse_header(chunk, off)
                if h.size < HEADER_SIZE or pos + off + h.size > limit:
                    return
                yield pos + off, h
                off += h.size
            if off == 0 and len(chunk) < HEADER_SIZE:
                return
            pos += off

    def locate(self, offset: int) -> tuple[int, BatchHeader] | None:
        """The batch holding `offset`, or the first one after it."""
        start = self.offset_index.lookup(max(offset - self.base_offset, 0))
        for pos, h in self.iter_headers(start):
            if h.last_offset >= offset:
                return pos, h
        return None

    def read(
        self, offset: int, max_bytes: int, stop_offset: int, first_whole: bool = True
    ) -> memoryview | None:
        """Whole batches from the one holding `offset`, below `stop_offset`, up to `max_bytes`
        except that, with `first_whole`, the first batch is always whole (KIP-74). One
        contiguous pread."""
        found = self.locate(offset)
        if found is None or found[1].base_offset >= stop_offset:
            return None
        first_pos, first = found
        if not first_whole and first.size > max_bytes:
            return None
        end = first_pos + first.size
        for pos, h in self.iter_headers(end):
            if h.base_offset >= stop_offset or pos + h.size - first_pos > max_bytes:
                break
            end = pos + h.size
        return memoryview(os.pread(self.fd, end - first_pos, first_pos))

    def find_timestamp(
        self, timestamp: int, min_offset: int, stop_offset: int
    ) -> BatchHeader | None:
        """First batch holding offsets in [min_offset, stop_offset) whose max timestamp is at
        least `timestamp`."""
        rel = self.time_index.lookup_before(timestamp)
        start = 0 if rel is None else self.offset_index.lookup(rel)
        if min_offset > self.base_offset:
            start = max(start, self.offset_index.lookup(min_offset - self.base_offset))
        for _pos, h in self.iter_headers(start):
            if h.base_offset >= stop_offset:
                return None
            if h.max_timestamp >= timestamp and h.last_offset >= min_offset:
                return h
        return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def delete(self) -> None:
        self.deleted = True
        self.close()
        remove_large(self.path)
        for p in (self.index_path, self.time_index_path):
            p.unlink(missing_ok=True)


def list_segment_bases(directory: Path) -> list[int]:
    bases = []
    for p in directory.glob("*.log"):
        try:
            bases.append(int(p.stem))
        except ValueError:
            continue
    return sorted(bases)


class Wal:
    """The ordered segments of one partition; the last one is the active segment."""

    def __init__(self, directory: Path, segments: list[WalSegment]) -> None:
        self.directory = directory
        self.segments = segments
        self.bases = [s.base_offset for s in segments]

    @classmethod
    def open(cls, directory: Path, initial_offset: int = 0) -> Wal:
        """Open (recovering) the segments in `directory`, creating the first one if none."""
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(directory)
        bases = list_segment_bases(directory)
        known = {segment_name(b, "") for b in bases}
        for p in [*directory.glob("*.index"), *directory.glob("*.timeindex")]:
            if p.stem not in known:
                p.unlink()  # left behind by a segment deleted while its indexes were saved
        if not bases:
            return cls(directory, [WalSegment.create(directory, initial_offset)])
        segments = [WalSegment.open_sealed(directory, b) for b in bases[:-1]]
        segments.append(WalSegment.recover_active(directory, bases[-1]))
        for prev, nxt in pairwise(segments):
            if prev.next_offset != nxt.base_offset:
                log.warning(
                    "%s: offsets %d..%d are missing between segments",
                    directory,
                    prev.next_offset,
                    nxt.base_offset - 1,
                )
        return cls(directory, segments)

    @property
    def active(self) -> WalSegment:
        return self.segments[-1]

    @property
    def next_offset(self) -> int:
        return self.segments[-1].next_offset

    def size_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def roll(self) -> WalSegment:
        """Seal the active segment and start a new one at the log end; returns the sealed one."""
        old = self.segments[-1]
        old.seal()
        new = WalSegment.create(self.directory, old.next_offset)
        self.segments.append(new)
        self.bases.append(new.base_offset)
        return old

    def segment_for(self, offset: int) -> int:
        """Index of the segment that holds `offset` (or the first one when it is below all)."""
        return max(bisect_right(self.bases, offset) - 1, 0)

    def delete_oldest(self, count: int) -> list[WalSegment]:
        """Drop the `count` oldest segments; the active one is never among them."""
        count = min(count, len(self.segments) - 1)
        gone = self.segments[:count]
        del self.segments[:count]
        del self.bases[:count]
        for seg in gone:
            seg.delete()
        return gone

    def close(self) -> None:
        for seg in self.segments:
            seg.close()

    def remove(self) -> None:
        for seg in self.segments:
            seg.delete()
        self.segments.clear()
        self.bases.clear()
