"""Topics, their configs and producer-id allocation: the broker state that must survive a
restart, kept in one small JSON file replaced atomically on every change."""

from __future__ import annotations

import json
import re
import resource
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.storage.errors import (
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidTopic,
    StorageError,
    TopicExists,
    UnknownTopic,
)
from app.storage.fileutil import atomic_write
from app.storage.log import topicconfig

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
MAX_TOPIC_NAME = 249
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")
# Producer ids are handed out from blocks, and only the block end is persisted, so allocating
# an id rarely touches the disk. A restart skips the rest of the block.
PRODUCER_ID_BLOCK = 1000
# Kafka's KRaft controller writes at most 10,000 records per request (one per partition), so a
# larger topic is refused there too; creating them all here would also hold the event loop
# for seconds.
MAX_PARTITIONS = 10_000
# Every partition keeps its active WAL segment open; the other half of the open-file limit is
# for connections, sealed segments being read and the databases.
FDS_PER_PARTITION_BUDGET = 2


class PartitionLimit(InvalidPartitions):
    """More partitions than this broker takes (Kafka's POLICY_VIOLATION): a count within
    Kafka's range that would still exhaust the broker."""


def partition_budget() -> int | None:
    """Partitions this process can hold open, None when its open-file limit is unlimited.
    Beyond it, opening a partition fails half-way through creating a topic (EMFILE) and the
    broker could no longer start with that topic."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return soft // FDS_PER_PARTITION_BUDGET


@dataclass(frozen=True)
class TopicMeta:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)  # overrides only


def validate_topic_name(name: str) -> None:
    if not name:
        raise InvalidTopic("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopic(f"topic name cannot be {name!r}")
    if len(name) > MAX_TOPIC_NAME:
        raise InvalidTopic(f"topic name is longer than {MAX_TOPIC_NAME} characters")
    if not _TOPIC_NAME.fullmatch(name):
        raise InvalidTopic(
            f"topic name {name!r} may only contain ASCII letters, digits, '.', '_' and '-'"
        )


def validate_replication_factor(factor: int) -> None:
    """This broker has one node: -1 (broker default) and 1 are the only possible values."""
    if factor not in (-1, 1):
        raise InvalidReplicationFactor(
            f"replication factor {factor} is larger than the 1 available broker"
        )


def _collision_key(name: str) -> str:
    # Kafka's metric names turn '.' into '_', so topics differing only there would collide.
    return name.replace(".", "_")


class MetadataStore:
    def __init__(
        self, data_dir: Path, segment_bytes: int | None = None, segment_ms: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.path = data_dir / METADATA_FILE
        self._segment_bytes = segment_bytes
        self._segment_ms = segment_ms
        self._topics: dict[str, TopicMeta] = {}
        self._by_id: dict[uuid.UUID, TopicMeta] = {}
        self._producer_block_end = 0
        data_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        self._next_producer_id = self._producer_block_end

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_bytes())
        except ValueError as exc:
            raise StorageError(f"{self.path} is not valid JSON: {exc}") from exc
        if doc.get("version") != FORMAT_VERSION:
            raise StorageError(f"{self.path} has unknown format version {doc.get('version')}")
        for name, t in doc["topics"].items():
            meta = TopicMeta(name, uuid.UUID(t["id"]), int(t["partitions"]), dict(t["configs"]))
            self._topics[name] = meta
            self._by_id[meta.topic_id] = meta
        # A "transactional" map written by older versions is ignored: the transaction
        # coordinator (transactions.sqlite) owns transactional ids now.
        self._producer_block_end = int(doc["producer_id_block_end"])

    def _save(self) -> None:
        doc: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "topics": {
                t.name: {"id": str(t.topic_id), "partitions": t.partitions, "configs": t.configs}
                for t in self._topics.values()
            },
            "producer_id_block_end": self._producer_block_end,
        }
        atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())

    def topics(self) -> dict[str, TopicMeta]:
        return dict(self._topics)

    def get(self, name: str) -> TopicMeta | None:
        return self._topics.get(name)

    def get_by_id(self, topic_id: uuid.UUID) -> TopicMeta | None:
        return self._by_id.get(topic_id)

    def _require(self, name: str) -> TopicMeta:
        meta = self._topics.get(name)
        if meta is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        return meta

    def default_topic_configs(self) -> dict[str, str]:
        return topicconfig.default_topic_configs(self._segment_bytes, self._segment_ms)

    def topic_configs(self, name: str) -> dict[str, str]:
        """Effective configs of a topic: defaults with its overrides on top."""
        return {**self.default_topic_configs(), **self._require(name).configs}

    @staticmethod
    def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
        return topicconfig.validate_topic_configs(configs)

    def validate_new_topic(
        self, name: str, partitions: int, configs: Mapping[str, str | None]
    ) -> TopicMeta:
        """Everything create_topic checks, without creating anything."""
        validate_topic_name(name)
        if name in self._topics:
            raise TopicExists(f"topic {name!r} already exists")
        key = _collision_key(name)
        for other in self._topics:
            if _collision_key(other) == key:
                raise InvalidTopic(f"topic {name!r} collides with existing topic {other!r}")
        if partitions < 1:
            raise InvalidPartitions(f"number of partitions must be at least 1, not {partitions}")
        self._check_partition_limits(partitions, partitions)
        return TopicMeta(name, uuid.uuid4(), partitions, self.validate_topic_configs(configs))

    def _check_partition_limits(self, count: int, added: int) -> None:
        if count > MAX_PARTITIONS:
            raise PartitionLimit(
                f"a topic may have at most {MAX_PARTITIONS} partitions, not {count}"
            )
        budget = partition_budget()
        held = sum(t.partitions for t in self._topics.values())
        if budget is not None and held + added > budget:
            raise PartitionLimit(
                f"this broker holds {held} partitions and can hold at most {budget} (half its "
                f"open-file limit); {added} more do not fit: raise `ulimit -n`"
            )

    def create_topic(
        self, name: str, partitions: int, configs: Mapping[str, str | None]
    ) -> TopicMeta:
        meta = self.validate_new_topic(name, partitions, configs)
        self._topics[name] = meta
        self._by_id[meta.topic_id] = meta
        self._save()
        return meta

    def delete_topic(self, name: str) -> TopicMeta:
        meta = self._require(name)
        del self._topics[name]
        del self._by_id[meta.topic_id]
        self._save()
        return meta

    def _replace(self, meta: TopicMeta) -> TopicMeta:
        self._topics[meta.name] = meta
        self._by_id[meta.topic_id] = meta
        self._save()
        return meta

    def set_configs(self, name: str, configs: Mapping[str, str | None]) -> TopicMeta:
        """Replace the topic's overrides with `configs` (AlterConfigs semantics; an
        incremental alter computes the full new set first)."""
        meta = self._require(name)
        return self._replace(replace(meta, configs=self.validate_topic_configs(configs)))

    def validate_add_partitions(self, name: str, total: int) -> TopicMeta:
        """Everything add_partitions checks, without changing anything."""
        meta = self._require(name)
        if total <= meta.partitions:
            raise InvalidPartitions(
                f"topic {name!r} has {meta.partitions} partitions; the new count {total} "
                "must be larger"
            )
        self._check_partition_limits(total, total - meta.partitions)
        return replace(meta, partitions=total)

    def add_partitions(self, name: str, total: int) -> TopicMeta:
        return self._replace(self.validate_add_partitions(name, total))

    def next_producer_id(self) -> int:
        if self._next_producer_id >= self._producer_block_end:
            self._producer_block_end = self._next_producer_id + PRODUCER_ID_BLOCK
            self._save()
        pid = self._next_producer_id
        self._next_producer_id += 1
        return pid
