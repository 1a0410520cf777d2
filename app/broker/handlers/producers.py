"""InitProducerId v0-v4: producer ids for idempotent producers here, for transactional ones
from the transaction coordinator (epoch bump, fencing, KIP-360)."""

from __future__ import annotations

from app.security.acl import CLUSTER_NAME, Operation, ResourceType

from ..authz import allowed, allowed_any
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    INVALID_PRODUCER_EPOCH,
    INVALID_REQUEST,
    NONE,
    PRODUCER_FENCED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

INIT_PRODUCER_ID = 22


def _authorization_error(broker: BrokerContext, req: Request) -> int:
    """KafkaApis: WRITE on the transactional id; without one IDEMPOTENT_WRITE on the
    cluster or WRITE on any topic (KIP-679). A failed cluster check alone is not audited,
    as Kafka does not log it: most idempotent producers pass by a topic."""
    tid = req.body.transactional_id
    if tid is not None:
        if allowed(broker, req, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, tid):
            return NONE
        return TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    if allowed(
        broker, req, Operation.IDEMPOTENT_WRITE, ResourceType.CLUSTER, CLUSTER_NAME, audit=False
    ) or allowed_any(broker, req, Operation.WRITE, ResourceType.TOPIC):
        return NONE
    return CLUSTER_AUTHORIZATION_FAILED


async def _grant(broker: BrokerContext, req: Request) -> tuple[int, int, int]:
    """Error code, producer id and epoch."""
    body = req.body
    current_id = int(getattr(body, "producer_id", -1))
    current_epoch = int(getattr(body, "producer_epoch", -1))
    code = _authorization_error(broker, req)
    if code != NONE:
        return code, -1, -1
    if body.transactional_id is not None:
        timeout_ms = round(body.transaction_timeout.total_seconds() * 1000)
        result = await broker.transactions.init_producer_id(
            body.transactional_id, timeout_ms, current_id, current_epoch
        )
        code = result.error
        if code == PRODUCER_FENCED and req.header.api_version < 4:
            code = INVALID_PRODUCER_EPOCH
        return code, result.producer_id, result.epoch
    if (current_id == -1) != (current_epoch == -1):
        return INVALID_REQUEST, -1, -1
    # Without a transactional id Kafka always hands out a new id at epoch 0, also to a
    # producer naming its current one (KIP-360's reset): bumping a named id would let
    # any client fence another producer, a transactional one included.
    return NONE, broker.storage.metadata.next_producer_id(), 0


async def init_producer_id(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    code, producer_id, epoch = await _grant(broker, req)
    body_out = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        producer_id=producer_id,
        producer_epoch=epoch,
    )
    return respond(req, body_out)


APIS = [ApiSpec(INIT_PRODUCER_ID, 0, 4, init_producer_id)]
