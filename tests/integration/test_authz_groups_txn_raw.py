"""Authorization of the group and transaction APIs (issue 16): the exact answers of Kafka's
KafkaApis (orders, per-partition codes, batched forms, filtered listings), read from
hand-framed requests over SASL/PLAIN. ACLs come from the AdminClient of the super user.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AclOperation, ResourceType

from tests.integration.aclcluster import PREFIXED, Cluster
from tests.integration.authzgroups import (
    CLUSTER_AUTHORIZATION_FAILED,
    DELETE,
    DESCRIBE,
    GROUP_AUTHORIZATION_FAILED,
    INCONSISTENT_GROUP_PROTOCOL,
    OPERATION_NOT_ATTEMPTED,
    TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    Txn,
    allow,
    authz_cluster,
    codes,
    init_txn,
    offset_commit,
    raw_login,
    uid,
)
from tests.integration.rawkafka import ms, request_class, schema


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with authz_cluster(tmp_path_factory.mktemp("authz-raw")) as c:
        yield c


def test_find_coordinator_checks_describe_per_key(cluster: Cluster) -> None:
    mine, theirs = uid("fc"), uid("fc")
    allow(cluster, "alice", ResourceType.GROUP, mine, AclOperation.DESCRIBE)
    with raw_login(cluster, "alice") as raw:
        v4 = raw.request(request_class(10, 4)(key_type=0, coordinator_keys=(mine, theirs)))
        v3 = raw.request(request_class(10, 3)(key=theirs, key_type=0))
        txn = raw.request(request_class(10, 3)(key=uid("tx"), key_type=1))
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
    group = uid("mb")
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
    mine, theirs = uid("dg"), uid("dg")
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


def test_offset_commit_fetch_delete_check_group_then_topics(cluster: Cluster) -> None:
    readable, described, hidden = (cluster.topic(f"{p}-") for p in ("oc-r", "oc-d", "oc-h"))
    unknown = uid("oc-none")
    group, denied_group = uid("oc"), uid("oc")
    allow(cluster, "alice", ResourceType.GROUP, group, AclOperation.READ)
    allow(cluster, "alice", ResourceType.TOPIC, readable, AclOperation.READ)
    allow(cluster, "alice", ResourceType.TOPIC, described, AclOperation.DESCRIBE)
    with raw_login(cluster, "alice") as raw:
        assert offset_commit(raw, denied_group, readable, described) == {
            (readable, 0): GROUP_AUTHORIZATION_FAILED,
            (described, 0): GROUP_AUTHORIZATION_FAILED,
        }
        # Authorization comes before existence: an unknown topic alice may not READ is refused.
        assert offset_commit(raw, group, readable, described, unknown) == {
            (readable, 0): 0,
            (described, 0): TOPIC_AUTHORIZATION_FAILED,
            (unknown, 0): TOPIC_AUTHORIZATION_FAILED,
        }
    # The admin commits what alice may only describe, and what she may not see at all.
    with raw_login(cluster, "admin") as raw:
        assert offset_commit(raw, group, described, hidden, offset=3) == {
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
    assert codes(deleted.topics) == {(readable, 0): 0, (described, 0): TOPIC_AUTHORIZATION_FAILED}


def test_transaction_apis_check_the_transactional_id_group_and_topics(cluster: Cluster) -> None:
    tid, refused_tid = uid("eve-tx"), uid("nope-tx")
    eve_tx = ("eve", ResourceType.TRANSACTIONAL_ID, "eve-tx")  # prefixed: every "eve-tx*"
    allow(cluster, *eve_tx, AclOperation.WRITE, pattern=PREFIXED)
    writable, shown, described = (cluster.topic(f"{p}-") for p in ("tx-w", "tx-s", "tx-d"))
    for t in (writable, shown):
        allow(cluster, "eve", ResourceType.TOPIC, t, AclOperation.WRITE)
    allow(cluster, "eve", ResourceType.TOPIC, described, AclOperation.DESCRIBE)
    group = uid("tx-grp")
    with raw_login(cluster, "eve") as raw:
        assert init_txn(raw, refused_tid)[0] == TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        code, pid, epoch = init_txn(raw, tid)
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
        assert codes(verified.topic_results, "results_by_partition", "partition_error_code") == {
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
