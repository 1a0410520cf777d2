"""The cleaner's CPU job over real sealed segments (real PartitionLog, real indexer, real
Tantivy): the latest record per key with its offset, tombstones and KIP-534's delete horizon,
aborted transactions and markers, a full offset map, and rewritten segments that verify,
pass CRC checks, keep their source's range and index exactly what they keep."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import pytest
from kafka.record.default_records import DefaultRecordBatch

from app.config import IndexConfig
from app.storage.clean import CleanedSegment, CleanJob, CleanResult, SourceSegment, run_clean
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.log.batch import validate_batches
from app.storage.log.partition import PartitionLog
from app.storage.log.records import iter_records
from app.storage.log.txn import COMMIT, control_type
from app.storage.segments.format import extract_tantivy, read_manifest, verify_segment
from app.storage.segments.registry import Registry, SegmentRow
from tests.unit.batchgen import Record, decode_batches, make_batch
from tests.unit.test_storage_segments import _log, _offsets, _run, poison_batch

HOUR = 3_600_000
# (offset, key, value) of a data record; ("marker", pid, commit) of a control batch.
Entry = tuple[Any, ...]


class Partition:
    """A partition whose batches become sealed segments when `seal` is called."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.plog: PartitionLog = _log(tmp_path)
        self.registry = Registry(tmp_path / "registry.sqlite")
        cfg = WorkerConfig(tmp_path, IndexConfig(segment_max_records=10**6))
        self.pi = PartitionIndexer(cfg, self.registry, "t", 0, 0)
        self.seq: dict[int, int] = {}

    def put(
        self,
        *records: tuple[str | None, str | None],
        ts: int = 1_000_000,
        pid: int = -1,
        codec: str = "none",
    ) -> int:
        """One batch of (key, value) records; transactional when `pid` is given. Returns
        its base offset."""
        recs = [
            Record(None if v is None else v.encode(), key=None if k is None else k.encode())
            for k, v in records
        ]
        kw: dict[str, Any] = {}
        if pid >= 0:
            seq = self.seq.get(pid, 0)
            self.seq[pid] = seq + len(recs)
            kw = dict(producer_id=pid, producer_epoch=0, base_sequence=seq, transactional=True)
        data = make_batch(recs, timestamp=ts, compression=codec, **kw)
        return self.plog.append(data, validate_batches(data), int(time.time() * 1000)).base_offset

    def marker(self, pid: int, commit: bool, ts: int = 1_000_000) -> int:
        return self.plog.append_marker(pid, 0, commit, 0, ts).base_offset

    def seal(self) -> None:
        _run(self.pi, self.plog)
        self.pi.seal(wait=True)

    def sources(self) -> tuple[SourceSegment, ...]:
        return tuple(
            SourceSegment(
                r.object_key,
                self.dir / "segments" / r.object_key,
                r.base_offset,
                r.last_offset,
                r.max_timestamp,
            )
            for r in self.registry.segments("t", 0)
        )

    def clean(self, dirty_from: int = 0, **kw: Any) -> CleanResult:
        job = CleanJob(
            topic="t",
            partition=0,
            sources=kw.pop("sources", None) or self.sources(),
            dirty_from=dirty_from,
            now_ms=kw.pop("now_ms", 1_000_000 + HOUR),
            delete_retention_ms=kw.pop("delete_retention_ms", 24 * HOUR),
            aborted=tuple(self.plog.aborted_transactions(0, self.plog.log_end_offset)),
            map_entries=kw.pop("map_entries", 1000),
            out_dir=self.dir / "segments",
        )
        assert not kw
        return run_clean(job)

    def close(self) -> None:
        self.pi.close()
        self.plog.close()
        self.registry.close()


@pytest.fixture
def part(tmp_path: Path) -> Any:
    p = Partition(tmp_path)
    yield p
    p.close()


