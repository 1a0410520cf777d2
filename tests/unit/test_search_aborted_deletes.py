"""Aborted transactions' documents are deleted from search segments as they are sealed and
merged (index/aborts.py), and search excludes at query time only what is left: a real
PartitionLog with data batches and markers, the partition indexer sealing and merging into
real Tantivy indexes, per-index exclusions and log-start cuts taken as the engine takes them.
Each index's undeleted documents are counted with no exclusions; hits (offset-ordered
pages), counts, terms and histograms over all indexes equal brute force over the committed
records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from app.config import IndexConfig
from app.storage.index.merge import merge_partition
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.index.sealing import object_key
from app.storage.log import AbortedTxn, read_aborted
from app.storage.search.engine import exclusions, start_bound
from app.storage.search.execute import AggTask, SegmentTask, aggregate_segment, search_segment
from app.storage.segments.format import extract_tantivy
from app.storage.segments.registry import Registry
from tests.unit.test_search_isolation import Corpus, Rec
from tests.unit.test_storage_segments import _run

AGG = {
    "levels": {"terms": {"field": "value.level"}},
    "h": {"histogram": {"field": "timestamp", "interval": 100, "min_doc_count": 1}},
}


@dataclass
class Idx:
    """One index as the engine plans it: a sealed segment's files or the open segment."""

    path: str
    first: int
    last: int | None  # None: the open segment


class Partition:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.c = Corpus(data_dir)
        self.registry = Registry(data_dir / "registry.sqlite")
        cfg = IndexConfig(segment_max_records=1000, segment_max_bytes=1 << 30)
        self.cfg = WorkerConfig(data_dir, cfg)
        self.pi = PartitionIndexer(self.cfg, self.registry, "t", 0, 0)

    def index(self, seal: bool = False) -> None:
        _run(self.pi, self.c.plog)
        if seal:
            self.pi.seal(wait=True)

    def merge(self) -> bool:
        return merge_partition(self.registry, self.data_dir, "t", 0, 1000, 1 << 30, object_key)

    def indexes(self) -> list[Idx]:
        out = []
        for row in self.registry.segments("t", 0):
            dest = self.data_dir / "search" / row.object_key
            if not (dest / "meta.json").exists():
                # A merged segment's files are extracted on its first search.
                extract_tantivy(self.data_dir / "segments" / row.object_key, row.manifest, dest)
            out.append(Idx(str(dest), row.base_offset, row.last_offset))
        return [*out, Idx(str(self.pi.index_dir), self.pi.cp.open_base, None)]

    def close(self) -> None:
        self.pi.close()
        self.registry.close()


def _docs(index_dir: str) -> list[int]:
    """The offsets of the index's documents that are not deleted, without any exclusion."""
    index = tantivy.Index.open(index_dir)
    searcher = index.searcher()
    res = searcher.search(tantivy.Query.all_query(), max(searcher.num_docs, 1))
    return sorted(searcher.doc(a)["offset"][0] for _s, a in res.hits)


def _tasks(p: Partition, ix: Idx, q: str, **kw: Any) -> tuple[SegmentTask, AggTask]:
    """The index's search and aggregation tasks with the engine's isolation for it."""
    plog = p.c.plog
    ex, end = exclusions(plog, ix.first, ix.last, sealed=ix.last is not None)
    bounds = {
        "min_offset": ix.first if ix.last is None else None,
        "exclude": ex,
        "end_offset": end,
        "start_offset": start_bound(plog, ix.first),
    }
    return SegmentTask(ix.path, 0, q, **bounds, **kw), AggTask(ix.path, q, AGG, **bounds)


def _hits(p: Partition, ix: Idx, q: str, page: int) -> tuple[list[int], int]:
    out: list[int] = []
    after = None
    total = -1
    while True:
        task, _agg = _tasks(
            p, ix, q, sort_field="offset", descending=False, after=after, limit=page
        )
        res = search_segment(task)
        assert res.error is None and not res.vanished
        total = res.total if total < 0 else total
        if not res.hits:
            return out, total
        out += [h[1] for h in res.hits]
        after = (res.hits[-1][0], 0, res.hits[-1][1])


