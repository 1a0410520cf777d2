from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from app.storage.errors import OffsetOutOfRange, RecordTooLarge, StorageError
from app.storage.log.batch import parse_header, validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.memtail import MemTailBudget
from app.storage.log.partition import AppendResult, PartitionLog
from app.storage.log.timestamps import wal_max_timestamp, wal_offset_for_timestamp
from app.storage.log.wal import INDEX_INTERVAL_BYTES
from tests.unit.batchgen import Record, decode_batches, joined, make_batch


def open_log(
    root: Path,
    configs: dict[str, str] | None = None,
    mode: str = "always",
    memtail: int = 1 << 20,
) -> PartitionLog:
    return PartitionLog(
        root / "t-0", "t", 0, configs or {}, FsyncScheduler(mode), MemTailBudget(memtail)
    )


def append(plog: PartitionLog, *batches: bytes, now: int = 5_000_000) -> AppendResult:
    data = b"".join(batches)
    return plog.append(data, validate_batches(data), now)


def values(chunks: list[bytes | memoryview]) -> list[bytes | None]:
    return [r.value for b in decode_batches(joined(chunks)) for r in b.records]


def same_except_base_offset(stored: bytes, produced: bytes) -> bool:
    return stored[8:] == produced[8:]


def test_offsets_assigned_and_bytes_verbatim(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produced = [make_batch([b"a", b"b", b"c"]), make_batch([b"d"]), make_batch([b"e", b"f"])]
    r1 = append(plog, produced[0])
    r2 = append(plog, produced[1], produced[2])
    assert (r1.base_offset, r1.last_offset, r1.log_append_time_ms) == (0, 2, -1)
    assert (r2.base_offset, r2.last_offset) == (3, 5)
    assert plog.log_end_offset == plog.high_watermark == 6

    def check(chunks: list[bytes | memoryview]) -> None:
        stored = joined(chunks)
        batches = decode_batches(stored)
        assert [b.base_offset for b in batches] == [0, 3, 4]
        assert all(b.crc_ok for b in batches)
        pos = 0
        for b, p in zip(batches, produced, strict=True):
            assert same_except_base_offset(stored[pos : pos + b.size], p)
            pos += b.size
        assert [r.offset for b in batches for r in b.records] == list(range(6))

    check(plog.read(0, 1 << 20))  # from the memory tail
    plog._tail.clear()
    check(plog.read(0, 1 << 20))  # from the WAL file
    plog.close()
    plog = open_log(tmp_path)
    assert plog.log_end_offset == plog.high_watermark == 6
    check(plog.read(0, 1 << 20))  # after reopen
    assert append(plog, make_batch([b"g"])).base_offset == 6
    assert values(plog.read(6, 100))[-1] == b"g"
    plog.close()


def test_read_from_middle_and_eviction(tmp_path: Path) -> None:
    # A budget of ~3 batches: older ones are only on disk.
    batch = make_batch([b"x" * 200])
    plog = open_log(tmp_path, memtail=3 * len(batch))
    for _ in range(10):
        append(plog, batch)
    assert plog._tail.count == 3
    assert plog._tail.first_offset == 7
    for offset in (0, 5, 7, 9):
        chunks = plog.read(offset, 1 << 20)
        assert decode_batches(joined(chunks))[0].base_offset == offset
        assert len(decode_batches(joined(chunks))) == 10 - offset
    plog.close()


def test_read_limits_kip74(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    small = make_batch([b"s" * 100])
    big = make_batch([b"B" * 5000])
    append(plog, small)
    append(plog, big)
    append(plog, small)
    append(plog, small)
    for cold in (False, True):
        if cold:
            plog._tail.clear()
        # The first batch is returned whole even when larger than max_bytes.
        got = decode_batches(joined(plog.read(1, 10)))
        assert [b.base_offset for b in got] == [1]
        got = decode_batches(joined(plog.read(0, len(small) + 10)))
        assert [b.base_offset for b in got] == [0]
        got = decode_batches(joined(plog.read(2, 2 * len(small))))
        assert [b.base_offset for b in got] == [2, 3]
        assert plog.read(4, 100) == []
    plog.close()


def test_offset_out_of_range(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    append(plog, make_batch([b"a", b"b"]))
    with pytest.raises(OffsetOutOfRange):
        plog.read(3, 100)
    with pytest.raises(OffsetOutOfRange):
        plog.read(-1, 100)
    assert plog.read(2, 100) == []
    # An offset inside a batch returns that whole batch.
    assert decode_batches(joined(plog.read(1, 100)))[0].base_offset == 0
    plog.close()


def test_record_too_large(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"max.message.bytes": "500"})
    with pytest.raises(RecordTooLarge):
        append(plog, make_batch([b"x" * 600]))
    assert plog.log_end_offset == 0
    append(plog, make_batch([b"x" * 100]))
    plog.update_config({"max.message.bytes": "10000"})
    append(plog, make_batch([b"x" * 600]))
    assert plog.log_end_offset == 2
    plog.close()


def test_batch_larger_than_segment_maps_to_record_list_too_large(tmp_path: Path) -> None:
    from app.broker.errors import MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, code_for
    from app.storage.errors import BatchLargerThanSegment

    plog = open_log(tmp_path, {"segment.bytes": "400", "max.message.bytes": "100000"})
    with pytest.raises(BatchLargerThanSegment) as exc:
        append(plog, make_batch([b"x" * 600]))
    assert code_for(exc.value) == RECORD_LIST_TOO_LARGE
    assert code_for(RecordTooLarge(600, 500)) == MESSAGE_TOO_LARGE
    assert plog.log_end_offset == 0
    plog.close()


def test_log_append_time(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"message.timestamp.type": "LogAppendTime"})
    produced = make_batch([Record(b"a", timestamp=10), Record(b"b", timestamp=20)])
    result = append(plog, produced, now=1_234_567)
    assert result.log_append_time_ms == 1_234_567
    for cold in (False, True):
        if cold:
            plog.close()
            plog = open_log(tmp_path, {"message.timestamp.type": "LogAppendTime"})
        stored = joined(plog.read(0, 1 << 20))
        b = decode_batches(stored)[0]
        assert b.crc_ok
        assert b.attributes & 8
        assert b.max_timestamp == 1_234_567
        assert [r.timestamp for r in b.records] == [1_234_567, 1_234_567]
        validate_batches(stored)
    assert wal_max_timestamp(plog) == (1_234_567, 1)
    plog.close()


def test_segment_roll_by_size_and_indexes(tmp_path: Path) -> None:
    batch = make_batch([b"v" * 1000])
    plog = open_log(tmp_path, {"segment.bytes": str(20 * len(batch))}, memtail=0)
    for i in range(100):
        append(plog, make_batch([b"v" * 1000], timestamp=1_000 + i))
    logs = sorted(p.name for p in (tmp_path / "t-0").glob("*.log"))
    assert logs[:3] == [f"{0:020d}.log", f"{20:020d}.log", f"{40:020d}.log"]
    assert len(logs) == 5
    # Sealed segments got index files; the active one only on close.
    assert (tmp_path / "t-0" / f"{0:020d}.index").stat().st_size > 0
    assert (tmp_path / "t-0" / f"{0:020d}.timeindex").stat().st_size > 0
    for offset in (0, 19, 20, 21, 57, 99):
        got = decode_batches(joined(plog.read(offset, 3000)))
        assert [b.base_offset for b in got] == [offset, offset + 1][: 100 - offset]
    assert wal_offset_for_timestamp(plog, 1_055) == (55, 1_055)
    plog.close()
    # Reopen: sealed segments come back from their index files.
    plog = open_log(tmp_path, {"segment.bytes": str(20 * len(batch))}, memtail=0)
    seg = plog._wal.segments[1]
    assert len(seg.offset_index) > 0
    assert seg.next_offset == 40 and seg.max_timestamp == 1_039
    assert wal_offset_for_timestamp(plog, 1_021) == (21, 1_021)
    assert plog.log_end_offset == 100
    # Damaged index files are ignored and rebuilt.
    (tmp_path / "t-0" / f"{20:020d}.index").write_bytes(b"\x00\x00\x00\x01\xff\xff\xff\xf0")
    plog.close()
    (tmp_path / "t-0" / f"{20:020d}.index").write_bytes(b"\x00\x00\x00\x01\xff\xff\xff\xf0")
    plog = open_log(tmp_path, {"segment.bytes": str(20 * len(batch))}, memtail=0)
    assert [b.base_offset for b in decode_batches(joined(plog.read(33, 1)))] == [33]
    plog.close()


def test_segment_roll_by_time(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"segment.ms": "1000"})
    append(plog, make_batch([b"a"], timestamp=10_000))
    append(plog, make_batch([b"b"], timestamp=10_500))
    append(plog, make_batch([b"c"], timestamp=11_001))
    assert plog._wal.bases == [0, 2]
    plog.close()


