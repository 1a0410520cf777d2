"""InitProducerId v0-v4: producer ids for idempotent producers here, for transactional ones
from the transaction coordinator (epoch bump, fencing, KIP-360)."""

from __future__ import annotations

from ..context import ApiSpec, BrokerContext, Frame
from ..errors import INVALID_PRODUCER_EPOCH, INVALID_REQUEST, NONE, PRODUCER_FENCED
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

INIT_PRODUCER_ID = 22


async def init_producer_id(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    body = req.body
    current_id = int(getattr(body, "producer_id", -1))
    current_epoch = int(getattr(body, "producer_epoch", -1))
    code = NONE
    producer_id, epoch = -1, -1
    if body.transactional_id is not None:
        timeout_ms = round(body.transaction_timeout.total_seconds() * 1000)
        result = await broker.transactions.init_producer_id(
            body.transactional_id, timeout_ms, current_id, current_epoch
        )
        code, producer_id, epoch = result.error, result.producer_id, result.epoch
        if code == PRODUCER_FENCED and req.header.api_version < 4:
            code = INVALID_PRODUCER_EPOCH
    elif (current_id == -1) != (current_epoch == -1):
        code = INVALID_REQUEST
    else:
        # Without a transactional id Kafka always hands out a new id at epoch 0, also to a
        # producer naming its current one (KIP-360's reset): bumping a named id would let
        # any client fence another producer, a transactional one included.
        producer_id, epoch = broker.storage.metadata.next_producer_id(), 0
    body_out = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        producer_id=producer_id,
        producer_epoch=epoch,
    )
    return respond(req, body_out)


APIS = [ApiSpec(INIT_PRODUCER_ID, 0, 4, init_producer_id)]
