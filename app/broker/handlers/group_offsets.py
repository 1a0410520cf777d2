"""Committed offsets: OffsetCommit v2-v9, OffsetFetch v1-v9, OffsetDelete v0, and
transactional ones: TxnOffsetCommit v0-v3."""

from __future__ import annotations

from typing import Any

from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    GROUP_ID_NOT_FOUND,
    GROUP_SUBSCRIBED_TO_TOPIC,
    NONE,
    OFFSET_METADATA_TOO_LARGE,
    UNKNOWN_TOPIC_OR_PARTITION,
    UNSTABLE_OFFSET_COMMIT,
)
from ..groups import EMPTY, MAX_METADATA_BYTES
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
OFFSET_DELETE = 47
TXN_OFFSET_COMMIT = 28


def _partition_exists(broker: BrokerContext, topic: str, partition: int) -> bool:
    meta = broker.storage.metadata.get(topic)
    return meta is not None and 0 <= partition < meta.partitions


async def offset_commit(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    group_code = broker.groups.check_commit(
        b.group_id,
        int(b.generation_id_or_member_epoch),
        b.member_id,
        getattr(b, "group_instance_id", None),
    )
    rows: list[tuple[str, int, int, int, str | None]] = []
    topics = []
    for t in b.topics:
        parts = []
        for p in t.partitions:
            code = group_code
            if code == NONE and not _partition_exists(broker, t.name, p.partition_index):
                code = UNKNOWN_TOPIC_OR_PARTITION
            if code == NONE and len((p.committed_metadata or "").encode()) > MAX_METADATA_BYTES:
                code = OFFSET_METADATA_TOO_LARGE
            if code == NONE:
                epoch = int(getattr(p, "committed_leader_epoch", -1))
                rows.append(
                    (t.name, p.partition_index, p.committed_offset, epoch, p.committed_metadata)
                )
            parts.append(
                build(
                    mod.OffsetCommitResponsePartition,
                    partition_index=p.partition_index,
                    error_code=err(code),
                )
            )
        topics.append(build(mod.OffsetCommitResponseTopic, name=t.name, partitions=tuple(parts)))
    broker.groups.store.commit_offsets(b.group_id, rows)
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=tuple(topics)))


def _fetch_topics(
    broker: BrokerContext,
    group_id: str,
    wanted: Any,
    topic_cls: type,
    part_cls: type,
    require_stable: bool,
) -> tuple[Any, ...]:
    """The committed offsets of one group, as response topics (-1 where none). With
    require_stable a partition a transaction still holds offsets for answers
    UNSTABLE_OFFSET_COMMIT; without it the pending offsets are invisible."""
    committed = broker.groups.store.fetch_offsets(group_id)
    unstable = broker.groups.pending_txn_partitions(group_id) if require_stable else set()
    if wanted is None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            by_topic.setdefault(topic, []).append(partition)
        requested = list(by_topic.items())
    else:
        requested = [(t.name, list(t.partition_indexes)) for t in wanted]
    out = []
    for topic, partitions in requested:
        parts = []
        for p in partitions:
            c = None if (topic, p) in unstable else committed.get((topic, p))
            code = UNSTABLE_OFFSET_COMMIT if (topic, p) in unstable else NONE
            parts.append(
                build(
                    part_cls,
                    partition_index=p,
                    committed_offset=c.offset if c else -1,
                    committed_leader_epoch=c.leader_epoch if c else -1,
                    metadata=(c.metadata if c else ""),
                    error_code=err(code),
                )
            )
        out.append(build(topic_cls, name=topic, partitions=tuple(parts)))
    return tuple(out)


async def offset_fetch(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    stable = bool(getattr(b, "require_stable", False))
    if hasattr(b, "groups"):
        groups = tuple(
            build(
                mod.OffsetFetchResponseGroup,
                group_id=g.group_id,
                topics=_fetch_topics(
                    broker,
                    g.group_id,
                    g.topics,
                    mod.OffsetFetchResponseTopics,
                    mod.OffsetFetchResponsePartitions,
                    stable,
                ),
                error_code=err(NONE),
            )
            for g in b.groups
        )
        return respond(req, build(resp, throttle_time=NO_THROTTLE, groups=groups))
    topics = _fetch_topics(
        broker,
        b.group_id,
        b.topics,
        mod.OffsetFetchResponseTopic,
        mod.OffsetFetchResponsePartition,
        stable,
    )
    out = build(resp, throttle_time=NO_THROTTLE, topics=topics, error_code=err(NONE))
    return respond(req, out)


async def offset_delete(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    group = broker.groups.describe(b.group_id)
    if group is None:
        out = build(resp, error_code=err(GROUP_ID_NOT_FOUND), throttle_time=NO_THROTTLE, topics=())
        return respond(req, out)
    subscribed = group.subscribed_topics() if group.state != EMPTY else set()
    doomed: list[tuple[str, int]] = []
    topics = []
    for t in b.topics:
        parts = []
        for p in t.partitions:
            code = GROUP_SUBSCRIBED_TO_TOPIC if t.name in subscribed else NONE
            # Kafka checks a partition exists before it asks the group (KafkaApis).
            if not _partition_exists(broker, t.name, p.partition_index):
                code = UNKNOWN_TOPIC_OR_PARTITION
            if code == NONE:
                doomed.append((t.name, p.partition_index))
            parts.append(
                build(
                    mod.OffsetDeleteResponsePartition,
                    partition_index=p.partition_index,
                    error_code=err(code),
                )
            )
        topics.append(build(mod.OffsetDeleteResponseTopic, name=t.name, partitions=tuple(parts)))
    broker.groups.store.delete_offsets(b.group_id, doomed)
    out = build(resp, error_code=err(NONE), throttle_time=NO_THROTTLE, topics=tuple(topics))
    return respond(req, out)


async def txn_offset_commit(broker: BrokerContext, req: Request) -> Frame:
    """KafkaApis.handleTxnOffsetCommitRequest: partitions of unknown topics are answered
    here, the rest go to the group coordinator, which stages them for the transaction."""
    resp, mod = response_classes(req)
    b = req.body
    rows: list[tuple[str, int, int, int, str | None]] = []
    for t in b.topics:
        for p in t.partitions:
            if _partition_exists(broker, t.name, p.partition_index):
                epoch = int(getattr(p, "committed_leader_epoch", -1))
                rows.append(
                    (t.name, p.partition_index, p.committed_offset, epoch, p.committed_metadata)
                )
    codes = (
        broker.groups.stage_txn_offsets(
            b.group_id,
            int(b.producer_id),
            int(b.producer_epoch),
            rows,
            generation=int(getattr(b, "generation_id", -1)),
            member_id=getattr(b, "member_id", ""),
            instance_id=getattr(b, "group_instance_id", None),
        )
        if rows
        else {}
    )
    topics = tuple(
        build(
            mod.TxnOffsetCommitResponseTopic,
            name=t.name,
            partitions=tuple(
                build(
                    mod.TxnOffsetCommitResponsePartition,
                    partition_index=p.partition_index,
                    error_code=err(
                        codes.get((t.name, p.partition_index), UNKNOWN_TOPIC_OR_PARTITION)
                    ),
                )
                for p in t.partitions
            ),
        )
        for t in b.topics
    )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=topics))


APIS = [
    ApiSpec(OFFSET_COMMIT, 2, 9, offset_commit),
    ApiSpec(OFFSET_FETCH, 1, 9, offset_fetch),
    ApiSpec(OFFSET_DELETE, 0, 0, offset_delete),
    ApiSpec(TXN_OFFSET_COMMIT, 0, 3, txn_offset_commit),
]
