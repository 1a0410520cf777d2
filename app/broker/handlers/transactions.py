"""Transactions: AddPartitionsToTxn v0-v4, AddOffsetsToTxn v0-v3, EndTxn v0-v3,
DescribeTransactions v0 and ListTransactions v0-v1, answered by the transaction coordinator
(`broker.transactions`). TxnOffsetCommit is the group coordinator's (group_offsets.py) and
InitProducerId is in producers.py."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from app.security.acl import Operation, ResourceType

from ..authz import allowed, allowed_names, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    INVALID_PRODUCER_EPOCH,
    NONE,
    OPERATION_NOT_ATTEMPTED,
    PRODUCER_FENCED,
    TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC_OR_PARTITION,
)
from ..protocol.codec import Request
from ..txn.model import TopicPartition
from .base import NO_THROTTLE, build, err, respond, response_classes

ADD_PARTITIONS_TO_TXN = 24
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26
DESCRIBE_TRANSACTIONS = 65
LIST_TRANSACTIONS = 66

_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


def _fenced_for(version: int, code: int, first_version: int = 2) -> int:
    """Clients before PRODUCER_FENCED existed expect INVALID_PRODUCER_EPOCH (KafkaApis)."""
    if code == PRODUCER_FENCED and version < first_version:
        return INVALID_PRODUCER_EPOCH
    return code


def _ms(value: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(milliseconds=value)


def _requested(topics: Iterable[Any]) -> list[TopicPartition]:
    """The request's partitions once each, in request order."""
    return list(dict.fromkeys((t.name, int(p)) for t in topics for p in t.partitions))


def _may_write(broker: BrokerContext, req: Request, transactional_id: str) -> bool:
    return allowed(broker, req, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id)


