"""Merging small adjacent sealed segments: exact batch bytes, every document once, the
registry swap, and source objects kept until the merged segment is uploaded."""

from __future__ import annotations

from pathlib import Path

from app.config import IndexConfig
from app.storage.index.merge import MIN_SMALL_RUN, merge_partition, plan_merge
from app.storage.index.partition_indexer import PartitionIndexer, WorkerConfig
from app.storage.index.sealing import object_key
from app.storage.segments.format import extract_tantivy, verify_segment
from app.storage.segments.registry import DELETING, LOCAL, UPLOADED, Registry
from tests.unit.test_storage_segments import _fill, _log, _offsets, _run


def _sealed_segments(tmp_path: Path, count: int) -> tuple[Registry, WorkerConfig]:
    plog = _log(tmp_path)
    registry = Registry(tmp_path / "registry.sqlite")
    cfg = WorkerConfig(tmp_path, IndexConfig(segment_max_records=1000, segment_max_bytes=1 << 30))
    pi = PartitionIndexer(cfg, registry, "t", 0, 0)
    for _ in range(count):
        _fill(plog, 3)
        _run(pi, plog)
        pi.seal(wait=True)
    pi.close()
    plog.close()
    return registry, cfg


def _merge(registry: Registry, cfg: WorkerConfig) -> bool:
    return merge_partition(
        registry,
        cfg.data_dir,
        "t",
        0,
        cfg.index.segment_max_records,
        cfg.index.segment_max_bytes,
        object_key,
    )


def test_small_segments_merge_into_one_with_the_same_bytes_and_documents(
    tmp_path: Path,
) -> None:
    registry, cfg = _sealed_segments(tmp_path, MIN_SMALL_RUN + 1)
    sources = registry.segments("t", 0)
    assert [r.records for r in sources] == [30] * (MIN_SMALL_RUN + 1)
    for r in sources[:2]:
        assert registry.set_state(r.id, UPLOADED, expect=LOCAL)
    batches = b"".join(
        (tmp_path / "segments" / r.object_key).read_bytes()[
            r.manifest["sections"]["batches"]["offset"] : r.manifest["sections"]["batches"][
                "offset"
            ]
            + r.manifest["sections"]["batches"]["size"]
        ]
        for r in sources
    )
    assert _merge(registry, cfg)
    (merged,) = registry.segments("t", 0)
    assert (merged.base_offset, merged.last_offset, merged.records) == (0, 149, 150)
    path = tmp_path / "segments" / merged.object_key
    manifest = verify_segment(path)
    sec = manifest["sections"]["batches"]
    assert path.read_bytes()[sec["offset"] : sec["offset"] + sec["size"]] == batches
    assert manifest["docs"] == 150
    dest = tmp_path / "merged-index"
    extract_tantivy(path, manifest, dest)
    assert _offsets(dest) == list(range(150))
    # Each segment holds the same 30 values (_fill counts from 0 each time).
    want = [s * 30 + i for s in range(5) for i in range(6) if i % 3]
    assert _offsets(dest, "value.status:[200 TO 205]") == want
    # The sources leave the log, but their objects stay until the merge is uploaded.
    assert {r.id for r in registry.segments("t", 0, states=(DELETING,))} == {r.id for r in sources}
    assert registry.deletable() == []
    assert not registry.set_state(sources[2].id, UPLOADED, expect=LOCAL)
    assert registry.set_state(merged.id, UPLOADED, expect=LOCAL)
    assert {r.id for r in registry.deletable()} == {r.id for r in sources}
    assert not _merge(registry, cfg)  # nothing small left in a row
    registry.close()


def test_merge_plan_respects_limits_gaps_and_the_minimum_run(tmp_path: Path) -> None:
    registry, _ = _sealed_segments(tmp_path, MIN_SMALL_RUN)
    rows = registry.segments("t", 0)
    local = lambda r: True  # noqa: E731
    assert plan_merge(rows[:-1], 1000, 1 << 30, local) is None  # too few small ones
    assert plan_merge(rows, 1000, 1 << 30, local) == rows
    # Together they may not exceed the seal limits: runs of two here.
    assert plan_merge(rows, 70, 1 << 30, local) == rows[:2]
    # A gap (records deleted between them) breaks the run.
    rows[2].base_offset += 1
    assert plan_merge(rows, 1000, 1 << 30, local) == rows[:2]
    rows[2].base_offset -= 1
    # Segments that are only in the object store are not merged (nor counted).
    assert plan_merge(rows, 1000, 1 << 30, lambda r: r is not rows[1]) is None
    registry.close()


def test_merge_gives_up_when_a_source_left_the_log(tmp_path: Path) -> None:
    registry, _ = _sealed_segments(tmp_path, MIN_SMALL_RUN)
    rows = registry.segments("t", 0)
    registry.mark_deleting_below("t", 0, rows[0].next_offset)
    # The plan saw it live; the swap must refuse and leave no merged file behind.
    before = set((tmp_path / "segments").rglob("*.seg"))
    key = object_key("t", 0, 0, rows[-1].last_offset)
    row = rows[0]
    row.object_key = key
    assert not registry.replace([r.id for r in rows], row)
    assert len(registry.segments("t", 0)) == MIN_SMALL_RUN - 1
    assert set((tmp_path / "segments").rglob("*.seg")) == before
    registry.close()