def entries(path: Path) -> list[Entry]:
    """What a segment file's batch section holds, every batch CRC-checked."""
    manifest = read_manifest(path)
    sec = manifest["sections"]["batches"]
    data = path.read_bytes()[sec["offset"] : sec["offset"] + sec["size"]]
    out: list[Entry] = []
    for start, end, h in validate_batches(data) if data else []:
        batch = data[start:end]
        if h.is_control:
            out.append(("marker", h.producer_id, control_type(batch) == COMMIT))
            continue
        for r in iter_records(batch):
            key = None if r.key is None else r.key.decode()
            out.append((r.offset, key, None if r.value is None else r.value.decode()))
    return out


def state(part: Partition, result: CleanResult) -> list[Entry]:
    """The partition's records after the clean: cleaned copies, else the sources."""
    by_key = {s.source_key: s for s in result.segments}
    out: list[Entry] = []
    for src in part.sources():
        seg = by_key.get(src.key)
        out += entries(src.path if seg is None or seg.path is None else seg.path)
    return out


def check_rewritten(part: Partition, seg: CleanedSegment, src: SourceSegment) -> list[Entry]:
    """A rewritten segment verifies, keeps its source's range, and its index holds exactly
    its data records; returns its entries."""
    assert seg.path is not None and seg.manifest is not None
    assert seg.path.relative_to(part.dir / "segments").as_posix() != src.key
    manifest = verify_segment(seg.path)
    assert (manifest["base_offset"], manifest["last_offset"]) == (src.base_offset, src.last_offset)
    assert {k: v for k, v in seg.manifest.items() if k != "size"} == {
        k: v for k, v in manifest.items() if k != "size"
    }
    row = SegmentRow.sealed(seg.path.relative_to(part.dir / "segments").as_posix(), manifest)
    assert (row.base_offset, row.last_offset) == (src.base_offset, src.last_offset)
    got = entries(seg.path)
    assert manifest["records"] == len(got)
    data_offsets = [e[0] for e in got if e[0] != "marker"]
    assert manifest["docs"] == len(data_offsets)
    dest = part.dir / "extracted" / seg.path.name
    extract_tantivy(seg.path, manifest, dest)
    assert _offsets(dest) == data_offsets
    return got


def latest_per_key(records: list[Entry]) -> list[Entry]:
    last = {e[1]: e[0] for e in records}
    return [e for e in records if last[e[1]] == e[0]]


def test_latest_record_per_key_is_kept_with_its_offset(part: Partition) -> None:
    written: list[Entry] = []
    for n in range(3):
        for b in range(4):
            recs = [(f"k{(n * 7 + b * 3 + i) % 6}", f"v{n}-{b}-{i}") for i in range(5)]
            base = part.put(*recs, codec="gzip" if b % 2 else "none")
            written += [(base + i, k, v) for i, (k, v) in enumerate(recs)]
        part.seal()
    part.put(("u1", "only"), ("u2", "once"))  # a last segment of keys seen nowhere else
    part.seal()
    written += [(60, "u1", "only"), (61, "u2", "once")]
    sources = part.sources()
    result = part.clean()

    assert [s.source_key for s in result.segments] == [s.key for s in sources]
    assert result.cleaned_end == 62
    assert state(part, result) == latest_per_key(written)
    for seg, src in zip(result.segments[:3], sources[:3], strict=True):
        check_rewritten(part, seg, src)
    assert result.segments[3] == CleanedSegment(sources[3].key, None, None)
    assert (result.records_kept, result.records_removed) == (8, 54)
    assert result.bytes_read == sum(
        read_manifest(s.path)["sections"]["batches"]["size"] for s in sources
    )
    assert 0 < result.bytes_written < result.bytes_read
    # The index answers by key: only the kept record of k3.
    kept_k3 = [e[0] for e in latest_per_key(written) if e[1] == "k3"]
    seg = next(
        s for s in result.segments if s.path and any(e[0] in kept_k3 for e in entries(s.path))
    )
    assert seg.path is not None and seg.manifest is not None
    dest = part.dir / "k3"
    extract_tantivy(seg.path, seg.manifest, dest)
    assert _offsets(dest, "key:k3") == kept_k3
    # Cleaning the cleaned log again changes nothing.
    again = [
        SourceSegment(
            s.key,
            s.path if c.path is None else c.path,
            s.base_offset,
            s.last_offset,
            s.max_timestamp,
        )
        for s, c in zip(sources, result.segments, strict=True)
    ]
    second = part.clean(dirty_from=62, sources=tuple(again))
    assert all(s.path is None for s in second.segments) and second.records_removed == 0


