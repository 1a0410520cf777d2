"""DeleteRecords v0-v2: move partitions' log start offsets forward."""

from __future__ import annotations

import logging
from typing import Any

from ...security.acl import Operation, ResourceType
from ...storage import errors as se
from ..authz import allowed_names
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import NONE, TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION, code_for
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

log = logging.getLogger(__name__)

DELETE_RECORDS = 21


def _delete(broker: BrokerContext, mod: Any, topic: str, p: Any, authorized: bool) -> Any:
    partition, offset = int(p.partition_index), int(p.offset)
    if authorized:
        code, low = _move_start(broker, topic, partition, offset)
    else:
        code, low = TOPIC_AUTHORIZATION_FAILED, -1
    return build(
        mod.DeleteRecordsPartitionResult,
        partition_index=partition,
        low_watermark=low,
        error_code=err(code),
    )


def _move_start(broker: BrokerContext, topic: str, partition: int, offset: int) -> tuple[int, int]:
    code, low = NONE, -1
    try:
        plog = broker.storage.log(topic, partition)
        before = plog.log_start_offset
        low = broker.storage.delete_records(topic, partition, offset)
        if low != before:
            log.info("%s-%d: records before %d deleted on request", topic, partition, low)
    except se.UnknownTopic:
        code = UNKNOWN_TOPIC_OR_PARTITION
    except se.StorageError as exc:
        code = code_for(exc)
    return code, low


async def handle(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    deletable = allowed_names(
        broker, req, Operation.DELETE, ResourceType.TOPIC, (t.name for t in req.body.topics)
    )
    topics = tuple(
        build(
            mod.DeleteRecordsTopicResult,
            name=t.name,
            partitions=tuple(
                _delete(broker, mod, t.name, p, t.name in deletable) for p in t.partitions
            ),
        )
        for t in req.body.topics
    )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=topics))


APIS = [ApiSpec(DELETE_RECORDS, 0, 2, handle)]
