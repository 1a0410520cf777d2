"""The log cleaner's service side with real components: the registry's swap of cleaned
segments, run planning (last stable offset, min lag, dirty ratio), fetch and timestamp
lookups over cleaned segments with gaps or no batch at all (real segment files holding fewer
batches than the WAL), a run through the real pool process with a small real job, and
restarts."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import tantivy

from app.config import CleanerConfig, IndexConfig, LogConfig, Settings
from app.storage.clean import CleanedSegment, CleanJob, CleanResult, plan_clean
from app.storage.errors import OffsetOutOfRange
from app.storage.index import build_schema
from app.storage.log import FsyncScheduler, MemTailBudget, PartitionLog, validate_batches
from app.storage.segments import (
    DELETING,
    LOCAL,
    Checkpoint,
    CleanerState,
    Registry,
    SegmentRow,
    read_manifest,
    write_segment,
)
from app.storage.store import Storage
from tests.unit.batchgen import Record, make_batch

T0 = int(time.time() * 1000) - 3_600_000
PER_BATCH = 5


def _batch(i: int, count: int = PER_BATCH, start: int | None = None) -> bytes:
    """Batch `i` of a partition: records start.. (default i * PER_BATCH) keyed k0..k4."""
    base = i * PER_BATCH if start is None else start
    recs = [Record(b"v%d" % (base + j), key=b"k%d" % j) for j in range(count)]
    return make_batch(recs, base_offset=base, timestamp=T0 + base * 1000)


def _append(plog: PartitionLog, data: bytes) -> None:
    plog.append(data, validate_batches(data), int(time.time() * 1000))


def _segment(
    data_dir: Path, topic: str, base: int, last: int, batches: list[bytes], name: str = ""
) -> tuple[str, dict[str, object]]:
    """A real segment file in the segment cache holding `batches`, offset range [base, last]."""
    work = data_dir / "work" / f"{base}{name}"
    index_dir = work / "tantivy"
    index_dir.mkdir(parents=True)
    tantivy.Index(build_schema(), path=str(index_dir))
    batches_path = work / "batches.bin"
    batches_path.write_bytes(b"".join(batches))
    key = f"{topic}/0/{base:020d}-{last:020d}-t{name}.seg"
    manifest = write_segment(
        data_dir / "segments" / key,
        topic=topic,
        partition=0,
        batches_path=batches_path,
        batches_size=batches_path.stat().st_size,
        index_dir=index_dir,
        min_timestamp=T0 + base * 1000,
        max_timestamp=T0 + last * 1000,
        docs=0,
        base_offset=base,
        last_offset=last,
    )
    return key, manifest


def _register(registry: Registry, key: str, manifest: dict[str, object]) -> SegmentRow:
    row = SegmentRow.sealed(key, manifest)
    cp = Checkpoint(row.topic, row.partition, row.next_offset, row.next_offset, {})
    registry.create_checkpoint(cp)
    assert registry.publish(row, cp)
    return row


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        log=LogConfig(retention_check_ms=0, fsync="interval"),
        index=IndexConfig(workers=0),
        cleaner=CleanerConfig(enabled=False),
    )


def _joined(chunks: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


# -- registry ----------------------------------------------------------------------------


def _row(topic: str, base: int, last: int, key: str) -> SegmentRow:
    manifest = {
        "topic": topic,
        "partition": 0,
        "base_offset": base,
        "last_offset": last,
        "min_timestamp": 1,
        "max_timestamp": 2,
        "records": last - base + 1,
        "size": 100,
    }
    return SegmentRow.sealed(key, manifest)


def test_replace_many_swaps_rows_and_checkpoint_in_one_transaction(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    a, b, c = [
        _register(registry, f"t/0/{i}.seg", _row("t", i * 10, i * 10 + 9, "").manifest)
        for i in range(3)
    ]
    state = CleanerState("t", 0, 20, 123, 0.75)
    assert registry.replace_many(
        [a.id, b.id], [_row("t", 0, 9, "n0"), _row("t", 10, 19, "n1")], state
    )
    live = registry.segments("t", 0)
    assert [(r.object_key, r.state) for r in live] == [
        ("n0", LOCAL),
        ("n1", LOCAL),
        (c.object_key, LOCAL),
    ]
    assert {r.object_key for r in registry.segments("t", 0, states=(DELETING,))} == {
        a.object_key,
        b.object_key,
    }
    assert registry.cleaner_state("t", 0) == state

    # One source already gone (a merge or retention was first): nothing changes at all.
    later = CleanerState("t", 0, 30, 456, 0.5)
    assert not registry.replace_many([c.id, a.id], [_row("t", 20, 29, "n2")], later)
    assert [r.object_key for r in registry.segments("t", 0)] == ["n0", "n1", c.object_key]
    assert registry.cleaner_state("t", 0) == state

    # A run that changed no segment still moves the checkpoint, but never for a partition
    # with no live segment (its topic was dropped).
    assert registry.replace_many([], [], later)
    assert registry.cleaner_state("t", 0) == later
    assert not registry.replace_many([], [], CleanerState("gone", 0, 5, 1, 1.0))
    assert registry.cleaner_state("gone", 0) is None

    registry.drop_topic("t")
    assert registry.cleaner_states() == []
    registry.close()


def test_a_registry_made_before_the_cleaner_opens(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE checkpoints (topic TEXT NOT NULL, partition INTEGER NOT NULL, "
        "open_base INTEGER NOT NULL, indexed_offset INTEGER NOT NULL, open_state TEXT NOT NULL, "
        "updated_ms INTEGER NOT NULL, PRIMARY KEY (topic, partition));"
        "INSERT INTO checkpoints VALUES ('t', 0, 5, 5, '{}', 1);"
    )
    db.close()
    registry = Registry(path)
    assert registry.cleaner_states() == [] and registry.checkpoint("t", 0) is not None
    registry.close()


# -- planning ----------------------------------------------------------------------------


def _plog(tmp_path: Path, configs: dict[str, str], name: str = "t-0") -> PartitionLog:
    return PartitionLog(
        tmp_path / "logs" / name,
        "t",
        0,
        {"cleanup.policy": "compact", **configs},
        FsyncScheduler("interval"),
        MemTailBudget(1 << 20),
    )


def _rows(now: int, ages_s: list[int]) -> list[SegmentRow]:
    out = []
    for i, age in enumerate(ages_s):
        row = _row("t", i * 10, i * 10 + 9, f"r{i}")
        row.max_timestamp = now - age * 1000
        row.min_timestamp = row.max_timestamp - 1000
        row.id = i + 1
        out.append(row)
    return out


def test_planning_stops_at_the_last_stable_offset_and_the_min_lag(tmp_path: Path) -> None:
    plog = _plog(tmp_path, {"min.compaction.lag.ms": "60000"})
    # One batch past the segments: the one holding the log's last offset is never cleaned.
    for i in range(6):
        _append(plog, make_batch([Record(b"v", key=b"k")] * 10, base_offset=i * 10))
    now = int(time.time() * 1000)
    rows = _rows(now, [600, 500, 400, 300, 200])
    plan = plan_clean(plog, rows, None, now)
    assert plan is not None and [r.base_offset for r in plan.rows] == [0, 10, 20, 30, 40]
    assert plan.due and plan.dirty_ratio == 1.0 and plan.dirty_from == 0

    # Younger than min.compaction.lag.ms: that segment and all after it wait.
    young = _rows(now, [600, 500, 30, 300, 200])
    plan = plan_clean(plog, young, None, now)
    assert plan is not None and [r.base_offset for r in plan.rows] == [0, 10]

    plog.close()

    # A transaction open from offset 20 holds the last stable offset there.
    plog = _plog(tmp_path, {}, "txn-0")
    for i in range(5):
        recs = [Record(b"v", key=b"k")] * 10
        if i == 2:
            txn = make_batch(
                recs, producer_id=7, producer_epoch=0, base_sequence=0, transactional=True
            )
            _append(plog, txn)
        else:
            _append(plog, make_batch(recs))
    assert plog.last_stable_offset == 20
    plan = plan_clean(plog, rows, None, now)
    assert plan is not None and [r.base_offset for r in plan.rows] == [0, 10]
    plog.close()


def test_planning_dirty_ratio_and_max_lag(tmp_path: Path) -> None:
    plog = _plog(tmp_path, {"min.cleanable.dirty.ratio": "0.5"})
    for i in range(5):
        _append(plog, make_batch([Record(b"v", key=b"k")] * 10, base_offset=i * 10))
    now = int(time.time() * 1000)
    rows = _rows(now, [600, 500, 400, 300])
    # Three of four equal segments cleaned: a quarter dirty is not enough.
    state = CleanerState("t", 0, 30, now, 1.0)
    plan = plan_clean(plog, rows, state, now)
    assert plan is not None and plan.dirty_ratio == 0.25 and not plan.due
    # Half dirty is.
    plan = plan_clean(plog, rows, CleanerState("t", 0, 20, now, 1.0), now)
    assert plan is not None and plan.dirty_ratio == 0.5 and plan.due
    # Nothing dirty: never due, whatever the lag.
    plan = plan_clean(plog, rows, CleanerState("t", 0, 40, now, 1.0), now)
    assert plan is not None and plan.dirty_ratio == 0.0 and not plan.due
    # A dirty segment older than max.compaction.lag.ms makes the run due at any ratio.
    plog.update_config({"cleanup.policy": "compact", "max.compaction.lag.ms": "250000"})
    plan = plan_clean(plog, rows, state, now)
    assert plan is not None and plan.dirty_ratio == 0.25 and plan.due
    # Measured from the segment's earliest record, as Kafka does: a dirty segment whose
    # newest record is young but whose oldest is past the lag is due.
    plog.update_config({"cleanup.policy": "compact", "max.compaction.lag.ms": "350000"})
    assert not plan_clean(plog, rows, state, now).due  # type: ignore[union-attr]
    rows[3].min_timestamp = now - 400_000
    assert plan_clean(plog, rows, state, now).due  # type: ignore[union-attr]
    plog.close()


# -- read routing ------------------------------------------------------------------------


async def test_reads_below_the_compacted_end_skip_gaps_and_empty_segments(
    tmp_path: Path,
) -> None:
    storage = Storage(_settings(tmp_path))
    await storage.start()
    storage.create_topic("c", 1, {"cleanup.policy": "compact"})
    plog = storage.log("c", 0)
    batches = [_batch(i) for i in range(8)]  # offsets 0..39
    for b in batches:
        _append(plog, b)
    # Cleaned: [0, 9] kept only batch 1, [10, 19] nothing, [20, 29] only batch 4.
    for base, kept in ((0, [batches[1]]), (10, []), (20, [batches[4]])):
        _register(storage.registry, *_segment(tmp_path, "c", base, base + 9, kept))

    # Before the cleaner's end is known, the memory tail answers (uncompacted).
    assert _joined(await storage.read(plog, 0, 1)) == batches[0]
    plog.compacted_end = 30
    assert _joined(await storage.read(plog, 0, 1 << 20)) == batches[1]
    assert _joined(await storage.read(plog, 7, 1 << 20)) == batches[1]
    assert _joined(await storage.read(plog, 10, 1 << 20)) == batches[4]
    assert _joined(await storage.read(plog, 12, 1 << 20, upper=21)) == batches[4]
    # The next batch starts at the bound: nothing yet (read_committed at the LSO).
    assert await storage.read(plog, 10, 1 << 20, upper=20) == []
    # No segment has a batch from 25 on: the WAL goes on at the compacted end.
    assert _joined(await storage.read(plog, 25, 1)) == batches[6]
    assert await storage.read(plog, 40, 1 << 20) == []
    with pytest.raises(OffsetOutOfRange):
        await storage.read(plog, 41, 1 << 20)

    # Timestamp lookups skip what was cleaned away: batch 0's time finds batch 1.
    assert await storage.offset_for_timestamp(plog, T0) == (5, T0 + 5000)
    assert await storage.offset_for_timestamp(plog, T0 + 11_000) == (20, T0 + 20_000)
    assert await storage.offset_for_timestamp(plog, T0 + 26_000) == (30, T0 + 30_000)
    assert await storage.max_timestamp(plog) == (T0 + 35_000, 39)
    await storage.close()


async def test_a_batch_at_the_bound_after_a_gap_is_not_returned(tmp_path: Path) -> None:
    """The batch index has no base offsets; after a gap the next batch starts later than
    the previous one's end, so the index alone would take it for one below the bound."""
    storage = Storage(_settings(tmp_path))
    await storage.start()
    storage.create_topic("g", 1, {"cleanup.policy": "compact"})
    plog = storage.log("g", 0)
    first, filler, last = _batch(0, 2), _batch(0, 4, start=2), _batch(0, 4, start=6)
    for b in (first, filler, last):
        _append(plog, b)
    _register(storage.registry, *_segment(tmp_path, "g", 0, 9, [first, last]))
    plog.compacted_end = 10
    assert _joined(await storage.read(plog, 0, 1 << 20, upper=5)) == first
    assert await storage.read(plog, 2, 1 << 20, upper=6) == []
    assert _joined(await storage.read(plog, 2, 1 << 20, upper=7)) == last
    assert _joined(await storage.read(plog, 0, 1 << 20)) == first + last
    await storage.close()