def test_offset_for_timestamp_and_max(tmp_path: Path) -> None:
    plog = open_log(tmp_path, memtail=0)
    assert wal_offset_for_timestamp(plog, 0) is None
    assert wal_max_timestamp(plog) == (-1, -1)
    # Enough data for several index entries; timestamps not monotonic across batches.
    base = [100, 200, 150, 300, 300, 250, 400] * 20
    stamps = [ts * 10 + i for i, ts in enumerate(base)]
    for ts in stamps:
        append(plog, make_batch([Record(b"p" * 500, timestamp=ts)]))
    assert len(plog._wal.active.time_index) > 1
    for target in (0, 1000, 2000, 2500, 3001, 3500, max(stamps)):
        first = next(i for i, ts in enumerate(stamps) if ts >= target)
        assert wal_offset_for_timestamp(plog, target) == (first, stamps[first]), target
    assert wal_offset_for_timestamp(plog, max(stamps) + 1) is None
    plog.delete_records(50)
    assert wal_offset_for_timestamp(plog, 0) == (50, stamps[50])
    assert wal_max_timestamp(plog) == (max(stamps), stamps.index(max(stamps)))
    plog.close()


def test_torn_tail_truncated_on_reopen(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plog = open_log(tmp_path)
    for i in range(5):
        append(plog, make_batch([f"v{i}".encode()]))
    plog.close()
    seg_path = tmp_path / "t-0" / f"{0:020d}.log"
    good_size = seg_path.stat().st_size
    half = make_batch([b"z" * 100])[:50]
    with open(seg_path, "ab") as f:
        f.write(half)
    with caplog.at_level(logging.WARNING):
        plog = open_log(tmp_path)
    assert "dropping 50 bytes" in caplog.text
    assert seg_path.stat().st_size == good_size
    assert plog.log_end_offset == 5
    assert values(plog.read(0, 1 << 20)) == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert append(plog, make_batch([b"v5"])).base_offset == 5
    plog._tail.clear()
    assert values(plog.read(0, 1 << 20))[-1] == b"v5"
    plog.close()


def test_corrupt_batch_in_tail_is_cut(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    for i in range(4):
        append(plog, make_batch([f"v{i}".encode() * 10]))
    plog.close()
    seg_path = tmp_path / "t-0" / f"{0:020d}.log"
    data = bytearray(seg_path.read_bytes())
    third = sum(parse_header(data, 0).size for _ in range(1)) * 2
    data[third + 70] ^= 0xFF  # a flipped bit inside the third batch's records
    seg_path.write_bytes(bytes(data))
    plog = open_log(tmp_path)
    assert plog.log_end_offset == 2
    plog.close()


def test_kill_without_close_keeps_acknowledged_data(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"segment.bytes": "2000"})
    for i in range(30):
        append(plog, make_batch([f"{i}".encode() * 50]))
    # No close(): the process died. Reopen from what is on disk.
    plog2 = open_log(tmp_path, {"segment.bytes": "2000"})
    assert plog2.log_end_offset == 30
    assert values(plog2.read(0, 1 << 20))[0] == b"0" * 50
    assert values(plog2.read(29, 1 << 20)) == [b"29" * 50]
    plog2.close()


def test_delete_records(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"segment.bytes": "1000"})
    for _ in range(20):
        append(plog, make_batch([b"r" * 300]))
    nsegs = len(plog._wal.segments)
    with pytest.raises(OffsetOutOfRange):
        plog.delete_records(21)
    assert plog.delete_records(5) == 5
    assert plog.log_start_offset == 5
    assert len(plog._wal.segments) < nsegs
    with pytest.raises(OffsetOutOfRange):
        plog.read(4, 100)
    assert decode_batches(joined(plog.read(5, 1)))[0].base_offset == 5
    assert plog.delete_records(3) == 5  # never moves backwards
    plog.close()
    plog = open_log(tmp_path, {"segment.bytes": "1000"})
    assert plog.log_start_offset == 5
    # Deleting everything rolls the active segment away and keeps the log end.
    assert plog.delete_records(-1) == 20
    assert plog._wal.bases == [20]
    assert plog.read(20, 100) == []
    assert append(plog, make_batch([b"n"])).base_offset == 20
    plog.close()


