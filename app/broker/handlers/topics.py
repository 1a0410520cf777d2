"""CreateTopics v2-v7 and DeleteTopics v1-v6."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...storage import errors as se
from ..errors import (
    INVALID_REPLICATION_FACTOR,
    INVALID_REQUEST,
    NONE,
    UNKNOWN_TOPIC_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
    code_for,
)
from ..protocol.codec import Request
from .base import (
    NO_THROTTLE,
    ApiSpec,
    Frame,
    build,
    err,
    has_field,
    respond,
    response_classes,
)

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)

CREATE_TOPICS = 19
DELETE_TOPICS = 20
# DescribeConfigs config source for a topic-level override / broker default.
SOURCE_TOPIC = 1
SOURCE_DEFAULT = 5


def _create_one(broker: Broker, mod: Any, t: Any, validate_only: bool) -> Any:
    result: dict[str, Any] = {
        "name": t.name,
        "topic_id": None,
        "error_code": err(NONE),
        "error_message": None,
        "num_partitions": -1,
        "replication_factor": -1,
        "configs": None,
    }
    partitions = int(t.num_partitions)
    if t.assignments:
        partitions = len(t.assignments)
    elif partitions == -1:
        partitions = broker.settings.default_partitions
    try:
        if int(t.replication_factor) not in (-1, 1) or any(
            tuple(a.broker_ids) != (broker.node_id,) for a in t.assignments
        ):
            raise se.InvalidReplicationFactor(
                f"replication factor must be 1: this cluster has one broker ({broker.node_id})"
            )
        configs: dict[str, str] = {}
        for c in t.configs:
            if c.value is None:
                raise se.InvalidConfig(c.name, f"config {c.name} has a null value")
            configs[c.name] = c.value
        meta = broker.storage.create_topic(t.name, partitions, configs, validate_only=validate_only)
    except se.StorageError as exc:
        code = code_for(exc)
        if isinstance(exc, se.InvalidReplicationFactor):
            code = INVALID_REPLICATION_FACTOR
        result["error_code"] = err(code if code != -1 else INVALID_REQUEST)
        result["error_message"] = str(exc)
        return build(mod.CreatableTopicResult, **result)
    if not validate_only:
        log.info("created topic %s with %d partitions", meta.name, meta.partitions)
    result.update(
        topic_id=None if validate_only else meta.topic_id,
        num_partitions=meta.partitions,
        replication_factor=1,
    )
    if has_field(mod.CreatableTopicResult, "configs"):
        effective = {**broker.storage.metadata.default_topic_configs(), **meta.configs}
        result["configs"] = tuple(
            build(
                mod.CreatableTopicConfigs,
                name=k,
                value=v,
                read_only=False,
                config_source=SOURCE_TOPIC if k in meta.configs else SOURCE_DEFAULT,
                is_sensitive=False,
            )
            for k, v in sorted(effective.items())
        )
    return build(mod.CreatableTopicResult, **result)


async def create_topics(broker: Broker, req: Request) -> Frame:
    resp, mod = response_classes(req)
    validate_only = bool(getattr(req.body, "validate_only", False))
    seen: set[str] = set()
    results = []
    for t in req.body.topics:
        if t.name in seen:
            results.append(
                build(
                    mod.CreatableTopicResult,
                    name=t.name,
                    topic_id=None,
                    error_code=err(INVALID_REQUEST),
                    error_message="topic listed twice in one request",
                    configs=None,
                )
            )
            continue
        seen.add(t.name)
        results.append(_create_one(broker, mod, t, validate_only))
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=tuple(results)))


async def delete_topics(broker: Broker, req: Request) -> Frame:
    resp, mod = response_classes(req)
    body = req.body
    wanted: list[tuple[str | None, Any]] = []
    if hasattr(body, "topics"):
        wanted = [(t.name, t.topic_id) for t in body.topics]
    else:
        wanted = [(name, None) for name in body.topic_names]
    results = []
    for name, topic_id in wanted:
        if name is None and topic_id is not None and topic_id.int != 0:
            meta = broker.storage.metadata.get_by_id(topic_id)
            missing = UNKNOWN_TOPIC_ID
        else:
            meta = broker.storage.metadata.get(name) if name is not None else None
            missing = UNKNOWN_TOPIC_OR_PARTITION
        code, message = NONE, None
        if meta is None:
            code, message = missing, "topic does not exist"
        else:
            broker.storage.delete_topic(meta.name)
            log.info("deleted topic %s", meta.name)
        results.append(
            build(
                mod.DeletableTopicResult,
                name=meta.name if meta else name,
                topic_id=meta.topic_id if meta else topic_id,
                error_code=err(code),
                error_message=message,
            )
        )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, responses=tuple(results)))


APIS = [
    ApiSpec(CREATE_TOPICS, 2, 7, create_topics),
    ApiSpec(DELETE_TOPICS, 1, 6, delete_topics),
]
