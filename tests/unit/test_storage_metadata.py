from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from app.config import IndexConfig, LogConfig, Settings
from app.storage.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidTopic,
    TopicExists,
    UnknownTopic,
)
from app.storage.log.batch import validate_batches
from app.storage.log.metadata import (
    PRODUCER_ID_BLOCK,
    MetadataStore,
    validate_replication_factor,
)
from app.storage.store import Storage
from tests.unit.batchgen import decode_batches, joined, make_batch


def test_topics_persist(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    meta = store.create_topic("orders", 3, {"retention.ms": "1000", "cleanup.policy": None})
    assert meta.configs == {"retention.ms": "1000"}
    assert isinstance(meta.topic_id, uuid.UUID)
    store.create_topic("logs.app", 1, {})
    store.set_configs("orders", {"retention.bytes": "5000"})
    store.add_partitions("orders", 5)
    store.delete_topic("logs.app")

    again = MetadataStore(tmp_path)
    assert set(again.topics()) == {"orders"}
    orders = again.get("orders")
    assert orders is not None
    assert orders.partitions == 5
    assert orders.configs == {"retention.bytes": "5000"}
    assert again.get_by_id(meta.topic_id) == orders
    assert again.get("logs.app") is None
    assert again.topic_configs("orders")["retention.bytes"] == "5000"
    assert again.topic_configs("orders")["cleanup.policy"] == "delete"
    # The file is plain JSON written atomically: no temporary files left.
    assert json.loads((tmp_path / "metadata.json").read_text())["version"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a" * 250, "bad name", "slash/topic", "ünïcode"],
)
def test_illegal_topic_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidTopic):
        MetadataStore(tmp_path).create_topic(name, 1, {})


def test_topic_validation(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    store.create_topic("a" * 249, 1, {})
    store.create_topic("my.topic", 1, {})
    with pytest.raises(TopicExists):
        store.create_topic("my.topic", 1, {})
    with pytest.raises(InvalidTopic, match="collides"):
        store.create_topic("my_topic", 1, {})
    with pytest.raises(InvalidPartitions):
        store.create_topic("zero", 0, {})
    with pytest.raises(InvalidPartitions):
        store.add_partitions("my.topic", 1)
    with pytest.raises(UnknownTopic):
        store.delete_topic("nope")
    with pytest.raises(UnknownTopic):
        store.set_configs("nope", {})
    with pytest.raises(InvalidReplicationFactor):
        validate_replication_factor(3)
    validate_replication_factor(-1)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retention.ms", "soon"),
        ("retention.ms", "-2"),
        ("segment.bytes", "10"),
        ("segment.bytes", str(2**31)),
        ("max.message.bytes", "-1"),
        ("message.timestamp.type", "WallClock"),
        ("cleanup.policy", "delete,forever"),
        ("compression.type", "brotli"),
        ("min.insync.replicas", "0"),
        ("no.such.config", "1"),
    ],
)
def test_invalid_configs_name_the_key(tmp_path: Path, key: str, value: str) -> None:
    store = MetadataStore(tmp_path)
    with pytest.raises(InvalidConfig) as err:
        store.create_topic("t", 1, {key: value})
    assert err.value.key == key
    assert key in str(err.value)
    assert store.get("t") is None


def test_config_normalisation_and_defaults(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path, segment_bytes=4096, segment_ms=60_000)
    ok = store.validate_topic_configs(
        {"cleanup.policy": "compact, delete", "retention.ms": " 5 ", "flush.ms": "10"}
    )
    assert ok == {"cleanup.policy": "compact,delete", "retention.ms": "5", "flush.ms": "10"}
    defaults = store.default_topic_configs()
    assert defaults["segment.bytes"] == "4096"
    assert defaults["segment.ms"] == "60000"
    assert defaults["retention.ms"] == "604800000"
    assert defaults["max.message.bytes"] == "1048588"
    assert defaults["message.timestamp.type"] == "CreateTime"


def test_producer_ids(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path)
    ids = [store.next_producer_id() for _ in range(3)]
    assert ids == [0, 1, 2]
    again = MetadataStore(tmp_path)
    # A restart never reuses an id.
    assert again.next_producer_id() >= PRODUCER_ID_BLOCK


def _settings(data_dir: Path, log: LogConfig) -> Settings:
    """Storage alone: no indexer workers, so records are not indexed."""
    return Settings(data_dir=data_dir, log=log, index=IndexConfig(workers=0))


async def test_storage_facade_lifecycle(tmp_path: Path) -> None:
    config = _settings(tmp_path, LogConfig(segment_bytes=4096, retention_check_ms=0))
    storage = Storage(config)
    await storage.start()
    storage.create_topic("events", 2, {"message.timestamp.type": "LogAppendTime"})
    with pytest.raises(TopicExists):
        storage.create_topic("events", 2, {})
    meta = storage.create_topic("dry", 1, {}, validate_only=True)
    assert meta.name == "dry" and storage.metadata.get("dry") is None
    assert not (tmp_path / "logs" / "dry-0").exists()
    assert (tmp_path / "logs" / "events-1").is_dir()

    log = storage.log("events", 1)
    data = make_batch([b"hello"])
    result = log.append(data, validate_batches(data), 42)
    assert result.log_append_time_ms == 42
    await log.wait_durable(result.last_offset + 1)
    with pytest.raises(UnknownTopic):
        storage.log("events", 2)
    with pytest.raises(UnknownTopic):
        storage.log("nope", 0)

    storage.set_topic_configs("events", {"message.timestamp.type": "CreateTime"})
    assert storage.log("events", 0).config.log_append_time is False
    storage.add_partitions("events", 3)
    assert [p.partition for p in storage.logs("events")] == [0, 1, 2]
    storage.create_topic("doomed", 1, {})
    await storage.close()

    # Leftover directory of a topic deleted just before a crash.
    (tmp_path / "logs" / "ghost-0").mkdir()
    storage = Storage(config)
    await storage.start()
    assert not (tmp_path / "logs" / "ghost-0").exists()
    log = storage.log("events", 1)
    assert log.log_end_offset == log.high_watermark == 1
    batch = decode_batches(joined(log.read(0, 1 << 20)))[0]
    assert batch.records[0].value == b"hello" and batch.max_timestamp == 42
    assert len(storage.logs("events")) == 3
    storage.delete_topic("doomed")
    assert not (tmp_path / "logs" / "doomed-0").exists()
    with pytest.raises(UnknownTopic):
        storage.log("doomed", 0)
    storage.create_topic("doomed", 1, {})
    assert storage.log("doomed", 0).log_end_offset == 0
    await storage.close()


async def test_storage_retention_pass(tmp_path: Path) -> None:
    storage = Storage(_settings(tmp_path, LogConfig(retention_check_ms=0, fsync="interval")))
    await storage.start()
    storage.create_topic("r", 1, {"segment.bytes": "200", "retention.ms": "10"})
    log = storage.log("r", 0)
    for i in range(5):
        data = make_batch([b"x" * 100], timestamp=1000 + i)
        log.append(data, validate_batches(data), 0)
    assert storage.apply_retention(10**12) > 0
    assert log.log_start_offset == log.log_end_offset == 5
    await storage.close()
