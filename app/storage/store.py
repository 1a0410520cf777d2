"""Storage: the facade the broker and the HTTP API use. It owns the metadata store, every
partition log, the group-commit scheduler, the memory-tail budget and the retention task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.storage.errors import UnknownTopic
from app.storage.fsync import FsyncScheduler
from app.storage.groupstore import GroupStore
from app.storage.log import PartitionLog
from app.storage.memtail import MemTailBudget
from app.storage.metadata import MetadataStore, TopicMeta

log = logging.getLogger(__name__)

MiB = 1024 * 1024


@dataclass
class StorageConfig:
    data_dir: Path
    fsync: str = "always"
    fsync_interval_ms: int = 1000
    segment_bytes: int = 128 * MiB
    segment_ms: int = 7 * 24 * 3600 * 1000
    memtail_bytes: int = 64 * MiB
    retention_check_ms: int = 30_000


def _parse_log_dir(name: str) -> tuple[str, int] | None:
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


class Storage:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.metadata = MetadataStore(config.data_dir, config.segment_bytes, config.segment_ms)
        self.fsync = FsyncScheduler(config.fsync, config.fsync_interval_ms)
        self.memtail = MemTailBudget(config.memtail_bytes)
        self.logs_dir = config.data_dir / "logs"
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._retention_task: asyncio.Task[None] | None = None
        self.groups = GroupStore(config.data_dir / "groups.sqlite")

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
        )

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
        if self.config.retention_check_ms > 0:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="retention")

    async def close(self) -> None:
        """Stop the tasks and close (fsync) every log."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
            self._retention_task = None
        await self.fsync.close()
        await asyncio.to_thread(self._close_logs)
        self.groups.close()

    def _close_logs(self) -> None:
        for plog in self._logs.values():
            try:
                plog.close()
            except Exception:
                log.exception("closing %r failed", plog)
        self._logs.clear()

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.retention_check_ms / 1000)
            try:
                self.apply_retention(int(time.time() * 1000))
            except Exception:
                log.exception("retention pass failed")

    def apply_retention(self, now_ms: int) -> int:
        """One retention pass over every log; returns the bytes deleted."""
        total = 0
        for plog in list(self._logs.values()):
            total += plog.apply_retention(now_ms)
        return total

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
        self.groups.delete_topic(name)
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
