"""DescribeConfigs v1-v4, AlterConfigs v0-v2 and IncrementalAlterConfigs v0-v1.

Topic configs are read and changed; broker configs are described (the defaults tools
ask for) but read-only, because they come from command-line flags.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...security.acl import Operation, ResourceType
from ...storage import errors as se
from ...storage import topicconfig, validate_topic_name
from ..authz import allowed, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    INVALID_CONFIG,
    INVALID_REQUEST,
    INVALID_TOPIC_EXCEPTION,
    NONE,
    TOPIC_AUTHORIZATION_FAILED,
    UNKNOWN_TOPIC_OR_PARTITION,
    code_for,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

log = logging.getLogger(__name__)

DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
INCREMENTAL_ALTER_CONFIGS = 44

TOPIC = 2
BROKER = 4
BROKER_LOGGER = 8

# Kafka's ConfigSource ids.
DYNAMIC_TOPIC_CONFIG = 1
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5

# Kafka's ConfigType ids (DescribeConfigs v3+).
CONFIG_TYPES = {"boolean": 1, "string": 2, "int": 3, "short": 4, "long": 5, "double": 6, "list": 7}

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3

# The broker config each topic config falls back to, which Kafka lists as its synonym.
BROKER_NAME = {
    "cleanup.policy": "log.cleanup.policy",
    "compression.type": "compression.type",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "min.insync.replicas": "min.insync.replicas",
    "retention.bytes": "log.retention.bytes",
    "retention.ms": "log.retention.ms",
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
}

DOCS = {
    "cleanup.policy": "delete: old segments are deleted by retention. compact: the log "
    "cleaner keeps the latest record per key in sealed search segments (records without a "
    "key are refused); both may be set.",
    "compression.type": "Stored batches are kept as the producer compressed them.",
    "delete.retention.ms": "How long the cleaner keeps a tombstone (null value) after the "
    "run that first kept it (its delete horizon), so consumers see the delete.",
    "max.compaction.lag.ms": "A partition holding dirty data older than this is cleaned "
    "whatever its dirty ratio.",
    "max.message.bytes": "Largest record batch a producer may send to this topic.",
    "message.timestamp.after.max.ms": "How far a CreateTime may be ahead of the broker's "
    "clock; a record further ahead fails its batch with INVALID_TIMESTAMP.",
    "message.timestamp.before.max.ms": "How far a CreateTime may be behind the broker's "
    "clock; an older record fails its batch with INVALID_TIMESTAMP.",
    "message.timestamp.difference.max.ms": "Deprecated: both bounds at once, used where "
    "message.timestamp.before/after.max.ms are not set.",
    "message.timestamp.type": "CreateTime keeps the producer's timestamps; LogAppendTime "
    "stamps batches with the broker's time.",
    "min.cleanable.dirty.ratio": "A partition is cleaned once this share of its cleanable "
    "bytes is dirty (not yet cleaned).",
    "min.compaction.lag.ms": "Records younger than this are not cleaned.",
    "min.insync.replicas": "Single-node broker: every write is in sync on one replica.",
    "retention.bytes": "Oldest segments are deleted while a partition is larger (-1: no limit).",
    "retention.ms": "Segments whose newest record is older are deleted (-1: no limit).",
    "segment.bytes": "Size at which a partition's active log segment is rolled.",
    "segment.ms": "Age at which a partition's active log segment is rolled; on compacted "
    "topics also the age at which the open search segment is sealed (and so cleanable), if "
    "less than the indexer's.",
}
INERT_DOC = "Accepted and stored for compatibility; this broker does not act on it."
DEPRECATED_DOC = "Deprecated in Kafka 3.x, which ignores it; accepted, stored and ignored."


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    value: str | None
    source: int
    kind: str
    read_only: bool
    synonyms: tuple[tuple[str, str | None, int], ...]
    doc: str | None


def _default_source(key: str, value: str) -> int:
    """A default the broker's flags changed is a static broker config, as in Kafka."""
    if topicconfig.KAFKA_DEFAULTS.get(key) == value:
        return DEFAULT_CONFIG
    return STATIC_BROKER_CONFIG


def topic_entries(broker: BrokerContext, overrides: dict[str, str]) -> list[Entry]:
    defaults = broker.storage.metadata.default_topic_configs()
    out = []
    for key in sorted({**defaults, **overrides}):
        synonyms: list[tuple[str, str | None, int]] = []
        if key in overrides:
            synonyms.append((key, overrides[key], DYNAMIC_TOPIC_CONFIG))
        if key in defaults:
            synonyms.append(
                (BROKER_NAME.get(key, key), defaults[key], _default_source(key, defaults[key]))
            )
        value, source = synonyms[0][1], synonyms[0][2]
        if topicconfig.is_deprecated(key):
            doc: str | None = DEPRECATED_DOC
        else:
            doc = INERT_DOC if topicconfig.is_inert(key) else DOCS.get(key)
        kind = topicconfig.value_type(key) or "string"
        out.append(Entry(key, value, source, kind, False, tuple(synonyms), doc))
    return out


