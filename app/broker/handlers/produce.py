"""Produce v3-v11: validate batches, append verbatim, ack once durable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ...security.acl import Operation, ResourceType
from ...storage import check_records, parse_header, validate_batches
from ...storage import errors as se
from ...storage.log import HEADER_SIZE
from .. import metrics
from ..authz import allowed, allowed_names, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CORRUPT_MESSAGE,
    INVALID_RECORD,
    INVALID_REQUIRED_ACKS,
    INVALID_TXN_STATE,
    TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    UNEXPECTED_MESSAGE,
    UNKNOWN_SERVER_ERROR,
    UNKNOWN_TOPIC_OR_PARTITION,
    code_for,
)
from ..protocol.codec import Request
from ..protocol.produce_codec import PartitionResult, encode_produce_response
from .topics import creation_error

if TYPE_CHECKING:
    from ...storage import BatchHeader, PartitionLog

log = logging.getLogger(__name__)

PRODUCE = 0


def _resolve_topic(broker: BrokerContext, req: Request, name: str) -> int:
    """0 when the topic exists (creating it if allowed), else the error code. Creating
    needs CREATE on the cluster or the topic, as Metadata's auto-creation does."""
    if broker.storage.metadata.get(name) is not None:
        return 0
    if not broker.settings.auto_create_topics or not (
        cluster_allowed(broker, req, Operation.CREATE, audit=False)
        or allowed(broker, req, Operation.CREATE, ResourceType.TOPIC, name)
    ):
        return UNKNOWN_TOPIC_OR_PARTITION
    try:
        broker.storage.create_topic(name, broker.settings.default_partitions, {})
    except se.TopicExists:
        pass
    except se.StorageError as exc:
        return creation_error(exc)
    return 0


def _refuse_batches(
    broker: BrokerContext, plog: PartitionLog, batches: list[tuple[int, int, BatchHeader]]
) -> tuple[int, str | None]:
    """Kafka's checks of a client's batches before the log: no control batches (only the
    transaction coordinator writes markers), and transactional batches only to a partition
    of the producer's ongoing transaction (KIP-890 verification)."""
    checked: set[tuple[int, int]] = set()
    for _start, _end, header in batches:
        if header.is_control:
            return INVALID_RECORD, "Clients are not allowed to write control records"
        if not header.is_transactional:
            continue
        producer = (header.producer_id, header.producer_epoch)
        if producer in checked:
            continue
        checked.add(producer)
        code = broker.transactions.check_produce(*producer, plog.topic, plog.partition)
        if code == INVALID_TXN_STATE:
            return code, "Partition was not added to the transaction"
        if code:
            return code, None
    return 0, None


def _append(
    broker: BrokerContext, plog: PartitionLog, records: bytes | None, now_ms: int
) -> PartitionResult:
    result = PartitionResult(plog.partition)
    if not records:
        result.error_code = CORRUPT_MESSAGE
        result.error_message = "produce request carries no record batch"
        return result
    try:
        batches = validate_batches(records)
        code, message = _refuse_batches(broker, plog, batches)
        if code:
            result.error_code = code
            result.error_message = message
            result.log_start_offset = plog.log_start_offset
            return result
        check_records(records, batches, plog.config, now_ms, plog.topic, plog.partition)
        appended = plog.append(records, batches, now_ms)
    except se.DuplicateSequence as dup:
        # An idempotent retry: acknowledge with the original offsets.
        result.base_offset = dup.base_offset
        result.log_append_time_ms = dup.log_append_time_ms
        result.log_start_offset = plog.log_start_offset
        return result
    except se.StorageError as exc:
        result.error_code = code_for(exc)
        result.error_message = str(exc)
        result.log_start_offset = plog.log_start_offset
        if isinstance(exc, se.InvalidRecords):
            result.record_errors = exc.record_errors
        return result
    except Exception:
        # One partition's bug must not fail the others of the request, which may already be
        # appended: a client retrying all of them would store those twice.
        log.exception("produce to %s-%d failed", plog.topic, plog.partition)
        result.error_code = UNKNOWN_SERVER_ERROR
        result.error_message = UNEXPECTED_MESSAGE
        result.log_start_offset = plog.log_start_offset
        return result
    metrics.PRODUCE_RECORDS.labels(plog.topic).inc(sum(h.records_count for _p, _s, h in batches))
    metrics.PRODUCE_BYTES.labels(plog.topic).inc(len(records))
    result.base_offset = appended.base_offset
    result.log_append_time_ms = appended.log_append_time_ms
    result.log_start_offset = appended.log_start_offset
    return result


def _has_transactional_records(body: Any) -> bool:
    """Kafka's RequestUtils.hasTransactionalRecords: the first batch of some partition is
    transactional. A frame too short for a header is refused later, partition by partition."""
    for topic in body.topic_data:
        for pdata in topic.partition_data:
            records = pdata.records
            if not records or len(records) < HEADER_SIZE:
                continue
            first = parse_header(records)
            if first.magic == 2 and first.is_transactional:
                return True
    return False


def _refuse_all(req: Request, code: int) -> Frame:
    """Every partition answered with `code` (ProduceRequest.getErrorResponse)."""
    if int(req.body.acks) == 0:
        return None
    topics = [
        (t.name, [PartitionResult(p.index, code) for p in t.partition_data])
        for t in req.body.topic_data
    ]
    return encode_produce_response(req.header.api_version, req.header.correlation_id, topics)


async def handle(broker: BrokerContext, req: Request) -> Frame:
    body = req.body
    txn_id = body.transactional_id
    if _has_transactional_records(body) and not (
        txn_id is not None
        and allowed(broker, req, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, txn_id)
    ):
        return _refuse_all(req, TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    acks = int(body.acks)
    now_ms = int(time.time() * 1000)
    topics: list[tuple[str, list[PartitionResult]]] = []
    durable: list[Awaitable[None]] = []
    writable = allowed_names(
        broker, req, Operation.WRITE, ResourceType.TOPIC, (t.name for t in body.topic_data)
    )
    for topic in body.topic_data:
        name = topic.name
        results: list[PartitionResult] = []
        topics.append((name, results))
        if name not in writable:
            topic_error = TOPIC_AUTHORIZATION_FAILED
        elif acks not in (0, 1, -1):
            topic_error = INVALID_REQUIRED_ACKS
        else:
            topic_error = _resolve_topic(broker, req, name)
        for pdata in topic.partition_data:
            if topic_error:
                results.append(PartitionResult(pdata.index, topic_error))
                continue
            try:
                plog = broker.storage.log(name, pdata.index)
            except se.UnknownTopic:
                results.append(PartitionResult(pdata.index, UNKNOWN_TOPIC_OR_PARTITION))
                continue
            result = _append(broker, plog, pdata.records, now_ms)
            results.append(result)
            if result.error_code == 0 and acks != 0:
                durable.append(plog.wait_durable(plog.log_end_offset))
    if acks == 0:
        return None
    if durable:
        outcomes = await asyncio.gather(*durable, return_exceptions=True)
        if any(isinstance(o, BaseException) for o in outcomes):
            # fsync failed: the data may not survive a crash, so nothing is acked.
            log.error("fsync failed: %s", [o for o in outcomes if isinstance(o, BaseException)])
            for _, results in topics:
                for r in results:
                    if r.error_code == 0:
                        r.error_code = UNKNOWN_SERVER_ERROR
                        r.error_message = "write could not be made durable"
    return encode_produce_response(req.header.api_version, req.header.correlation_id, topics)


APIS = [ApiSpec(PRODUCE, 3, 11, handle)]
