"""Metadata v0-v13: brokers, controller, topics with ids, auto-creation."""

from __future__ import annotations

import logging
from typing import Any

from ...security.acl import Operation, ResourceType
from ...storage import TopicMeta, validate_topic_name
from ...storage import errors as se
from ..authz import allowed, allowed_names, authorized_operations, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    INVALID_REQUEST,
    INVALID_TOPIC_EXCEPTION,
    NONE,
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes
from .cluster import OPS_NOT_REQUESTED, cluster_operations
from .topics import creation_error

log = logging.getLogger(__name__)

METADATA = 3
# Topics may be named by id from this version on.
TOPIC_IDS_FROM = 12


def _topic_entry(broker: BrokerContext, mod: Any, meta: TopicMeta, ops: int) -> Any:
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
        topic_authorized_operations=ops,
    )


def _error_entry(
    mod: Any, name: str | None, topic_id: Any, code: int, ops: int = OPS_NOT_REQUESTED
) -> Any:
    return build(
        mod.MetadataResponseTopic,
        error_code=err(code),
        name=name,
        topic_id=topic_id,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=ops,
    )


class _Asker:
    """What this request's principal may see and create, each asked once."""

    def __init__(self, broker: BrokerContext, req: Request, names: list[str], listing: bool):
        self.broker, self.req = broker, req
        # Listing all topics silently leaves out the undescribable: no audit line for them.
        self.describable = allowed_names(
            broker, req, Operation.DESCRIBE, ResourceType.TOPIC, names, audit=not listing
        )
        self.want_ops = bool(getattr(req.body, "include_topic_authorized_operations", False))
        self._cluster_create: bool | None = None

    def ops(self, name: str) -> int:
        if not self.want_ops:
            return OPS_NOT_REQUESTED
        return authorized_operations(self.broker, self.req, ResourceType.TOPIC, name)

    def may_create(self, name: str) -> bool:
        if self._cluster_create is None:
            self._cluster_create = cluster_allowed(
                self.broker, self.req, Operation.CREATE, audit=False
            )
        return self._cluster_create or allowed(
            self.broker, self.req, Operation.CREATE, ResourceType.TOPIC, name
        )


def _lookup(broker: BrokerContext, mod: Any, name: str, auto_create: bool, who: _Asker) -> Any:
    """A topic the principal may describe, created when missing if allowed; as Kafka, one
    it may not create is TOPIC_AUTHORIZATION_FAILED, whether its name is valid or not."""
    meta: TopicMeta | None = broker.storage.metadata.get(name)
    if meta is not None:
        return _topic_entry(broker, mod, meta, who.ops(name))
    if auto_create and not who.may_create(name):
        return _error_entry(mod, name, None, TOPIC_AUTHORIZATION_FAILED)
    if not auto_create:
        # Kafka validates a name it does not know, creating it or not.
        try:
            validate_topic_name(name)
        except se.InvalidTopic:
            return _error_entry(mod, name, None, INVALID_TOPIC_EXCEPTION, who.ops(name))
        return _error_entry(mod, name, None, UNKNOWN_TOPIC_OR_PARTITION, who.ops(name))
    try:
        meta = broker.storage.create_topic(name, broker.settings.default_partitions, {})
    except se.TopicExists:
        meta = broker.storage.metadata.get(name)
    except se.StorageError as exc:
        return _error_entry(mod, name, None, creation_error(exc), who.ops(name))
    if meta is None:
        return _error_entry(mod, name, None, UNKNOWN_TOPIC_OR_PARTITION, who.ops(name))
    log.info("auto-created topic %s with %d partitions", name, meta.partitions)
    return _topic_entry(broker, mod, meta, who.ops(name))