def _check(p: Partition) -> None:
    """Every index together answers as brute force over the committed records from the log
    start on."""
    start = p.c.plog.log_start_offset
    visible = [r for r in p.c.visible() if r.offset >= start]
    for q in ("*", "value.level:error"):
        want = [r for r in visible if q == "*" or r.level == "error"]
        for page in (2, 100):
            offsets: list[int] = []
            total = 0
            for ix in p.indexes():
                got, n = _hits(p, ix, q, page)
                offsets += got
                total += n
            assert sorted(offsets) == [r.offset for r in want]
            assert total == len(want)
        levels: dict[str, int] = {}
        hist: dict[int, int] = {}
        for ix in p.indexes():
            res = aggregate_segment(_tasks(p, ix, q)[1])
            assert res is not None and "__error__" not in res
            # An index with no documents (the open one, just after a seal) answers {}.
            for b in res.get("levels", {}).get("buckets", []):
                levels[b["key"]] = levels.get(b["key"], 0) + b["doc_count"]
            for b in res.get("h", {}).get("buckets", []):
                hist[int(b["key"])] = hist.get(int(b["key"]), 0) + b["doc_count"]
        want_levels: dict[str, int] = {}
        want_hist: dict[int, int] = {}
        for r in want:
            want_levels[r.level] = want_levels.get(r.level, 0) + 1
            want_hist[r.ts // 100 * 100] = want_hist.get(r.ts // 100 * 100, 0) + 1
        assert levels == want_levels
        assert hist == want_hist


def _kept(recs: list[Rec], aborted: list[AbortedTxn], first: int, last: int) -> list[int]:
    """What the rule leaves in a segment [first, last]: all its records but those of aborted
    transactions with a marker at or below `last`."""
    gone = {
        r.offset
        for a in aborted
        if a.last_offset <= last
        for r in recs
        if r.pid == a.producer_id and a.first_offset <= r.offset <= a.last_offset
    }
    return [r.offset for r in recs if first <= r.offset <= last and r.offset not in gone]


def _fill(p: Partition) -> dict[str, int]:
    """Segment 1: P12 aborts inside it; P13 begins in it and aborts in segment 2; P14 is open
    across the seal and commits in segment 2; P11 commits in segment 2."""
    c = p.c
    c.write(4)
    c.write(3, pid=11)
    c.write(2, pid=12)
    c.write(2)
    c.end(12, commit=False)
    c.write(3, pid=13)
    c.write(2, pid=14)
    c.write(2)
    p.index(seal=True)
    marks = {"seal1": c.plog.log_end_offset}
    c.write(2, pid=13)
    c.end(11, commit=True)
    c.end(13, commit=False)
    marks["p13_marker"] = c.plog.log_end_offset - 1
    c.write(2, pid=14)
    c.write(3, pid=15)
    c.end(14, commit=True)
    c.end(15, commit=False)
    c.write(2)
    return marks


def test_sealing_deletes_settled_aborts_and_search_still_equals_brute_force(
    tmp_path: Path,
) -> None:
    p = Partition(tmp_path)
    marks = _fill(p)
    [seg1] = p.registry.segments("t", 0)
    assert (seg1.base_offset, seg1.last_offset) == (0, marks["seal1"] - 1)
    aborted = read_aborted(p.c.plog.directory)
    assert [a.producer_id for a in aborted] == [12, 13, 15]
    # P12's records are gone from segment 1; P13's (aborted after the seal) and P14's (open
    # then) are still there, and search leaves out P13's by exclusion.
    kept = _docs(str(tmp_path / "search" / seg1.object_key))
    assert kept == _kept(p.c.recs, aborted, 0, seg1.last_offset)
    p12 = [r.offset for r in p.c.recs if r.pid == 12]
    p13 = [r.offset for r in p.c.recs if r.pid == 13 and r.offset <= seg1.last_offset]
    assert p12 and not set(p12) & set(kept)
    assert p13 and set(p13) <= set(kept)
    ex, _end = exclusions(p.c.plog, seg1.base_offset, seg1.last_offset, sealed=True)
    assert [e[0] for e in ex] == [13]
    # Before segment 2 is sealed, the open segment gets all of its aborted transactions.
    p.index()
    _check(p)
    p.index(seal=True)
    seg2 = p.registry.segments("t", 0)[1]
    kept2 = _docs(str(tmp_path / "search" / seg2.object_key))
    assert kept2 == _kept(p.c.recs, aborted, seg2.base_offset, seg2.last_offset)
    assert not any(r.pid in (13, 15) and r.offset in kept2 for r in p.c.recs)
    assert any(r.pid == 14 and r.offset in kept2 for r in p.c.recs)
    ex, _end = exclusions(p.c.plog, seg2.base_offset, seg2.last_offset, sealed=True)
    assert ex == ()
    # P14, open across the seal of segment 1, committed: its records there are found.
    assert all(r.fate == "committed" for r in p.c.recs if r.pid == 14)
    _check(p)
    p.close()


def test_merging_deletes_what_only_the_merged_range_settles(tmp_path: Path) -> None:
    p = Partition(tmp_path)
    _fill(p)
    p.index(seal=True)
    c = p.c
    c.write(3, pid=16)  # begins in segment 3, aborts in segment 4
    c.write(2)
    p.index(seal=True)
    c.write(1)
    c.end(16, commit=False)
    c.write(2, pid=17)  # open across the merge
    c.write(2)
    p.index(seal=True)
    before = p.registry.segments("t", 0)
    assert len(before) == 4
    seg3 = before[2]
    p16 = [r.offset for r in c.recs if r.pid == 16]
    assert set(p16) <= set(_docs(str(tmp_path / "search" / seg3.object_key)))
    _check(p)
    assert p.merge()
    [merged] = p.registry.segments("t", 0)
    assert (merged.base_offset, merged.last_offset) == (0, before[-1].last_offset)
    ix = p.indexes()[0]
    aborted = read_aborted(c.plog.directory)
    assert _docs(ix.path) == _kept(c.recs, aborted, 0, merged.last_offset)
    assert not set(p16) & set(_docs(ix.path))
    ex, _end = exclusions(c.plog, merged.base_offset, merged.last_offset, sealed=True)
    assert [(e[0], e[2]) for e in ex] == [(17, None)]
    _check(p)
    c.end(17, commit=True)
    c.write(1)
    p.index()
    _check(p)
    p.close()


def test_indexes_below_the_log_start_are_cut_there(tmp_path: Path) -> None:
    """The log start moves past P13's marker: its entry leaves the aborted-transaction index
    while segment 1 (sealed before P13 aborted) and the open segment still hold records below
    the log start. Neither they nor an aborted transaction above it show up."""
    p = Partition(tmp_path)
    marks = _fill(p)
    c = p.c
    c.write(2, pid=18)
    c.end(18, commit=False)
    c.write(2)
    p.index()
    start = marks["p13_marker"] + 1
    assert c.plog.delete_records(start) == start
    assert [a.producer_id for a in c.plog.aborted_transactions(0, 1 << 40)] == [15, 18]
    seg1 = p.indexes()[0]
    assert start_bound(c.plog, seg1.first) == start
    assert any(r.pid == 13 for r in c.recs if r.offset in _docs(seg1.path))
    _check(p)
    # A read_uncommitted search is cut at the log start too.
    for ix in p.indexes():
        task = SegmentTask(
            ix.path,
            0,
            "*",
            min_offset=ix.first if ix.last is None else None,
            start_offset=start_bound(c.plog, ix.first),
            sort_field="offset",
            descending=False,
            limit=100,
        )
        assert all(h[1] >= start for h in search_segment(task).hits)
    p.close()


def test_the_worker_reads_the_aborted_index_while_it_is_appended(tmp_path: Path) -> None:
    c = Corpus(tmp_path)
    assert read_aborted(c.plog.directory) == []
    c.write(2, pid=21)
    c.end(21, commit=False)
    c.write(1, pid=22)
    c.end(22, commit=False)
    want = [AbortedTxn(21, 0, 2), AbortedTxn(22, 3, 4)]
    assert read_aborted(c.plog.directory) == want
    with open(c.plog.directory / "aborted-txns", "ab") as f:
        f.write(b"\x00" * 20)  # an append under way
    assert read_aborted(c.plog.directory) == want
