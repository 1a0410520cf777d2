"""PartitionLog: the one object the broker appends to and fetches from for a partition. It
ties together the WAL segments, the memory tail, producer state (sequences and open
transactions), the aborted-transaction index and the high watermark that the group-commit
scheduler advances."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from app.storage import metrics
from app.storage.errors import (
    BatchLargerThanSegment,
    OffsetOutOfRange,
    RecordTooLarge,
    StorageError,
)
from app.storage.fileutil import atomic_write
from app.storage.log import retention
from app.storage.log.batch import (
    BatchHeader,
    set_base_offset,
    set_log_append_time,
    validate_batches,
)
from app.storage.log.fsync import FsyncScheduler, SyncWork
from app.storage.log.memtail import MemTail, MemTailBudget
from app.storage.log.producers import ProducerState, recover_producers
from app.storage.log.topicconfig import LogConfig
from app.storage.log.txn import AbortedIndex, AbortedTxn, build_marker
from app.storage.log.waiters import Waiters
from app.storage.log.wal import MAX_RELATIVE_OFFSET, Appended, Wal, WalSegment

log = logging.getLogger(__name__)

PRODUCER_SNAPSHOT = "producer-state.json"
LOG_START_FILE = "log-start-offset"


@dataclass
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 unless LogAppendTime
    log_start_offset: int


class PartitionLog:
    """Opening a PartitionLog recovers it (scans the active segment, replays producer
    state), which can take a while: callers on the event loop should do it in a thread."""

    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        configs: Mapping[str, str],
        fsync: FsyncScheduler,
        budget: MemTailBudget,
        tiered_start: int | None = None,
    ) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.config = LogConfig.from_configs(configs)
        self._fsync = fsync
        self._closed = False
        self._new_dirs: list[Path] = []
        if not directory.exists():
            directory.mkdir(parents=True)
            self._new_dirs = [directory, directory.parent]
        persisted_start = self._read_log_start()
        self._wal = Wal.open(directory, persisted_start)
        # Offsets below the WAL may live on in search segments (tiered storage).
        local_start = self._wal.segments[0].base_offset
        if tiered_start is not None:
            local_start = min(local_start, tiered_start)
        self.log_start_offset = min(max(persisted_start, local_start), self._wal.next_offset)
        self._aborted = AbortedIndex(directory)
        self._producers = recover_producers(directory / PRODUCER_SNAPSHOT, self._wal, self._aborted)
        if self._wal.active.size:
            # Whatever recovery kept is made durable before anyone can read it.
            os.fsync(self._wal.active.fd)
        self.high_watermark = self._wal.next_offset
        # End offset captured by the latest fsync round (started, maybe not finished).
        self._sync_started_end = self.high_watermark
        self._tail = MemTail(budget)
        self._pending_sealed: list[WalSegment] = []
        self._pending_jobs: list[Callable[[], None]] = []
        self._waiters = Waiters()
        # Offsets below it were rewritten by the log cleaner: fetched from search segments,
        # never from the memory tail or WAL, which still hold the uncompacted bytes.
        self.compacted_end = 0

    def __repr__(self) -> str:
        return f"PartitionLog({self.topic}-{self.partition})"

    def _read_log_start(self) -> int:
        try:
            return int((self.directory / LOG_START_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    @property
    def log_end_offset(self) -> int:
        return self._wal.next_offset

    @property
    def last_stable_offset(self) -> int:
        """Offsets below it are decided: no open transaction holds them (read_committed
        fetches stop here)."""
        first = self._producers.first_unstable_offset()
        if first is None:
            return self.high_watermark
        # Never below the log start (Kafka's maybeIncrementFirstUnstableOffset): a consumer
        # sent there would get OFFSET_OUT_OF_RANGE.
        return min(max(first, self.log_start_offset), self.high_watermark)

    def open_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of its open transaction on this partition."""
        return dict(self._producers.ongoing)

    def aborted_transactions(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping [start, end), by first offset."""
        return self._aborted.overlapping(start, end)

    @property
    def wal(self) -> Wal:
        return self._wal

    def layer_stats(self) -> dict[str, tuple[int, int]]:
        """(records, bytes) the memory tail and the WAL hold (they overlap: the memory
        tail caches the WAL's newest batches)."""
        first = self._tail.first_offset
        memory = (self.high_watermark - first, self._tail.bytes) if first is not None else (0, 0)
        wal = (max(self.high_watermark - self.wal_start_offset, 0), self.size_bytes())
        return {"memory": memory, "wal": wal}

    @property
    def wal_start_offset(self) -> int:
        """The first offset still in the local WAL; older ones are only in search segments."""
        return self._wal.segments[0].base_offset

    @property
    def producer_state(self) -> ProducerState:
        return self._producers

    def update_config(self, configs: Mapping[str, str]) -> None:
        self.config = LogConfig.from_configs(configs)

    def size_bytes(self) -> int:
        return self._wal.size_bytes()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.topic}-{self.partition} is closed")

    def append(
        self, data: bytes, batches: list[tuple[int, int, BatchHeader]], now_ms: int
    ) -> AppendResult:
        """Append validated batches (from validate_batches(data)) as one unit."""
        self._check_open()
        if not batches:
            raise StorageError("append needs at least one batch")
        cfg = self.config
        for _s, _e, h in batches:
            if h.size > cfg.max_message_bytes:
                raise RecordTooLarge(h.size, cfg.max_message_bytes)
            if h.size > cfg.segment_bytes:
                raise BatchLargerThanSegment(h.size, cfg.segment_bytes, "segment.bytes")
        self._producers.check(h for _s, _e, h in batches)

        first_start, last_end = batches[0][0], batches[-1][1]
        buf = bytearray(memoryview(data)[first_start:last_end])
        count = sum(h.last_offset_delta + 1 for _s, _e, h in batches)
        incoming_ts = now_ms if cfg.log_append_time else max(h.max_timestamp for *_, h in batches)
        self._maybe_roll(len(buf), now_ms, incoming_ts, count)

        seg = self._wal.active
        offset = base = self.log_end_offset
        appended: list[Appended] = []
        for start, end, h in batches:
            pos = start - first_start
            set_base_offset(buf, pos, offset)
            max_ts = h.max_timestamp
            if cfg.log_append_time:
                set_log_append_time(buf, pos, end - start, now_ms)
                max_ts = now_ms
            last = offset + h.last_offset_delta
            appended.append(Appended(seg.size + pos, end - start, offset, last, max_ts))
            offset = last + 1
        seg.append(buf, appended)

        # buf is never modified again, so views of it can be handed to fetches.
        view = memoryview(buf)
        seg_start = appended[0].position
        self._tail.append(
            [
                (a.base_offset, a.last_offset + 1, view[a.position - seg_start :][: a.size])
                for a in appended
            ]
        )
        append_time = now_ms if cfg.log_append_time else -1
        for (_s, _e, h), a in zip(batches, appended, strict=True):
            if h.is_idempotent:
                self._producers.update(
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.last_sequence,
                    a.base_offset,
                    a.last_offset,
                    append_time,
                    h.is_transactional,
                )
        mode = self._fsync.mode
        if mode != "always":
            self._advance_hw(offset)
        if mode != "never":
            self._fsync.mark_dirty(self, urgent=mode == "always")
        return AppendResult(base, offset - 1, append_time, self.log_start_offset)

    def append_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        now_ms: int,
    ) -> AppendResult:
        """Write the end-transaction marker of `producer_id`'s transaction (written even when
        the transaction wrote nothing here, as Kafka does) and close the transaction. Await
        `wait_durable(result.last_offset + 1)` before telling anyone it is decided."""
        self._check_open()
        self._producers.check_marker(producer_id, producer_epoch)
        data = build_marker(producer_id, producer_epoch, commit, coordinator_epoch, now_ms)
        result = self.append(data, validate_batches(data), now_ms)
        aborted = self._producers.end_txn(
            producer_id, producer_epoch, result.base_offset, int(commit)
        )
        if aborted is not None:
            self._aborted.append(aborted, self.last_stable_offset)
            # Queued before any later roll's producer snapshot, which must not cover a
            # marker whose index entry could still be lost.
            self._pending_jobs.append(self._aborted.sync)
        return result

    def _maybe_roll(self, incoming_bytes: int, now_ms: int, incoming_ts: int, count: int) -> None:
        seg = self._wal.active
        if seg.size == 0:
            return
        cfg = self.config
        if (
            seg.size + incoming_bytes > cfg.segment_bytes
            or seg.roll_age(now_ms, incoming_ts) > cfg.segment_ms
            or self.log_end_offset + count - 1 - seg.base_offset > MAX_RELATIVE_OFFSET
        ):
            self._roll()

    def _roll(self) -> None:
        """Seal the active segment. Its fsync, index files and a producer snapshot are written
        by the fsync scheduler's thread, off the event loop."""
        sealed = self._wal.roll()
        snapshot = self._producers.to_snapshot(self.log_end_offset)
        self._pending_sealed.append(sealed)
        self._pending_jobs.append(sealed.save_indexes)
        self._pending_jobs.append(
            partial(atomic_write, self.directory / PRODUCER_SNAPSHOT, snapshot)
        )
        self._new_dirs.append(self.directory)
        self._fsync.mark_dirty(self, urgent=True)

    def sync_prepare(self) -> SyncWork:
        """Called on the event loop by the fsync scheduler."""
        work = SyncWork(self.log_end_offset)
        if self._closed:
            return work
        work.jobs, self._pending_jobs = self._pending_jobs, []
        for seg in self._pending_sealed:
            if not seg.deleted:
                work.fds.append(os.dup(seg.fd))
        self._pending_sealed = []
        forced = self._waiters.start_round()
        if forced or (self._fsync.mode != "never" and work.end_offset > self._sync_started_end):
            work.fds.append(os.dup(self._wal.active.fd))
        self._sync_started_end = work.end_offset
        for d in dict.fromkeys(self._new_dirs):
            work.fds.append(os.open(d, os.O_RDONLY | os.O_DIRECTORY))
        self._new_dirs = []
        return work

    def sync_done(self, end_offset: int, error: BaseException | None) -> None:
        self._waiters.round_done(error)
        if error is not None:
            # Let the next waiter start a new round instead of waiting on this failed one.
            self._sync_started_end = self.high_watermark
            return
        if self._fsync.durable_on_ack:
            self._advance_hw(end_offset)

    def _advance_hw(self, offset: int) -> None:
        if offset <= self.high_watermark:
            return
        self.high_watermark = offset
        self._waiters.advanced(offset)

    async def wait_durable(self, offset: int) -> None:
        """Resolve once every offset below `offset` is fsynced (mode always; otherwise at
        once)."""
        if not self._fsync.durable_on_ack or self.high_watermark >= offset:
            return
        self._check_open()
        fut = self._waiters.add_durable(offset)
        if offset > self._sync_started_end:
            # Otherwise an fsync already under way covers it.
            self._fsync.mark_dirty(self, urgent=True)
        await fut

    async def wait_synced(self, offset: int) -> None:
        """wait_durable in every fsync mode: a transaction marker must be on disk before the
        coordinator records the outcome as final, or a lost marker would leave the
        transaction open here forever (and the last stable offset stuck)."""
        if self._fsync.durable_on_ack:
            await self.wait_durable(offset)
            return
        self._check_open()
        fut = self._waiters.add_forced()
        self._fsync.mark_dirty(self, urgent=True)
        await fut

    async def wait_for_data(self, offset: int, timeout: float, committed: bool = False) -> None:
        """Fetch long-poll: return when the high watermark (the last stable offset when
        `committed`) passes `offset`, or on timeout. Both only move when the high watermark
        does, so one future serves both."""
        bound = self.last_stable_offset if committed else self.high_watermark
        if bound > offset or self._closed:
            return
        await self._waiters.wait_data(timeout)

    def check_offset(self, offset: int) -> None:
        if offset < self.log_start_offset or offset > self.high_watermark:
            raise OffsetOutOfRange(offset, self.log_start_offset, self.high_watermark)

    def read(
        self, offset: int, max_bytes: int, upper: int | None = None
    ) -> list[bytes | memoryview] | None:
        """Whole stored batches from the one holding `offset`, below the high watermark and
        `upper` (read_committed: the last stable offset), at most `max_bytes` except that the
        first batch is always returned whole (KIP-74). None when `offset` is older than the
        local WAL: search segments hold it."""
        self._check_open()
        self.check_offset(offset)
        hw = self.high_watermark if upper is None else min(upper, self.high_watermark)
        if offset >= hw:
            return []
        hot = self._tail.read(offset, max_bytes, hw)
        if hot:
            metrics.FETCH_MEMORY.inc(sum(len(b) for b in hot))
            return list(hot)
        if offset < self.wal_start_offset:
            return None
        # A fetch may span segments: keep going while there is room.
        out: list[bytes | memoryview] = []
        remaining = max_bytes
        segments = self._wal.segments
        for i in range(self._wal.segment_for(offset), len(segments)):
            seg = segments[i]
            if seg.base_offset >= hw:
                break
            found = seg.read(offset, remaining, hw, first_whole=not out)
            if found is not None:
                out.append(found)
                remaining -= len(found)
            elif out:
                break
            offset = seg.next_offset
            if remaining <= 0:
                break
        metrics.FETCH_WAL.inc(max_bytes - remaining)
        return out

    def delete_wal_before(self, offset: int, older_than_ms: int, now_s: float) -> int:
        """Delete sealed WAL segments whose offsets are all below `offset` (published to the
        object store) and that were last written over `older_than_ms` ago. The log start
        does not move: search segments serve those offsets now. Returns bytes deleted."""
        first_open = self._producers.first_unstable_offset()
        if first_open is not None:
            # Recovery without a producer snapshot replays the WAL: it must still hold where
            # every open transaction starts.
            offset = min(offset, first_open)
        count = retention.uploaded_and_idle(self._wal.segments, offset, older_than_ms, now_s)
        if count == 0:
            return 0
        gone = self._wal.delete_oldest(count)
        self._pending_sealed = [s for s in self._pending_sealed if not s.deleted]
        return sum(s.size for s in gone)

    def delete_records(self, before_offset: int) -> int:
        """Move the log start to `before_offset` (-1 means the high watermark) and delete the
        segments entirely below it. Returns the new log start offset."""
        self._check_open()
        if before_offset == -1:
            before_offset = self.high_watermark
        if before_offset < 0 or before_offset > self.high_watermark:
            raise OffsetOutOfRange(before_offset, self.log_start_offset, self.high_watermark)
        if before_offset > self.log_start_offset:
            self.log_start_offset = before_offset
            atomic_write(self.directory / LOG_START_FILE, str(before_offset).encode())
            self._tail.truncate_before(before_offset)
            self._aborted.truncate_before(before_offset)
            self._delete_oldest(retention.below(self._wal.segments, before_offset))
        return self.log_start_offset

    def apply_retention(self, now_ms: int) -> int:
        """Delete whole segments past retention.ms / retention.bytes, oldest first. Returns
        the bytes deleted."""
        self._check_open()
        cfg = self.config
        if not cfg.delete_enabled:
            return 0
        deleted = self._delete_oldest(retention.past_retention_ms(self._wal.segments, cfg, now_ms))
        return deleted + self._delete_oldest(
            retention.past_retention_bytes(self._wal.segments, cfg, self.size_bytes())
        )

    def _delete_oldest(self, count: int) -> int:
        """Delete the `count` oldest segments; when that includes the active one (non-empty,
        as Kafka does), roll first so the log keeps an active segment at its end."""
        if count <= 0:
            return 0
        if count >= len(self._wal.segments):
            if self._wal.active.size == 0:
                count = len(self._wal.segments) - 1
            else:
                self._roll()
        gone = self._wal.delete_oldest(count)
        self._pending_sealed = [s for s in self._pending_sealed if not s.deleted]
        self.log_start_offset = max(self.log_start_offset, self._wal.segments[0].base_offset)
        self._tail.truncate_before(self.log_start_offset)
        self._aborted.truncate_before(self.log_start_offset)
        if gone:
            log.info(
                "%s-%d: deleted %d segment(s), log start now %d",
                self.topic,
                self.partition,
                len(gone),
                self.log_start_offset,
            )
        return sum(s.size for s in gone)

    def close(self) -> None:
        """Flush and fsync everything, save the active segment's indexes and a producer
        snapshot, release files."""
        if self._closed:
            return
        self._fsync.forget(self)
        work = self.sync_prepare()
        # Whatever the mode and whatever a round in flight covers, close syncs the tail.
        work.fds.append(os.dup(self._wal.active.fd))
        for job in work.jobs:
            job()
        self._aborted.sync()
        try:
            for fd in work.fds:
                os.fsync(fd)
        finally:
            for fd in work.fds:
                os.close(fd)
        self._wal.active.save_indexes()
        atomic_write(
            self.directory / PRODUCER_SNAPSHOT,
            self._producers.to_snapshot(self.log_end_offset),
        )
        self._advance_hw(self.log_end_offset)
        self._waiters.synced_by_close()
        self._shutdown()

    def _shutdown(self) -> None:
        self._closed = True
        self._wal.close()
        self._aborted.close()
        self._tail.close()
        self._waiters.closed(f"{self.topic}-{self.partition} was closed")

    def remove(self) -> None:
        """Delete every file of this partition (topic deletion)."""
        self._fsync.forget(self)
        if not self._closed:
            self._shutdown()
        self._wal.remove()
        shutil.rmtree(self.directory, ignore_errors=True)
