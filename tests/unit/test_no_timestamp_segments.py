"""Records without a timestamp (-1) in search documents and sealed segments: documents get
the time the broker's log had them, a segment's time span covers those documents, and an
unknown max timestamp never makes a segment expire early."""

from __future__ import annotations

import json
import time
from pathlib import Path

import tantivy

from app.storage.index.docs import DocBuilder
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.log.records import Record as StoredRecord
from app.storage.segments.format import extract_tantivy
from app.storage.segments.registry import LOCAL, Registry, SegmentRow
from tests.unit.batchgen import make_batch
from tests.unit.test_storage_segments import _append, _log, _run

NO_TS = -1


def now_ms() -> int:
    return int(time.time() * 1000)


def test_doc_of_an_untimed_record_gets_the_time_it_is_indexed() -> None:
    before = now_ms()
    doc = json.loads(DocBuilder(0).doc(StoredRecord(4, NO_TS, None, b"v", [])))
    assert before <= doc["timestamp"] <= now_ms()
    doc = json.loads(DocBuilder(0).doc(StoredRecord(5, 1234, None, b"v", [])))
    assert doc["timestamp"] == 1234


def _timestamps(index_dir: Path) -> dict[int, int]:
    index = tantivy.Index.open(str(index_dir))
    index.reload()
    searcher = index.searcher()
    hits = searcher.search(tantivy.Query.all_query(), max(searcher.num_docs, 1)).hits
    docs = [searcher.doc(a) for _s, a in hits]
    return {d["offset"][0]: d["timestamp"][0] for d in docs}


def _seal(tmp_path: Path, batches: list[bytes]) -> tuple[SegmentRow, Registry, int, int]:
    plog = _log(tmp_path)
    for b in batches:
        _append(plog, b)
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    before = now_ms()
    _run(pi, plog)
    pi.seal(wait=True)
    after = now_ms()
    plog.close()
    (row,) = registry.segments("t", 0)
    assert row.state == LOCAL
    return row, registry, before, after


def test_sealed_untimed_segment_spans_its_documents(tmp_path: Path) -> None:
    batches = [make_batch([b"a%d" % i, b"b%d" % i], timestamp=NO_TS) for i in range(5)]
    row, registry, before, after = _seal(tmp_path, batches)
    dest = tmp_path / "extracted"
    extract_tantivy(tmp_path / "segments" / row.object_key, row.manifest, dest)
    stamps = _timestamps(dest)
    assert sorted(stamps) == list(range(10))
    assert all(before <= ts <= after for ts in stamps.values()), stamps
    # The span covers every document, so a search from `before` plans this segment.
    assert row.min_timestamp <= min(stamps.values())
    assert max(stamps.values()) <= row.max_timestamp <= after
    assert [r.base_offset for r in registry.in_time_range("t", 0, before, 2**63 - 1)] == [0]
    assert before <= row.largest_timestamp <= after
    registry.close()


def test_mixed_segment_spans_timed_and_untimed_documents(tmp_path: Path) -> None:
    batches = [
        make_batch([b"old"], timestamp=1_000_000),
        make_batch([b"none"], timestamp=NO_TS),
        make_batch([b"older"], timestamp=900_000),
    ]
    row, registry, before, after = _seal(tmp_path, batches)
    assert row.min_timestamp <= 900_000
    assert before <= row.max_timestamp <= after
    assert [r.base_offset for r in registry.in_time_range("t", 0, 0, 950_000)] == [0]
    assert [r.base_offset for r in registry.in_time_range("t", 0, before, 2**63 - 1)] == [0]
    registry.close()


def test_a_row_without_a_max_timestamp_counts_from_its_registration() -> None:
    def row(max_ts: int) -> SegmentRow:
        return SegmentRow(1, "t", 0, 0, 9, -1, max_ts, 10, 100, "k", LOCAL, {}, 123_456)

    assert row(NO_TS).largest_timestamp == 123_456
    assert row(99).largest_timestamp == 99