def test_retention_by_bytes(tmp_path: Path) -> None:
    batch = make_batch([b"r" * 300])
    configs = {"segment.bytes": str(3 * len(batch)), "retention.ms": "-1"}
    plog = open_log(tmp_path, configs)
    for _ in range(20):
        append(plog, batch)
    assert plog.apply_retention(10**13) == 0
    plog.update_config({**configs, "retention.bytes": str(7 * len(batch))})
    deleted = plog.apply_retention(0)
    assert deleted == 12 * len(batch)
    assert plog.size_bytes() == 8 * len(batch)
    assert plog.log_start_offset == 12
    assert values(plog.read(12, 1)) == [b"r" * 300]
    plog.close()


def test_retention_by_time(tmp_path: Path) -> None:
    batch_size = len(make_batch([b"t" * 100]))
    configs = {"segment.bytes": str(2 * batch_size), "retention.ms": "1000"}
    plog = open_log(tmp_path, configs)
    for i in range(6):
        append(plog, make_batch([b"t" * 100], timestamp=10_000 + i * 1000))
    assert plog._wal.bases == [0, 2, 4]
    # Segments whose newest batch is more than 1 s older than now go; the active one stays.
    assert plog.apply_retention(13_500) == 2 * batch_size
    assert plog._wal.bases == [2, 4]
    # Everything expired: the active segment is rolled, then deleted too.
    assert plog.apply_retention(100_000) == 4 * batch_size
    assert plog._wal.bases == [6]
    assert plog.log_start_offset == plog.log_end_offset == 6
    plog.update_config({**configs, "cleanup.policy": "compact"})
    append(plog, make_batch([b"t"], timestamp=1))
    assert plog.apply_retention(10**13) == 0
    plog.close()