# -- a run through the pool --------------------------------------------------------------


def drop_first_batch(job: CleanJob) -> CleanResult:
    """A small real job (runs in the cleaner's pool process): each source loses its first
    batch, keeping its offset range."""
    segments = []
    for src in job.sources:
        manifest = read_manifest(src.path)
        sec = manifest["sections"]["batches"]
        data = src.path.read_bytes()[sec["offset"] : sec["offset"] + sec["size"]]
        rest = data[int.from_bytes(data[8:12], "big") + 12 :]
        work = job.out_dir.parent / "clean" / src.key
        index_dir = work / "tantivy"
        index_dir.mkdir(parents=True)
        tantivy.Index(build_schema(), path=str(index_dir))
        (work / "b.bin").write_bytes(rest)
        key = f"{job.topic}/{job.partition}/{src.base_offset:020d}-{src.last_offset:020d}-c.seg"
        out = job.out_dir / key
        new = write_segment(
            out,
            topic=job.topic,
            partition=job.partition,
            batches_path=work / "b.bin",
            batches_size=len(rest),
            index_dir=index_dir,
            min_timestamp=manifest["min_timestamp"],
            max_timestamp=src.max_timestamp,
            docs=0,
            base_offset=src.base_offset,
            last_offset=src.last_offset,
        )
        segments.append(CleanedSegment(src.key, out, new))
    return CleanResult(
        segments=tuple(segments),
        cleaned_end=job.sources[-1].last_offset + 1,
        bytes_read=sum(s.path.stat().st_size for s in job.sources),
        bytes_written=sum(s.manifest["size"] for s in segments if s.manifest),
        records_kept=0,
        records_removed=0,
    )