def _named(
    broker: BrokerContext, mod: Any, requested: Any, auto_create: bool, req: Request
) -> list[Any]:
    """The entries of the topics a request names, by name or (v12+) by id."""
    metadata = broker.storage.metadata
    wanted: list[tuple[str | None, Any, TopicMeta | None]] = []
    # Kafka answers a topic named twice once.
    seen: set[Any] = set()
    for t in requested:
        name: str | None = getattr(t, "name", None)
        topic_id: Any = getattr(t, "topic_id", None)
        key = name if name is not None else topic_id
        if key in seen:
            continue
        seen.add(key)
        by_id = name is None and topic_id is not None and topic_id.int != 0
        wanted.append((name, topic_id, metadata.get_by_id(topic_id) if by_id else None))
    names = [n for n, _, _ in wanted if n is not None]
    names += [m.name for n, _, m in wanted if n is None and m is not None]
    who = _Asker(broker, req, names, listing=False)
    topics: list[Any] = []
    for name, topic_id, found in wanted:
        if name is None and found is not None:
            if found.name in who.describable:
                topics.append(_topic_entry(broker, mod, found, who.ops(found.name)))
            else:
                # Ids are not secret; the name of an undescribable one is.
                topics.append(_error_entry(mod, None, topic_id, TOPIC_AUTHORIZATION_FAILED))
        elif name is None and topic_id is not None and topic_id.int != 0:
            topics.append(_error_entry(mod, None, topic_id, UNKNOWN_TOPIC_ID))
        elif name is None:
            topics.append(_error_entry(mod, None, topic_id, INVALID_TOPIC_EXCEPTION))
        elif name not in who.describable:
            # Whether it exists is not disclosed: it is not even looked up.
            topics.append(_error_entry(mod, name, None, TOPIC_AUTHORIZATION_FAILED))
        else:
            topics.append(_lookup(broker, mod, name, auto_create, who))
    return topics


def _names_missing(requested: Any) -> bool:
    """Before v12 every topic is named (v10/v11 requests may leave a name null, their
    responses may not), and named only: Kafka refuses the request otherwise."""
    for t in requested:
        topic_id = getattr(t, "topic_id", None)
        if t.name is None or (topic_id is not None and topic_id.int != 0):
            return True
    return False


def _invalid(resp: type, mod: Any, requested: Any) -> Any:
    """INVALID_REQUEST for every topic, as MetadataRequest.getErrorResponse (a null name
    answered as "")."""
    topics = tuple(
        _error_entry(mod, t.name or "", getattr(t, "topic_id", None), INVALID_REQUEST)
        for t in requested
    )
    return build(
        resp,
        throttle_time=NO_THROTTLE,
        brokers=(),
        cluster_id=None,
        controller_id=-1,
        topics=topics,
        cluster_authorized_operations=OPS_NOT_REQUESTED,
        error_code=err(NONE),
    )


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
    if not all_topics and version < TOPIC_IDS_FROM and _names_missing(requested):
        return respond(req, _invalid(resp, mod, requested))
    topics: list[Any] = []
    if all_topics:
        metas = sorted(broker.storage.metadata.topics().values(), key=lambda m: m.name)
        who = _Asker(broker, req, [m.name for m in metas], listing=True)
        for meta in metas:
            if meta.name in who.describable:
                topics.append(_topic_entry(broker, mod, meta, who.ops(meta.name)))
    else:
        topics = _named(broker, mod, requested, auto_create, req)
    ep = broker.endpoint
    brokers = (build(mod.MetadataResponseBroker, node_id=ep.node_id, host=ep.host, port=ep.port),)
    out = build(
        resp,
        throttle_time=NO_THROTTLE,
        brokers=brokers,
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        topics=tuple(topics),
        # Only v8-v10 carry it; later versions ask DescribeCluster.
        cluster_authorized_operations=cluster_operations(
            broker, req, bool(getattr(body, "include_cluster_authorized_operations", False))
        ),
        error_code=err(NONE),
    )
    return respond(req, out)


APIS = [ApiSpec(METADATA, 0, 13, handle)]
