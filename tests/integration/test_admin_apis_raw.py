"""Admin APIs at the protocol level, with hand-made requests: the versions and corner
cases the real clients in test_admin_apis.py do not reach."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from .clients import make_messages, produce_confluent, watermarks
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, request_class, schema

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_CONFIG = 40
INVALID_REQUEST = 42
MISMATCHED_ENDPOINT_TYPE = 114
DELETE_RECORDS = 21
DESCRIBE_CONFIGS = 32
DESCRIBE_CLUSTER = 60
DESCRIBE_LOG_DIRS = 35
TOPIC, BROKER = 2, 4


def _create(server: Server, topic: str, partitions: int = 1, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    nt = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)
    admin.create_topics([nt], operation_timeout=10)[topic].result(20)


def _describe_topic(raw: RawKafka, topic: str) -> dict[str, tuple[str | None, int]]:
    """{name: (value, config_source)} of a topic, through DescribeConfigs v4."""
    req = schema(DESCRIBE_CONFIGS, 4)
    body = request_class(DESCRIBE_CONFIGS, 4)(
        resources=(
            req.DescribeConfigsResource(
                resource_type=TOPIC, resource_name=topic, configuration_keys=None
            ),
        ),
    )
    (result,) = raw.request(body).results
    assert result.error_code == 0, result
    return {c.name: (c.value, c.config_source) for c in result.configs}


def test_describe_configs_raw_v4(server: Server) -> None:
    """Key filter, config types and documentation (v3+), unknown resource types."""
    topic = unique_topic("dcraw")
    _create(server, topic, **{"cleanup.policy": "compact"})
    req = schema(DESCRIBE_CONFIGS, 4)
    body = request_class(DESCRIBE_CONFIGS, 4)(
        resources=(
            req.DescribeConfigsResource(
                resource_type=TOPIC,
                resource_name=topic,
                configuration_keys=("cleanup.policy", "retention.bytes", "no.such.key"),
            ),
            req.DescribeConfigsResource(
                resource_type=99, resource_name="x", configuration_keys=None
            ),
            # an empty name is the cluster-wide broker default
            req.DescribeConfigsResource(
                resource_type=BROKER, resource_name="", configuration_keys=("num.partitions",)
            ),
            # (clients send a broker resource to that broker, so only a raw request can
            # reach this one with another broker's id)
            req.DescribeConfigsResource(
                resource_type=BROKER, resource_name="7", configuration_keys=None
            ),
        ),
        include_synonyms=False,
        include_documentation=True,
    )
    with RawKafka(server.bootstrap) as raw:
        resp = raw.request(body)
    topic_result, bad, broker, other_broker = resp.results
    assert topic_result.error_code == 0
    by_name = {c.name: c for c in topic_result.configs}
    assert sorted(by_name) == ["cleanup.policy", "retention.bytes"]
    assert (by_name["cleanup.policy"].value, by_name["cleanup.policy"].config_source) == (
        "compact",
        1,
    )
    assert by_name["cleanup.policy"].config_type == 7  # LIST
    assert by_name["retention.bytes"].config_type == 5  # LONG
    assert by_name["retention.bytes"].documentation
    assert by_name["cleanup.policy"].synonyms == ()
    assert bad.error_code == INVALID_REQUEST and bad.error_message
    assert broker.error_code == 0
    assert [(c.name, c.value, c.read_only) for c in broker.configs] == [
        ("num.partitions", "1", True)
    ]
    assert other_broker.error_code == INVALID_REQUEST and other_broker.configs == ()


def test_delete_records_unknown_partition(server: Server) -> None:
    topic = unique_topic("drraw")
    _create(server, topic)
    req = schema(DELETE_RECORDS, 2)
    body = request_class(DELETE_RECORDS, 2)(
        topics=(
            req.DeleteRecordsTopic(
                name=topic, partitions=(req.DeleteRecordsPartition(partition_index=3, offset=0),)
            ),
            req.DeleteRecordsTopic(
                name=unique_topic("nope"),
                partitions=(req.DeleteRecordsPartition(partition_index=0, offset=0),),
            ),
        ),
        timeout=datetime.timedelta(seconds=5),
    )
    with RawKafka(server.bootstrap) as raw:
        resp = raw.request(body)
    codes = [(p.error_code, p.low_watermark) for t in resp.topics for p in t.partitions]
    assert codes == [(UNKNOWN_TOPIC_OR_PARTITION, -1)] * 2


def test_oldest_versions_raw(server: Server) -> None:
    """The non-flexible versions no client here sends: AlterConfigs v0,
    IncrementalAlterConfigs v0, CreatePartitions v0, DeleteRecords v0."""
    topic = unique_topic("oldv")
    _create(server, topic)
    produce_confluent(server.bootstrap, topic, make_messages(4))
    ac = schema(33, 0)
    iac = schema(44, 0)
    cp = schema(37, 0)
    dr = schema(21, 0)
    five_s = datetime.timedelta(seconds=5)
    requests = [
        request_class(33, 0)(
            resources=(
                ac.AlterConfigsResource(
                    resource_type=TOPIC,
                    resource_name=topic,
                    configs=(ac.AlterableConfig(name="retention.ms", value="3600000"),),
                ),
            ),
            validate_only=False,
        ),
        request_class(44, 0)(
            resources=(
                iac.AlterConfigsResource(
                    resource_type=TOPIC,
                    resource_name=topic,
                    configs=(
                        iac.AlterableConfig(name="retention.bytes", config_operation=0, value="9"),
                    ),
                ),
            ),
            validate_only=False,
        ),
        request_class(37, 0)(
            topics=(cp.CreatePartitionsTopic(name=topic, count=2, assignments=None),),
            timeout=five_s,
            validate_only=False,
        ),
        request_class(21, 0)(
            topics=(
                dr.DeleteRecordsTopic(
                    name=topic,
                    partitions=(dr.DeleteRecordsPartition(partition_index=0, offset=-1),),
                ),
            ),
            timeout=five_s,
        ),
    ]
    with RawKafka(server.bootstrap) as raw:
        alter, incremental, partitions, deleted = (raw.request(r) for r in requests)
    assert [r.error_code for r in alter.responses + incremental.responses] == [0, 0]
    assert [(r.name, r.error_code) for r in partitions.results] == [(topic, 0)]
    (deleted_partition,) = deleted.topics[0].partitions
    assert (deleted_partition.error_code, deleted_partition.low_watermark) == (0, 4)
    with RawKafka(server.bootstrap) as raw:
        configs = _describe_topic(raw, topic)
        (meta,) = raw.metadata([topic]).topics
    assert configs["retention.ms"] == ("3600000", 1)
    assert configs["retention.bytes"] == ("9", 1)
    assert len(meta.partitions) == 2
    assert watermarks(server.bootstrap, topic) == (4, 4)


def test_describe_cluster_versions(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        cluster_id = raw.metadata([]).cluster_id
        for version in (0, 1, 2):
            resp = raw.request(build_describe_cluster(version, endpoint_type=1))
            assert resp.error_code == 0
            assert (resp.cluster_id, resp.controller_id) == (cluster_id, 1)
            assert resp.cluster_authorized_operations == -(2**31)
            assert [(b.broker_id, b.host, b.port) for b in resp.brokers] == [
                (1, "127.0.0.1", server.kafka_port)
            ]
        # the broker listener serves broker endpoints only, as in Kafka
        resp = raw.request(build_describe_cluster(1, endpoint_type=2))
    assert resp.error_code == MISMATCHED_ENDPOINT_TYPE and resp.brokers == ()


def build_describe_cluster(version: int, endpoint_type: int) -> Any:
    fields = {
        "include_cluster_authorized_operations": False,
        "endpoint_type": endpoint_type,
        "include_fenced_brokers": False,
    }
    cls = request_class(DESCRIBE_CLUSTER, version)
    return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


@pytest.mark.parametrize("version", [1, 4])
def test_describe_log_dirs_raw(server: Server, version: int) -> None:
    topic = unique_topic("ldraw")
    _create(server, topic)
    produce_confluent(server.bootstrap, topic, make_messages(5))
    req = schema(DESCRIBE_LOG_DIRS, version)
    body = request_class(DESCRIBE_LOG_DIRS, version)(
        topics=(
            req.DescribableLogDirTopic(topic=topic, partitions=(0, 9)),
            req.DescribableLogDirTopic(topic=unique_topic("nope"), partitions=(0,)),
        )
    )
    with RawKafka(server.bootstrap) as raw:
        resp = raw.request(body)
    (result,) = resp.results
    assert [t.name for t in result.topics] == [topic]
    (part,) = result.topics[0].partitions
    assert part.partition_index == 0 and part.partition_size > 0 and part.offset_lag == 0
    assert not part.is_future_key
    if version >= 4:
        assert result.total_bytes >= result.usable_bytes > 0


def test_alter_configs_request_errors(server: Server) -> None:
    """Errors only a hand-made request can cause; none of them changes anything."""
    topic = unique_topic("acerr")
    _create(server, topic, **{"retention.ms": "3600000"})
    iac = schema(44, 1)
    ac = schema(33, 2)

    def incremental(*configs: tuple[str, int, str | None], repeat: int = 1) -> list[Any]:
        res = iac.AlterConfigsResource(
            resource_type=TOPIC,
            resource_name=topic,
            configs=tuple(
                iac.AlterableConfig(name=n, config_operation=op, value=v) for n, op, v in configs
            ),
        )
        body = request_class(44, 1)(resources=(res,) * repeat, validate_only=False)
        with RawKafka(server.bootstrap) as raw:
            return [(r.error_code, r.error_message) for r in raw.request(body).responses]

    ((code, message),) = incremental(("retention.ms", 0, "1"), ("retention.ms", 1, None))
    assert code == INVALID_REQUEST and "retention.ms" in message
    ((code, message),) = incremental(("retention.ms", 7, "1"))
    assert code == INVALID_REQUEST and "7" in message
    ((code, message),) = incremental(("retention.bytes", 0, None))
    assert code == INVALID_CONFIG and "retention.bytes" in message
    assert [c for c, _ in incremental(("retention.ms", 0, "1"), repeat=2)] == [INVALID_REQUEST] * 2

    body = request_class(33, 2)(
        resources=(
            ac.AlterConfigsResource(
                resource_type=TOPIC,
                resource_name=topic,
                configs=(ac.AlterableConfig(name="segment.ms", value=None),),
            ),
        ),
        validate_only=False,
    )
    with RawKafka(server.bootstrap) as raw:
        ((code, message),) = [(r.error_code, r.error_message) for r in raw.request(body).responses]
        assert code == INVALID_CONFIG and "segment.ms" in message
        assert _describe_topic(raw, topic)["retention.ms"] == ("3600000", 1)


def test_create_partitions_request_errors(server: Server) -> None:
    topic = unique_topic("cperr")
    _create(server, topic)
    cp = schema(37, 3)
    one = (cp.CreatePartitionsAssignment(broker_ids=(1,)),)
    body = request_class(37, 3)(
        topics=(
            cp.CreatePartitionsTopic(name=topic, count=3, assignments=one),
            cp.CreatePartitionsTopic(name=topic, count=2, assignments=None),
        ),
        timeout=datetime.timedelta(seconds=5),
        validate_only=False,
    )
    with RawKafka(server.bootstrap) as raw:
        resp = raw.request(body)
        assert [r.error_code for r in resp.results] == [INVALID_REQUEST] * 2
        body = request_class(37, 3)(
            topics=(cp.CreatePartitionsTopic(name=topic, count=3, assignments=one),),
            timeout=datetime.timedelta(seconds=5),
            validate_only=False,
        )
        ((code, message),) = [(r.error_code, r.error_message) for r in raw.request(body).results]
        assert code == INVALID_REPLICA_ASSIGNMENT and "2" in message and "1" in message
        (meta,) = raw.metadata([topic]).topics
    assert len(meta.partitions) == 1
