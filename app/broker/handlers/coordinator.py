"""FindCoordinator: this single broker coordinates every group and transaction.

Advertising it matters even before groups exist: librdkafka disables LZ4 when
the broker does not list FindCoordinator.
"""

from __future__ import annotations

from typing import Any

from app.security.acl import Operation, ResourceType

from ..authz import allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    GROUP_AUTHORIZATION_FAILED,
    INVALID_REQUEST,
    NONE,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, has_field, respond, response_classes

FIND_COORDINATOR = 10
GROUP = 0
TRANSACTION = 1
NO_NODE: dict[str, Any] = {"node_id": -1, "host": "", "port": -1}
# What each coordinator type requires of its key (KafkaApis.getCoordinator) and the
# Errors.message() a failed key carries before v4.
_AUTHZ = {
    GROUP: (ResourceType.GROUP, GROUP_AUTHORIZATION_FAILED, "Group authorization failed."),
    TRANSACTION: (
        ResourceType.TRANSACTIONAL_ID,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        "Transactional Id authorization failed.",
    ),
}


def _coordinator(
    broker: BrokerContext, req: Request, key_type: int, key: str
) -> tuple[int, str | None, dict[str, Any]]:
    """Error code, its message and the node for one key: DESCRIBE on the group or
    transactional id it names, then this broker."""
    check = _AUTHZ.get(key_type)
    # Kafka's CoordinatorType.forId rejects any other type (share groups need v6).
    if check is None:
        return INVALID_REQUEST, f"unknown coordinator type {key_type}", NO_NODE
    rtype, denied, message = check
    if not allowed(broker, req, Operation.DESCRIBE, rtype, key):
        return denied, message, NO_NODE
    ep = broker.endpoint
    return NONE, None, {"node_id": ep.node_id, "host": ep.host, "port": ep.port}


async def find_coordinator(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    key_type = int(getattr(req.body, "key_type", GROUP))
    if has_field(resp, "coordinators"):
        coordinators = []
        for key in req.body.coordinator_keys:
            code, message, node = _coordinator(broker, req, key_type, key)
            # From v4 an authorization failure is a key's code alone; a bad type fails the
            # request, which answers each key with the error's message.
            if code != INVALID_REQUEST:
                message = None
            coordinators.append(
                build(mod.Coordinator, key=key, error_code=err(code), error_message=message, **node)
            )
        out = build(resp, throttle_time=NO_THROTTLE, coordinators=tuple(coordinators))
        return respond(req, out)
    code, message, node = _coordinator(broker, req, key_type, req.body.key)
    body = build(
        resp, throttle_time=NO_THROTTLE, error_code=err(code), error_message=message, **node
    )
    return respond(req, body)


APIS = [ApiSpec(FIND_COORDINATOR, 0, 4, find_coordinator)]
