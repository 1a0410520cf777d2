"""The indexer worker's handling of partitions whose topic is deleted while it works on
them (indexer_process.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.storage.index.partition_indexer import WorkerConfig
from app.storage.index.worker import _drop, _open_partition
from app.storage.segments.registry import Checkpoint, Registry


def test_dropping_a_partition_removes_a_checkpoint_made_after_the_delete(tmp_path: Path) -> None:
    """A state message read after its topic was deleted re-creates the checkpoint; the drop
    that follows must remove it, or the re-created topic starts from it."""
    cfg = WorkerConfig(tmp_path)
    registry = Registry(tmp_path / "registry.sqlite")
    pi = _open_partition(cfg, registry, ("t", 0), (0, 0, 600_000), {})
    assert pi is not None and registry.checkpoint("t", 0) is not None
    _drop(cfg, registry, ("t", 0), pi)
    assert registry.checkpoint("t", 0) is None
    assert not (tmp_path / "index" / "t-0").exists()
    registry.close()


def test_opening_a_partition_deleted_meanwhile_is_quiet_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = WorkerConfig(tmp_path)
    registry = Registry(tmp_path / "registry.sqlite")
    create = registry.create_checkpoint

    def deleted_right_after(cp: Checkpoint) -> None:
        create(cp)
        registry.drop_topic(cp.topic)

    monkeypatch.setattr(registry, "create_checkpoint", deleted_right_after)
    broken: dict[tuple[str, int], tuple[float, tuple[int, int, int]]] = {}
    assert _open_partition(cfg, registry, ("t", 0), (5, 0, 600_000), broken) is None
    assert broken == {}
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    registry.close()