def broker_entries(broker: BrokerContext) -> list[Entry]:
    s = broker.settings
    defaults = broker.storage.metadata.default_topic_configs()
    rows: list[tuple[str, str, int, str]] = [
        (BROKER_NAME[k], v, _default_source(k, v), topicconfig.value_type(k) or "string")
        for k, v in defaults.items()
        if k in BROKER_NAME
    ]
    static = STATIC_BROKER_CONFIG
    rows += [
        ("auto.create.topics.enable", str(s.auto_create_topics).lower(), static, "boolean"),
        ("broker.id", str(broker.node_id), static, "int"),
        ("node.id", str(broker.node_id), static, "int"),
        ("num.partitions", str(s.default_partitions), static, "int"),
        ("log.dirs", str(broker.storage.logs_dir.resolve()), static, "string"),
        ("default.replication.factor", "1", DEFAULT_CONFIG, "int"),
        ("delete.topic.enable", "true", DEFAULT_CONFIG, "boolean"),
        ("offsets.retention.minutes", "10080", DEFAULT_CONFIG, "int"),
        ("offsets.topic.replication.factor", "1", DEFAULT_CONFIG, "short"),
        ("transaction.state.log.replication.factor", "1", DEFAULT_CONFIG, "short"),
    ]
    return [
        Entry(name, value, source, kind, True, ((name, value, source),), None)
        for name, value, source, kind in sorted(rows)
    ]


def _broker_name_ok(broker: BrokerContext, name: str) -> bool:
    # An empty name addresses the cluster-wide broker defaults, which are this broker's.
    return name in ("", str(broker.node_id))


def denial(
    broker: BrokerContext, req: Request, op: Operation, rtype: int, name: str
) -> tuple[int, str] | None:
    """Why the principal may not `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) the configs of a
    resource: a topic's are the topic's, a broker's the cluster's (Kafka's ConfigHelper and
    ControllerApis.authorizeAlterResource). Types this broker does not serve are refused
    later, whoever asks."""
    if rtype == TOPIC and not allowed(broker, req, op, ResourceType.TOPIC, name):
        return TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed."
    if rtype in (BROKER, BROKER_LOGGER) and not cluster_allowed(broker, req, op):
        return CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed."
    return None


def _describe_one(
    broker: BrokerContext, req: Request, mod: Any, res: Any, synonyms: bool, docs: bool
) -> Any:
    rtype, name = int(res.resource_type), res.resource_name
    code, message = NONE, None
    entries: list[Entry] = []
    refused = denial(broker, req, Operation.DESCRIBE_CONFIGS, rtype, name)
    if refused is not None:
        code, message = refused
    elif rtype == TOPIC:
        meta = broker.storage.metadata.get(name)
        if meta is not None:
            entries = topic_entries(broker, meta.configs)
        else:
            code, message = UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist"
            try:
                validate_topic_name(name)
            except se.InvalidTopic as exc:
                code, message = INVALID_TOPIC_EXCEPTION, str(exc)
    elif rtype == BROKER:
        if _broker_name_ok(broker, name):
            entries = broker_entries(broker)
        else:
            code, message = INVALID_REQUEST, f"this is broker {broker.node_id}, not {name!r}"
    else:
        code, message = INVALID_REQUEST, f"config resource type {rtype} is not supported"
    keys = res.configuration_keys
    if keys:
        wanted = set(keys)
        entries = [e for e in entries if e.name in wanted]
    configs = tuple(
        build(
            mod.DescribeConfigsResourceResult,
            name=e.name,
            value=e.value,
            read_only=e.read_only,
            config_source=e.source,
            is_sensitive=False,
            synonyms=tuple(
                build(mod.DescribeConfigsSynonym, name=n, value=v, source=src)
                for n, v, src in (e.synonyms if synonyms else ())
            ),
            config_type=CONFIG_TYPES.get(e.kind, 0),
            documentation=e.doc if docs else None,
        )
        for e in entries
    )
    return build(
        mod.DescribeConfigsResult,
        error_code=err(code),
        error_message=message,
        resource_type=rtype,
        resource_name=name,
        configs=configs,
    )