def test_a_segment_whose_records_are_all_superseded_is_left_empty(part: Partition) -> None:
    part.put(("a", "1"), ("b", "1"))
    part.put(("a", "2"))
    part.seal()
    part.put(("a", "3"), ("b", "3"))
    part.seal()
    sources = part.sources()
    result = part.clean()
    first = result.segments[0]
    assert check_rewritten(part, first, sources[0]) == []
    assert first.manifest is not None
    assert (first.manifest["batches"], first.manifest["records"], first.manifest["docs"]) == (
        0,
        0,
        0,
    )
    assert result.segments[1].path is None
    assert state(part, result) == [(3, "a", "3"), (4, "b", "3")]


def raw_batches(path: Path) -> list[bytes]:
    """A segment file's batches, CRC-checked."""
    sec = read_manifest(path)["sections"]["batches"]
    data = path.read_bytes()[sec["offset"] : sec["offset"] + sec["size"]]
    return [data[s:e] for s, e, _h in validate_batches(data)] if data else []


def contents(current: tuple[SourceSegment, ...]) -> list[Entry]:
    return [e for s in current for e in entries(s.path)]


def test_tombstones_stay_until_the_horizon_their_first_clean_sets(part: Partition) -> None:
    """KIP-534: a tombstone's own timestamp does not count (MirrorMaker or a backfill may
    have stamped it long ago, it would go at its first clean, before a lagging consumer saw
    it). The first run that keeps it writes its batch with the delete horizon now +
    delete.retention.ms, record timestamps unchanged; it goes at the first run at or after
    that horizon, whatever delete.retention.ms says by then."""
    part.put(("a", "1"), ("b", "1"), ("c", "1"))
    part.seal()
    part.put(("a", None), ts=1_000)  # two weeks before the clean
    part.put(("b", None), ts=-1)
    part.put(("c", "2"), ts=2_000_000)
    part.seal()
    sources = part.sources()
    now = sources[1].max_timestamp + 14 * 24 * HOUR
    horizon = now + HOUR

    first = part.clean(now_ms=now, delete_retention_ms=HOUR)
    assert first.cleaned_end == 6
    current = cleaned(sources, first)
    assert contents(current) == [(3, "a", None), (4, "b", None), (5, "c", "2")]
    seg = first.segments[1]
    assert seg.manifest is not None
    check_rewritten(part, seg, sources[1])
    # The horizon is no record's time: the segment's time range is its records'.
    assert seg.manifest["max_timestamp"] == sources[1].max_timestamp
    stamped = raw_batches(current[1].path)
    assert [(b[:8], b[21:23]) for b in stamped] == [
        (struct.pack(">q", o), struct.pack(">h", a)) for o, a in ((3, 0x40), (4, 0x40), (5, 0))
    ]
    for raw, ts in zip(stamped, (1_000, -1, 2_000_000), strict=True):
        (got,) = decode_batches(raw)
        assert got.crc_ok and [r.timestamp for r in got.records] == [ts]
        assert got.base_timestamp == (horizon if ts != 2_000_000 else ts)
        assert [r.timestamp for r in DefaultRecordBatch(raw)] == [ts]
        assert [r.timestamp for r in iter_records(raw)] == [ts]

    before = part.clean(dirty_from=6, sources=current, now_ms=horizon - 1)
    assert all(s.path is None for s in before.segments) and before.records_removed == 0
    after = part.clean(
        dirty_from=6, sources=current, now_ms=horizon, delete_retention_ms=100 * HOUR
    )
    assert contents(cleaned(current, after)) == [(5, "c", "2")]
    check_rewritten(part, after.segments[1], current[1])


