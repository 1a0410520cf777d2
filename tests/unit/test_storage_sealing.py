"""Sealing in the background: the frozen segment stays searchable beside the new open one
until it is published, and a restart in between neither loses nor doubles a record."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.config import SearchConfig
from app.storage.index import partition_indexer as indexer_worker
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig, open_index_dir
from app.storage.index.sealing import SEALING, frozen_batches
from app.storage.search.engine import SearchEngine
from app.storage.search.execute import SegmentTask, search_many
from app.storage.segments.registry import Registry
from tests.unit.test_storage_segments import _fill, _log, _offsets, _run


class HeldPackaging:
    """Holds the first packaging until released, as a slow disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.calls = 0
        real = indexer_worker.package

        def package(*args: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                assert self.release.wait(30)
            return real(*args)

        monkeypatch.setattr(indexer_worker, "package", package)


def planned(registry: Registry, data_dir: Path) -> tuple[list[tuple[int, int]], list[Path]]:
    engine = SearchEngine(None, registry, data_dir)
    rows, refs = engine._plan_partition("t", 0, 0, -(2**63), 2**63 - 1)
    return [(r.base_offset, r.last_offset) for r in rows], [r.index_dir for r in refs]


def indexed(pi: PartitionIndexer, tmp_path: Path, batches: int) -> None:
    plog = _log(tmp_path)
    _fill(plog, batches)
    _run(pi, plog)


def test_records_stay_searchable_while_a_seal_is_packaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldPackaging(monkeypatch)
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    try:
        _searchable_while_packaged(held, registry, pi, tmp_path)
    finally:
        held.release.set()
        pi.close()
        registry.close()


def _searchable_while_packaged(
    held: HeldPackaging, registry: Registry, pi: PartitionIndexer, tmp_path: Path
) -> None:
    indexed(pi, tmp_path, 5)
    pi.seal()
    cp = registry.checkpoint("t", 0)
    assert cp is not None and cp.open_base == 50 and cp.open_state[SEALING]["next"] == 50
    indexed(pi, tmp_path, 3)  # indexing goes on meanwhile
    assert registry.segments("t", 0) == []
    rows, dirs = planned(registry, tmp_path)
    assert rows == [] and [_offsets(d) for d in dirs] == [list(range(50)), list(range(50, 80))]

    held.release.set()
    deadline = time.monotonic() + 30
    while pi._sealing is not None and time.monotonic() < deadline:
        pi.step(time.monotonic())
        time.sleep(0.01)
    (row,) = registry.segments("t", 0)
    assert (row.base_offset, row.last_offset, row.records) == (0, 49, 50)
    cp = registry.checkpoint("t", 0)
    assert cp is not None and SEALING not in cp.open_state and cp.indexed_offset == 80
    rows, dirs = planned(registry, tmp_path)
    assert rows == [(0, 49)] and [_offsets(d) for d in dirs] == [list(range(50, 80))]
    assert _offsets(tmp_path / "search" / row.object_key) == list(range(50))
    assert not open_index_dir(pi.open_dir, 0).exists()


@pytest.mark.parametrize("files_lost", [False, True])
def test_a_restart_before_the_seal_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files_lost: bool
) -> None:
    held = HeldPackaging(monkeypatch)
    registry = Registry(tmp_path / "registry.sqlite")
    cfg = WorkerConfig(tmp_path)
    pi = PartitionIndexer(cfg, registry, "t", 0, 0)
    try:
        indexed(pi, tmp_path, 5)
        pi.seal()
        indexed(pi, tmp_path, 3)
        # The worker dies with the packaging unfinished (its thread stays held).
        pi.writer = None
        pi._batches.close()
        (pi.open_dir / "stray-left-by-a-crash").write_bytes(b"x")
        if files_lost:
            frozen_batches(pi.open_dir, 0).unlink()
        again = PartitionIndexer(cfg, registry, "t", 0, 0)
        indexed(again, tmp_path, 2)
        if files_lost:
            # Its range is indexed again, into the open segment.
            assert registry.segments("t", 0) == []
            assert _offsets(again.index_dir) == list(range(100))
        else:
            (row,) = registry.segments("t", 0)
            assert (row.base_offset, row.last_offset) == (0, 49)
            assert _offsets(again.index_dir) == list(range(50, 100))
        cp = registry.checkpoint("t", 0)
        assert cp is not None and SEALING not in cp.open_state
        assert sorted(p.name for p in again.open_dir.iterdir()) == [
            "base",
            "batches.bin",
            again.index_dir.name,
        ]
        again.close()
    finally:
        held.release.set()
        registry.close()


async def test_a_search_across_a_publish_counts_every_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldPackaging(monkeypatch)
    registry = Registry(tmp_path / "registry.sqlite")
    pi = PartitionIndexer(WorkerConfig(tmp_path), registry, "t", 0, 0)
    # Only the topic's partition count: the search runs for real, in its process pool.
    storage = SimpleNamespace(metadata={"t": SimpleNamespace(partitions=1)})
    engine = SearchEngine(storage, registry, tmp_path, SearchConfig(workers=1))
    try:
        indexed(pi, tmp_path, 5)
        pi.seal()
        indexed(pi, tmp_path, 3)
        planned_sizes: list[int] = []
        run = engine._run

        async def publish_first(fn: Any, tasks: list[Any], heavy: bool = False) -> list[Any]:
            # The frozen segment is published (its directory removed) once it is planned.
            if not planned_sizes:
                held.release.set()
                pi._finish_sealing(wait=True)
            planned_sizes.append(len(tasks))
            return await run(fn, tasks, heavy)

        monkeypatch.setattr(engine, "_run", publish_first)

        def task(r: Any) -> SegmentTask:
            return SegmentTask(
                index_dir=str(r.index_dir),
                rank=0,
                query="*",
                min_offset=r.min_offset,
                generation=r.generation,
                sort_field="offset",
                descending=False,
                limit=100,
            )

        done = await engine._execute(search_many, task, ["t"], None, None, None)
        # Planned: the frozen and the open segment; again from 0: the row and the open one.
        assert planned_sizes == [2, 2]
        assert sum(res.total for _r, _t, res in done) == 80
        assert sorted(h[1] for _r, _t, res in done for h in res.hits) == list(range(80))
    finally:
        held.release.set()
        engine.close()
        pi.close()
        registry.close()