async def describe_configs(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    body = req.body
    synonyms = bool(getattr(body, "include_synonyms", False))
    docs = bool(getattr(body, "include_documentation", False))
    results = tuple(_describe_one(broker, req, mod, r, synonyms, docs) for r in body.resources)
    return respond(req, build(resp, throttle_time=NO_THROTTLE, results=results))


class Rejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unique(names: Iterable[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise Rejected(INVALID_REQUEST, f"config {n!r} is listed twice")
        seen.add(n)


def _replacement(configs: Iterable[Any]) -> dict[str, str | None]:
    """AlterConfigs: the given set becomes the whole set of overrides."""
    out: dict[str, str | None] = {}
    for c in configs:
        if c.value is None:
            raise Rejected(INVALID_CONFIG, f"null value is not supported for config {c.name!r}")
        out[c.name] = c.value
    return out


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _incremental(
    overrides: dict[str, str], defaults: dict[str, str], configs: Iterable[Any]
) -> dict[str, str | None]:
    """IncrementalAlterConfigs: the current overrides with each operation applied. APPEND and
    SUBTRACT start from the effective value, so appending to a default keeps the default."""
    out: dict[str, str | None] = dict(overrides)
    for c in configs:
        op, key, value = int(c.config_operation), c.name, c.value
        if topicconfig.value_type(key) is None:
            raise Rejected(INVALID_CONFIG, f"unknown topic config {key!r}")
        if op == DELETE:
            out.pop(key, None)
            continue
        if op not in (SET, APPEND, SUBTRACT):
            raise Rejected(INVALID_REQUEST, f"unknown config operation {op} for {key!r}")
        if value is None:
            raise Rejected(INVALID_CONFIG, f"null value is not supported for config {key!r}")
        if op == SET:
            out[key] = value
            continue
        if topicconfig.value_type(key) != "list":
            verb = "append to" if op == APPEND else "subtract from"
            raise Rejected(INVALID_CONFIG, f"cannot {verb} config {key!r}: it is not a list")
        current = _split(out.get(key) or defaults.get(key, ""))
        given = _split(value)
        if op == APPEND:
            items = current + [v for v in given if v not in current]
        else:
            items = [v for v in current if v not in given]
        out[key] = ",".join(items)
    return out


def _alter_topic(
    broker: BrokerContext,
    name: str,
    configs: tuple[Any, ...],
    incremental: bool,
    validate_only: bool,
) -> None:
    meta = broker.storage.metadata.get(name)
    if meta is None:
        raise Rejected(UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist")
    _unique(c.name for c in configs)
    if incremental:
        defaults = broker.storage.metadata.default_topic_configs()
        wanted = _incremental(meta.configs, defaults, configs)
    else:
        wanted = _replacement(configs)
    if validate_only:
        broker.storage.metadata.validate_topic_configs(wanted)
        return
    new = broker.storage.set_topic_configs(name, wanted)
    log.info("topic %s configs now %s", name, new.configs or "all defaults")


def _alter_one(
    broker: BrokerContext,
    req: Request,
    mod: Any,
    res: Any,
    incremental: bool,
    repeated: bool,
) -> Any:
    rtype, name = int(res.resource_type), res.resource_name
    validate_only = bool(req.body.validate_only)
    code, message = NONE, None
    try:
        if repeated:
            raise Rejected(INVALID_REQUEST, "resource listed twice in one request")
        refused = denial(broker, req, Operation.ALTER_CONFIGS, rtype, name)
        if refused is not None:
            raise Rejected(*refused)
        if rtype == TOPIC:
            _alter_topic(broker, name, tuple(res.configs), incremental, validate_only)
        elif rtype == BROKER:
            if not _broker_name_ok(broker, name):
                raise Rejected(INVALID_REQUEST, f"this is broker {broker.node_id}, not {name!r}")
            if res.configs:
                raise Rejected(
                    INVALID_REQUEST,
                    "broker configs are read-only: set them with chronik's command-line flags "
                    f"({', '.join(c.name for c in res.configs)})",
                )
        else:
            raise Rejected(INVALID_REQUEST, f"config resource type {rtype} is not supported")
    except Rejected as exc:
        code, message = exc.code, str(exc)
    except se.StorageError as exc:
        code, message = code_for(exc), str(exc)
        if code == -1:
            code = INVALID_REQUEST
    return build(
        mod.AlterConfigsResourceResponse,
        error_code=err(code),
        error_message=message,
        resource_type=rtype,
        resource_name=name,
    )


def _alter(broker: BrokerContext, req: Request, incremental: bool) -> Frame:
    resp, mod = response_classes(req)
    keys = [(int(r.resource_type), r.resource_name) for r in req.body.resources]
    responses = tuple(
        _alter_one(broker, req, mod, r, incremental, keys.count(k) > 1)
        for r, k in zip(req.body.resources, keys, strict=True)
    )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, responses=responses))


async def alter_configs(broker: BrokerContext, req: Request) -> Frame:
    return _alter(broker, req, incremental=False)


async def incremental_alter_configs(broker: BrokerContext, req: Request) -> Frame:
    return _alter(broker, req, incremental=True)


APIS = [
    ApiSpec(DESCRIBE_CONFIGS, 1, 4, describe_configs),
    ApiSpec(ALTER_CONFIGS, 0, 2, alter_configs),
    ApiSpec(INCREMENTAL_ALTER_CONFIGS, 0, 1, incremental_alter_configs),
]
