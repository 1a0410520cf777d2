"""Storage: the facade the broker and the HTTP API use. It owns the metadata store, every
partition log, the group-commit scheduler, the memory-tail budget and the retention task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from app.config import Settings
from app.storage import metrics
from app.storage.clean import Cleaner
from app.storage.errors import UnknownTopic
from app.storage.index import Indexer, WorkerConfig, partition_dir_name
from app.storage.log import (
    FsyncScheduler,
    MemTailBudget,
    MetadataStore,
    PartitionLog,
    TopicMeta,
    wal_max_timestamp,
    wal_offset_for_timestamp,
)
from app.storage.search import SearchEngine
from app.storage.segments import Registry
from app.storage.tier import Tiering, open_object_store

log = logging.getLogger(__name__)


def _parse_log_dir(name: str) -> tuple[str, int] | None:
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


class Storage:
    def __init__(self, settings: Settings) -> None:
        """Hands each storage subsystem its section of the settings; the log's is read here
        as the facade owns the partition logs."""
        self.settings = settings
        data_dir, cfg = settings.data_dir, settings.log
        self.metadata = MetadataStore(data_dir, cfg.segment_bytes, cfg.segment_ms)
        self.fsync = FsyncScheduler(cfg.fsync, cfg.fsync_interval_ms)
        self.memtail = MemTailBudget(cfg.memtail_bytes)
        self.logs_dir = data_dir / "logs"
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._retention_task: asyncio.Task[None] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(data_dir / "registry.sqlite")
        tier = settings.tiering
        self.objects = open_object_store(
            tier.object_store or None, data_dir, tier.s3_endpoint_url or None
        )
        self.segments_dir = data_dir / "segments"
        self.index_dir = data_dir / "index"
        self.tiering = Tiering(
            self.registry, self.objects, tier, self.segments_dir, search_dir=data_dir / "search"
        )
        self.search = SearchEngine(self, self.registry, data_dir, settings.search)
        self.indexer: Indexer | None = None
        if settings.index.workers > 0:
            self.indexer = Indexer(
                WorkerConfig(data_dir, settings.index),
                self.partition_states,
                settings.log_level.upper(),
                on_sealed=self.tiering.kick,
            )
        self._tier_task: asyncio.Task[None] | None = None
        self.cleaner = Cleaner(self.registry, self.tiering, self.partition_logs, settings.cleaner)
        if self.indexer is not None:
            metrics.SEARCH_FRESHNESS.set_function(self.indexer.max_lag_seconds)

    def _log_dir(self, topic: str, partition: int) -> Path:
        return self.logs_dir / f"{topic}-{partition}"

    def _open_log(self, topic: str, partition: int) -> PartitionLog:
        return PartitionLog(
            self._log_dir(topic, partition),
            topic,
            partition,
            self.metadata.topic_configs(topic),
            self.fsync,
            self.memtail,
            self.tiering.first_base(topic, partition),
        )

    def partition_logs(self) -> dict[tuple[str, int], PartitionLog]:
        return dict(self._logs)

    def partition_states(self) -> dict[tuple[str, int], tuple[int, int, int]]:
        """(high watermark, log start, seal age) of every partition, for the indexer. The
        cleaner works on sealed search segments only, so a compacted topic's open segment
        is sealed by its segment.ms when that comes before the indexer's own age limit."""
        age = self.settings.index.segment_max_age_ms
        return {
            k: (
                p.high_watermark,
                p.log_start_offset,
                min(age, p.config.segment_ms) if p.config.compact else age,
            )
            for k, p in self._logs.items()
        }

    async def start(self) -> None:
        """Recover every partition log (in worker threads: scanning active segments can take
        a while) and start the retention task."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        topics = self.metadata.topics()
        for d in self.logs_dir.iterdir():
            parsed = _parse_log_dir(d.name)
            if d.is_dir() and (
                parsed is None
                or parsed[0] not in topics
                or parsed[1] >= topics[parsed[0]].partitions
            ):
                log.warning("removing %s: it belongs to no topic (deleted before a crash?)", d)
                await asyncio.to_thread(shutil.rmtree, d, True)
        wanted = [(t.name, p) for t in topics.values() for p in range(t.partitions)]
        started = time.monotonic()
        opened = await asyncio.gather(*(asyncio.to_thread(self._open_log, t, p) for t, p in wanted))
        for (t, p), plog in zip(wanted, opened, strict=True):
            self._logs[(t, p)] = plog
        log.info(
            "opened %d partition logs of %d topics in %.2fs",
            len(opened),
            len(topics),
            time.monotonic() - started,
        )
        await asyncio.to_thread(self._remove_orphans)
        for st in self.registry.cleaner_states():
            self._logs[(st.topic, st.partition)].compacted_end = st.cleaned_end
        if self.settings.log.retention_check_ms > 0:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="retention")
        await self.tiering.start()
        self._tier_task = asyncio.create_task(self._wal_tier_loop(), name="wal-tiering")
        if self.indexer is not None:
            await self.indexer.start()
        await self.cleaner.start()

    def _remove_orphans(self) -> None:
        """Segment files a crash left unregistered (a seal, merge or cleaner run not yet
        published), and index directories and checkpoints of partitions that no longer
        exist (a topic deleted while its worker was down)."""
        known = {r.object_key for r in self.registry.segments(states=("local", "uploaded"))}
        if self.segments_dir.exists():
            for path in self.segments_dir.rglob("*"):
                key = path.relative_to(self.segments_dir).as_posix()
                if path.is_file() and key not in known:
                    log.info("removing unregistered segment file %s", path)
                    path.unlink()
        # Search directories of segments a crash left unpublished (linked at packaging).
        search = self.settings.data_dir / "search"
        if search.exists():
            for d in search.glob("*/*/*"):
                if d.relative_to(search).as_posix() not in known:
                    shutil.rmtree(d, ignore_errors=True)
        # Half-done merges (workers are not running yet) and cleaner runs.
        shutil.rmtree(self.settings.data_dir / "merge", ignore_errors=True)
        shutil.rmtree(self.settings.data_dir / "clean", ignore_errors=True)
        live = {partition_dir_name(t, p) for t, p in self._logs}
        if self.index_dir.exists():
            for d in self.index_dir.iterdir():
                if d.name not in live:
                    shutil.rmtree(d, ignore_errors=True)
        for cp in self.registry.checkpoints():
            if (cp.topic, cp.partition) not in self._logs:
                self.registry.drop_partition_checkpoint(cp.topic, cp.partition)
        for st in self.registry.cleaner_states():
            if (st.topic, st.partition) not in self._logs:
                self.registry.drop_cleaner_state(st.topic, st.partition)

    async def _wal_tier_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tiering.interval_ms / 1000)
            try:
                self.tier_wal()
            except Exception:
                log.exception("WAL tiering pass failed")

    def tier_wal(self) -> int:
        """Delete WAL segments whose offsets are all in uploaded search segments and that
        are older than the WAL retention; refresh the layer gauges. Returns bytes deleted."""
        deleted = 0
        now = time.time()
        for (topic, partition), plog in list(self._logs.items()):
            first = self.tiering.first_base(topic, partition)
            if first is not None and first <= max(plog.log_start_offset, plog.wal_start_offset):
                end = self.tiering.published_end(topic, partition)
                if end > plog.wal_start_offset:
                    deleted += plog.delete_wal_before(end, self.settings.tiering.wal_retain_ms, now)
            metrics.WAL_BYTES.labels(topic, str(partition)).set(plog.size_bytes())
        totals = self.registry.totals()
        for topic in self.metadata.topics():
            count, size = totals.get(topic, (0, 0))
            metrics.SEGMENTS.labels(topic).set(count)
            metrics.SEGMENT_BYTES.labels(topic).set(size)
        return deleted

    async def close(self) -> None:
        """Stop the workers and tasks and close (fsync) every log."""
        await self.cleaner.stop()
        if self.indexer is not None:
            await self.indexer.stop()
        if self._tier_task is not None:
            self._tier_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tier_task
            self._tier_task = None
        await self.tiering.stop()
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        self.search.close()
        await self.fsync.close()
        await asyncio.to_thread(self._close_logs)
        self.registry.close()

    def _close_logs(self) -> None:
        for plog in self._logs.values():
            try:
                plog.close()
            except Exception:
                log.exception("closing %r failed", plog)
        self._logs.clear()

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log.retention_check_ms / 1000)
            try:
                self.apply_retention(int(time.time() * 1000))
            except Exception:
                log.exception("retention pass failed")

    def apply_retention(self, now_ms: int) -> int:
        """One retention pass over every log, search segments included; returns the bytes
        deleted from the WAL."""
        total = 0
        for plog in list(self._logs.values()):
            total += self._retain(plog, now_ms)
        return total

    def _retain(self, plog: PartitionLog, now_ms: int) -> int:
        """Segments older than the WAL go first, oldest first, by retention.ms and
        retention.bytes; the WAL's own retention applies once none of them is left."""
        cfg = plog.config
        if not cfg.delete_enabled:
            return 0
        wal_start = plog.wal_start_offset
        tiered = [
            r
            for r in self.registry.segments(plog.topic, plog.partition)
            if r.base_offset < wal_start and r.next_offset > plog.log_start_offset
        ]
        gone = 0
        if cfg.retention_ms >= 0:
            while gone < len(tiered) and now_ms - tiered[gone].largest_timestamp > cfg.retention_ms:
                gone += 1
        if cfg.retention_bytes >= 0:
            excess = sum(r.size for r in tiered) + plog.size_bytes() - cfg.retention_bytes
            for i, r in enumerate(tiered):
                if excess - r.size < 0:
                    break
                excess -= r.size
                gone = max(gone, i + 1)
        deleted = 0
        if gone:
            plog.delete_records(min(tiered[gone - 1].next_offset, wal_start))
        if gone == len(tiered):
            deleted = plog.apply_retention(now_ms)
        self._drop_segments_below(plog)
        return deleted

    def _drop_segments_below(self, plog: PartitionLog) -> None:
        if self.registry.mark_deleting_below(plog.topic, plog.partition, plog.log_start_offset):
            self.tiering.kick()

    def delete_records(self, topic: str, partition: int, before_offset: int) -> int:
        """DeleteRecords: move the log start; WAL and search segments wholly below it go."""
        plog = self.log(topic, partition)
        low = plog.delete_records(before_offset)
        self._drop_segments_below(plog)
        return low

    async def read(
        self, plog: PartitionLog, offset: int, max_bytes: int, upper: int | None = None
    ) -> list[bytes | memoryview]:
        """A fetch from whichever layer holds `offset`: memory tail, WAL, then the search
        segments (local cache, else an object-store range read). No batch at or above
        `upper` (read_committed passes the last stable offset). Offsets the cleaner rewrote
        come from the search segments first: the memory tail and WAL still hold them
        uncompacted. Where the segments from `offset` on hold no batch (cleaned away), the
        read goes on in the WAL."""
        if offset >= plog.compacted_end:
            local = plog.read(offset, max_bytes, upper)
            if local is not None:
                return local
        else:
            plog.check_offset(offset)
        stop = plog.high_watermark if upper is None else min(upper, plog.high_watermark)
        found, resume = await self.tiering.read(plog.topic, plog.partition, offset, max_bytes, stop)
        if found or resume >= stop or resume < plog.compacted_end:
            return list(found)
        return plog.read(resume, max_bytes, upper) or []

    async def write_marker(
        self,
        topic: str,
        partition: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int = 0,
    ) -> None:
        """Write a transaction's COMMIT or ABORT marker to one partition and wait until it
        is durable, whatever the fsync mode. UnknownTopic when the partition is gone."""
        plog = self.log(topic, partition)
        result = plog.append_marker(
            producer_id, producer_epoch, commit, coordinator_epoch, int(time.time() * 1000)
        )
        await plog.wait_synced(result.last_offset + 1)

    async def offset_for_timestamp(self, plog: PartitionLog, ts: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record stamped at or after `ts`; records without a
        timestamp are never found (as in Kafka), also for a negative `ts`."""
        ts = max(ts, 0)
        end = self._segments_end(plog)
        if plog.log_start_offset < end:
            found = await self.tiering.offset_for_timestamp(
                plog.topic, plog.partition, ts, plog.log_start_offset, end
            )
            if found is not None:
                return found
        return wal_offset_for_timestamp(plog, ts, plog.compacted_end)

    async def max_timestamp(self, plog: PartitionLog) -> tuple[int, int]:
        best = wal_max_timestamp(plog, plog.compacted_end)
        end = self._segments_end(plog)
        if plog.log_start_offset < end:
            tiered = await self.tiering.max_timestamp(plog.topic, plog.partition, end)
            if tiered[0] > best[0]:
                best = tiered
        return best

    @staticmethod
    def _segments_end(plog: PartitionLog) -> int:
        """Offsets below it are looked up in the search segments: those the WAL no longer
        holds, and those the cleaner rewrote."""
        return max(plog.wal_start_offset, plog.compacted_end)

    def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str | None],
        validate_only: bool = False,
    ) -> TopicMeta:
        if validate_only:
            return self.metadata.validate_new_topic(name, partitions, configs)
        meta = self.metadata.create_topic(name, partitions, configs)
        for p in range(partitions):
            self._logs[(name, p)] = self._open_log(name, p)
        return meta

    def delete_topic(self, name: str) -> None:
        meta = self.metadata.delete_topic(name)
        if self.indexer is not None:
            self.indexer.drop_now([(name, p) for p in range(meta.partitions)])
        self.registry.drop_topic(name)
        self.tiering.kick()
        for p in range(meta.partitions):
            plog = self._logs.pop((name, p), None)
            if plog is not None:
                plog.remove()
            else:
                shutil.rmtree(self._log_dir(name, p), ignore_errors=True)

    def set_topic_configs(self, name: str, configs: Mapping[str, str | None]) -> TopicMeta:
        """Replace the topic's config overrides (see MetadataStore.set_configs)."""
        meta = self.metadata.set_configs(name, configs)
        effective = self.metadata.topic_configs(name)
        for plog in self.logs(name):
            plog.update_config(effective)
        return meta

    def add_partitions(self, name: str, total: int) -> TopicMeta:
        before = self.metadata.get(name)
        meta = self.metadata.add_partitions(name, total)
        first_new = before.partitions if before is not None else 0
        for p in range(first_new, total):
            self._logs[(name, p)] = self._open_log(name, p)
        return meta

    def topic_configs(self, name: str) -> dict[str, str]:
        return self.metadata.topic_configs(name)

    def log(self, topic: str, partition: int) -> PartitionLog:
        plog = self._logs.get((topic, partition))
        if plog is None:
            raise UnknownTopic(f"unknown topic or partition {topic}-{partition}")
        return plog

    def logs(self, topic: str) -> list[PartitionLog]:
        meta = self.metadata.get(topic)
        if meta is None:
            raise UnknownTopic(f"topic {topic!r} does not exist")
        return [self._logs[(topic, p)] for p in range(meta.partitions) if (topic, p) in self._logs]
