"""CreatePartitions v0-v3: grow a topic's partition count."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from ...security.acl import Operation, ResourceType
from ...storage import errors as se
from ..authz import allowed_names
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    INVALID_REPLICA_ASSIGNMENT,
    INVALID_REQUEST,
    NONE,
    TOPIC_AUTHORIZATION_FAILED,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes
from .topics import creation_error

log = logging.getLogger(__name__)

CREATE_PARTITIONS = 37


def _check_assignments(broker: BrokerContext, t: Any, added: int) -> tuple[int, str] | None:
    """Explicit assignments must cover exactly the new partitions, each on this broker
    alone: a single-node cluster has nowhere else to put a replica."""
    if t.assignments is None:
        return None
    if len(t.assignments) != added:
        return (
            INVALID_REPLICA_ASSIGNMENT,
            f"adding {added} partitions but {len(t.assignments)} assignments were given",
        )
    for a in t.assignments:
        if tuple(a.broker_ids) != (broker.node_id,):
            return (
                INVALID_REPLICA_ASSIGNMENT,
                f"replica assignment {list(a.broker_ids)} is not possible: this cluster has "
                f"one broker ({broker.node_id})",
            )
    return None


def _create(broker: BrokerContext, t: Any, validate_only: bool) -> tuple[int, str | None]:
    metadata = broker.storage.metadata
    total = int(t.count)
    try:
        meta = metadata.validate_add_partitions(t.name, total)
    except se.StorageError as exc:
        return creation_error(exc), str(exc)
    current = metadata.get(t.name)
    assert current is not None
    problem = _check_assignments(broker, t, total - current.partitions)
    if problem is not None:
        return problem
    if not validate_only:
        meta = broker.storage.add_partitions(t.name, total)
        log.info("topic %s now has %d partitions", meta.name, meta.partitions)
    return NONE, None


async def handle(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    validate_only = bool(req.body.validate_only)
    counts = Counter(t.name for t in req.body.topics)
    alterable = allowed_names(
        broker, req, Operation.ALTER, ResourceType.TOPIC, (n for n, c in counts.items() if c == 1)
    )
    results = []
    for t in req.body.topics:
        message: str | None
        if counts[t.name] > 1:
            code, message = INVALID_REQUEST, "topic listed twice in one request"
        elif t.name not in alterable:
            code, message = TOPIC_AUTHORIZATION_FAILED, None
        else:
            code, message = _create(broker, t, validate_only)
        results.append(
            build(
                mod.CreatePartitionsTopicResult,
                name=t.name,
                error_code=err(code),
                error_message=message,
            )
        )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, results=tuple(results)))


APIS = [ApiSpec(CREATE_PARTITIONS, 0, 3, handle)]
