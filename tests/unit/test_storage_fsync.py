from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from app.storage.errors import StorageError
from app.storage.fileutil import TrickleSync, remove_large, remove_stale_tmp
from app.storage.log.batch import validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.memtail import MemTailBudget
from app.storage.log.partition import AppendResult, PartitionLog
from tests.unit.batchgen import make_batch


def open_log(
    root: Path, fsync: FsyncScheduler, name: str = "t-0", configs: dict[str, str] | None = None
) -> PartitionLog:
    return PartitionLog(root / name, "t", 0, configs or {}, fsync, MemTailBudget(1 << 20))


def append(plog: PartitionLog, value: bytes = b"v") -> AppendResult:
    data = make_batch([value])
    return plog.append(data, validate_batches(data), 0)


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    fs = FsyncScheduler("always")
    plog = open_log(tmp_path, fs)

    async def produce(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 5))
        result = append(plog, b"%d" % i)
        # Not visible to consumers before it is durable.
        assert plog.high_watermark <= result.base_offset
        await plog.wait_durable(result.last_offset + 1)
        assert plog.high_watermark > result.last_offset
        return result.base_offset

    offsets = await asyncio.gather(*(produce(i) for i in range(50)))
    assert sorted(offsets) == list(range(50))
    assert plog.high_watermark == 50
    # One fsync per round (plus the partition and logs directories once); far fewer than 50.
    assert fs.rounds <= 10
    assert fs.fsync_calls <= fs.rounds + 2
    await fs.close()
    plog.close()


async def test_one_round_syncs_many_logs(tmp_path: Path) -> None:
    fs = FsyncScheduler("always")
    logs = [open_log(tmp_path, fs, f"t-{i}") for i in range(5)]
    results = [append(p) for p in logs]
    await asyncio.gather(
        *(p.wait_durable(r.last_offset + 1) for p, r in zip(logs, results, strict=True))
    )
    assert fs.rounds == 1
    assert all(p.high_watermark == 1 for p in logs)
    await fs.close()
    for p in logs:
        p.close()


async def test_acks0_data_becomes_visible_without_waiters(tmp_path: Path) -> None:
    fs = FsyncScheduler("always")
    plog = open_log(tmp_path, fs)
    append(plog)
    assert plog.high_watermark == 0
    assert plog.read(0, 100) == []
    await plog.wait_for_data(0, 2.0)
    assert plog.high_watermark == 1
    assert plog.read(0, 100)
    await fs.close()
    plog.close()


async def test_wait_for_data_wakes_and_times_out(tmp_path: Path) -> None:
    fs = FsyncScheduler("interval", 10_000)
    plog = open_log(tmp_path, fs)
    started = time.monotonic()
    await plog.wait_for_data(0, 0.05)
    assert 0.04 < time.monotonic() - started < 1.0
    waiters = [asyncio.create_task(plog.wait_for_data(0, 5.0)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiters)
    append(plog)
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    await plog.wait_for_data(0, 5.0)  # already past: immediate
    await fs.close()
    plog.close()


async def test_interval_mode(tmp_path: Path) -> None:
    fs = FsyncScheduler("interval", 30)
    plog = open_log(tmp_path, fs)
    r = append(plog)
    assert plog.high_watermark == plog.log_end_offset == 1
    await plog.wait_durable(r.last_offset + 1)  # at once
    assert fs.fsync_calls == 0
    for _ in range(100):
        await asyncio.sleep(0.01)
        if fs.fsync_calls:
            break
    assert fs.fsync_calls >= 1
    await fs.close()
    plog.close()


async def test_never_mode_fsyncs_only_rolled_segments(tmp_path: Path) -> None:
    fs = FsyncScheduler("never")
    plog = open_log(tmp_path, fs, configs={"segment.bytes": "200"})
    append(plog, b"x" * 100)
    await asyncio.sleep(0.02)
    assert fs.fsync_calls == 0
    append(plog, b"y" * 100)  # rolls
    for _ in range(100):
        await asyncio.sleep(0.01)
        if fs.fsync_calls:
            break
    assert fs.fsync_calls >= 1
    assert (tmp_path / "t-0" / f"{0:020d}.index").exists()
    await fs.close()
    plog.close()


async def test_close_fails_pending_waiters_cleanly(tmp_path: Path) -> None:
    fs = FsyncScheduler("always")
    plog = open_log(tmp_path, fs)
    r = append(plog)
    plog.close()  # fsyncs: waiters for data already appended resolve
    await plog.wait_durable(r.last_offset + 1)
    with pytest.raises(StorageError):
        append(plog)
    await fs.close()


def test_invalid_mode() -> None:
    with pytest.raises(ValueError):
        FsyncScheduler("sometimes")


def test_large_files_are_synced_as_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def count(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", count)
    data = os.urandom(3 * 1024 * 1024 + 5)
    with open(tmp_path / "big", "wb") as f:
        out = TrickleSync(f, every=1024 * 1024)
        assert out.write(data[:10]) == 10
        assert out.write(data[10:]) == len(data) - 10
    assert (tmp_path / "big").read_bytes() == data
    # synced whenever a MiB is unsynced; the rest is the caller's final fsync
    assert synced == [1024 * 1024 + 10, 2 * 1024 * 1024 + 10]


def test_large_files_are_removed_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(os.urandom(20 * 1024 * 1024))
    remove_large(path)
    assert not path.exists()  # the name goes at once
    deadline = time.monotonic() + 10
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(tmp_path.iterdir()) == []
    remove_large(path)  # already gone: nothing to do


def test_a_removal_cut_short_by_a_crash_is_cleared_on_open(tmp_path: Path) -> None:
    leftover = tmp_path / ".00000000000000000000.log.123.4.tmp"
    leftover.write_bytes(b"x" * 100)
    remove_stale_tmp(tmp_path)
    assert not leftover.exists()
