"""The cleaner under faults: a source pinned for a run is not deleted (truncated) by the
tiering loop when it leaves the log mid-run (that killed the pool process with SIGBUS on the
mmap); a dead pool process is replaced; and a log is never cleaned to its very end."""

from __future__ import annotations

import os
from pathlib import Path

from app.storage.clean import CleanJob, CleanResult, run_clean
from app.storage.clean.source import SourceFile
from app.storage.store import Storage
from tests.unit.batchgen import Record, make_batch
from tests.unit.test_cleaner import (
    T0,
    _append,
    _joined,
    _register,
    _segment,
    _settings,
    _two_segments,
)


def truncate_while_mapped(job: CleanJob) -> CleanResult:
    """What the tiering loop's forget_local (remove_large: ftruncate 8 MiB at a time) does to
    a source the job has mapped, when retention, DeleteRecords, DeleteTopics or a merge moved
    it to `deleting` during the run."""
    src = job.sources[0]
    with SourceFile(src.path) as f:
        fd = os.open(src.path, os.O_WRONLY)
        os.ftruncate(fd, 0)
        os.close(fd)
        for _ in f.batches():  # touches the truncated pages: SIGBUS
            pass
    return run_clean(job)


async def test_a_dead_pool_process_is_replaced(tmp_path: Path) -> None:
    storage, _plog, _batches, _rows = await _two_segments(tmp_path, 4)
    # Keep a copy: the first job destroys source 0's file.
    seg0 = storage.registry.segments("c", 0)[0]
    path0 = storage.tiering.local_path(seg0)
    saved = path0.read_bytes()
    storage.cleaner.job = truncate_while_mapped
    assert await storage.cleaner.run_once() == 0
    path0.write_bytes(saved)
    storage.cleaner.job = run_clean
    # A later pass with an ordinary job works again (it used to fail with BrokenProcessPool
    # forever: the broken executor was handed out again).
    assert await storage.cleaner.run_once() == 1
    await storage.close()


async def test_a_pinned_source_is_not_deleted_from_the_cache_during_a_run(
    tmp_path: Path,
) -> None:
    storage, _plog, _batches, _rows = await _two_segments(tmp_path, 4)
    live = storage.registry.segments("c", 0)
    paths = await storage.tiering.pin_local(live)
    # Retention / DeleteRecords / DeleteTopics / a merge's upload while the job reads them:
    storage.registry.mark_deleting_below("c", 0, 20)
    await storage.tiering.run_once()
    # The job in the pool process has these files mmapped; shrinking them is a SIGBUS.
    assert all(p.exists() for p in paths), "pinned sources were removed mid-run"
    storage.tiering.unpin(live)
    await storage.close()


async def test_the_segment_holding_the_last_offset_is_never_cleaned(tmp_path: Path) -> None:
    """Every key ends in an expired tombstone: had both segments been cleaned they would hold
    no batch, and a fetch at 0 below the high watermark 20 would be empty forever (a
    Streams-style restore reading to the end offset never finishes). As Kafka never cleans
    the active segment, the segment holding offset 19 stays, and a consumer from 0 reaches
    the end."""
    from tests.unit.batchgen import decode_batches

    storage = Storage(_settings(tmp_path))
    await storage.start()
    storage.create_topic("z", 1, {"cleanup.policy": "compact", "delete.retention.ms": "1000"})
    plog = storage.log("z", 0)
    batches = []
    for i in range(4):
        base = i * 5
        value = None if i == 3 else b"v"
        recs = [Record(value, key=b"k%d" % j) for j in range(5)]
        batches.append(make_batch(recs, base_offset=base, timestamp=T0 + base * 1000))
    for b in batches:
        _append(plog, b)
    for i in range(2):
        _register(
            storage.registry,
            *_segment(tmp_path, "z", i * 10, i * 10 + 9, batches[2 * i : 2 * i + 2]),
        )
    assert await storage.cleaner.run_once() == 1
    assert plog.compacted_end == 10 and plog.high_watermark == 20
    offset = 0
    while offset < plog.high_watermark:
        chunks = await storage.read(plog, offset, 1 << 20)
        assert chunks, f"empty fetch at {offset} below the high watermark"
        for batch in decode_batches(_joined(chunks)):
            offset = batch.base_offset + batch.last_offset_delta + 1
    await storage.close()