def test_records_without_key_are_dropped_as_kafka_does(part: Partition) -> None:
    part.put((None, "old"), ("a", "1"), (None, "older"))
    part.seal()
    result = part.clean()
    assert state(part, result) == [(1, "a", "1")]


def test_aborted_transactions_are_dropped_and_never_shadow_committed_records(
    part: Partition,
) -> None:
    part.put(("a", "committed"), ("b", "plain"))
    part.put(("a", "aborted"), ("c", "aborted"), pid=1)
    part.put(("d", "in-commit"), pid=2)
    part.marker(1, commit=False)
    part.marker(2, commit=True)
    part.seal()
    result = part.clean()
    assert state(part, result) == [
        (0, "a", "committed"),
        (1, "b", "plain"),
        (4, "d", "in-commit"),
        ("marker", 1, False),
        ("marker", 2, True),
    ]
    check_rewritten(part, result.segments[0], part.sources()[0])


def test_markers_stay_while_their_transaction_has_records_or_before_their_horizon(
    part: Partition,
) -> None:
    part.put(("a", "t1"), ("b", "t1"), pid=1)
    part.marker(1, commit=True)  # offset 2: its records are superseded below
    part.put(("c", "t2"), pid=1)
    part.marker(1, commit=True)  # offset 4: its record stays
    part.put(("x", "t3"), pid=2)
    part.marker(2, commit=False)  # offset 6: aborted
    part.seal()
    part.put(("a", "new"), ("b", "new"), ts=5_000_000)
    part.seal()
    sources = part.sources()
    markers = [("marker", 1, True), ("marker", 1, True), ("marker", 2, False)]

    # However old, a marker the run would drop first gets a horizon: now + retention.
    late = part.clean(now_ms=1_000_000 + 100 * HOUR, delete_retention_ms=2 * HOUR)
    assert [e for e in state(part, late) if e[0] == "marker"] == markers
    first = part.clean(now_ms=1_000_000 + HOUR, delete_retention_ms=2 * HOUR)
    assert [e for e in state(part, first) if e[0] == "marker"] == markers
    current = cleaned(sources, first)
    heads = {b[:8]: b for b in raw_batches(current[0].path)}
    assert {o: heads[struct.pack(">q", o)][21:23] for o in (2, 4, 6)} == {
        2: struct.pack(">h", 0x10 | 0x20 | 0x40),  # the only one that may go
        4: struct.pack(">h", 0x10 | 0x20),
        6: struct.pack(">h", 0x10 | 0x20),
    }
    (marker,) = decode_batches(heads[struct.pack(">q", 2)])
    assert marker.base_timestamp == 1_000_000 + 3 * HOUR
    assert [r.timestamp for r in marker.records] == [1_000_000]

    before = part.clean(dirty_from=9, sources=current, now_ms=1_000_000 + 3 * HOUR - 1)
    assert all(s.path is None for s in before.segments)
    old = part.clean(dirty_from=9, sources=current, now_ms=1_000_000 + 3 * HOUR)
    assert contents(cleaned(current, old)) == [
        (3, "c", "t2"),
        ("marker", 1, True),
        ("marker", 2, False),
        (7, "a", "new"),
        (8, "b", "new"),
    ]
    check_rewritten(part, old.segments[0], current[0])


def cleaned(sources: tuple[SourceSegment, ...], result: CleanResult) -> tuple[SourceSegment, ...]:
    """The partition's segments once the service has swapped in the run's results."""
    paths = {c.source_key: c.path for c in result.segments if c.path is not None}
    return tuple(
        SourceSegment(
            s.key, paths.get(s.key, s.path), s.base_offset, s.last_offset, s.max_timestamp
        )
        for s in sources
    )


