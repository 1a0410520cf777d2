"""InitProducerId v0-v4: producer ids for idempotent (and transactional) producers."""

from __future__ import annotations

from typing import Any

from ..context import ApiSpec, BrokerContext, Frame
from ..errors import INVALID_REQUEST, NONE
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

INIT_PRODUCER_ID = 22
MAX_EPOCH = 32767
# Kafka's transaction.max.timeout.ms default.
MAX_TRANSACTION_TIMEOUT_MS = 900_000
# Not in ..errors: only this handler answers it.
INVALID_TRANSACTION_TIMEOUT = 50


def _check_transactional(body: Any) -> int:
    """TransactionCoordinator.handleInitProducerId's checks; a non-transactional producer's
    timeout is never used, so it is not checked."""
    txn = body.transactional_id
    if txn is None:
        return NONE
    if txn == "":
        return INVALID_REQUEST
    timeout_ms = body.transaction_timeout.total_seconds() * 1000
    if not 0 < timeout_ms <= MAX_TRANSACTION_TIMEOUT_MS:
        return INVALID_TRANSACTION_TIMEOUT
    return NONE


async def init_producer_id(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    body = req.body
    meta = broker.storage.metadata
    current_id = int(getattr(body, "producer_id", -1))
    current_epoch = int(getattr(body, "producer_epoch", -1))
    code = _check_transactional(body)
    if code != NONE:
        producer_id, epoch = -1, -1
    elif body.transactional_id:
        producer_id, epoch = meta.transactional_producer(body.transactional_id)
    elif current_id >= 0 and 0 <= current_epoch < MAX_EPOCH - 1:
        # KIP-360: an idempotent producer asks to bump its epoch after an
        # unknown-producer error, keeping its id and resetting sequences.
        producer_id, epoch = current_id, current_epoch + 1
    else:
        producer_id, epoch = meta.next_producer_id(), 0
    body_out = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        producer_id=producer_id,
        producer_epoch=epoch,
    )
    return respond(req, body_out)


APIS = [ApiSpec(INIT_PRODUCER_ID, 0, 4, init_producer_id)]
