"""Batches without a timestamp (-1) in the WAL: the time index, retention, segment.ms rolls
and timestamp lookups must treat -1 as unknown, never as a very old time."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.storage.log.indexes import TimeIndex
from app.storage.log.timestamps import wal_max_timestamp, wal_offset_for_timestamp
from app.storage.log.wal import INDEX_INTERVAL_BYTES
from tests.unit.batchgen import decode_batches, joined, make_batch
from tests.unit.test_storage_log import append, open_log

NO_TS = -1
TEN_MINUTES = 600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def untimed(n: int, size: int = 300) -> bytes:
    return make_batch([b"%d:" % i + b"u" * size for i in range(n)], timestamp=NO_TS)


def test_time_index_ignores_unknown_timestamps() -> None:
    ti = TimeIndex()
    ti.maybe_append(NO_TS, 0)
    assert len(ti) == 0 and ti.last() is None
    ti.maybe_append(1000, 3)
    ti.maybe_append(NO_TS, 7)
    assert ti.last() == (1000, 3) and len(ti) == 1
    assert ti.lookup_before(1001) == 3 and ti.lookup_before(1000) is None


def test_time_index_file_with_a_negative_entry_is_rebuilt() -> None:
    ti = TimeIndex()
    ti.maybe_append(5, 0)
    data = b"\xff" * 8 + b"\x00" * 4 + ti.to_bytes()  # (-1, 0) first
    assert TimeIndex.from_bytes(data, 100) is None
    assert TimeIndex.from_bytes(ti.to_bytes(), 100) is not None


def test_untimed_batches_past_the_index_interval_are_appended(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    batches = [untimed(20) for _ in range(5)]
    assert len(batches[0]) > INDEX_INTERVAL_BYTES
    bases = [append(plog, b, now=now_ms()).base_offset for b in batches]
    assert bases == [0, 20, 40, 60, 80]
    seg = plog.wal.active
    assert len(seg.time_index) == 0 and len(seg.offset_index) >= 4
    assert seg.size == sum(len(b) for b in batches) == os.stat(seg.path).st_size
    plog._tail.clear()
    stored = joined(plog.read(0, 1 << 24) or [])
    assert [b.base_offset for b in decode_batches(stored)] == bases
    assert [stored[i + 8 : i + len(b)] for i, b in _spans(batches)] == [b[8:] for b in batches]
    plog.close()
    plog = open_log(tmp_path)  # recovery scans the same batches
    assert plog.log_end_offset == 100 and len(plog.wal.active.time_index) == 0
    plog.close()


def _spans(batches: list[bytes]) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    for b in batches:
        out.append((pos, b))
        pos += len(b)
    return out


def test_retention_keeps_recently_written_untimed_segments(tmp_path: Path) -> None:
    batch = untimed(1)
    configs = {"segment.bytes": str(2 * len(batch)), "retention.ms": str(TEN_MINUTES)}
    plog = open_log(tmp_path, configs)
    for _ in range(5):
        append(plog, untimed(1), now=now_ms())
    assert plog.wal.bases == [0, 2, 4]
    assert plog.apply_retention(now_ms()) == 0
    assert plog.log_start_offset == 0 and plog.wal.bases == [0, 2, 4]
    # An unknown max timestamp is the file's last modification, as in Kafka.
    old = time.time() - 2 * TEN_MINUTES / 1000
    os.utime(plog.wal.segments[0].path, (old, old))
    assert plog.apply_retention(now_ms()) == 2 * len(batch)
    assert plog.wal.bases == [2, 4] and plog.log_start_offset == 2
    plog.close()
    plog = open_log(tmp_path, configs)
    assert plog.apply_retention(now_ms()) == 0 and plog.log_start_offset == 2
    plog.close()


def test_a_known_timestamp_still_decides_retention(tmp_path: Path) -> None:
    configs = {"segment.bytes": "1000", "retention.ms": str(TEN_MINUTES)}
    plog = open_log(tmp_path, configs)
    old_ts = now_ms() - 2 * TEN_MINUTES
    append(plog, make_batch([b"a" * 400], timestamp=old_ts))
    append(plog, untimed(1, 400))
    append(plog, untimed(1, 400))
    assert plog.wal.bases == [0, 2]
    assert plog.wal.segments[0].max_timestamp == old_ts
    assert plog.apply_retention(now_ms()) > 0
    assert plog.wal.bases == [2]
    plog.close()


def test_untimed_first_batch_does_not_roll_every_timed_append(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"segment.ms": "60000"})
    start = now_ms()
    append(plog, untimed(1), now=start)
    append(plog, make_batch([b"timed"], timestamp=start), now=start)
    append(plog, make_batch([b"timed"], timestamp=start + 1), now=start + 1)
    assert plog.wal.bases == [0]
    # segment.ms then counts from when the segment was created.
    append(plog, make_batch([b"timed"], timestamp=start + 2), now=start + 61_000)
    assert plog.wal.bases == [0, 3]
    plog.close()


def test_timestamp_lookups_skip_untimed_records(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    append(plog, untimed(3))
    assert wal_max_timestamp(plog) == (-1, -1)
    for ts in (0, 1, NO_TS, -7, now_ms()):
        assert wal_offset_for_timestamp(plog, ts) is None
    append(plog, make_batch([b"x", b"y"], timestamp=5000))
    append(plog, untimed(2))
    assert wal_offset_for_timestamp(plog, 0) == (3, 5000)
    assert wal_offset_for_timestamp(plog, -7) == (3, 5000)
    assert wal_offset_for_timestamp(plog, 5001) is None
    assert wal_max_timestamp(plog) == (5000, 4)
    plog.close()


def test_index_files_of_a_sealed_untimed_segment_load(tmp_path: Path) -> None:
    configs = {"segment.bytes": str(3 * len(untimed(20)))}
    plog = open_log(tmp_path, configs)
    for _ in range(7):
        append(plog, untimed(20))
    assert len(plog.wal.segments) >= 3
    plog.close()
    sealed = plog.wal.segments[0]
    assert sealed.time_index_path.read_bytes() == b""
    plog = open_log(tmp_path, configs)
    assert plog.log_end_offset == 140
    assert all(s.max_timestamp == -1 for s in plog.wal.segments)
    assert plog.apply_retention(now_ms()) == 0
    plog.close()


def test_max_timestamp_above_an_offset_looks_inside_the_segment(tmp_path: Path) -> None:
    """Offsets below the cleaner's end are served by cleaned segments, where the WAL
    segment's maximum may be gone: the maximum at or after that offset is what counts."""
    plog = open_log(tmp_path)
    append(plog, make_batch([b"a"], timestamp=5000))  # 0: the segment's maximum
    append(plog, make_batch([b"b"], timestamp=3000))  # 1
    append(plog, make_batch([b"c"], timestamp=4000))  # 2
    assert wal_max_timestamp(plog) == (5000, 0)
    assert wal_max_timestamp(plog, 1) == (4000, 2)
    assert wal_max_timestamp(plog, 3) == (-1, -1)
    plog.close()
