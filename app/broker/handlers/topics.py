"""CreateTopics v2-v7 and DeleteTopics v1-v6."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ...security.acl import Operation, ResourceType
from ...storage import PartitionLimit, metadata
from ...storage import errors as se
from ..authz import allowed_names, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    INVALID_PARTITIONS,
    INVALID_REPLICA_ASSIGNMENT,
    INVALID_REPLICATION_FACTOR,
    INVALID_REQUEST,
    NONE,
    POLICY_VIOLATION,
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_SERVER_ERROR,
    UNKNOWN_TOPIC_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
    code_for,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, has_field, respond, response_classes

log = logging.getLogger(__name__)

CREATE_TOPICS = 19
DELETE_TOPICS = 20
# DescribeConfigs config source for a topic-level override / broker default.
SOURCE_TOPIC = 1
SOURCE_DEFAULT = 5


@dataclass
class RequestError(Exception):
    """A request entry Kafka rejects before storage sees it."""

    code: int
    message: str


def creation_error(exc: se.StorageError) -> int:
    """The Kafka code for a topic or partition that could not be created."""
    if isinstance(exc, PartitionLimit):
        return POLICY_VIOLATION
    code = code_for(exc)
    return code if code != UNKNOWN_SERVER_ERROR else INVALID_REQUEST


def _check_assignments(broker: BrokerContext, t: Any) -> int:
    """The partition count of explicit assignments, checked as KRaft's
    ReplicationControlManager.createTopic checks them; raises RequestError."""
    if int(t.replication_factor) != -1 or int(t.num_partitions) != -1:
        raise RequestError(
            INVALID_REQUEST,
            "a manual partition assignment was given, so num_partitions and "
            "replication_factor must be -1",
        )
    indexes = set()
    for a in t.assignments:
        if a.partition_index in indexes:
            raise RequestError(
                INVALID_REPLICA_ASSIGNMENT,
                f"partition {a.partition_index} is assigned more than once",
            )
        indexes.add(a.partition_index)
        if tuple(a.broker_ids) != (broker.node_id,):
            raise RequestError(
                INVALID_REPLICA_ASSIGNMENT,
                f"replica assignment {list(a.broker_ids)} of partition {a.partition_index} is "
                f"not possible: this cluster has one broker ({broker.node_id})",
            )
    if indexes != set(range(len(indexes))):
        raise RequestError(
            INVALID_REPLICA_ASSIGNMENT, "partitions should be a consecutive 0-based sequence"
        )
    return len(indexes)


def _partition_count(broker: BrokerContext, t: Any) -> int:
    if t.assignments:
        return _check_assignments(broker, t)
    rf = int(t.replication_factor)
    if rf < -1 or rf == 0:
        raise RequestError(
            INVALID_REPLICATION_FACTOR,
            "replication factor must be larger than 0, or -1 to use the default value",
        )
    metadata.validate_replication_factor(rf)
    partitions = int(t.num_partitions)
    if partitions == -1:
        return broker.settings.default_partitions
    if partitions < 1:
        raise RequestError(
            INVALID_PARTITIONS, f"number of partitions must be at least 1, not {partitions}"
        )
    return partitions


def _create_one(
    broker: BrokerContext, mod: Any, t: Any, validate_only: bool, describable: bool
) -> Any:
    result: dict[str, Any] = {
        "name": t.name,
        "topic_id": None,
        "error_code": err(NONE),
        "error_message": None,
        "num_partitions": -1,
        "replication_factor": -1,
        "configs": None,
    }
    try:
        partitions = _partition_count(broker, t)
        configs: dict[str, str] = {}
        for c in t.configs:
            if c.value is None:
                raise se.InvalidConfig(c.name, f"config {c.name} has a null value")
            configs[c.name] = c.value
        meta = broker.storage.create_topic(t.name, partitions, configs, validate_only=validate_only)
    except RequestError as exc:
        result["error_code"] = err(exc.code)
        result["error_message"] = exc.message
        return build(mod.CreatableTopicResult, **result)
    except se.StorageError as exc:
        result["error_code"] = err(creation_error(exc))
        result["error_message"] = str(exc)
        return build(mod.CreatableTopicResult, **result)
    if not validate_only:
        log.info("created topic %s with %d partitions", meta.name, meta.partitions)
    if not describable:
        # Kafka returns configs, partitions and replication factor only with DESCRIBE_CONFIGS.
        result.update(
            topic_id=None if validate_only else meta.topic_id,
            configs=(),
            topic_config_error_code=TOPIC_AUTHORIZATION_FAILED,
        )
        return build(mod.CreatableTopicResult, **result)
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


async def create_topics(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    validate_only = bool(getattr(req.body, "validate_only", False))
    # Kafka creates none of the entries of a name listed twice.
    counts = Counter(t.name for t in req.body.topics)
    unique = [n for n, c in counts.items() if c == 1]
    if cluster_allowed(broker, req, Operation.CREATE, audit=False):
        creatable = set(unique)
    else:
        creatable = allowed_names(broker, req, Operation.CREATE, ResourceType.TOPIC, unique)
    describable = allowed_names(
        broker, req, Operation.DESCRIBE_CONFIGS, ResourceType.TOPIC, unique, audit=False
    )
    results = []
    for t in req.body.topics:
        if counts[t.name] > 1 or t.name not in creatable:
            twice = counts[t.name] > 1
            results.append(
                build(
                    mod.CreatableTopicResult,
                    name=t.name,
                    topic_id=None,
                    error_code=err(INVALID_REQUEST if twice else TOPIC_AUTHORIZATION_FAILED),
                    error_message="topic listed twice in one request"
                    if twice
                    else "Authorization failed.",
                    configs=None,
                )
            )
            continue
        results.append(_create_one(broker, mod, t, validate_only, t.name in describable))
    return respond(req, build(resp, throttle_time=NO_THROTTLE, topics=tuple(results)))


def _deletion_key(name: str | None, topic_id: Any) -> tuple[str, Any] | str:
    """("name", n) or ("id", i) for a topic to delete, or the message of an entry that
    names neither or both (as KRaft's ControllerApis.deleteTopics)."""
    has_id = topic_id is not None and topic_id.int != 0
    if name is None and not has_id:
        return "neither topic name nor id were specified"
    if name is not None and has_id:
        return "you may not specify both topic name and topic id"
    return ("id", topic_id) if has_id else ("name", name)


@dataclass(frozen=True)
class _Grants:
    """The topics a DeleteTopics request may see and delete (all with DELETE on the cluster)."""

    describable: set[str]
    deletable: set[str]


def _grants(broker: BrokerContext, req: Request, keys: list[Any]) -> _Grants:
    names: set[str] = set()
    for key in keys:
        if key[0] == "name":
            names.add(key[1])
        elif (meta := broker.storage.metadata.get_by_id(key[1])) is not None:
            names.add(meta.name)
    if cluster_allowed(broker, req, Operation.DELETE, audit=False):
        return _Grants(names, names)
    return _Grants(
        allowed_names(broker, req, Operation.DESCRIBE, ResourceType.TOPIC, names),
        allowed_names(broker, req, Operation.DELETE, ResourceType.TOPIC, names),
    )


def _delete_one(
    broker: BrokerContext, key: tuple[str, Any], grants: _Grants
) -> tuple[Any, int, str | None]:
    """(meta or None, error code, message) after deleting one topic. As KRaft's
    ControllerApis.deleteTopics, a name the principal may not describe is refused before
    looking it up, and the name of an id is not revealed to one who may not describe it."""
    kind, value = key
    refused = TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed."
    if kind == "id":
        meta, missing = broker.storage.metadata.get_by_id(value), UNKNOWN_TOPIC_ID
        if meta is not None and meta.name not in grants.deletable:
            return (meta if meta.name in grants.describable else None), *refused
    else:
        if value not in grants.describable:
            return None, *refused
        meta, missing = broker.storage.metadata.get(value), UNKNOWN_TOPIC_OR_PARTITION
        if meta is not None and value not in grants.deletable:
            return None, *refused
    if meta is None:
        return None, missing, "topic does not exist"
    broker.storage.delete_topic(meta.name)
    broker.groups.store.delete_topic(meta.name)
    log.info("deleted topic %s", meta.name)
    return meta, NONE, None


async def delete_topics(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    body = req.body
    wanted: list[tuple[str | None, Any]] = []
    if hasattr(body, "topics"):
        wanted = [(t.name, t.topic_id) for t in body.topics]
    else:
        wanted = [(name, None) for name in body.topic_names]
    keys = [_deletion_key(name, topic_id) for name, topic_id in wanted]
    # A topic named twice is not deleted, and answered once.
    counts = Counter(k for k in keys if not isinstance(k, str))
    grants = _grants(broker, req, [k for k, n in counts.items() if n == 1])
    answered: set[Any] = set()
    results = []
    for (name, topic_id), key in zip(wanted, keys, strict=True):
        meta = None
        message: str | None
        if isinstance(key, str):
            code, message = INVALID_REQUEST, key
        elif counts[key] > 1:
            if key in answered:
                continue
            answered.add(key)
            code, message = INVALID_REQUEST, f"duplicate topic {key[0]}"
        else:
            meta, code, message = _delete_one(broker, key, grants)
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
