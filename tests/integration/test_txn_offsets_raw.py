"""TxnOffsetCommit over raw requests: every version's error codes, and OffsetFetch's view of
offsets a transaction still holds (UNSTABLE_OFFSET_COMMIT with require_stable, the old
committed offset without it), across a SIGKILL, and after the group or topic is deleted."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Server, unique_topic
from .groupraw import (
    FENCED_INSTANCE_ID,
    GROUP_ID_NOT_FOUND,
    ILLEGAL_GENERATION,
    NONE,
    UNKNOWN_MEMBER_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
    _commit_raw,
    _join,
    _req,
)
from .grouputil import create_topic
from .rawkafka import RawKafka, ms, schema

pytestmark = pytest.mark.timeout(120)

OFFSET_METADATA_TOO_LARGE = 12
INVALID_GROUP_ID = 24
INVALID_PRODUCER_EPOCH = 47
UNSTABLE_OFFSET_COMMIT = 88
TXN_OFFSET_COMMIT = 28
PRODUCER_ID = 7000


def _group() -> str:
    return f"txo-{uuid.uuid4().hex[:10]}"


def _txn_commit(
    raw: RawKafka,
    group: str,
    topics: dict[str, dict[int, tuple[int, str | None]]],
    *,
    version: int = 3,
    producer_id: int = PRODUCER_ID,
    producer_epoch: int = 0,
    generation: int = -1,
    member_id: str = "",
    instance: str | None = None,
) -> dict[tuple[str, int], int]:
    """TxnOffsetCommit of {topic: {partition: (offset, metadata)}}; {(topic, p): error}."""
    req = _req(
        TXN_OFFSET_COMMIT,
        version,
        "TxnOffsetCommitRequest",
        transactional_id=f"tx-{group}",
        group_id=group,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        generation_id=generation,
        member_id=member_id,
        group_instance_id=instance,
        topics=tuple(
            _req(
                TXN_OFFSET_COMMIT,
                version,
                "TxnOffsetCommitRequestTopic",
                name=t,
                partitions=tuple(
                    _req(
                        TXN_OFFSET_COMMIT,
                        version,
                        "TxnOffsetCommitRequestPartition",
                        partition_index=p,
                        committed_offset=o,
                        committed_leader_epoch=-1,
                        committed_metadata=m,
                    )
                    for p, (o, m) in parts.items()
                ),
            )
            for t, parts in topics.items()
        ),
    )
    resp = raw.request(req)
    return {
        (t.name, int(p.partition_index)): int(p.error_code)
        for t in resp.topics
        for p in t.partitions
    }


def _fetch(
    raw: RawKafka,
    group: str,
    topic: str,
    partitions: list[int],
    *,
    require_stable: bool,
    version: int = 7,
) -> dict[int, tuple[int, int]]:
    """OffsetFetch of one topic's partitions; {partition: (offset, error)}."""
    mod = schema(9, version)
    if version >= 8:
        req: Any = mod.OffsetFetchRequest(
            groups=(
                mod.OffsetFetchRequestGroup(
                    group_id=group,
                    topics=(
                        mod.OffsetFetchRequestTopics(
                            name=topic, partition_indexes=tuple(partitions)
                        ),
                    ),
                ),
            ),
            require_stable=require_stable,
        )
        (g,) = raw.request(req).groups
        topics = g.topics
    else:
        req = mod.OffsetFetchRequest(
            group_id=group,
            topics=(mod.OffsetFetchRequestTopic(name=topic, partition_indexes=tuple(partitions)),),
            require_stable=require_stable,
        )
        topics = raw.request(req).topics
    return {
        int(p.partition_index): (int(p.committed_offset), int(p.error_code))
        for t in topics
        for p in t.partitions
    }


def test_txn_offset_commit_error_codes_every_version(server: Server) -> None:
    topic = unique_topic("txo")
    create_topic(server.bootstrap, topic, 2)
    with RawKafka(server.bootstrap) as raw:
        for version in range(4):
            group = _group()
            codes = _txn_commit(
                raw,
                group,
                {
                    topic: {0: (5, "m"), 1: (6, "x" * 4097), 9: (1, None)},
                    "no-such-topic-" + group: {0: (1, None)},
                },
                version=version,
            )
            assert codes == {
                (topic, 0): NONE,
                (topic, 1): OFFSET_METADATA_TOO_LARGE,
                (topic, 9): UNKNOWN_TOPIC_OR_PARTITION,
                ("no-such-topic-" + group, 0): UNKNOWN_TOPIC_OR_PARTITION,
            }, version
            # Kafka creates the group (Empty) for a transactional commit.
            assert _describe_state(raw, group) == "Empty", version
        codes = _txn_commit(raw, "", {topic: {0: (5, None)}})
        assert codes == {(topic, 0): INVALID_GROUP_ID}


def _describe_state(raw: RawKafka, group: str) -> str:
    resp = raw.request(
        _req(15, 5, "DescribeGroupsRequest", groups=(group,), include_authorized_operations=False)
    )
    (g,) = resp.groups
    assert int(g.error_code) == NONE, g
    return str(g.group_state)


