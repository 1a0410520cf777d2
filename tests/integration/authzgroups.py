"""What the group and transaction authorization tests share: a server with SASL (SCRAM and
PLAIN) and the ACL authorizer, ACL grants through the AdminClient, and hand-framed requests
over a SASL/PLAIN connection for the answers a real client does not show."""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType

from .aclcluster import LITERAL, MECHANISM, TIMEOUT, Cluster, secure_cluster
from .rawkafka import RawKafka, ms, request_class, schema

USERS = ("alice", "bob", "carol", "dave", "eve")
INCONSISTENT_GROUP_PROTOCOL = 23
TOPIC_AUTHORIZATION_FAILED = 29
GROUP_AUTHORIZATION_FAILED = 30
CLUSTER_AUTHORIZATION_FAILED = 31
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
OPERATION_NOT_ATTEMPTED = 55
# Kafka's AclOperation codes, as bits of an authorized-operations field.
DESCRIBE, DELETE = 8, 6


@contextlib.contextmanager
def authz_cluster(base: Path) -> Iterator[Cluster]:
    # PLAIN as well, for the hand-framed connections.
    extra = ["--sasl-mechanisms", f"PLAIN,{MECHANISM}"]
    with secure_cluster(base, USERS, extra) as c:
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


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def codes(resp_topics: Any, parts: str = "partitions", code: str = "error_code") -> dict:
    return {
        (t.name, int(p.partition_index)): int(getattr(p, code))
        for t in resp_topics
        for p in getattr(t, parts)
    }


def offset_commit(raw: RawKafka, group_id: str, *topics: str, offset: int = 7) -> dict:
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
    return codes(raw.request(body).topics)


def init_txn(raw: RawKafka, tid: str) -> tuple[int, int, int]:
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
        return codes(
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
        return codes(self.raw.request(body).topics)

    def end(self, tid: str) -> int:
        body = request_class(26, 3)(
            transactional_id=tid, producer_id=self.pid, producer_epoch=self.epoch, committed=False
        )
        return int(self.raw.request(body).error_code)
