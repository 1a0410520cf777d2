"""Fetch v4-v16: long-poll reads served from whichever layer holds the offsets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...security.acl import Operation, ResourceType
from ...storage import end_offset
from ...storage import errors as se
from .. import metrics
from ..authz import allowed_names, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    FETCH_SESSION_ID_NOT_FOUND,
    NONE,
    OFFSET_OUT_OF_RANGE,
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
    code_for,
)
from ..protocol.codec import Request
from ..protocol.fetch_codec import (
    FETCH_TOPIC_IDS_FROM,
    FetchPartitionResult,
    FetchTopicResult,
    encode_fetch_response,
)

if TYPE_CHECKING:
    from ...storage import PartitionLog

FETCH = 1
# Kafka's broker `fetch.max.bytes` default (KIP-541): a request's max_bytes is capped at it,
# so a client asking for 2 GiB does not make the broker read 2 GiB into memory.
FETCH_MAX_BYTES = 57_671_680
# Fetch session epochs (KIP-227): these two mean a full fetch, any other an incremental one.
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
READ_COMMITTED = 1


@dataclass(slots=True)
class _Wanted:
    log: PartitionLog | None
    result: FetchPartitionResult
    offset: int
    max_bytes: int


def _readable(broker: BrokerContext, req: Request, names: Iterable[str]) -> set[str]:
    """Consumers need READ on each topic; a follower (replica id >= 0) needs CLUSTER_ACTION
    instead, as in Kafka, though this single broker has none."""
    body = req.body
    replica = int(getattr(body, "replica_id", -1))
    state = getattr(body, "replica_state", None)
    if state is not None:
        replica = max(replica, int(state.replica_id))
    if replica >= 0:
        return set(names) if cluster_allowed(broker, req, Operation.CLUSTER_ACTION) else set()
    return allowed_names(broker, req, Operation.READ, ResourceType.TOPIC, names)


def _plan(broker: BrokerContext, req: Request) -> tuple[list[FetchTopicResult], list[_Wanted]]:
    by_id = req.header.api_version >= FETCH_TOPIC_IDS_FROM
    topics: list[FetchTopicResult] = []
    wanted: list[_Wanted] = []
    if by_id:
        # An unknown id is UNKNOWN_TOPIC_ID whoever asks; names are authorized.
        metas = [broker.storage.metadata.get_by_id(t.topic_id) for t in req.body.topics]
    else:
        metas = [broker.storage.metadata.get(t.topic) for t in req.body.topics]
    names: list[str | None] = [
        (m.name if m else None) if by_id else t.topic
        for t, m in zip(req.body.topics, metas, strict=True)
    ]
    readable = _readable(broker, req, (n for n in names if n is not None))
    for t, meta, asked in zip(req.body.topics, metas, names, strict=True):
        missing = UNKNOWN_TOPIC_ID if by_id else UNKNOWN_TOPIC_OR_PARTITION
        if asked is not None and asked not in readable:
            missing, meta = TOPIC_AUTHORIZATION_FAILED, None
        name = meta.name if meta else getattr(t, "topic", "")
        topic_id: uuid.UUID | None = meta.topic_id if meta else getattr(t, "topic_id", None)
        parts: list[FetchPartitionResult] = []
        topics.append(FetchTopicResult(name, topic_id, parts))
        for p in t.partitions:
            res = FetchPartitionResult(p.partition)
            parts.append(res)
            plog = None
            if meta is None:
                res.error_code = missing
            else:
                try:
                    plog = broker.storage.log(meta.name, p.partition)
                except se.UnknownTopic:
                    res.error_code = UNKNOWN_TOPIC_OR_PARTITION
            wanted.append(_Wanted(plog, res, int(p.fetch_offset), int(p.partition_max_bytes)))
    return topics, wanted


async def _read(
    broker: BrokerContext, wanted: list[_Wanted], max_bytes: int, committed: bool
) -> tuple[int, bool]:
    """Fill every partition result; returns bytes read and whether any errored."""
    total = 0
    errored = False
    for w in wanted:
        plog, res = w.log, w.result
        if plog is None:
            errored = True
            continue
        res.high_watermark = plog.high_watermark
        lso = res.last_stable_offset = plog.last_stable_offset
        res.log_start_offset = plog.log_start_offset
        limit = min(w.max_bytes, max_bytes - total)
        if limit <= 0 and total:
            res.records = []
            continue
        try:
            upper = lso if committed else None
            batches = await broker.storage.read(plog, w.offset, max(limit, 1), upper)
        except se.OffsetOutOfRange:
            res.error_code = OFFSET_OUT_OF_RANGE
            res.records = []
            errored = True
            continue
        except se.StorageError as exc:
            # An object store that is down: the client retries.
            res.error_code = code_for(exc)
            res.records = []
            errored = True
            continue
        res.error_code = NONE
        size = sum(len(b) for b in batches)
        if total and size > limit:
            # Only the first non-empty partition may exceed the limits (KIP-74).
            batches, size = [], 0
        res.records = batches
        if committed:
            # Only the aborted transactions the returned batches overlap, as Kafka's
            # collectAbortedTransactions (it bounds by segment, which only sends more).
            # Their end is only worked out when some transaction aborted in the range.
            found = plog.aborted_transactions(w.offset, lso)
            if found:
                end = end_offset(batches)
                found = [a for a in found if end is not None and a.first_offset < end]
            res.aborted = [(a.producer_id, a.first_offset) for a in found]
        if batches:
            metrics.FETCH_RECORDS.labels(plog.topic).inc(metrics.count_records(batches))
        total += size
    return total, errored


async def handle(broker: BrokerContext, req: Request) -> Frame:
    body = req.body
    version = req.header.api_version
    epoch = int(getattr(body, "session_epoch", FINAL_EPOCH))
    if epoch not in (INITIAL_EPOCH, FINAL_EPOCH):
        # Sessions are always declined (id 0), so no incremental fetch can name one. A full
        # fetch is served whatever session id it carries: Kafka would close that session.
        frame = encode_fetch_response(
            version, req.header.correlation_id, [], FETCH_SESSION_ID_NOT_FOUND, 0
        )
        return frame
    topics, wanted = _plan(broker, req)
    max_bytes = min(int(getattr(body, "max_bytes", FETCH_MAX_BYTES)), FETCH_MAX_BYTES)
    min_bytes = int(body.min_bytes)
    committed = int(getattr(body, "isolation_level", 0)) == READ_COMMITTED
    deadline = time.monotonic() + body.max_wait.total_seconds()
    while True:
        total, errored = await _read(broker, wanted, max_bytes, committed)
        remaining = deadline - time.monotonic()
        if total >= min_bytes or errored or remaining <= 0:
            break
        waits = [
            # Wait past what was already seen, or min_bytes > 0 would spin.
            asyncio.ensure_future(
                w.log.wait_for_data(
                    max(
                        w.offset,
                        w.result.last_stable_offset if committed else w.result.high_watermark,
                    ),
                    remaining,
                    committed,
                )
            )
            for w in wanted
            if w.log is not None
        ]
        if not waits:
            break
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    return encode_fetch_response(version, req.header.correlation_id, topics)


APIS = [ApiSpec(FETCH, 4, 16, handle)]
