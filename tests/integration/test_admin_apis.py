"""Admin APIs through real clients: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
CreatePartitions, DeleteRecords, DescribeCluster and DescribeLogDirs. Hand-made requests
for the versions and corner cases these clients do not reach are in test_admin_apis_raw.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import ConfigResource as KpConfigResource
from kafka.admin import KafkaAdminClient

from .clients import Msg, consume_confluent, make_messages, produce_confluent, watermarks
from .conftest import Server, unique_topic

OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PARTITIONS = 37
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_CONFIG = 40
INVALID_REQUEST = 42
TIMEOUT = 20


_admins: dict[str, AdminClient] = {}


@pytest.fixture(scope="module", autouse=True)
def _drop_admins() -> Iterator[None]:
    # Dropped with the module's servers, or librdkafka keeps reconnecting to closed ports.
    yield
    _admins.clear()


def _admin(server: Server) -> AdminClient:
    """One client per server, kept alive: a collected AdminClient fails its pending futures."""
    admin = _admins.get(server.bootstrap)
    if admin is None:
        admin = _admins[server.bootstrap] = AdminClient({"bootstrap.servers": server.bootstrap})
    return admin


def _kp_admin(server: Server) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=15000)


def _create(server: Server, topic: str, partitions: int = 1, **config: str) -> None:
    nt = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    _admin(server).create_topics([nt], operation_timeout=10)[topic].result(TIMEOUT)


def _describe(server: Server, topic: str, **kw: Any) -> dict[str, Any]:
    res = ConfigResource("TOPIC", topic)
    return _admin(server).describe_configs([res], **kw)[res].result(TIMEOUT)


def _values(server: Server, topic: str) -> dict[str, str]:
    return {k: e.value for k, e in _describe(server, topic).items()}


def _overrides(server: Server, topic: str) -> dict[str, str]:
    return {
        k: e.value
        for k, e in _describe(server, topic).items()
        if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    }


def _error(fut: Any) -> tuple[int, str] | None:
    """(Kafka error code, message) of a failed admin future; None when it succeeded."""
    try:
        fut.result(TIMEOUT)
        return None
    except KafkaException as exc:
        return exc.args[0].code(), exc.args[0].str()


def _alter(server: Server, topic: str, validate_only: bool = False, **configs: str) -> Any:
    res = ConfigResource("TOPIC", topic, set_config=configs)
    return _admin(server).alter_configs([res], validate_only=validate_only)[res]


def _incremental(server: Server, topic: str, *ops: tuple[str, str | None, str]) -> Any:
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType[op])
        for name, value, op in ops
    ]
    res = ConfigResource("TOPIC", topic, incremental_configs=entries)
    return _admin(server).incremental_alter_configs([res])[res]


def _earliest(server: Server, topic: str, partition: int = 0) -> int:
    tp = TopicPartition(topic, partition)
    return _admin(server).list_offsets({tp: OffsetSpec.earliest()})[tp].result(TIMEOUT).offset


# --------------------------------------------------------------------------- DescribeConfigs


def test_describe_topic_configs(server: Server) -> None:
    topic = unique_topic("dc")
    _create(server, topic, **{"retention.ms": "3600000", "flush.ms": "1000"})
    configs = _describe(server, topic)  # librdkafka always asks for synonyms
    retention = configs["retention.ms"]
    assert retention.value == "3600000"
    assert retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not retention.is_read_only and not retention.is_sensitive
    assert [(s.name, s.value, s.source) for s in retention.synonyms.values()] == [
        ("retention.ms", "3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value),
        ("log.retention.ms", "604800000", ConfigSource.DEFAULT_CONFIG.value),
    ]
    policy = configs["cleanup.policy"]
    assert (policy.value, policy.source) == ("delete", ConfigSource.DEFAULT_CONFIG.value)
    assert policy.is_default
    # the broker's --segment-bytes default (128 MiB) is not Kafka's: a static broker config
    seg = configs["segment.bytes"]
    assert (seg.value, seg.source) == (str(128 * 1024 * 1024), 4)
    assert configs["flush.ms"].value == "1000"
    assert {"max.message.bytes", "retention.bytes", "message.timestamp.type"} <= set(configs)

    missing = ConfigResource("TOPIC", unique_topic("nope"))
    err = _error(_admin(server).describe_configs([missing])[missing])
    assert err is not None and err[0] == UNKNOWN_TOPIC_OR_PARTITION

    # kafka-python, all configs (its default filter shows only the modified ones)
    kp = _kp_admin(server)
    try:
        got = kp.describe_configs([KpConfigResource("TOPIC", topic)], config_filter="all")
    finally:
        kp.close()
    topic_configs = got["topic"][topic]
    assert topic_configs["retention.ms"]["value"] == "3600000"
    assert topic_configs["cleanup.policy"]["value"] == "delete"


def test_describe_broker_configs(server: Server) -> None:
    res = ConfigResource("BROKER", "1")
    configs = _admin(server).describe_configs([res])[res].result(TIMEOUT)
    want = {
        "default.replication.factor": "1",
        "num.partitions": "1",
        "log.retention.ms": "604800000",
        "log.retention.bytes": "-1",
        "log.segment.bytes": str(128 * 1024 * 1024),
        "message.max.bytes": "1048588",
        "auto.create.topics.enable": "true",
        "min.insync.replicas": "1",
        "offsets.retention.minutes": "10080",
    }
    assert {k: configs[k].value for k in want} == want
    assert all(e.is_read_only for e in configs.values())
    assert configs["log.segment.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert configs["default.replication.factor"].source == ConfigSource.DEFAULT_CONFIG.value


# --------------------------------------------------------------------------- AlterConfigs


def test_alter_configs_replaces_overrides(server: Server) -> None:
    topic = unique_topic("ac")
    _create(server, topic, **{"retention.ms": "3600000", "segment.bytes": "1048576"})
    assert _error(_alter(server, topic, **{"retention.bytes": "1000000"})) is None
    # everything not given reverted to its default
    assert _overrides(server, topic) == {"retention.bytes": "1000000"}
    assert _values(server, topic)["retention.ms"] == "604800000"

    assert _error(_alter(server, topic, validate_only=True, **{"retention.ms": "1"})) is None
    assert _overrides(server, topic) == {"retention.bytes": "1000000"}

    code, message = _error(_alter(server, topic, **{"retention.ms": "soon"})) or (0, "")
    assert code == INVALID_CONFIG and "retention.ms" in message
    code, message = _error(_alter(server, topic, **{"no.such.config": "1"})) or (0, "")
    assert code == INVALID_CONFIG and "no.such.config" in message
    assert _overrides(server, topic) == {"retention.bytes": "1000000"}

    missing = unique_topic("nope")
    err = _error(_alter(server, missing, **{"retention.ms": "1"}))
    assert err is not None and err[0] == UNKNOWN_TOPIC_OR_PARTITION

    broker = ConfigResource("BROKER", "1", set_config={"log.retention.ms": "1"})
    err = _error(_admin(server).alter_configs([broker])[broker])
    assert err is not None and err[0] == INVALID_REQUEST and "read-only" in err[1]


def test_incremental_alter_configs(server: Server) -> None:
    topic = unique_topic("iac")
    _create(server, topic, **{"retention.ms": "3600000", "segment.bytes": "1048576"})
    ops = (("retention.bytes", "5000000", "SET"), ("retention.ms", None, "DELETE"))
    assert _error(_incremental(server, topic, *ops)) is None
    # untouched overrides stay
    assert _overrides(server, topic) == {"retention.bytes": "5000000", "segment.bytes": "1048576"}

    assert _error(_incremental(server, topic, ("cleanup.policy", "compact", "APPEND"))) is None
    assert _values(server, topic)["cleanup.policy"] == "delete,compact"
    assert _error(_incremental(server, topic, ("cleanup.policy", "delete", "SUBTRACT"))) is None
    assert _values(server, topic)["cleanup.policy"] == "compact"

    code, message = _error(_incremental(server, topic, ("retention.ms", "5", "APPEND"))) or (0, "")
    assert code == INVALID_CONFIG and "retention.ms" in message
    code, message = _error(_incremental(server, topic, ("segment.bytes", "-3", "SET"))) or (0, "")
    assert code == INVALID_CONFIG and "segment.bytes" in message

    # kafka-python goes through IncrementalAlterConfigs too
    kp = _kp_admin(server)
    try:
        res = KpConfigResource("TOPIC", topic, configs={"retention.ms": "7200000"})
        assert kp.alter_configs([res]) == {"topic": {topic: "OK"}}
    finally:
        kp.close()
    assert _overrides(server, topic) == {
        "cleanup.policy": "compact",
        "retention.bytes": "5000000",
        "retention.ms": "7200000",
        "segment.bytes": "1048576",
    }


def test_altered_retention_applies_and_configs_persist(
    fresh_server: Callable[..., Server],
) -> None:
    server = fresh_server("--retention-check-ms", "200")
    topic = unique_topic("aret")
    _create(server, topic, **{"segment.bytes": "2000"})
    now = int(time.time() * 1000)
    msgs = [Msg(b"%03d" % i, b"v" * 100, (), now, offset=i) for i in range(60)]
    produced = produce_confluent(
        server.bootstrap, topic, msgs, **{"linger.ms": 0, "batch.num.messages": 1}
    )
    assert produced == list(range(60))
    assert watermarks(server.bootstrap, topic) == (0, 60)

    assert _error(_incremental(server, topic, ("retention.bytes", "3000", "SET"))) is None
    deadline = time.monotonic() + 15
    low = 0
    while low == 0 and time.monotonic() < deadline:
        low = _earliest(server, topic)
        if low == 0:
            time.sleep(0.1)
    assert 0 < low < 60, low
    got = consume_confluent(server.bootstrap, topic, 60 - low, start=-2)
    assert [m.offset for m in got] == list(range(low, 60))

    want = {"retention.bytes": "3000", "segment.bytes": "2000"}
    assert _overrides(server, topic) == want
    server.restart()
    assert _overrides(server, topic) == want
    assert watermarks(server.bootstrap, topic)[1] == 60


# --------------------------------------------------------------------------- CreatePartitions


def test_create_partitions(server: Server) -> None:
    admin = _admin(server)
    topic = unique_topic("cp")
    _create(server, topic, partitions=1)

    def grow(count: int, assignment: Any = None, **kw: Any) -> tuple[int, str] | None:
        np = NewPartitions(topic, count)
        if assignment is not None:
            np = NewPartitions(topic, count, replica_assignment=assignment)
        return _error(admin.create_partitions([np], **kw)[topic])

    assert grow(5, validate_only=True) is None
    assert sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions) == [0]
    assert grow(3) is None
    code, message = grow(2) or (0, "")
    assert code == INVALID_PARTITIONS and "3" in message
    code, _ = grow(3) or (0, "")
    assert code == INVALID_PARTITIONS
    code, _ = grow(4, [[2]]) or (0, "")
    assert code == INVALID_REPLICA_ASSIGNMENT
    np = NewPartitions(unique_topic("nope"), 2)
    err = _error(admin.create_partitions([np])[np.topic])
    assert err is not None and err[0] == UNKNOWN_TOPIC_OR_PARTITION

    assert sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions) == [0, 1, 2]
    for p in (1, 2):
        msgs = make_messages(10, seed=p)
        assert produce_confluent(server.bootstrap, topic, msgs, partition=p) == list(range(10))
        got = consume_confluent(server.bootstrap, topic, 10, partition=p)
        assert [(m.key, m.value) for m in got] == [(m.key, m.value) for m in msgs]

    kp = _kp_admin(server)
    try:
        kp.create_partitions({topic: 4})
    finally:
        kp.close()
    assert sorted(admin.list_topics(topic, timeout=10).topics[topic].partitions) == [0, 1, 2, 3]
    assert produce_confluent(server.bootstrap, topic, make_messages(3), partition=3) == [0, 1, 2]


# --------------------------------------------------------------------------- DeleteRecords


def test_delete_records_confluent(server: Server) -> None:
    admin = _admin(server)
    topic = unique_topic("dr")
    _create(server, topic, partitions=2)
    produce_confluent(server.bootstrap, topic, make_messages(20), partition=0)
    produce_confluent(server.bootstrap, topic, make_messages(10), partition=1)

    futs = admin.delete_records([TopicPartition(topic, 0, 5), TopicPartition(topic, 1, -1)])
    lows = {tp.partition: f.result(TIMEOUT).low_watermark for tp, f in futs.items()}
    assert lows == {0: 5, 1: 10}
    assert watermarks(server.bootstrap, topic, 0) == (5, 20)
    assert watermarks(server.bootstrap, topic, 1) == (10, 10)
    got = consume_confluent(server.bootstrap, topic, 15, start=-2)
    assert [m.offset for m in got] == list(range(5, 20))

    # a lower offset than the log start changes nothing
    (fut,) = admin.delete_records([TopicPartition(topic, 0, 2)]).values()
    assert fut.result(TIMEOUT).low_watermark == 5

    (fut,) = admin.delete_records([TopicPartition(topic, 0, 21)]).values()
    err = _error(fut)
    assert err is not None and err[0] == OFFSET_OUT_OF_RANGE
    assert watermarks(server.bootstrap, topic, 0) == (5, 20)


def test_delete_records_kafka_python(server: Server) -> None:
    topic = unique_topic("drkp")
    _create(server, topic)
    produce_confluent(server.bootstrap, topic, make_messages(12))
    kp = _kp_admin(server)
    try:
        result = kp.delete_records({KpTopicPartition(topic, 0): 7})
    finally:
        kp.close()
    assert result[KpTopicPartition(topic, 0)]["low_watermark"] == 7
    assert watermarks(server.bootstrap, topic) == (7, 12)


# --------------------------------------------------------------------------- cluster


def test_describe_cluster(server: Server) -> None:
    # librdkafka answers describe_cluster from Metadata; kafka-python sends DescribeCluster v2
    admin = _admin(server)
    desc = admin.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert desc.cluster_id == admin.list_topics(timeout=10).cluster_id
    assert desc.controller.id == 1
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(1, "127.0.0.1", server.kafka_port)]
    kp = _kp_admin(server)
    try:
        got = kp.describe_cluster()
    finally:
        kp.close()
    assert (got["cluster_id"], got["controller_id"]) == (desc.cluster_id, 1)
    assert [(b["broker_id"], b["host"], b["port"]) for b in got["brokers"]] == [
        (1, "127.0.0.1", server.kafka_port)
    ]


def test_describe_log_dirs(server: Server) -> None:
    topic = unique_topic("ld")
    empty = unique_topic("ldempty")
    _create(server, topic, partitions=2)
    _create(server, empty)
    produce_confluent(server.bootstrap, topic, make_messages(30), partition=1)
    kp = _kp_admin(server)
    try:
        everything = kp.describe_log_dirs()
        some = kp.describe_log_dirs({topic: [1]})
    finally:
        kp.close()
    ((broker,),) = [[b for b in everything if b["broker"] == 1]]
    (log_dir,) = broker["log_dirs"]
    assert log_dir["error_code"] == 0
    assert Path(log_dir["log_dir"]) == (server.data_dir / "logs").resolve()
    sizes = {
        (t["name"], p["partition_index"]): p["partition_size"]
        for t in log_dir["topics"]
        for p in t["partitions"]
    }
    assert sizes[(topic, 1)] > 30 * 20
    assert sizes[(topic, 0)] == 0
    assert sizes[(empty, 0)] == 0
    # kafka-python sends v4, which has the disk's figures
    assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
    (filtered,) = some[0]["log_dirs"]
    assert [
        (t["name"], [p["partition_index"] for p in t["partitions"]]) for t in filtered["topics"]
    ] == [(topic, [1])]