def lose_the_race(job: CleanJob) -> CleanResult:
    """Retention deletes the first source while the job runs."""
    registry = Registry(job.out_dir.parent / "registry.sqlite")
    registry.mark_deleting_below(job.topic, job.partition, job.sources[0].last_offset + 1)
    registry.close()
    return drop_first_batch(job)


async def _two_segments(
    tmp_path: Path, total_batches: int
) -> tuple[Storage, PartitionLog, list[bytes], list[SegmentRow]]:
    """A started Storage with compacted topic c: `total_batches` batches in the WAL, the
    first four also in two sealed segments [0, 9] and [10, 19]."""
    storage = Storage(_settings(tmp_path))
    await storage.start()
    storage.create_topic("c", 1, {"cleanup.policy": "compact"})
    plog = storage.log("c", 0)
    batches = [_batch(i) for i in range(total_batches)]
    for b in batches:
        _append(plog, b)
    rows = [
        _register(
            storage.registry,
            *_segment(tmp_path, "c", i * 10, i * 10 + 9, batches[2 * i : 2 * i + 2]),
        )
        for i in range(2)
    ]
    return storage, plog, batches, rows


async def test_a_run_swaps_segments_and_a_restart_keeps_the_compacted_end(
    tmp_path: Path,
) -> None:
    from app.storage import metrics

    storage, plog, batches, old = await _two_segments(tmp_path, 6)
    storage.cleaner.job = drop_first_batch
    runs = metrics.CLEANER_RUNS._value.get()
    assert await storage.cleaner.run_once() == 1
    assert metrics.CLEANER_RUNS._value.get() == runs + 1
    live = storage.registry.segments("c", 0)
    assert [r.object_key.endswith("-c.seg") for r in live] == [True, True]
    assert [(r.base_offset, r.last_offset) for r in live] == [(0, 9), (10, 19)]
    assert len(storage.registry.segments("c", 0, states=(DELETING,))) == 2
    state = storage.registry.cleaner_state("c", 0)
    assert state is not None and state.cleaned_end == 20 and state.dirty_ratio == 1.0
    assert plog.compacted_end == 20
    assert storage.cleaner.status("c", 0) == (0.0, state.last_run_ms)
    assert _joined(await storage.read(plog, 0, 1 << 20)) == batches[1]
    assert _joined(await storage.read(plog, 10, 1)) == batches[3]
    # All clean now: the next pass has nothing to do.
    assert await storage.cleaner.run_once() == 0
    await storage.close()

    storage = Storage(_settings(tmp_path))
    await storage.start()
    plog = storage.log("c", 0)
    assert plog.compacted_end == 20
    assert _joined(await storage.read(plog, 0, 1 << 20)) == batches[1]
    assert not {r.id for r in old} & {r.id for r in storage.registry.segments("c", 0)}
    await storage.close()


