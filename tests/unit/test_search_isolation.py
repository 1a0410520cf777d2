"""Read committed in the per-index search (execute.py) against brute force: records of
committed, aborted and open transactions interleaved with non-transactional ones, written
through a real PartitionLog (data batches and end-transaction markers), indexed by the
partition indexer into Tantivy; exclusions taken from the log as the engine takes them. Also
indexes written before the `producer_id` field existed: searched, merged and re-indexed."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from app.storage.index.docs import DocBuilder
from app.storage.index.merge import _combine_meta
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.log import PartitionLog, WalTail, iter_records
from app.storage.search.engine import exclusions
from app.storage.search.execute import (
    AggTask,
    SegmentTask,
    aggregate_segment,
    count_segment,
    search_segment,
)
from app.storage.segments.registry import Registry
from tests.unit.batchgen import Record, make_batch
from tests.unit.test_storage_segments import _append, _log, _run

LEVELS = ("info", "warn", "error")
EPOCH = 0


@dataclass
class Rec:
    offset: int
    level: str
    ts: int
    pid: int | None  # the producer of a transactional record
    fate: str  # plain, committed, aborted, open


class Corpus:
    """A partition log and what was written to it."""

    def __init__(self, data_dir: Path) -> None:
        self.plog: PartitionLog = _log(data_dir)
        self.recs: list[Rec] = []
        self.seq: dict[int, int] = {}
        self.txn: dict[int, list[Rec]] = {}

    def write(self, n: int, pid: int | None = None) -> None:
        base = self.plog.log_end_offset
        ts = 10_000 + base * 10
        recs = [
            Rec(base + i, LEVELS[(base + i) % 3], ts, pid, "plain" if pid is None else "open")
            for i in range(n)
        ]
        values = [Record(json.dumps({"level": r.level}).encode(), key=b"k") for r in recs]
        if pid is None:
            batch = make_batch(values, timestamp=ts)
        else:
            seq = self.seq.get(pid, 0)
            self.seq[pid] = seq + n
            batch = make_batch(
                values,
                timestamp=ts,
                producer_id=pid,
                producer_epoch=EPOCH,
                base_sequence=seq,
                transactional=True,
            )
            self.txn.setdefault(pid, []).extend(recs)
        _append(self.plog, batch)
        self.recs += recs

    def end(self, pid: int, commit: bool) -> None:
        self.plog.append_marker(pid, EPOCH, commit, 0, int(time.time() * 1000))
        for r in self.txn.pop(pid, []):
            r.fate = "committed" if commit else "aborted"

    def visible(self, committed: bool = True) -> list[Rec]:
        return [r for r in self.recs if not committed or r.fate in ("plain", "committed")]


def _interleaved(data_dir: Path) -> Corpus:
    """P11 commits, P12 aborts then commits a second transaction, P13 aborts twice, P14
    stays open; plain records between and after them all."""
    c = Corpus(data_dir)
    c.write(4)
    c.write(3, pid=11)
    c.write(2, pid=12)
    c.write(5)
    c.write(3, pid=13)
    c.write(4, pid=11)
    c.end(12, commit=False)
    c.write(2)
    c.end(11, commit=True)
    c.write(3, pid=12)
    c.end(13, commit=False)
    c.write(6, pid=14)
    c.write(2, pid=13)
    c.end(12, commit=True)
    c.write(5)
    c.end(13, commit=False)
    c.write(4, pid=14)
    c.write(3)
    return c


def _index(data_dir: Path, plog: PartitionLog) -> str:
    registry = Registry(data_dir / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(data_dir), registry, "t", 0, 0)
    _run(pi, plog)
    pi.close()
    registry.close()
    return str(pi.index_dir)


def _offsets(index_dir: str, plog: PartitionLog, q: str, committed: bool, page: int) -> list[int]:
    """Every hit in offset order, page by page (cursor after each page's last hit)."""
    ex, end = exclusions(plog, 0, None) if committed else ((), None)
    out: list[int] = []
    after = None
    while True:
        res = search_segment(
            SegmentTask(
                index_dir,
                0,
                q,
                min_offset=0,
                sort_field="offset",
                descending=False,
                after=after,
                limit=page,
                exclude=ex,
                end_offset=end,
            )
        )
        if not res.hits:
            return out
        out += [h[1] for h in res.hits]
        after = (res.hits[-1][0], 0, res.hits[-1][1])


def _aggregate(index_dir: str, plog: PartitionLog, q: str, committed: bool) -> dict[str, Any]:
    ex, end = exclusions(plog, 0, None) if committed else ((), None)
    agg = {
        "n": {"value_count": {"field": "offset"}},
        "levels": {"terms": {"field": "value.level"}},
        "h": {"histogram": {"field": "timestamp", "interval": 100, "min_doc_count": 1}},
    }
    task = AggTask(index_dir, q, agg, min_offset=0, exclude=ex, end_offset=end)
    res = aggregate_segment(task)
    assert res is not None
    return {
        "n": int(res["n"]["value"]),
        "levels": {b["key"]: b["doc_count"] for b in res["levels"]["buckets"]},
        "h": {int(b["key"]): b["doc_count"] for b in res["h"]["buckets"]},
    }


def _brute(recs: list[Rec], q: str) -> list[Rec]:
    return [r for r in recs if q == "*" or r.level == "error"]


def _check(index_dir: str, c: Corpus) -> None:
    for committed in (True, False):
        for q in ("*", "value.level:error"):
            want = _brute(c.visible(committed), q)
            for page in (3, 100):
                assert _offsets(index_dir, c.plog, q, committed, page) == [r.offset for r in want]
            ex, end = exclusions(c.plog, 0, None) if committed else ((), None)
            count = count_segment(SegmentTask(index_dir, 0, q, exclude=ex, end_offset=end))
            assert count.total == len(want)
            levels: dict[str, int] = {}
            hist: dict[int, int] = {}
            for r in want:
                levels[r.level] = levels.get(r.level, 0) + 1
                hist[r.ts // 100 * 100] = hist.get(r.ts // 100 * 100, 0) + 1
            assert _aggregate(index_dir, c.plog, q, committed) == {
                "n": len(want),
                "levels": levels,
                "h": hist,
            }


def test_read_committed_leaves_out_aborted_and_open_transactions(tmp_path: Path) -> None:
    c = _interleaved(tmp_path)
    index_dir = _index(tmp_path, c.plog)
    fates = {r.fate for r in c.recs}
    assert fates == {"plain", "committed", "aborted", "open"}
    ex, end = exclusions(c.plog, 0, None)
    assert end == c.plog.log_end_offset
    assert sorted(e[0] for e in ex) == [12, 13, 13, 14]
    _check(index_dir, c)
    # Control batches are not indexed; only transactional records carry a producer id.
    searcher = tantivy.Index.open(index_dir).searcher()
    assert searcher.num_docs == len(c.recs)
    pids = searcher.aggregate(tantivy.Query.all_query(), {"p": {"terms": {"field": "producer_id"}}})
    assert {b["key"]: b["doc_count"] for b in pids["p"]["buckets"]} == {
        pid: sum(1 for r in c.recs if r.pid == pid) for pid in (11, 12, 13, 14)
    }


def test_an_open_transaction_appears_once_committed(tmp_path: Path) -> None:
    c = _interleaved(tmp_path)
    c.end(14, commit=True)
    c.write(2)
    c.write(3, pid=15)  # begun after: left out until it ends too
    index_dir = _index(tmp_path, c.plog)
    assert any(r.pid == 14 and r.fate == "committed" for r in c.recs)
    _check(index_dir, c)


def test_records_past_the_log_end_of_the_exclusions_are_left_out(tmp_path: Path) -> None:
    """A transaction begun after the exclusions were taken is in none of them: the open
    segment's search stops at the log end read with them."""
    c = _interleaved(tmp_path)
    ex, end = exclusions(c.plog, 0, None)
    c.write(3, pid=16)
    c.write(2)
    index_dir = _index(tmp_path, c.plog)
    res = count_segment(SegmentTask(index_dir, 0, "*", exclude=ex, end_offset=end))
    assert end is not None
    assert res.total == sum(1 for r in c.visible() if r.offset < end)


def test_a_sealed_index_gets_the_transactions_over_its_offsets_only(tmp_path: Path) -> None:
    c = _interleaved(tmp_path)
    first_marker = next(r.offset for r in c.recs if r.pid == 12) + 1
    ex, end = exclusions(c.plog, 0, first_marker)
    assert end is None
    # P12's aborted transaction and the open ones begun at or below the range are in it.
    assert {e[0] for e in ex} == {12}
    ex, _end = exclusions(c.plog, 0, first_marker + 7)
    assert [e[0] for e in ex] == [12, 13]
    # The last records: only P14's open transaction reaches them.
    ex, _end = exclusions(c.plog, c.plog.log_end_offset - 3, c.plog.log_end_offset - 1)
    assert {(e[0], e[2]) for e in ex} == {(14, None)}


def legacy_schema() -> tantivy.Schema:
    """The schema before `producer_id` (also bench/txn_search_bench.py's)."""
    sb = tantivy.SchemaBuilder()
    for name in ("partition", "offset", "timestamp"):
        sb.add_integer_field(name, stored=True, indexed=True, fast=True)
    sb.add_text_field("key", stored=False)
    sb.add_text_field("key_exact", stored=False, tokenizer_name="raw", fast=True)
    sb.add_text_field("text", stored=False)
    sb.add_json_field("value", stored=False, fast=True)
    sb.add_json_field("headers", stored=False)
    return sb.build()


def _legacy_index(index_dir: Path, plog: PartitionLog, upto: int) -> None:
    """Replace the index at `index_dir` by one of the old schema over the records below
    `upto`, as an older Chronik wrote it."""
    shutil.rmtree(index_dir)
    index_dir.mkdir()
    index = tantivy.Index(legacy_schema(), path=str(index_dir))
    writer = index.writer(15_000_000, 1)
    builder = DocBuilder(0)
    tail = WalTail(plog.directory)
    tail.seek(0)
    for h, data in tail.read(plog.high_watermark, 1 << 30):
        for rec in [] if h.is_control else iter_records(data):
            if rec.offset < upto:
                writer.add_json(builder.doc(rec))
    tail.close()
    writer.commit()
    writer.wait_merging_threads()


def test_an_open_segment_of_the_old_schema_is_indexed_again(tmp_path: Path) -> None:
    c = Corpus(tmp_path)
    c.write(5)
    c.write(4)
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    _run(pi, c.plog)
    pi.close()
    _legacy_index(pi.index_dir, c.plog, 9)
    c.write(3, pid=21)
    c.end(21, commit=False)
    c.write(2)
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    _run(pi, c.plog)
    pi.close()
    registry.close()
    index = tantivy.Index.open(str(pi.index_dir))
    index.parse_query("producer_id:21")  # the new schema
    assert index.searcher().num_docs == len(c.recs)
    _check(str(pi.index_dir), c)


def test_old_indexes_are_searched_and_merged_with_new_ones(tmp_path: Path) -> None:
    old = Corpus(tmp_path / "old")
    old.write(6)
    old_dir = tmp_path / "old" / "tantivy"
    old_dir.mkdir()
    _legacy_index(old_dir, old.plog, 6)
    # An old index gets exclusions it cannot hold matches for: no panic, nothing left out.
    task = SegmentTask(str(old_dir), 0, "*", exclude=((7, 0, 5),), limit=100)
    assert search_segment(task).total == 6
    assert count_segment(task).total == 6
    new = _interleaved(tmp_path / "new")
    new_dir = Path(_index(tmp_path / "new", new.plog))
    for order in ([old_dir, new_dir], [new_dir, old_dir]):
        merged = tmp_path / f"merged-{order[0].parent.name}"
        merged.mkdir()
        for d in order:
            for f in d.iterdir():
                if f.name != "meta.json" and not f.name.startswith("."):
                    shutil.copy(f, merged / f.name)
        (merged / "meta.json").write_text(json.dumps(_combine_meta(order)))
        ex, _end = exclusions(new.plog, 0, new.plog.log_end_offset - 1)
        res = count_segment(SegmentTask(str(merged), 0, "*", exclude=ex))
        assert res.error is None and res.total == 6 + len(new.visible())
