"""FindCoordinator: this single broker coordinates every group and transaction.

Advertising it matters even before groups exist: librdkafka disables LZ4 when
the broker does not list FindCoordinator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NONE
from ..protocol.codec import Request
from .base import NO_THROTTLE, ApiSpec, Frame, build, err, has_field, respond, response_classes

if TYPE_CHECKING:
    from ..broker import Broker

FIND_COORDINATOR = 10


async def find_coordinator(broker: Broker, req: Request) -> Frame:
    resp, mod = response_classes(req)
    ep = broker.endpoint
    if has_field(resp, "coordinators"):
        keys = tuple(req.body.coordinator_keys)
        coordinators = tuple(
            build(
                mod.Coordinator,
                key=k,
                node_id=ep.node_id,
                host=ep.host,
                port=ep.port,
                error_code=err(NONE),
                error_message=None,
            )
            for k in keys
        )
        return respond(req, build(resp, throttle_time=NO_THROTTLE, coordinators=coordinators))
    body = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(NONE),
        error_message=None,
        node_id=ep.node_id,
        host=ep.host,
        port=ep.port,
    )
    return respond(req, body)


APIS = [ApiSpec(FIND_COORDINATOR, 0, 4, find_coordinator)]
