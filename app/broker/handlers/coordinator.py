"""FindCoordinator: this single broker coordinates every group and transaction.

Advertising it matters even before groups exist: librdkafka disables LZ4 when
the broker does not list FindCoordinator.
"""

from __future__ import annotations

from typing import Any

from ..context import ApiSpec, BrokerContext, Frame
from ..errors import INVALID_REQUEST, NONE
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, has_field, respond, response_classes

FIND_COORDINATOR = 10
GROUP = 0
TRANSACTION = 1


async def find_coordinator(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    key_type = int(getattr(req.body, "key_type", GROUP))
    found: dict[str, Any] = {"node_id": -1, "host": "", "port": -1}
    code = INVALID_REQUEST
    message: str | None = f"unknown coordinator type {key_type}"
    # Kafka's CoordinatorType.forId rejects any other type (share groups need v6).
    if key_type in (GROUP, TRANSACTION):
        ep = broker.endpoint
        found = {"node_id": ep.node_id, "host": ep.host, "port": ep.port}
        code, message = NONE, None
    if has_field(resp, "coordinators"):
        keys = tuple(req.body.coordinator_keys)
        coordinators = tuple(
            build(mod.Coordinator, key=k, error_code=err(code), error_message=message, **found)
            for k in keys
        )
        return respond(req, build(resp, throttle_time=NO_THROTTLE, coordinators=coordinators))
    body = build(
        resp, throttle_time=NO_THROTTLE, error_code=err(code), error_message=message, **found
    )
    return respond(req, body)


APIS = [ApiSpec(FIND_COORDINATOR, 0, 4, find_coordinator)]
