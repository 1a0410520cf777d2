"""Authorization of the group and transaction APIs (issue 16), Kafka's KafkaApis semantics.

One server for the module: SASL_PLAINTEXT, the ACL authorizer, `User:admin` a super user,
users created with the CLI before start. Real clients (confluent-kafka, kafka-python) log in
with SCRAM-SHA-256 and get their ACLs from the AdminClient; the exact answers (orders,
per-partition codes, batched forms) are read from hand-framed requests over SASL/PLAIN.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from kafka import KafkaConsumer

from tests.integration.aclcluster import (
    LITERAL,
    MECHANISM,
    PREFIXED,
    TIMEOUT,
    Cluster,
    secure_cluster,
    until,
)
from tests.integration.rawkafka import RawKafka, ms, request_class, schema

USERS = ("alice", "bob", "carol", "dave", "eve")

INCONSISTENT_GROUP_PROTOCOL = 23
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
OPERATION_NOT_ATTEMPTED = 55
# Kafka's AclOperation codes, as bits of an authorized-operations field.
DESCRIBE, DELETE = 8, 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # PLAIN as well, for the hand-framed connections.
    extra = ["--sasl-mechanisms", f"PLAIN,{MECHANISM}"]
    with secure_cluster(tmp_path_factory.mktemp("authz"), USERS, extra) as c:
        yield c
        # Gone before the server, so librdkafka does not log refused reconnects.
        del c.admin
        gc.collect()


def allow(
    cluster: Cluster,
    user: str,
    rtype: ResourceType,
    name: str,
    *ops: AclOperation,
    pattern: ResourcePatternType = LITERAL,
) -> None:
    cluster.create_acls(cluster.binding(user, rtype, name, op, pattern=pattern) for op in ops)


def produce(cluster: Cluster, topic: str, n: int) -> None:
    assert cluster.produce("admin", topic, n) == [None] * n


def committed(cluster: Cluster, group: str, topic: str) -> int:
    c = cluster.consumer("admin", group)
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=TIMEOUT)
        return int(tp.offset)
    finally:
        c.close()


def raw_login(cluster: Cluster, user: str) -> RawKafka:
    """A hand-framed connection logged in with SASL/PLAIN (KIP-152 framing)."""
    conn = RawKafka(cluster.srv.bootstrap)
    hs = conn.request(request_class(17, 1)(mechanism="PLAIN"))
    assert hs.error_code == 0, hs
    token = b"\0" + user.encode() + b"\0" + cluster.passwords[user].encode()
    auth = conn.request(request_class(36, 2)(auth_bytes=token))
    assert auth.error_code == 0, auth
    return conn


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


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
    c = cluster.consumer("admin", _uid("wm"))
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        return int(lo), int(hi)
    finally:
        c.close()


# --------------------------------------------------------------------- real clients


def test_consumer_group_needs_read_on_the_group(cluster: Cluster) -> None:
    topic = cluster.topic("authz-g-")
    produce(cluster, topic, 5)
    group = _uid("grp")
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
    other = _uid("grp")
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
    described = _uid("bob-tx")
    # DESCRIBE on the id lets FindCoordinator through; InitProducerId wants WRITE.
    allow(cluster, "bob", ResourceType.TRANSACTIONAL_ID, described, AclOperation.DESCRIBE)
    for tid in (described, _uid("bob-none")):
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
    stem = _uid("lg")
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
    group, tid = _uid("eve-grp"), _uid("eve-tx")
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
        other = cluster.consumer("eve", _uid("eve-no"))
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

    reader = cluster.consumer("admin", _uid("rd"), **{"isolation.level": "read_committed"})
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


# ------------------------------------------------------------- exact answers (raw)


def _codes(resp_topics: Any, parts: str = "partitions", code: str = "error_code") -> dict:
    return {
        (t.name, int(p.partition_index)): int(getattr(p, code))
        for t in resp_topics
        for p in getattr(t, parts)
    }


def test_find_coordinator_checks_describe_per_key(cluster: Cluster) -> None:
    mine, theirs = _uid("fc"), _uid("fc")
    allow(cluster, "alice", ResourceType.GROUP, mine, AclOperation.DESCRIBE)
    with raw_login(cluster, "alice") as raw:
        v4 = raw.request(request_class(10, 4)(key_type=0, coordinator_keys=(mine, theirs)))
        v3 = raw.request(request_class(10, 3)(key=theirs, key_type=0))
        txn = raw.request(request_class(10, 3)(key=_uid("tx"), key_type=1))
    by_key = {c.key: c for c in v4.coordinators}
    assert int(by_key[mine].error_code) == 0 and by_key[mine].port == cluster.srv.kafka_port
    denied = by_key[theirs]
    assert (int(denied.error_code), denied.node_id, denied.host, denied.port) == (
        GROUP_AUTHORIZATION_FAILED,
        -1,
        "",
        -1,
    )
    assert (int(v3.error_code), v3.error_message, v3.node_id) == (
        GROUP_AUTHORIZATION_FAILED,
        "Group authorization failed.",
        -1,
    )
    assert int(txn.error_code) == TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_membership_apis_need_read_on_the_group(cluster: Cluster) -> None:
    group = _uid("mb")
    allow(cluster, "alice", ResourceType.GROUP, group, AclOperation.DESCRIBE)
    join = request_class(11, 9)(
        group_id=group,
        session_timeout=ms(10000),
        rebalance_timeout=ms(10000),
        member_id="",
        group_instance_id=None,
        protocol_type="consumer",
        protocols=(schema(11, 9).JoinGroupRequestProtocol(name="range", metadata=b""),),
        reason=None,
    )

    def sync(protocol: str | None) -> Any:
        return request_class(14, 5)(
            group_id=group,
            generation_id=1,
            member_id="m",
            group_instance_id=None,
            protocol_type=protocol,
            protocol_name=protocol and "range",
            assignments=(),
        )

    heartbeat = request_class(12, 4)(
        group_id=group, generation_id=1, member_id="m", group_instance_id=None
    )
    member = schema(13, 5).MemberIdentity(member_id="m", group_instance_id=None, reason=None)
    leave = request_class(13, 5)(group_id=group, members=(member,))
    with raw_login(cluster, "alice") as raw:
        joined = raw.request(join)
        synced, bad_sync = raw.request(sync("consumer")), raw.request(sync(None))
        beat, left = raw.request(heartbeat), raw.request(leave)
    assert (int(joined.error_code), joined.member_id, joined.generation_id, joined.members) == (
        GROUP_AUTHORIZATION_FAILED,
        "",
        -1,
        (),
    )
    assert (int(synced.error_code), synced.assignment) == (GROUP_AUTHORIZATION_FAILED, b"")
    # v5's mandatory protocol type and name are checked before authorization, as Kafka does.
    assert int(bad_sync.error_code) == INCONSISTENT_GROUP_PROTOCOL
    assert int(beat.error_code) == GROUP_AUTHORIZATION_FAILED
    assert (int(left.error_code), left.members) == (GROUP_AUTHORIZATION_FAILED, ())


def test_describe_and_delete_groups_answer_denied_groups_as_kafka_does(cluster: Cluster) -> None:
    mine, theirs = _uid("dg"), _uid("dg")
    allow(cluster, "alice", ResourceType.GROUP, mine, AclOperation.DESCRIBE, AclOperation.DELETE)
    with raw_login(cluster, "alice") as raw:
        desc = raw.request(
            request_class(15, 5)(groups=(mine, theirs), include_authorized_operations=True)
        )
        dele = raw.request(request_class(42, 2)(groups_names=(theirs, mine, theirs)))
    # Denied groups come first, without a state; the rest carry their authorized operations.
    first, second = desc.groups
    assert (first.group_id, int(first.error_code), first.group_state) == (
        theirs,
        GROUP_AUTHORIZATION_FAILED,
        "",
    )
    assert (second.group_id, int(second.error_code), second.group_state) == (mine, 0, "Dead")
    assert second.authorized_operations == (1 << DESCRIBE) | (1 << DELETE)
    # Each name once: deleted (or failed) groups first, then the denied ones.
    assert [(r.group_id, int(r.error_code)) for r in dele.results] == [
        (mine, 69),  # GROUP_ID_NOT_FOUND: it never existed
        (theirs, GROUP_AUTHORIZATION_FAILED),
    ]


def _commit(raw: RawKafka, group_id: str, *topics: str, offset: int = 7) -> dict:
    """OffsetCommit v8 of partition 0 of each topic as a simple consumer: codes by partition."""
    oc = schema(8, 8)
    part = oc.OffsetCommitRequestPartition(
        partition_index=0, committed_offset=offset, committed_leader_epoch=-1, committed_metadata=""
    )
    body = oc.OffsetCommitRequest(
        group_id=group_id,
        generation_id_or_member_epoch=-1,
        member_id="",
        group_instance_id=None,
        topics=tuple(oc.OffsetCommitRequestTopic(name=t, partitions=(part,)) for t in topics),
    )
    return _codes(raw.request(body).topics)


def test_offset_commit_fetch_delete_check_group_then_topics(cluster: Cluster) -> None:
    readable, described, hidden = (cluster.topic(f"{p}-") for p in ("oc-r", "oc-d", "oc-h"))
    unknown = _uid("oc-none")
    group, denied_group = _uid("oc"), _uid("oc")
    allow(cluster, "alice", ResourceType.GROUP, group, AclOperation.READ)
    allow(cluster, "alice", ResourceType.TOPIC, readable, AclOperation.READ)
    allow(cluster, "alice", ResourceType.TOPIC, described, AclOperation.DESCRIBE)
    with raw_login(cluster, "alice") as raw:
        assert _commit(raw, denied_group, readable, described) == {
            (readable, 0): GROUP_AUTHORIZATION_FAILED,
            (described, 0): GROUP_AUTHORIZATION_FAILED,
        }
        # Authorization comes before existence: an unknown topic alice may not READ is refused.
        assert _commit(raw, group, readable, described, unknown) == {
            (readable, 0): 0,
            (described, 0): TOPIC_AUTHORIZATION_FAILED,
            (unknown, 0): TOPIC_AUTHORIZATION_FAILED,
        }
    # The admin commits what alice may only describe, and what she may not see at all.
    with raw_login(cluster, "admin") as raw:
        assert _commit(raw, group, described, hidden, offset=3) == {
            (described, 0): 0,
            (hidden, 0): 0,
        }

    of = schema(9, 8)
    named = (
        of.OffsetFetchRequestTopics(name=hidden, partition_indexes=(0,)),
        of.OffsetFetchRequestTopics(name=readable, partition_indexes=(0,)),
        of.OffsetFetchRequestTopics(name=described, partition_indexes=(0, 1)),
    )
    od = schema(47, 0)
    delete = od.OffsetDeleteRequest(
        group_id=group,
        topics=tuple(
            od.OffsetDeleteRequestTopic(
                name=t, partitions=(od.OffsetDeleteRequestPartition(partition_index=0),)
            )
            for t in (readable, described)
        ),
    )
    with raw_login(cluster, "alice") as raw:
        resp = raw.request(
            of.OffsetFetchRequest(
                groups=(
                    of.OffsetFetchRequestGroup(group_id=group, topics=named),
                    of.OffsetFetchRequestGroup(group_id=group, topics=None),
                    of.OffsetFetchRequestGroup(group_id=denied_group, topics=None),
                ),
                require_stable=False,
            )
        )
        no_delete = raw.request(delete)
        allow(cluster, "alice", ResourceType.GROUP, group, AclOperation.DELETE)
        deleted = raw.request(delete)
    some, every, refused = resp.groups
    # DESCRIBE on a topic is enough to fetch its offsets; a named topic alice may not
    # describe answers TOPIC_AUTHORIZATION_FAILED, after the others.
    assert int(some.error_code) == 0
    assert [
        (t.name, int(p.partition_index), int(p.error_code), int(p.committed_offset))
        for t in some.topics
        for p in t.partitions
    ] == [
        (readable, 0, 0, 7),
        (described, 0, 0, 3),
        (described, 1, 0, -1),
        (hidden, 0, TOPIC_AUTHORIZATION_FAILED, -1),
    ]
    # The "all topics" form leaves out what alice may not describe.
    assert {t.name for t in every.topics} == {readable, described}
    assert (int(refused.error_code), refused.topics) == (GROUP_AUTHORIZATION_FAILED, ())
    # OffsetDelete: DELETE on the group, then READ on each topic.
    assert (int(no_delete.error_code), no_delete.topics) == (GROUP_AUTHORIZATION_FAILED, ())
    assert int(deleted.error_code) == 0
    assert _codes(deleted.topics) == {(readable, 0): 0, (described, 0): TOPIC_AUTHORIZATION_FAILED}


def _init_txn(raw: RawKafka, tid: str) -> tuple[int, int, int]:
    resp = raw.request(
        request_class(22, 4)(
            transactional_id=tid, transaction_timeout=ms(60000), producer_id=-1, producer_epoch=-1
        )
    )
    return int(resp.error_code), int(resp.producer_id), int(resp.producer_epoch)


class Txn:
    """One transactional producer of a raw connection: the requests with its id and epoch."""

    def __init__(self, raw: RawKafka, pid: int, epoch: int) -> None:
        self.raw, self.pid, self.epoch = raw, pid, epoch

    def add(self, tid: str, *topics: str) -> dict:
        ap = schema(24, 3)
        body = ap.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=tid,
            v3_and_below_producer_id=self.pid,
            v3_and_below_producer_epoch=self.epoch,
            v3_and_below_topics=tuple(
                ap.AddPartitionsToTxnTopic(name=t, partitions=(0,)) for t in topics
            ),
        )
        resp = self.raw.request(body)
        return _codes(
            resp.results_by_topic_v3_and_below, "results_by_partition", "partition_error_code"
        )

    def add_batched(self, tid: str, topic: str) -> Any:
        ap = schema(24, 4)
        txn = ap.AddPartitionsToTxnTransaction(
            transactional_id=tid,
            producer_id=self.pid,
            producer_epoch=self.epoch,
            verify_only=True,
            topics=(ap.AddPartitionsToTxnTopic(name=topic, partitions=(0,)),),
        )
        return self.raw.request(ap.AddPartitionsToTxnRequest(transactions=(txn,)))

    def add_offsets(self, tid: str, group: str) -> int:
        body = request_class(25, 3)(
            transactional_id=tid, producer_id=self.pid, producer_epoch=self.epoch, group_id=group
        )
        return int(self.raw.request(body).error_code)

    def commit_offsets(self, tid: str, group: str, *topics: str) -> dict:
        to = schema(28, 3)
        part = to.TxnOffsetCommitRequestPartition(
            partition_index=0, committed_offset=1, committed_leader_epoch=-1, committed_metadata=""
        )
        body = to.TxnOffsetCommitRequest(
            transactional_id=tid,
            group_id=group,
            producer_id=self.pid,
            producer_epoch=self.epoch,
            generation_id=-1,
            member_id="",
            group_instance_id=None,
            topics=tuple(
                to.TxnOffsetCommitRequestTopic(name=t, partitions=(part,)) for t in topics
            ),
        )
        return _codes(self.raw.request(body).topics)

    def end(self, tid: str) -> int:
        body = request_class(26, 3)(
            transactional_id=tid, producer_id=self.pid, producer_epoch=self.epoch, committed=False
        )
        return int(self.raw.request(body).error_code)


def test_transaction_apis_check_the_transactional_id_group_and_topics(cluster: Cluster) -> None:
    tid, refused_tid = _uid("eve-tx"), _uid("nope-tx")
    eve_tx = ("eve", ResourceType.TRANSACTIONAL_ID, "eve-tx")  # prefixed: every "eve-tx*"
    allow(cluster, *eve_tx, AclOperation.WRITE, pattern=PREFIXED)
    writable, shown, described = (cluster.topic(f"{p}-") for p in ("tx-w", "tx-s", "tx-d"))
    for t in (writable, shown):
        allow(cluster, "eve", ResourceType.TOPIC, t, AclOperation.WRITE)
    allow(cluster, "eve", ResourceType.TOPIC, described, AclOperation.DESCRIBE)
    group = _uid("tx-grp")
    with raw_login(cluster, "eve") as raw:
        assert _init_txn(raw, refused_tid)[0] == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        code, pid, epoch = _init_txn(raw, tid)
        assert code == 0
        txn = Txn(raw, pid, epoch)
        assert txn.add(refused_tid, writable) == {
            (writable, 0): TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        }
        # One refused partition fails the transaction; the others are not attempted.
        assert txn.add(tid, writable, described) == {
            (writable, 0): OPERATION_NOT_ATTEMPTED,
            (described, 0): TOPIC_AUTHORIZATION_FAILED,
        }
        assert txn.add(tid, writable, shown) == {(writable, 0): 0, (shown, 0): 0}
        # Batched (v4) requests come from brokers: CLUSTER_ACTION on the cluster.
        v4 = txn.add_batched(tid, writable)
        assert (int(v4.error_code), v4.results_by_transaction) == (CLUSTER_AUTHORIZATION_FAILED, ())
        with raw_login(cluster, "admin") as broker:
            (verified,) = Txn(broker, pid, epoch).add_batched(tid, writable).results_by_transaction
        assert _codes(verified.topic_results, "results_by_partition", "partition_error_code") == {
            (writable, 0): 0
        }

        assert txn.add_offsets(refused_tid, group) == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        assert txn.add_offsets(tid, group) == GROUP_AUTHORIZATION_FAILED
        assert set(txn.commit_offsets(refused_tid, group, writable).values()) == {
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        }
        assert set(txn.commit_offsets(tid, group, writable).values()) == {
            GROUP_AUTHORIZATION_FAILED
        }
        allow(cluster, "eve", ResourceType.GROUP, group, AclOperation.READ)
        # READ on each topic: eve may only write `writable` and describe `described`.
        assert txn.commit_offsets(tid, group, writable, described) == {
            (writable, 0): TOPIC_AUTHORIZATION_FAILED,
            (described, 0): TOPIC_AUTHORIZATION_FAILED,
        }
        assert txn.end(refused_tid) == TRANSACTIONAL_ID_AUTHORIZATION_FAILED

        # Describe and list show only what the principal may describe.
        allow(cluster, "dave", ResourceType.TRANSACTIONAL_ID, tid, AclOperation.DESCRIBE)
        allow(cluster, "dave", ResourceType.TOPIC, shown, AclOperation.DESCRIBE)
        with raw_login(cluster, "dave") as other:
            desc = other.request(request_class(65, 0)(transactional_ids=(refused_tid, tid)))
            listed = other.request(
                request_class(66, 1)(state_filters=(), producer_id_filters=(), duration_filter=-1)
            )
        theirs, mine = desc.transaction_states
        assert (theirs.transactional_id, int(theirs.error_code)) == (
            refused_tid,
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        )
        assert (int(mine.error_code), mine.transaction_state) == (0, "Ongoing")
        # Of the two partitions in the transaction dave sees the topic he may describe.
        assert [(t.topic, tuple(t.partitions)) for t in mine.topics] == [(shown, (0,))]
        assert {s.transactional_id for s in listed.transaction_states} == {tid}
        assert txn.end(tid) == 0
