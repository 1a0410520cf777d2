"""Per-index search (run in the search pool's processes) against brute force over the same
records: totals, filters, every sort order and cursor pages with timestamp ties."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.search.execute import (
    SegmentResult,
    SegmentTask,
    check_query,
    search_many,
    search_segment,
)
from app.storage.segments.registry import Registry
from tests.unit.batchgen import Record, make_batch
from tests.unit.test_storage_segments import _append, _log, _run

LEVELS = ("info", "warn", "error")


def _index(tmp_path: Path) -> tuple[str, list[dict[str, int | str]]]:
    """60 records in 12 batches; timestamps repeat (5 records per batch share one)."""
    plog = _log(tmp_path)
    truth: list[dict[str, int | str]] = []
    for b in range(12):
        recs = []
        for _ in range(5):
            i = len(truth)
            level = LEVELS[i % 3]
            recs.append(
                Record(json.dumps({"level": level, "status": 200 + i}).encode(), key=b"k%d" % i)
            )
            truth.append({"offset": i, "timestamp": 1000 + (b * 7) % 5, "level": level})
        # All five records of a batch share its timestamp (deltas 0).
        _append(plog, make_batch(recs, timestamp=1000 + (b * 7) % 5))
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    _run(pi, plog)
    pi.close()
    registry.close()
    plog.close()
    return str(pi.index_dir), truth


def _walk(task: SegmentTask, page: int) -> list[int]:
    """Every hit, page by page, each page resuming after the previous page's last hit."""
    out: list[int] = []
    after = None
    while True:
        res = search_segment(
            SegmentTask(**{**task.__dict__, "after": after, "limit": page})  # type: ignore[arg-type]
        )
        if not res.hits:
            return out
        out += [h[1] for h in res.hits]
        key, off, _ts = res.hits[-1]
        after = (int(key), task.rank, off)


@pytest.mark.parametrize("page", [1, 3, 7, 100])
@pytest.mark.parametrize(
    ("sort_field", "descending"),
    [("timestamp", True), ("timestamp", False), ("offset", True), ("offset", False)],
)
def test_sorted_pages_match_brute_force(
    tmp_path: Path, page: int, sort_field: str, descending: bool
) -> None:
    index_dir, truth = _index(tmp_path)
    want = [r for r in truth if r["level"] == "error"]
    sign = -1 if descending else 1
    if sort_field == "timestamp":
        want.sort(key=lambda r: (sign * int(r["timestamp"]), sign * int(r["offset"])))
    else:
        want.sort(key=lambda r: sign * int(r["offset"]))
    task = SegmentTask(
        index_dir, 0, "value.level:error", sort_field=sort_field, descending=descending
    )
    assert search_segment(task).total == len(want)
    assert _walk(task, page) == [r["offset"] for r in want]


def test_filters_and_relevance(tmp_path: Path) -> None:
    index_dir, truth = _index(tmp_path)
    res = search_segment(SegmentTask(index_dir, 0, "*", start_ms=1001, end_ms=1003, limit=100))
    assert sorted(h[1] for h in res.hits) == [
        r["offset"] for r in truth if 1001 <= int(r["timestamp"]) < 1003
    ]
    assert res.total == len(res.hits)
    res = search_segment(SegmentTask(index_dir, 0, "value.status:[210 TO 219]", min_offset=15))
    assert res.total == 5 and sorted(h[1] for h in res.hits) == [15, 16, 17, 18, 19]
    res = search_segment(SegmentTask(index_dir, 0, "k7 OR k8", sort_field=None))
    assert sorted(h[1] for h in res.hits) == [7, 8]
    with pytest.raises(ValueError):
        check_query("value.level:(error")
    check_query("value.level:error AND NOT warn")


def _index_at(data_dir: Path, ts0: int) -> str:
    """30 records, a third of them errors, stamped ts0 .. ts0 + 5."""
    plog = _log(data_dir)
    for b in range(6):
        levels = [LEVELS[(b + j) % 3] for j in range(5)]
        recs = [Record(json.dumps({"level": lv}).encode()) for lv in levels]
        _append(plog, make_batch(recs, timestamp=ts0 + b))
    registry = Registry(data_dir / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(data_dir), registry, "t", 0, 0)
    _run(pi, plog)
    pi.close()
    registry.close()
    return str(pi.index_dir)


@pytest.mark.parametrize("descending", [True, False])
def test_indexes_that_cannot_place_a_hit_are_only_counted(tmp_path: Path, descending: bool) -> None:
    spans = [(1000, 1005), (3000, 3005), (2000, 2005)]
    dirs = [_index_at(tmp_path / f"i{n}", lo) for n, (lo, _hi) in enumerate(spans)]

    def task(d: str, span: tuple[int, int], bounded: bool) -> SegmentTask:
        bound = (span[1] if descending else span[0]) if bounded else None
        return SegmentTask(d, 0, "value.level:error", descending=descending, limit=4, bound=bound)

    pruned = search_many([task(d, s, True) for d, s in zip(dirs, spans, strict=True)])
    full = [search_segment(task(d, s, False)) for d, s in zip(dirs, spans, strict=True)]
    assert [r.total for r in pruned] == [r.total for r in full] == [10, 10, 10]
    sign = -1 if descending else 1

    def best(results: list[SegmentResult]) -> list[tuple[float | int, int, int]]:
        hits = [h for r in results for h in r.hits]
        return sorted(hits, key=lambda h: (sign * h[0], sign * h[1]))[:4]

    assert best(pruned) == best(full)
    # Only the index holding the newest (oldest) records gave hits; the others were counted.
    searched = [False, True, False] if descending else [True, False, False]
    assert [bool(r.hits) for r in pruned] == searched
