"""Metadata v0-v13: brokers, controller, topics with ids, auto-creation."""

from __future__ import annotations

import logging
from typing import Any

from ...storage import TopicMeta, validate_topic_name
from ...storage import errors as se
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import INVALID_TOPIC_EXCEPTION, NONE, UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes
from .topics import creation_error

log = logging.getLogger(__name__)

METADATA = 3
# Kafka's "authorized operations not requested" sentinel.
OPS_NOT_REQUESTED = -(2**31)


def _topic_entry(broker: BrokerContext, mod: Any, meta: TopicMeta) -> Any:
    node = broker.node_id
    partitions = tuple(
        build(
            mod.MetadataResponsePartition,
            error_code=err(NONE),
            partition_index=p,
            leader_id=node,
            leader_epoch=0,
            replica_nodes=(node,),
            isr_nodes=(node,),
            offline_replicas=(),
        )
        for p in range(meta.partitions)
    )
    return build(
        mod.MetadataResponseTopic,
        error_code=err(NONE),
        name=meta.name,
        topic_id=meta.topic_id,
        is_internal=False,
        partitions=partitions,
        topic_authorized_operations=OPS_NOT_REQUESTED,
    )


def _error_entry(mod: Any, name: str | None, topic_id: Any, code: int) -> Any:
    return build(
        mod.MetadataResponseTopic,
        error_code=err(code),
        name=name,
        topic_id=topic_id,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=OPS_NOT_REQUESTED,
    )


def _lookup(broker: BrokerContext, mod: Any, name: str, auto_create: bool) -> Any:
    meta: TopicMeta | None = broker.storage.metadata.get(name)
    if meta is not None:
        return _topic_entry(broker, mod, meta)
    if not auto_create:
        # Kafka validates a name it does not know, creating it or not.
        try:
            validate_topic_name(name)
        except se.InvalidTopic:
            return _error_entry(mod, name, None, INVALID_TOPIC_EXCEPTION)
        return _error_entry(mod, name, None, UNKNOWN_TOPIC_OR_PARTITION)
    try:
        meta = broker.storage.create_topic(name, broker.settings.default_partitions, {})
    except se.TopicExists:
        meta = broker.storage.metadata.get(name)
    except se.StorageError as exc:
        return _error_entry(mod, name, None, creation_error(exc))
    if meta is None:
        return _error_entry(mod, name, None, UNKNOWN_TOPIC_OR_PARTITION)
    log.info("auto-created topic %s with %d partitions", name, meta.partitions)
    return _topic_entry(broker, mod, meta)


async def handle(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    body = req.body
    version = req.header.api_version
    requested = body.topics
    # v0 has no null array: an empty list means "all topics".
    all_topics = requested is None or (version == 0 and not requested)
    auto_create = broker.settings.auto_create_topics and getattr(
        body, "allow_auto_topic_creation", True
    )
    topics: list[Any] = []
    if all_topics:
        for meta in sorted(broker.storage.metadata.topics().values(), key=lambda m: m.name):
            topics.append(_topic_entry(broker, mod, meta))
    else:
        # Kafka answers a topic named twice once.
        seen: set[Any] = set()
        for t in requested:
            name = getattr(t, "name", None)
            key = name if name is not None else getattr(t, "topic_id", None)
            if key in seen:
                continue
            seen.add(key)
            topic_id = getattr(t, "topic_id", None)
            if name is None and topic_id is not None and topic_id.int != 0:
                found = broker.storage.metadata.get_by_id(topic_id)
                if found is None:
                    topics.append(_error_entry(mod, None, topic_id, UNKNOWN_TOPIC_ID))
                else:
                    topics.append(_topic_entry(broker, mod, found))
            elif name is None:
                topics.append(_error_entry(mod, None, topic_id, INVALID_TOPIC_EXCEPTION))
            else:
                topics.append(_lookup(broker, mod, name, auto_create))
    ep = broker.endpoint
    brokers = (build(mod.MetadataResponseBroker, node_id=ep.node_id, host=ep.host, port=ep.port),)
    out = build(
        resp,
        throttle_time=NO_THROTTLE,
        brokers=brokers,
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        topics=tuple(topics),
        cluster_authorized_operations=OPS_NOT_REQUESTED,
        error_code=err(NONE),
    )
    return respond(req, out)


APIS = [ApiSpec(METADATA, 0, 13, handle)]