def test_a_full_offset_map_ends_the_run_and_the_next_run_finishes(part: Partition) -> None:
    written: list[Entry] = []
    for n in range(4):
        recs = [(f"k{n * 3 + i}", f"v{n}") for i in range(4)]  # 4 keys, 1 shared
        base = part.put(*recs)
        written += [(base + i, k, v) for i, (k, v) in enumerate(recs)]
        part.seal()
    sources = part.sources()
    # Segments 0 and 1 hold 7 keys and fit; segment 2's second new key does not.
    first = part.clean(map_entries=7)
    assert first.cleaned_end == sources[1].last_offset + 1 == 8
    assert len(first.segments) == 2
    # k6@7 goes too: the map holds k6@8 from the part of segment 2 it mapped.
    drop = {3, 7}
    assert state(part, first) == [e for e in written if e[0] not in drop]

    current = cleaned(sources, first)
    second = part.clean(dirty_from=first.cleaned_end, sources=current, map_entries=7)
    assert second.cleaned_end == 16 and len(second.segments) == 4
    current = cleaned(current, second)
    final = [e for s in current for e in entries(s.path)]
    assert final == latest_per_key(written)


def test_a_map_too_small_for_one_segment_still_makes_progress(part: Partition) -> None:
    written: list[Entry] = []
    for v in "12":
        base = part.put(*[(f"k{i}", v) for i in range(6)])
        written += [(base + i, f"k{i}", v) for i in range(6)]
        part.seal()
    current = part.sources()
    # Only offsets 0-3 are mapped: the run ends there, inside the first segment, and
    # keeps what it could not map.
    result = part.clean(map_entries=4)
    assert result.cleaned_end == 4 and result.segments == (
        CleanedSegment(current[0].key, None, None),
    )
    ends = []
    while result.cleaned_end < 12:
        result = part.clean(dirty_from=result.cleaned_end, sources=current, map_entries=4)
        ends.append(result.cleaned_end)
        current = cleaned(current, result)
    assert ends == [6, 10, 12]
    assert [e for s in current for e in entries(s.path)] == latest_per_key(written)


def test_an_undecodable_batch_is_kept_whole_and_the_rest_cleaned(part: Partition) -> None:
    part.put(("a", "1"), ("b", "1"))
    poison = poison_batch(1_000_000)
    part.plog.append(poison, validate_batches(poison), 1_000_000)  # offsets 2-3
    part.put(("a", "2"))
    part.seal()
    (seg,) = part.clean().segments
    assert seg.path is not None
    manifest = verify_segment(seg.path)
    sec = manifest["sections"]["batches"]
    data = seg.path.read_bytes()[sec["offset"] : sec["offset"] + sec["size"]]
    batches = [data[s:e] for s, e, _h in validate_batches(data)]
    assert [r.offset for r in iter_records(batches[0])] == [1]
    assert batches[1][12:] == poison[12:]  # all but the base offset the log assigned
    assert [r.offset for r in iter_records(batches[2])] == [4]
    dest = part.dir / "poison"
    extract_tantivy(seg.path, manifest, dest)
    assert _offsets(dest) == [1, 4]


def test_records_without_timestamp_keep_their_segments_time_in_search(part: Partition) -> None:
    part.put(("a", "1"), ("b", "1"), ts=-1)
    part.put(("a", "2"), ts=-1)
    part.seal()
    (src,) = part.sources()
    (seg,) = part.clean().segments
    assert seg.path is not None and seg.manifest is not None
    assert seg.manifest["max_timestamp"] == src.max_timestamp
    dest = part.dir / "no-ts"
    extract_tantivy(seg.path, seg.manifest, dest)
    t = src.max_timestamp
    assert _offsets(dest, f"timestamp:[{t} TO {t}]") == [1, 2]