def test_closed_log_rejects_use(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    append(plog, make_batch([b"a"]))
    plog.close()
    with pytest.raises(StorageError):
        append(plog, make_batch([b"b"]))
    plog.remove()
    assert not (tmp_path / "t-0").exists()


def test_sealed_segment_torn_rebuilds(tmp_path: Path) -> None:
    batch = make_batch([b"q" * 100])
    plog = open_log(tmp_path, {"segment.bytes": str(4 * len(batch))})
    for _ in range(10):
        append(plog, batch)
    plog.close()
    first = tmp_path / "t-0" / f"{0:020d}.log"
    (tmp_path / "t-0" / f"{0:020d}.index").unlink()
    with open(first, "r+b") as f:
        f.truncate(os.path.getsize(first) - 10)
    plog = open_log(tmp_path, {"segment.bytes": str(4 * len(batch))})
    assert plog._wal.segments[0].next_offset == 3
    assert plog.log_end_offset == 10
    assert values(plog.read(4, 1)) == [b"q" * 100]
    plog.close()


def test_index_interval(tmp_path: Path) -> None:
    plog = open_log(tmp_path, memtail=0)
    batch = make_batch([b"i" * 1000])
    for _ in range(50):
        append(plog, batch)
    expected_entries = (50 * len(batch)) // (INDEX_INTERVAL_BYTES + len(batch))
    assert abs(len(plog._wal.active.offset_index) - expected_entries) <= 2
    plog.close()


def test_offset_for_timestamp_is_exact_inside_compressed_batches(tmp_path) -> None:
    """A batch spanning several timestamps answers with the exact record offset."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from app.storage.log.batch import validate_batches
    from app.storage.log.fsync import FsyncScheduler
    from app.storage.log.memtail import MemTailBudget
    from app.storage.log.partition import PartitionLog

    plog = PartitionLog(
        tmp_path / "t-0", "t", 0, {}, FsyncScheduler("never", 1000), MemTailBudget(0)
    )
    for codec in (0, 1, 2, 3, 4):
        b = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 1 << 20)
        base = 10_000 * (codec + 1)
        for i, delta in enumerate([0, 10, 5, 20]):
            b.append(i, base + delta, None, b"v", [])
        data = bytes(b.build())
        plog.append(data, validate_batches(data), 0)
    assert wal_offset_for_timestamp(plog, 10_006) == (1, 10_010)
    assert wal_offset_for_timestamp(plog, 10_011) == (3, 10_020)
    assert wal_offset_for_timestamp(plog, 30_015) == (11, 30_020)
    assert wal_offset_for_timestamp(plog, 50_000) == (16, 50_000)
    assert wal_offset_for_timestamp(plog, 50_021) is None
    plog.close()