async def test_a_run_that_loses_the_race_changes_nothing_and_orphans_go_at_start(
    tmp_path: Path,
) -> None:
    storage, plog, _batches, _rows = await _two_segments(tmp_path, 4)
    storage.cleaner.job = lose_the_race
    assert await storage.cleaner.run_once() == 0
    assert storage.registry.cleaner_state("c", 0) is None and plog.compacted_end == 0
    assert [r.base_offset for r in storage.registry.segments("c", 0)] == [10]
    assert not list((tmp_path / "segments").rglob("*-c.seg"))
    # What a crash mid-run leaves: a result not yet swapped in, the job's work directory.
    orphan = tmp_path / "segments" / "c" / "0" / f"{0:020d}-{9:020d}-x.seg"
    orphan.write_bytes(b"half")
    (tmp_path / "clean" / "c-0").mkdir(parents=True)
    await storage.close()

    storage = Storage(_settings(tmp_path))
    await storage.start()
    assert not orphan.exists() and not (tmp_path / "clean").exists()
    # A deleted topic takes its cleaner checkpoint with it.
    storage.registry.replace_many([], [], CleanerState("c", 0, 20, 1, 0.5))
    storage.delete_topic("c")
    assert storage.registry.cleaner_states() == []
    await storage.close()


async def test_a_compacted_topic_seals_by_its_segment_ms(tmp_path: Path) -> None:
    storage = Storage(_settings(tmp_path))
    await storage.start()
    storage.create_topic("c", 1, {"cleanup.policy": "compact", "segment.ms": "5000"})
    storage.create_topic("d", 1, {"segment.ms": "5000"})
    states = storage.partition_states()
    assert states[("c", 0)][2] == 5000
    assert states[("d", 0)][2] == storage.settings.index.segment_max_age_ms
    storage.set_topic_configs("d", {"cleanup.policy": "compact,delete", "segment.ms": "5000"})
    assert storage.partition_states()[("d", 0)][2] == 5000
    await storage.close()


async def test_the_real_job_keeps_the_latest_record_per_key(tmp_path: Path) -> None:
    """The service side and job.py together: two segments of the same five keys cleaned by
    the real job leave the second segment's records only, at their offsets; the batch
    after them (the log's last, never cleaned) follows from the WAL."""
    from tests.unit.batchgen import decode_batches

    storage, plog, _batches, _rows = await _two_segments(tmp_path, 5)
    assert await storage.cleaner.run_once() == 1
    assert plog.compacted_end == 20
    offsets, offset = [], 0
    while offset < plog.high_watermark:
        chunks = await storage.read(plog, offset, 1 << 20)
        assert chunks, offset
        for batch in decode_batches(_joined(chunks)):
            assert batch.crc_ok
            offsets += [r.offset for r in batch.records]
            offset = batch.base_offset + batch.last_offset_delta + 1
    # Keys k0..k4 repeat every batch: offsets 15..19 hold the last of each below 20.
    assert offsets == list(range(15, 25))
    await storage.close()
