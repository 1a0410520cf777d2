"""Authorization of the group and transaction APIs (issue 16) with real clients: Kafka's
KafkaApis semantics as confluent-kafka and kafka-python see them.

One server for the module: SASL_PLAINTEXT, the ACL authorizer, `User:admin` a super user,
users created with the CLI before start. The clients log in with SCRAM-SHA-256 and get their
ACLs from the AdminClient. The exact answers are in test_authz_groups_txn_raw.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AclOperation, ResourceType
from kafka import KafkaConsumer

from tests.integration.aclcluster import MECHANISM, PREFIXED, TIMEOUT, Cluster, until
from tests.integration.authzgroups import (
    CLUSTER_AUTHORIZATION_FAILED,
    allow,
    authz_cluster,
    committed,
    produce,
    raw_login,
    uid,
)
from tests.integration.rawkafka import ms, request_class


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with authz_cluster(tmp_path_factory.mktemp("authz")) as c:
        yield c


def _consumer_error(c: confluent_kafka.Consumer) -> Callable[[], Any]:
    """A probe: the next error a consumer reports; a delivered record fails the test."""

    def probe() -> Any:
        m = c.poll(0.5)
        if m is None:
            return None
        assert m.error() is not None, f"read {m.value()!r} without the ACLs for it"
        return m.error()

    return probe


def _watermarks(cluster: Cluster, topic: str) -> tuple[int, int]:
    c = cluster.consumer("admin", uid("wm"))
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        return int(lo), int(hi)
    finally:
        c.close()


# --------------------------------------------------------------------- real clients


def test_consumer_group_needs_read_on_the_group(cluster: Cluster) -> None:
    topic = cluster.topic("authz-g-")
    produce(cluster, topic, 5)
    group = uid("grp")
    allow(cluster, "alice", ResourceType.TOPIC, topic, AclOperation.READ)
    # DESCRIBE lets FindCoordinator through; JoinGroup wants READ.
    allow(cluster, "alice", ResourceType.GROUP, group, AclOperation.DESCRIBE)
    c = cluster.consumer("alice", group)
    try:
        c.subscribe([topic])
        error = until("the group error", _consumer_error(c))
        assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error
    finally:
        c.close()

    # kafka-python, with no ACL on its group at all: FindCoordinator already refuses it.
    other = uid("grp")
    kp = KafkaConsumer(
        topic,
        bootstrap_servers=cluster.srv.bootstrap,
        group_id=other,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=MECHANISM,
        sasl_plain_username="alice",
        sasl_plain_password=cluster.passwords["alice"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        with pytest.raises(kafka.errors.GroupAuthorizationFailedError):
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                assert not kp.poll(timeout_ms=500), "read records without the group ACL"
    finally:
        kp.close()

    # With READ on the group (granted now, effective at once) the same configuration reads
    # and commits: the positive path of JoinGroup, SyncGroup, Heartbeat, OffsetCommit/Fetch.
    allow(cluster, "alice", ResourceType.GROUP, group, AclOperation.READ)
    c = cluster.consumer("alice", group)
    try:
        c.subscribe([topic])
        got: list[bytes] = []

        def five() -> Any:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got.append(m.value())
            return got if len(got) == 5 else None

        assert until("five records", five) == [f"v{i}".encode() for i in range(5)]
        c.commit(asynchronous=False)
    finally:
        c.close()
    assert committed(cluster, group, topic) == 5


def test_transactional_id_needs_write(cluster: Cluster) -> None:
    topic = cluster.topic("authz-t-")
    allow(cluster, "bob", ResourceType.TOPIC, topic, AclOperation.WRITE)
    described = uid("bob-tx")
    # DESCRIBE on the id lets FindCoordinator through; InitProducerId wants WRITE.
    allow(cluster, "bob", ResourceType.TRANSACTIONAL_ID, described, AclOperation.DESCRIBE)
    for tid in (described, uid("bob-none")):
        p = confluent_kafka.Producer(cluster.conf("bob", **{"transactional.id": tid}))
        with pytest.raises(KafkaException) as info:
            p.init_transactions(TIMEOUT)
        error = info.value.args[0]
        assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, (tid, error)


def test_idempotent_producer_needs_only_write_on_a_topic(cluster: Cluster) -> None:
    topic = cluster.topic("authz-i-")
    allow(cluster, "carol", ResourceType.TOPIC, topic, AclOperation.WRITE)
    errors: list[Any] = []
    p = confluent_kafka.Producer(
        cluster.conf(
            "carol", **{"enable.idempotence": True, "linger.ms": 0, "error_cb": errors.append}
        )
    )
    reports: list[Any] = []
    for i in range(10):
        p.produce(
            topic, value=f"i{i}".encode(), partition=0, on_delivery=lambda e, m: reports.append(e)
        )
    assert p.flush(TIMEOUT) == 0
    assert reports == [None] * 10
    assert not [e for e in errors if e.fatal()], errors
    lo, hi = _watermarks(cluster, topic)
    assert (lo, hi) == (0, 10)

    # Without WRITE on any topic (nor IDEMPOTENT_WRITE) there is no producer id.
    with raw_login(cluster, "dave") as raw:
        body = request_class(22, 4)(
            transactional_id=None, transaction_timeout=ms(60000), producer_id=-1, producer_epoch=-1
        )
        resp = raw.request(body)
    assert (resp.error_code, resp.producer_id) == (CLUSTER_AUTHORIZATION_FAILED, -1)


def test_list_groups_shows_only_describable_groups(cluster: Cluster) -> None:
    topic = cluster.topic("authz-l-")
    stem = uid("lg")
    groups = [f"{stem}-a", f"{stem}-b1", f"{stem}-c"]
    for g in groups:
        c = cluster.consumer("admin", g)
        c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
        c.close()
    allow(cluster, "dave", ResourceType.GROUP, groups[0], AclOperation.DESCRIBE)
    allow(cluster, "dave", ResourceType.GROUP, f"{stem}-b", AclOperation.DESCRIBE, pattern=PREFIXED)

    def listed(user: str) -> set[str]:
        admin = cluster.client(user)
        result = admin.list_consumer_groups(request_timeout=TIMEOUT).result()
        return {g.group_id for g in result.valid} & set(groups)

    assert listed("dave") == {groups[0], groups[1]}
    assert listed("admin") == set(groups)

    admin = cluster.client("dave")
    futures = admin.describe_consumer_groups([groups[0], groups[2]], request_timeout=TIMEOUT)
    assert futures[groups[0]].result().group_id == groups[0]
    with pytest.raises(KafkaException) as info:
        futures[groups[2]].result()
    assert info.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    # DESCRIBE is not DELETE.
    (f,) = admin.delete_consumer_groups([groups[0]], request_timeout=TIMEOUT).values()
    with pytest.raises(KafkaException) as info:
        f.result()
    assert info.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_transactional_consume_transform_produce_with_acls(cluster: Cluster) -> None:
    src, dst, refused = (cluster.topic(f"{p}-") for p in ("authz-in", "authz-out", "authz-no"))
    produce(cluster, src, 3)
    group, tid = uid("eve-grp"), uid("eve-tx")
    eve_tx = ("eve", ResourceType.TRANSACTIONAL_ID, "eve-tx")  # prefixed: every "eve-tx*"
    allow(cluster, *eve_tx, AclOperation.WRITE, pattern=PREFIXED)
    allow(cluster, "eve", ResourceType.TOPIC, src, AclOperation.READ)
    allow(cluster, "eve", ResourceType.TOPIC, dst, AclOperation.WRITE)
    allow(cluster, "eve", ResourceType.TOPIC, refused, AclOperation.DESCRIBE)
    allow(cluster, "eve", ResourceType.GROUP, group, AclOperation.READ)

    consumer = cluster.consumer("eve", group, **{"isolation.level": "read_committed"})
    producer = confluent_kafka.Producer(cluster.conf("eve", **{"transactional.id": tid}))
    try:
        consumer.assign([TopicPartition(src, 0, 0)])
        read: list[Any] = []

        def three() -> Any:
            m = consumer.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                read.append(m)
            return read if len(read) == 3 else None

        until("three input records", three)
        producer.init_transactions(TIMEOUT)

        # Each failed transaction first holds a partition, so its abort has something to end
        # (an abort of an Empty transaction is INVALID_TXN_STATE, also in Kafka).
        # Offsets of a group eve may not READ: AddOffsetsToTxn refuses them.
        producer.begin_transaction()
        producer.produce(dst, value=b"dropped", partition=0)
        assert producer.flush(TIMEOUT) == 0
        other = cluster.consumer("eve", uid("eve-no"))
        with pytest.raises(KafkaException) as info:
            producer.send_offsets_to_transaction(
                [TopicPartition(src, 0, 3)], other.consumer_group_metadata(), TIMEOUT
            )
        other.close()
        assert info.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
        producer.abort_transaction(TIMEOUT)

        # A topic eve may describe but not write: AddPartitionsToTxn refuses it.
        producer.begin_transaction()
        producer.produce(dst, value=b"dropped", partition=0)
        assert producer.flush(TIMEOUT) == 0
        producer.produce(refused, value=b"refused", partition=0)
        with pytest.raises(KafkaException) as info:
            producer.commit_transaction(TIMEOUT)
        assert info.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        producer.abort_transaction(TIMEOUT)

        producer.begin_transaction()
        for m in read:
            producer.produce(dst, value=m.value().upper(), partition=0)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), TIMEOUT
        )
        producer.commit_transaction(TIMEOUT)
    finally:
        consumer.close()

    reader = cluster.consumer("admin", uid("rd"), **{"isolation.level": "read_committed"})
    try:
        reader.assign([TopicPartition(dst, 0, 0)])
        out: list[bytes] = []

        def committed_three() -> Any:
            m = reader.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m.value())
            return out if len(out) >= 3 else None

        assert until("the committed output", committed_three) == [b"V0", b"V1", b"V2"]
    finally:
        reader.close()
    assert committed(cluster, group, src) == 3
    assert _watermarks(cluster, refused)[1] == 0