def test_txn_offset_commit_member_checks_v3(server: Server) -> None:
    """KIP-447: a v3 request naming a member is checked like an OffsetCommit's."""
    topic = unique_topic("txo-member")
    create_topic(server.bootstrap, topic, 1)
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        joined = _join(raw, group, version=5, instance="inst-1")
        assert int(joined.error_code) == NONE, joined
        member, gen = joined.member_id, int(joined.generation_id)
        offsets = {topic: {0: (3, None)}}

        def code(**kw: Any) -> int:
            (c,) = _txn_commit(raw, group, offsets, **kw).values()
            return c

        # Without a member a producer commits to a group in any state (v0-v2 never name one).
        assert code() == NONE
        assert code(version=2) == NONE
        assert code(generation=gen, member_id=member) == NONE
        assert code(generation=gen, member_id=member, instance="inst-1") == NONE
        assert code(generation=gen + 5, member_id=member) == ILLEGAL_GENERATION
        assert code(generation=gen, member_id="someone-else") == UNKNOWN_MEMBER_ID
        assert code(generation=-1, member_id="someone-else") == UNKNOWN_MEMBER_ID
        assert code(generation=gen, member_id="someone-else", instance="inst-1") == (
            FENCED_INSTANCE_ID
        )
        assert code(generation=gen, member_id=member, instance="inst-unknown") == UNKNOWN_MEMBER_ID


def test_offset_fetch_require_stable_sees_pending(server: Server) -> None:
    topic = unique_topic("txo-stable")
    create_topic(server.bootstrap, topic, 2)
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        assert _commit_raw(raw, group, topic, {0: 2, 1: 3}) == {0: NONE, 1: NONE}
        assert _txn_commit(raw, group, {topic: {0: (10, "t")}}) == {(topic, 0): NONE}
        for version in (7, 8, 9):
            # Without require_stable the pending offset is invisible.
            assert _fetch(raw, group, topic, [0, 1], require_stable=False, version=version) == {
                0: (2, NONE),
                1: (3, NONE),
            }, version
            assert _fetch(raw, group, topic, [0, 1], require_stable=True, version=version) == {
                0: (-1, UNSTABLE_OFFSET_COMMIT),
                1: (3, NONE),
            }, version
        # Another group's pending offsets are its own.
        assert _fetch(raw, _group(), topic, [0], require_stable=True) == {0: (-1, NONE)}


def test_pending_offsets_survive_sigkill(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    topic = unique_topic("txo-kill")
    create_topic(srv.bootstrap, topic, 1)
    group = _group()
    with RawKafka(srv.bootstrap) as raw:
        assert _commit_raw(raw, group, topic, {0: 4}) == {0: NONE}
        assert _txn_commit(raw, group, {topic: {0: (10, None)}}) == {(topic, 0): NONE}
    srv.kill()
    srv.start()
    with RawKafka(srv.bootstrap) as raw:
        assert _fetch(raw, group, topic, [0], require_stable=True) == {
            0: (-1, UNSTABLE_OFFSET_COMMIT)
        }
        assert _fetch(raw, group, topic, [0], require_stable=False) == {0: (4, NONE)}
        assert _describe_state(raw, group) == "Empty"


def _delete_group(raw: RawKafka, group: str) -> int:
    resp = raw.request(_req(42, 2, "DeleteGroupsRequest", groups_names=(group,)))
    (r,) = resp.results
    return int(r.error_code)


def _delete_topic(raw: RawKafka, topic: str) -> None:
    mod = schema(20, 6)
    resp = raw.request(
        mod.DeleteTopicsRequest(
            topics=(mod.DeleteTopicState(name=topic, topic_id=None),),
            timeout=ms(10_000),
        )
    )
    (r,) = resp.responses
    assert int(r.error_code) == NONE, r


def test_deleting_group_or_topic_drops_pending(server: Server) -> None:
    topic = unique_topic("txo-del")
    create_topic(server.bootstrap, topic, 1)
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        assert _txn_commit(raw, group, {topic: {0: (10, None)}}) == {(topic, 0): NONE}
        assert _delete_group(raw, group) == NONE
        assert _delete_group(raw, group) == GROUP_ID_NOT_FOUND
        assert _fetch(raw, group, topic, [0], require_stable=True) == {0: (-1, NONE)}

        other = _group()
        assert _txn_commit(raw, other, {topic: {0: (11, None)}}) == {(topic, 0): NONE}
        _delete_topic(raw, topic)
        assert _fetch(raw, other, topic, [0], require_stable=True) == {0: (-1, NONE)}


def _init_txn_producer(raw: RawKafka, transactional_id: str) -> tuple[int, int]:
    resp = raw.request(
        _req(
            22,
            4,
            "InitProducerIdRequest",
            transactional_id=transactional_id,
            transaction_timeout=ms(60_000),
            producer_id=-1,
            producer_epoch=-1,
        )
    )
    assert int(resp.error_code) == NONE, resp
    return int(resp.producer_id), int(resp.producer_epoch)


def test_fenced_producer_cannot_stage_offsets(server: Server) -> None:
    """A producer fenced after its AddOffsetsToTxn gets INVALID_PRODUCER_EPOCH from
    TxnOffsetCommit, as from Kafka's __consumer_offsets partition after the abort marker,
    and its offsets never reach the group or its successor's transaction."""
    topic = unique_topic("txo-fence")
    create_topic(server.bootstrap, topic, 1)
    group = _group()
    txn_id = f"tx-{group}"
    with RawKafka(server.bootstrap) as raw:
        pid, epoch = _init_txn_producer(raw, txn_id)
        added = raw.request(
            _req(
                25,
                3,
                "AddOffsetsToTxnRequest",
                transactional_id=txn_id,
                producer_id=pid,
                producer_epoch=epoch,
                group_id=group,
            )
        )
        assert int(added.error_code) == NONE, added
        # The successor aborts the open transaction with a bumped epoch.
        new_pid, new_epoch = _init_txn_producer(raw, txn_id)
        assert new_pid == pid and new_epoch > epoch
        codes = _txn_commit(
            raw, group, {topic: {0: (10, None)}}, producer_id=pid, producer_epoch=epoch
        )
        assert codes == {(topic, 0): INVALID_PRODUCER_EPOCH}
        assert _fetch(raw, group, topic, [0], require_stable=True) == {0: (-1, NONE)}
