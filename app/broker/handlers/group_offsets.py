"""Committed offsets: OffsetCommit v2-v9, OffsetFetch v1-v9, OffsetDelete v0, and
transactional ones: TxnOffsetCommit v0-v3."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.security.acl import Operation, ResourceType

from ..authz import allowed, allowed_names
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    GROUP_AUTHORIZATION_FAILED,
    GROUP_ID_NOT_FOUND,
    GROUP_SUBSCRIBED_TO_TOPIC,
    NONE,
    OFFSET_METADATA_TOO_LARGE,
    TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
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


def _screen(
    broker: BrokerContext, req: Request, topics: Iterable[Any]
) -> dict[tuple[str, int], int]:
    """What KafkaApis answers before the group coordinator sees a commit or an offset
    deletion: TOPIC_AUTHORIZATION_FAILED for each partition of a topic the principal may
    not READ, UNKNOWN_TOPIC_OR_PARTITION for one that does not exist, NONE for the rest."""
    topics = list(topics)
    readable = allowed_names(
        broker, req, Operation.READ, ResourceType.TOPIC, (t.name for t in topics)
    )
    out = {}
    for t in topics:
        for p in t.partitions:
            if t.name not in readable:
                code = TOPIC_AUTHORIZATION_FAILED
            elif not _partition_exists(broker, t.name, p.partition_index):
                code = UNKNOWN_TOPIC_OR_PARTITION
            else:
                code = NONE
            out[(t.name, p.partition_index)] = code
    return out


def _may_group(broker: BrokerContext, req: Request, op: Operation, group_id: str) -> bool:
    return allowed(broker, req, op, ResourceType.GROUP, group_id)


async def offset_commit(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    if not _may_group(broker, req, Operation.READ, b.group_id):
        screened = {
            (t.name, p.partition_index): GROUP_AUTHORIZATION_FAILED
            for t in b.topics
            for p in t.partitions
        }
    else:
        screened = _screen(broker, req, b.topics)
    # The coordinator (and with it the generation check, which may create a simple
    # consumer's group) only sees a commit with a partition left to commit.
    group_code = NONE
    if NONE in screened.values():
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
            code = screened[(t.name, p.partition_index)]
            if code == NONE:
                code = group_code
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
    if rows:
        broker.groups.store.commit_offsets(b.group_id, rows)
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=tuple(topics)))


def _fetch_topics(
    broker: BrokerContext,
    req: Request,
    group_id: str,
    wanted: Any,
    topic_cls: type,
    part_cls: type,
    require_stable: bool,
) -> tuple[Any, ...]:
    """The committed offsets of one group, as response topics (-1 where none). With
    require_stable a partition a transaction still holds offsets for answers
    UNSTABLE_OFFSET_COMMIT; without it the pending offsets are invisible. Topics the
    principal may not DESCRIBE are left out of the "all topics" form and answer
    TOPIC_AUTHORIZATION_FAILED, after the others, when named (KafkaApis)."""
    committed = broker.groups.store.fetch_offsets(group_id)
    unstable = broker.groups.pending_txn_partitions(group_id) if require_stable else set()
    denied: list[tuple[str, list[int]]] = []
    if wanted is None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(committed):
            by_topic.setdefault(topic, []).append(partition)
        # Filtering what the group holds is not a denial of anything asked for.
        visible = allowed_names(
            broker, req, Operation.DESCRIBE, ResourceType.TOPIC, by_topic, audit=False
        )
        requested = [(t, ps) for t, ps in by_topic.items() if t in visible]
    else:
        asked = [(t.name, list(t.partition_indexes)) for t in wanted]
        visible = allowed_names(
            broker, req, Operation.DESCRIBE, ResourceType.TOPIC, (t for t, _ in asked)
        )
        requested = [(t, ps) for t, ps in asked if t in visible]
        denied = [(t, ps) for t, ps in asked if t not in visible]
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
    for topic, partitions in denied:
        parts = [
            build(
                part_cls,
                partition_index=p,
                committed_offset=-1,
                committed_leader_epoch=-1,
                metadata="",
                error_code=err(TOPIC_AUTHORIZATION_FAILED),
            )
            for p in partitions
        ]
        out.append(build(topic_cls, name=topic, partitions=tuple(parts)))
    return tuple(out)


def _group_offsets(
    broker: BrokerContext,
    req: Request,
    group_id: str,
    wanted: Any,
    classes: tuple[type, type],
    require_stable: bool,
) -> tuple[int, tuple[Any, ...]]:
    """One group of an OffsetFetch: GROUP_AUTHORIZATION_FAILED and no topics without
    DESCRIBE on the group (before v2 the client sees only the empty topic list)."""
    if not _may_group(broker, req, Operation.DESCRIBE, group_id):
        return GROUP_AUTHORIZATION_FAILED, ()
    topic_cls, part_cls = classes
    topics = _fetch_topics(broker, req, group_id, wanted, topic_cls, part_cls, require_stable)
    return NONE, topics


async def offset_fetch(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    stable = bool(getattr(b, "require_stable", False))
    if hasattr(b, "groups"):
        classes = (mod.OffsetFetchResponseTopics, mod.OffsetFetchResponsePartitions)
        groups = []
        for g in b.groups:
            code, topics = _group_offsets(broker, req, g.group_id, g.topics, classes, stable)
            groups.append(
                build(
                    mod.OffsetFetchResponseGroup,
                    group_id=g.group_id,
                    topics=topics,
                    error_code=err(code),
                )
            )
        return respond(req, build(resp, throttle_time=NO_THROTTLE, groups=tuple(groups)))
    classes = (mod.OffsetFetchResponseTopic, mod.OffsetFetchResponsePartition)
    code, topics = _group_offsets(broker, req, b.group_id, b.topics, classes, stable)
    out = build(resp, throttle_time=NO_THROTTLE, topics=topics, error_code=err(code))
    return respond(req, out)


async def offset_delete(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    if not _may_group(broker, req, Operation.DELETE, b.group_id):
        out = build(
            resp, error_code=err(GROUP_AUTHORIZATION_FAILED), throttle_time=NO_THROTTLE, topics=()
        )
        return respond(req, out)
    screened = _screen(broker, req, b.topics)
    group = broker.groups.describe(b.group_id)
    if group is None:
        # The coordinator's group error replaces the whole answer (OffsetDeleteResponse
        # .Builder.merge), the partitions refused here included.
        out = build(resp, error_code=err(GROUP_ID_NOT_FOUND), throttle_time=NO_THROTTLE, topics=())
        return respond(req, out)
    subscribed = group.subscribed_topics() if group.state != EMPTY else set()
    doomed: list[tuple[str, int]] = []
    topics = []
    for t in b.topics:
        parts = []
        for p in t.partitions:
            code = screened[(t.name, p.partition_index)]
            if code == NONE and t.name in subscribed:
                code = GROUP_SUBSCRIBED_TO_TOPIC
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
    """KafkaApis.handleTxnOffsetCommitRequest: WRITE on the transactional id, then READ on
    the group, then READ per topic; partitions of unknown topics are answered here, the
    rest go to the group coordinator, which stages them for the transaction."""
    resp, mod = response_classes(req)
    b = req.body
    everyone = None
    if not allowed(broker, req, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, b.transactional_id):
        everyone = TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not _may_group(broker, req, Operation.READ, b.group_id):
        everyone = GROUP_AUTHORIZATION_FAILED
    if everyone is not None:
        screened = {(t.name, p.partition_index): everyone for t in b.topics for p in t.partitions}
    else:
        screened = _screen(broker, req, b.topics)
    rows: list[tuple[str, int, int, int, str | None]] = []
    for t in b.topics:
        for p in t.partitions:
            if screened[(t.name, p.partition_index)] == NONE:
                epoch = int(getattr(p, "committed_leader_epoch", -1))
                rows.append(
                    (t.name, p.partition_index, p.committed_offset, epoch, p.committed_metadata)
                )
    staged = (
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
    codes = {**staged, **{key: code for key, code in screened.items() if code != NONE}}
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
