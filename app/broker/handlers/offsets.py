"""ListOffsets v1-v8: earliest, latest, max-timestamp and by-timestamp lookups."""

from __future__ import annotations

from typing import Any

from ...security.acl import Operation, ResourceType
from ...storage import errors as se
from ..authz import allowed_names
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    INVALID_REQUEST,
    NONE,
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC_OR_PARTITION,
    UNSUPPORTED_VERSION,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

LIST_OFFSETS = 2
LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
READ_COMMITTED = 1
# The first version that may ask for each sentinel timestamp (ReplicaManager's
# timestampMinSupportedVersion); any other negative timestamp is unsupported too.
SENTINEL_FROM = {LATEST: 1, EARLIEST: 1, MAX_TIMESTAMP: 7, EARLIEST_LOCAL: 8}


def _unsupported(ts: int, version: int) -> bool:
    return ts < 0 and version < SENTINEL_FROM.get(ts, 2**15)


async def _lookup(
    broker: BrokerContext, topic: str, partition: int, ts: int, committed: bool
) -> tuple[int, int, int]:
    """(error, offset, timestamp) for one partition. With read_committed nothing at or
    above the last stable offset is found, as Kafka's Partition.fetchOffsetForTimestamp."""
    try:
        plog = broker.storage.log(topic, partition)
    except se.UnknownTopic:
        return UNKNOWN_TOPIC_OR_PARTITION, -1, -1
    fetchable = plog.last_stable_offset if committed else plog.high_watermark
    if ts == LATEST:
        return NONE, fetchable, -1
    if ts in (EARLIEST, EARLIEST_LOCAL):
        return NONE, plog.log_start_offset, -1
    if ts == MAX_TIMESTAMP:
        max_ts, offset = await broker.storage.max_timestamp(plog)
        found: tuple[int, int] | None = (offset, max_ts)
    else:
        found = await broker.storage.offset_for_timestamp(plog, ts)
    if found is None or found[0] < 0 or (committed and found[0] >= fetchable):
        return NONE, -1, -1
    offset, found_ts = found
    return NONE, offset, found_ts


def _duplicates(topics: Any) -> set[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    dups: set[tuple[str, int]] = set()
    for t in topics:
        for p in t.partitions:
            key = (t.name, int(p.partition_index))
            (dups if key in seen else seen).add(key)
    return dups


async def handle(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    version = req.header.api_version
    # Kafka answers every entry of a partition named twice with INVALID_REQUEST.
    duplicated = _duplicates(req.body.topics)
    committed = int(getattr(req.body, "isolation_level", 0)) == READ_COMMITTED
    describable = allowed_names(
        broker, req, Operation.DESCRIBE, ResourceType.TOPIC, (t.name for t in req.body.topics)
    )
    topics: list[Any] = []
    for t in req.body.topics:
        parts = []
        for p in t.partitions:
            index, timestamp = int(p.partition_index), int(p.timestamp)
            if t.name not in describable:
                code, offset, ts = TOPIC_AUTHORIZATION_FAILED, -1, -1
            elif (t.name, index) in duplicated:
                code, offset, ts = INVALID_REQUEST, -1, -1
            elif _unsupported(timestamp, version):
                code, offset, ts = UNSUPPORTED_VERSION, -1, -1
            else:
                code, offset, ts = await _lookup(broker, t.name, index, timestamp, committed)
            parts.append(
                build(
                    mod.ListOffsetsPartitionResponse,
                    partition_index=p.partition_index,
                    error_code=err(code),
                    timestamp=ts,
                    offset=offset,
                    leader_epoch=0 if code == NONE else -1,
                )
            )
        topics.append(build(mod.ListOffsetsTopicResponse, name=t.name, partitions=tuple(parts)))
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=tuple(topics)))


APIS = [ApiSpec(LIST_OFFSETS, 1, 8, handle)]