def _refused(
    broker: BrokerContext, req: Request, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The partitions KafkaApis fails before the coordinator: those of topics a client may
    not WRITE (v4 comes from brokers, authorized for the cluster instead), then those
    that do not exist."""
    topics = {topic for topic, _ in partitions}
    if req.header.api_version < 4:
        topics = allowed_names(broker, req, Operation.WRITE, ResourceType.TOPIC, topics)
    out = {}
    for topic, partition in partitions:
        meta = broker.storage.metadata.get(topic)
        if topic not in topics:
            out[(topic, partition)] = TOPIC_AUTHORIZATION_FAILED
        elif meta is None or not 0 <= partition < meta.partitions:
            out[(topic, partition)] = UNKNOWN_TOPIC_OR_PARTITION
    return out


async def _add_partitions_of(
    broker: BrokerContext, req: Request, txn: Any, partitions: list[TopicPartition], verify: bool
) -> dict[TopicPartition, int]:
    """One transaction of the request: Kafka's handleAddPartitionsToTxnRequest. One
    refused partition fails the whole transaction; the others are not attempted."""
    tid, pid, epoch = txn
    version = req.header.api_version
    if version < 4 and not _may_write(broker, req, tid):
        return dict.fromkeys(partitions, TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    refused = _refused(broker, req, partitions)
    if refused:
        return {tp: refused.get(tp, OPERATION_NOT_ATTEMPTED) for tp in partitions}
    coord = broker.transactions
    if verify:
        codes = coord.verify_partitions(tid, pid, epoch, partitions)
        return {tp: _fenced_for(version, c) for tp, c in codes.items()}
    code = _fenced_for(version, await coord.add_partitions(tid, pid, epoch, partitions))
    return dict.fromkeys(partitions, code)


def _topic_results(mod: Any, codes: dict[TopicPartition, int]) -> tuple[Any, ...]:
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append(
            mod.AddPartitionsToTxnPartitionResult(
                partition_index=partition, partition_error_code=err(code)
            )
        )
    return tuple(
        mod.AddPartitionsToTxnTopicResult(name=topic, results_by_partition=tuple(parts))
        for topic, parts in by_topic.items()
    )


async def add_partitions_to_txn(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    version = req.header.api_version
    if version < 4:
        txn = (
            b.v3_and_below_transactional_id,
            int(b.v3_and_below_producer_id),
            int(b.v3_and_below_producer_epoch),
        )
        partitions = _requested(b.v3_and_below_topics)
        codes = await _add_partitions_of(broker, req, txn, partitions, False)
        body = build(
            resp,
            throttle_time=NO_THROTTLE,
            results_by_topic_v3_and_below=_topic_results(mod, codes),
        )
        return respond(req, body)
    # Batches of transactions come from brokers verifying produce requests (KIP-890).
    if not cluster_allowed(broker, req, Operation.CLUSTER_ACTION):
        body = build(
            resp,
            throttle_time=NO_THROTTLE,
            error_code=err(CLUSTER_AUTHORIZATION_FAILED),
            results_by_transaction=(),
        )
        return respond(req, body)
    results = []
    for t in b.transactions:
        txn = (t.transactional_id, int(t.producer_id), int(t.producer_epoch))
        partitions = _requested(t.topics)
        codes = await _add_partitions_of(broker, req, txn, partitions, bool(t.verify_only))
        results.append(
            mod.AddPartitionsToTxnResult(
                transactional_id=t.transactional_id, topic_results=_topic_results(mod, codes)
            )
        )
    body = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(NONE),
        results_by_transaction=tuple(results),
    )
    return respond(req, body)


async def add_offsets_to_txn(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    b = req.body
    if not _may_write(broker, req, b.transactional_id):
        code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    elif not allowed(broker, req, Operation.READ, ResourceType.GROUP, b.group_id):
        code = GROUP_AUTHORIZATION_FAILED
    else:
        code = await broker.transactions.add_partitions(
            b.transactional_id, int(b.producer_id), int(b.producer_epoch), groups=[b.group_id]
        )
        code = _fenced_for(req.header.api_version, code)
    return respond(req, build(resp, throttle_time=NO_THROTTLE, error_code=err(code)))


async def end_txn(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    b = req.body
    if not _may_write(broker, req, b.transactional_id):
        code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    else:
        code = await broker.transactions.end_txn(
            b.transactional_id, int(b.producer_id), int(b.producer_epoch), bool(b.committed)
        )
        code = _fenced_for(req.header.api_version, code)
    return respond(req, build(resp, throttle_time=NO_THROTTLE, error_code=err(code)))


async def describe_transactions(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    states = []
    for tid in req.body.transactional_ids:
        if allowed(broker, req, Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, tid):
            code, meta = broker.transactions.describe(tid)
        else:
            code, meta = TRANSACTIONAL_ID_AUTHORIZATION_FAILED, None
        if meta is None:
            states.append(
                mod.TransactionState(
                    error_code=err(code),
                    transactional_id=tid,
                    transaction_state="",
                    transaction_timeout=datetime.timedelta(0),
                    transaction_start_time=_EPOCH,
                    producer_id=0,
                    producer_epoch=0,
                    topics=(),
                )
            )
            continue
        topics: dict[str, list[int]] = {}
        for topic, partition in sorted(meta.partitions):
            topics.setdefault(topic, []).append(partition)
        # Only the topics the principal may describe, as KafkaApis; leaving one out of a
        # listing is not a denial worth an audit line.
        visible = allowed_names(
            broker, req, Operation.DESCRIBE, ResourceType.TOPIC, topics, audit=False
        )
        states.append(
            mod.TransactionState(
                error_code=err(NONE),
                transactional_id=tid,
                transaction_state=meta.state.value,
                transaction_timeout=datetime.timedelta(milliseconds=meta.timeout_ms),
                transaction_start_time=_ms(meta.txn_start_ms),
                producer_id=meta.producer_id,
                producer_epoch=meta.epoch,
                topics=tuple(
                    mod.TopicData(topic=t, partitions=tuple(ps))
                    for t, ps in topics.items()
                    if t in visible
                ),
            )
        )
    body = build(resp, throttle_time=NO_THROTTLE, transaction_states=tuple(states))
    return respond(req, body)


async def list_transactions(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    code, unknown, found = broker.transactions.list_transactions(
        states=b.state_filters,
        producer_ids=[int(p) for p in b.producer_id_filters],
        duration_ms=int(getattr(b, "duration_filter", -1)),
    )
    body = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        unknown_state_filters=tuple(unknown),
        transaction_states=tuple(
            mod.TransactionState(
                transactional_id=m.transactional_id,
                producer_id=m.producer_id,
                transaction_state=m.state.value,
            )
            for m in found
            # KafkaApis lists only what the principal may DESCRIBE; a filtered listing
            # is not a denial worth an audit line.
            if allowed(
                broker,
                req,
                Operation.DESCRIBE,
                ResourceType.TRANSACTIONAL_ID,
                m.transactional_id,
                audit=False,
            )
        ),
    )
    return respond(req, body)


APIS = [
    ApiSpec(ADD_PARTITIONS_TO_TXN, 0, 4, add_partitions_to_txn),
    ApiSpec(ADD_OFFSETS_TO_TXN, 0, 3, add_offsets_to_txn),
    ApiSpec(END_TXN, 0, 3, end_txn),
    ApiSpec(DESCRIBE_TRANSACTIONS, 0, 0, describe_transactions),
    ApiSpec(LIST_TRANSACTIONS, 0, 1, list_transactions),
]
