"""Authorization of the admin APIs and of the answers only hand-framed requests show
(issue 16), as KafkaApis/ControllerApis: each refusal first, then the ACL that lets it by.

One server for the module (SASL_PLAINTEXT with PLAIN and SCRAM, the ACL authorizer,
User:admin super user). confluent-kafka's AdminClient logs in with SCRAM; RawKafka with
PLAIN.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AclOperation,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from .aclcluster import PREFIXED, TIMEOUT, Cluster, error_code, secure_cluster
from .rawkafka import RawKafka, Rec, build_batch, ms, schema

INVALID_REQUEST = 42
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
Op = AclOperation
TOPIC, BROKER = ResourceType.TOPIC, ResourceType.BROKER
# Kafka's AclEntry.supportedOperations.
TOPIC_OPS = {
    Op.READ,
    Op.WRITE,
    Op.CREATE,
    Op.DESCRIBE,
    Op.DELETE,
    Op.ALTER,
    Op.DESCRIBE_CONFIGS,
    Op.ALTER_CONFIGS,
}
CLUSTER_OPS = {
    Op.CREATE,
    Op.CLUSTER_ACTION,
    Op.DESCRIBE_CONFIGS,
    Op.ALTER_CONFIGS,
    Op.IDEMPOTENT_WRITE,
    Op.ALTER,
    Op.DESCRIBE,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with secure_cluster(tmp_path_factory.mktemp("aclsadm"), ("eve", "bob")) as c:
        yield c


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _allow(cluster: Cluster, user: str, rtype: ResourceType, name: str, op: Op, **kw) -> None:
    cluster.create_acls([cluster.binding(user, rtype, name, op, **kw)])


def _one(futures: dict) -> int | None:
    (f,) = futures.values()
    return error_code(f)


def test_topic_admin_apis(cluster: Cluster) -> None:
    u = _uid()
    eve = cluster.client("eve")
    topic = cluster.topic(f"adm-{u}-")
    assert cluster.produce("admin", topic, 3) == [None] * 3
    kw = {"request_timeout": TIMEOUT}

    new = NewTopic(f"adm-{u}-new", num_partitions=1, replication_factor=1)
    assert _one(eve.create_topics([new], **kw)) == TOPIC_AUTHORIZATION_FAILED
    assert f"adm-{u}-new" not in cluster.admin.list_topics(timeout=TIMEOUT).topics
    _allow(cluster, "eve", TOPIC, f"adm-{u}-", Op.CREATE, pattern=PREFIXED)
    assert _one(eve.create_topics([new], **kw)) is None

    spec = {TopicPartition(topic, 0): OffsetSpec.latest()}
    # librdkafka looks the leader up first: refused there, it reports no such entry.
    assert _one(eve.list_offsets(spec, **kw)) is not None
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    assert _one(eve.describe_configs([res], **kw)) == TOPIC_AUTHORIZATION_FAILED
    (node,) = cluster.admin.list_topics(timeout=TIMEOUT).brokers
    broker = ConfigResource(ConfigResource.Type.BROKER, str(node))
    assert _one(eve.describe_configs([broker], **kw)) == CLUSTER_AUTHORIZATION_FAILED
    change = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    assert _one(eve.incremental_alter_configs([change], **kw)) == TOPIC_AUTHORIZATION_FAILED
    _allow(cluster, "eve", TOPIC, topic, Op.ALTER_CONFIGS)
    assert _one(eve.incremental_alter_configs([change], **kw)) is None
    # ALTER_CONFIGS implies DESCRIBE_CONFIGS.
    (described,) = eve.describe_configs([res], **kw).values()
    assert described.result(TIMEOUT)["retention.ms"].value == "3600000"

    grow = NewPartitions(topic, 2)
    assert _one(eve.create_partitions([grow], **kw)) == TOPIC_AUTHORIZATION_FAILED
    _allow(cluster, "eve", TOPIC, topic, Op.ALTER)
    assert _one(eve.create_partitions([grow], **kw)) is None
    # ALTER implies DESCRIBE: the offsets are listed now (to a client without the refusal
    # cached in its metadata).
    eve2 = cluster.client("eve")
    (latest,) = eve2.list_offsets(spec, **kw).values()
    assert latest.result(TIMEOUT).offset == 3

    trim = [TopicPartition(topic, 0, 1)]
    assert _one(eve2.delete_records(trim, **kw)) == TOPIC_AUTHORIZATION_FAILED
    _allow(cluster, "eve", TOPIC, topic, Op.DELETE)
    (trimmed,) = eve2.delete_records(trim, **kw).values()
    assert trimmed.result(TIMEOUT).low_watermark == 1
    assert _one(eve.delete_topics([topic], **kw)) is None


def test_delete_topics_needs_describe_and_delete(cluster: Cluster) -> None:
    topic = cluster.topic("del-")
    bob = cluster.client("bob")
    kw = {"request_timeout": TIMEOUT, "operation_timeout": TIMEOUT}
    assert _one(bob.delete_topics([topic], **kw)) == TOPIC_AUTHORIZATION_FAILED
    assert _one(bob.delete_topics([f"absent-{_uid()}"], **kw)) == TOPIC_AUTHORIZATION_FAILED, (
        "a topic bob may not describe is refused, not reported missing"
    )
    _allow(cluster, "bob", TOPIC, topic, Op.DESCRIBE)
    assert _one(bob.delete_topics([topic], **kw)) == TOPIC_AUTHORIZATION_FAILED
    _allow(cluster, "bob", TOPIC, topic, Op.DELETE)
    assert _one(bob.delete_topics([topic], **kw)) is None
    assert topic not in cluster.admin.list_topics(timeout=TIMEOUT).topics


def test_authorized_operations(cluster: Cluster) -> None:
    topic = cluster.topic("ops-")
    _allow(cluster, "bob", TOPIC, topic, Op.READ)
    kw = {"request_timeout": TIMEOUT, "include_authorized_operations": True}
    bob = cluster.client("bob")
    (desc,) = bob.describe_topics(TopicCollection([topic]), **kw).values()
    assert set(desc.result(TIMEOUT).authorized_operations) == {Op.READ, Op.DESCRIBE}
    (desc,) = cluster.admin.describe_topics(TopicCollection([topic]), **kw).values()
    assert set(desc.result(TIMEOUT).authorized_operations) == TOPIC_OPS

    bob_cluster = bob.describe_cluster(**kw).result(TIMEOUT)
    assert not bob_cluster.authorized_operations, "no DESCRIBE on the cluster: nothing"
    admin_cluster = cluster.admin.describe_cluster(**kw).result(TIMEOUT)
    assert set(admin_cluster.authorized_operations) == CLUSTER_OPS


# --------------------------------------------------------------------------- raw answers


def _metadata_v12(conn: RawKafka, name: str | None, topic_id: uuid.UUID | None = None) -> Any:
    """The one topic entry of a Metadata v12 request naming a topic by name or by id."""
    mod = schema(3, 12)
    resp = conn.request(
        mod.MetadataRequest(
            topics=(mod.MetadataRequestTopic(topic_id=topic_id, name=name),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
    )
    (t,) = resp.topics
    return t


def test_raw_metadata_fetch_and_offsets(cluster: Cluster) -> None:
    u = _uid()
    secret = cluster.topic(f"hid-{u}-")
    visible = cluster.topic(f"vis-{u}-")
    assert cluster.produce("admin", visible, 2) == [None] * 2
    _allow(cluster, "bob", TOPIC, visible, Op.DESCRIBE)
    with cluster.raw("admin") as adm:
        secret_id = _metadata_v12(adm, secret).topic_id
    with cluster.raw("bob") as bob:
        listed = {t.name for t in bob.metadata(None).topics}
        assert visible in listed and secret not in listed
        named = {t.name: int(t.error_code) for t in bob.metadata([secret, visible]).topics}
        assert named == {secret: TOPIC_AUTHORIZATION_FAILED, visible: 0}
        # By id: refused with the id, the name not revealed.
        t = _metadata_v12(bob, None, secret_id)
        assert (int(t.error_code), t.name, t.topic_id) == (
            TOPIC_AUTHORIZATION_FAILED,
            None,
            secret_id,
        )
        # DESCRIBE is not READ: the topic is listed, its records are not fetched.
        p = bob.fetch(visible, 0, 0)
        assert int(p.error_code) == TOPIC_AUTHORIZATION_FAILED and p.records in (None, b"")
        assert int(bob.list_offset(visible, 0, -1).error_code) == 0
        assert int(bob.list_offset(secret, 0, -1).error_code) == TOPIC_AUTHORIZATION_FAILED
        # DeleteTopics by id of a topic bob may not describe: refused, no name.
        mod = schema(20, 6)
        resp = bob.request(
            mod.DeleteTopicsRequest(
                topics=(mod.DeleteTopicState(name=None, topic_id=secret_id),), timeout=ms(5000)
            )
        )
        (r,) = resp.responses
        assert (int(r.error_code), r.name) == (TOPIC_AUTHORIZATION_FAILED, None)
        # DescribeLogDirs wants DESCRIBE on the cluster.
        logdirs = bob.request(schema(35, 4).DescribeLogDirsRequest(topics=None))
        assert (int(logdirs.error_code), logdirs.results) == (CLUSTER_AUTHORIZATION_FAILED, ())
    assert secret in cluster.admin.list_topics(timeout=TIMEOUT).topics


def test_raw_auto_creation_needs_create(cluster: Cluster) -> None:
    u = _uid()
    _allow(cluster, "bob", TOPIC, f"auto-{u}-", Op.DESCRIBE, pattern=PREFIXED)
    with cluster.raw("bob") as bob:
        (t,) = bob.metadata([f"auto-{u}-a"], auto_create=True).topics
        assert int(t.error_code) == TOPIC_AUTHORIZATION_FAILED
        assert f"auto-{u}-a" not in cluster.admin.list_topics(timeout=TIMEOUT).topics
        _allow(cluster, "bob", TOPIC, f"auto-{u}-", Op.CREATE, pattern=PREFIXED)
        (t,) = bob.metadata([f"auto-{u}-a"], auto_create=True).topics
        assert (int(t.error_code), len(t.partitions)) == (0, 1)


def test_raw_transactional_produce_needs_the_transactional_id(cluster: Cluster) -> None:
    topic = cluster.topic("txp-")
    _allow(cluster, "bob", TOPIC, topic, Op.WRITE)
    batch = build_batch(
        [Rec(b"k", b"v")], producer_id=1, producer_epoch=0, base_sequence=0, attributes=0x10
    )
    with cluster.raw("bob") as bob:
        req = bob.produce_request(topic, 0, batch)
        req = dataclasses.replace(req, transactional_id=f"tx-{_uid()}")
        resp = bob.request(req)
        (t,) = resp.responses
        (p,) = t.partition_responses
        assert int(p.error_code) == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        # Without a transactional id at all, the same batch is refused the same way.
        code, _ = bob.produce(topic, 0, batch)
        assert code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    with cluster.raw("admin") as adm:
        assert int(adm.list_offset(topic, 0, -1).offset) == 0, "nothing was written"


def test_raw_metadata_before_v12_needs_names(cluster: Cluster) -> None:
    """v10/v11 requests may carry a null name or an id, their responses cannot: Kafka
    refuses the request, each topic INVALID_REQUEST (a null name answered as "")."""
    with cluster.raw("bob") as bob:
        for version in (10, 11):
            mod = schema(3, version)
            extra = {"include_cluster_authorized_operations": False} if version == 10 else {}
            topics = (
                mod.MetadataRequestTopic(topic_id=None, name=None),
                mod.MetadataRequestTopic(topic_id=uuid.uuid4(), name="by-id"),
            )
            resp = bob.request(
                mod.MetadataRequest(
                    topics=topics,
                    allow_auto_topic_creation=False,
                    include_topic_authorized_operations=False,
                    **extra,
                )
            )
            assert [(t.name, int(t.error_code)) for t in resp.topics] == [
                ("", INVALID_REQUEST),
                ("by-id", INVALID_REQUEST),
            ]
        assert bob.metadata(None).topics is not None, "the connection still serves"
