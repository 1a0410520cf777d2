"""Search segments, the registry, the WAL tail reader and the indexer's partition loop, with
real WAL files and real Tantivy indexes."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import crc32c
import tantivy

from app.config import IndexConfig
from app.storage.index.docs import DocBuilder, build_schema
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.log.batch import validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.memtail import MemTailBudget
from app.storage.log.partition import PartitionLog
from app.storage.log.records import Record as StoredRecord
from app.storage.log.walreader import WalTail
from app.storage.segments.format import (
    BatchIndex,
    extract_tantivy,
    read_manifest,
    scan_batches,
    verify_segment,
)
from app.storage.segments.registry import LOCAL, Registry
from tests.unit.batchgen import Record, make_batch


def _log(data_dir: Path, topic: str = "t", partition: int = 0) -> PartitionLog:
    return PartitionLog(
        data_dir / "logs" / f"{topic}-{partition}",
        topic,
        partition,
        {"segment.bytes": "3000"},
        FsyncScheduler("interval"),
        MemTailBudget(1 << 20),
    )


def _append(plog: PartitionLog, batch: bytes) -> None:
    plog.append(batch, validate_batches(batch), int(time.time() * 1000))


def poison_batch(base_ts: int) -> bytes:
    """A gzip batch whose compressed bytes are garbage but whose CRC is right."""
    buf = bytearray(make_batch([b"x" * 50, b"y" * 50], timestamp=base_ts, compression="gzip"))
    for i in range(61, len(buf)):
        buf[i] ^= 0x5A
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


def _json(i: int) -> bytes:
    return json.dumps(
        {"i": i, "level": "error" if i % 4 == 0 else "info", "status": 200 + i}
    ).encode()


def _fill(plog: PartitionLog, batches: int, per_batch: int = 10) -> list[bytes]:
    values: list[bytes] = []
    for b in range(batches):
        recs = []
        for _ in range(per_batch):
            i = len(values)
            v = _json(i) if i % 3 else f"plain words {i}".encode()
            values.append(v)
            recs.append(Record(v, key=f"k{i % 5}".encode(), headers=[("trace", b"abc")]))
        codec = "gzip" if b % 2 else "none"
        _append(plog, make_batch(recs, timestamp=1_000_000 + b, compression=codec))
    return values


def _offsets(index_dir: Path, query: str = "*") -> list[int]:
    index = tantivy.Index.open(str(index_dir))
    index.reload()
    searcher = index.searcher()
    q = index.parse_query(query, ["key", "text"])
    n = max(searcher.num_docs, 1)
    return sorted(searcher.doc(a)["offset"][0] for _s, a in searcher.search(q, n).hits)


def _run(pi: PartitionIndexer, plog: PartitionLog) -> None:
    pi.hw, pi.log_start = plog.high_watermark, plog.log_start_offset
    for _ in range(1000):
        if not pi.step(time.monotonic()) and pi.cp.indexed_offset >= pi.hw:
            break
    pi.commit()


def test_wal_tail_reads_across_segments_and_stops_at_the_high_watermark(tmp_path: Path) -> None:
    plog = _log(tmp_path)
    _fill(plog, 30)
    assert len(plog.wal.segments) > 2
    tail = WalTail(plog.directory)
    tail.seek(0)
    got: list[int] = []
    while True:
        batches = tail.read(155, 3000)
        if not batches:
            break
        got += [h.base_offset for h, _ in batches]
    assert got == list(range(0, 160, 10))  # the batch holding 150 is below 155
    tail.seek(203)
    assert tail.read(10_000, 100)[0][0].base_offset == 200
    plog.close()


def test_segment_file_round_trip_and_batch_index(tmp_path: Path) -> None:
    plog = _log(tmp_path)
    _fill(plog, 12)
    plog.close()
    cfg = WorkerConfig(tmp_path, IndexConfig(segment_max_records=1_000_000))
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(cfg, registry, "t", 0, 0)
    plog = _log(tmp_path)
    _run(pi, plog)
    pi.seal(wait=True)
    (row,) = registry.segments("t", 0)
    assert (row.base_offset, row.last_offset, row.records, row.state) == (0, 119, 120, LOCAL)
    path = tmp_path / "segments" / row.object_key
    manifest = verify_segment(path)
    assert manifest == {**read_manifest(path)} and manifest["docs"] == 120
    # The batch section is the WAL's bytes, unchanged.
    sec = manifest["sections"]["batches"]
    raw = path.read_bytes()
    wal_bytes = b"".join((plog.directory / s.path.name).read_bytes() for s in plog.wal.segments)
    assert raw[sec["offset"] : sec["offset"] + sec["size"]] == wal_bytes
    idx_sec = manifest["sections"]["index"]
    idx = BatchIndex.from_bytes(
        raw[idx_sec["offset"] : idx_sec["offset"] + idx_sec["size"]], sec["size"]
    )
    assert list(idx.lasts) == list(scan_batches(wal_bytes, len(wal_bytes))[0].lasts)
    start, end = idx.span(35, 1)  # first batch always whole
    assert (start, end) == (idx.positions[3], idx.positions[4])
    assert idx.span(120, 100) is None
    start, end = idx.span(0, 10**9)
    assert (start, end) == (0, sec["size"])
    # read_committed: no batch starting at or above the stop offset (batches of 10 here).
    assert idx.lasts[3] == 39
    assert idx.span(0, 10**9, stop_offset=40, base=0) == (0, idx.positions[4])
    assert idx.span(0, 10**9, stop_offset=41, base=0) == (0, idx.positions[5])
    assert idx.span(40, 10**9, stop_offset=40, base=0) is None
    assert idx.span(0, 10**9, stop_offset=0, base=0) is None
    dest = tmp_path / "extracted"
    extract_tantivy(path, manifest, dest)
    assert _offsets(dest) == list(range(120))
    assert _offsets(dest, "value.level:error") == [i for i in range(120) if i % 3 and i % 4 == 0]
    assert _offsets(dest, "value.status:[300 TO 305]") == [i for i in range(100, 106) if i % 3]
    assert _offsets(dest, "plain") == [i for i in range(120) if i % 3 == 0]
    assert _offsets(dest, "headers.trace:abc") == list(range(120))
    registry.close()
    plog.close()


def test_poison_and_type_flips_are_counted_and_do_not_stop_indexing(tmp_path: Path) -> None:
    plog = _log(tmp_path)
    _append(plog, make_batch([b'{"a": 1}', b'{"a": "one"}', b"\xff\xfe"], timestamp=5))
    _append(plog, poison_batch(6))
    _append(plog, make_batch([b'{"a": 2}', b'{"b": {"c": "ok"}}'], timestamp=7))
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    _run(pi, plog)
    assert pi.cp.indexed_offset == 7
    assert pi.errors == 2  # the flip of value.a and the undecodable batch
    index_dir = pi.index_dir
    assert _offsets(index_dir) == [0, 1, 2, 5, 6]  # non-UTF-8 values are still documents
    assert _offsets(index_dir, "value.a:2") == [5]
    assert _offsets(index_dir, "one") == [1]  # indexed as text
    assert _offsets(index_dir, "value.b.c:ok") == [6]
    registry.close()
    plog.close()


def test_restart_after_commit_without_checkpoint_does_not_duplicate(tmp_path: Path) -> None:
    plog = _log(tmp_path)
    _fill(plog, 5)
    registry = Registry(tmp_path / "registry.sqlite")
    cfg = WorkerConfig(tmp_path)
    pi = PartitionIndexer(cfg, registry, "t", 0, 0)
    _run(pi, plog)
    stale = registry.checkpoint("t", 0)
    assert stale is not None and stale.indexed_offset == 50
    # More records get committed to Tantivy but the checkpoint write is "lost" (a crash).
    _fill(plog, 3)
    _run(pi, plog)
    assert pi.writer is not None
    registry.save_checkpoint(stale)
    pi.writer = None
    pi._batches.close()
    again = PartitionIndexer(cfg, registry, "t", 0, 0)
    _run(again, plog)
    assert _offsets(again.index_dir) == list(range(80))
    again.seal(wait=True)
    (row,) = registry.segments("t", 0)
    assert (row.base_offset, row.last_offset, row.records) == (0, 79, 80)
    registry.close()
    plog.close()


def test_doc_builder_keeps_paths_and_text() -> None:
    b = DocBuilder(3)
    doc = json.loads(b.doc(StoredRecord(7, 99, b"k", b'{"x": {"y": 1}}', [("h", b"v")])))
    assert doc["value"] == {"x": {"y": 1}} and doc["text"] == '{"x": {"y": 1}}'
    assert doc["headers"] == {"h": "v"} and doc["key_exact"] == "k"
    deep = b"{" + b'"a":{' * 40 + b"}" * 41
    doc = json.loads(b.doc(StoredRecord(8, 99, None, deep, [])))
    assert "value" not in doc and doc["text"] == deep.decode() and b.errors == 1
    schema = build_schema()
    assert schema is not None


def test_registry_lookups(tmp_path: Path) -> None:
    from app.storage.segments.registry import DELETING, UPLOADED, Checkpoint, SegmentRow

    reg = Registry(tmp_path / "r.sqlite")
    reg.create_checkpoint(Checkpoint("t", 0, 0, 0))
    for base in (0, 100, 200):
        row = SegmentRow(
            0,
            "t",
            0,
            base,
            base + 99,
            base * 10,
            base * 10 + 5,
            100,
            1000,
            f"t/0/{base}.seg",
            LOCAL,
            {},
            0,
        )
        assert reg.publish(row, Checkpoint("t", 0, base + 100, base + 100))
    found = reg.find("t", 0, 150)
    assert found is not None and found.base_offset == 100
    assert [r.base_offset for r in reg.in_time_range("t", 0, 1000, 1003)] == [100]
    assert reg.checkpoint("t", 0).indexed_offset == 300  # type: ignore[union-attr]
    assert reg.mark_deleting_below("t", 0, 200) == 2
    assert [r.base_offset for r in reg.segments("t", 0)] == [200]
    assert len(reg.segments(states=(DELETING,))) == 2
    assert reg.set_state(reg.segments("t", 0)[0].id, UPLOADED, expect=LOCAL)
    assert reg.totals() == {"t": (1, 1000)}
    reg.close()


def test_indexer_spreads_a_topics_partitions_over_the_workers(tmp_path: Path) -> None:
    from app.storage.index.supervisor import Indexer

    for workers in (2, 3, 4):
        indexer = Indexer(WorkerConfig(tmp_path, IndexConfig(workers=workers)), dict, "INFO")
        for topic in ("a", "orders", "t-0123456789ab"):
            owners = [indexer.worker_for(topic, p) for p in range(2 * workers)]
            assert sorted(owners) == sorted(list(range(workers)) * 2), (topic, owners)
