"""Topic configs: Kafka's defaults, validation of overrides, and the parsed view a
PartitionLog works from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from app.storage.errors import InvalidConfig

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1
DEFAULT_MAX_MESSAGE_BYTES = 1048588

KAFKA_DEFAULTS: dict[str, str] = {
    "cleanup.policy": "delete",
    "compression.type": "producer",
    "delete.retention.ms": "86400000",
    "max.compaction.lag.ms": str(LONG_MAX),
    "max.message.bytes": str(DEFAULT_MAX_MESSAGE_BYTES),
    "message.timestamp.type": "CreateTime",
    "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "1",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
}

_Rule = tuple[str, object, object]

# (kind, low/choices, high). Ranges follow Kafka's TopicConfig validators.
_RULES: dict[str, _Rule] = {
    "cleanup.policy": ("list", ("delete", "compact"), None),
    "compression.type": (
        "enum",
        ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
        None,
    ),
    "delete.retention.ms": ("int", 0, LONG_MAX),
    "max.compaction.lag.ms": ("int", 1, LONG_MAX),
    "max.message.bytes": ("int", 0, INT_MAX),
    "message.timestamp.after.max.ms": ("int", 0, LONG_MAX),
    "message.timestamp.before.max.ms": ("int", 0, LONG_MAX),
    "message.timestamp.difference.max.ms": ("int", 0, LONG_MAX),
    "message.timestamp.type": ("enum", ("CreateTime", "LogAppendTime"), None),
    "min.cleanable.dirty.ratio": ("float", 0.0, 1.0),
    "min.compaction.lag.ms": ("int", 0, LONG_MAX),
    "min.insync.replicas": ("int", 1, INT_MAX),
    "retention.bytes": ("int", -1, LONG_MAX),
    "retention.ms": ("int", -1, LONG_MAX),
    "segment.bytes": ("int", 14, INT_MAX),
    "segment.ms": ("int", 1, LONG_MAX),
}

# Kafka topic configs that tools and clients commonly set. They are validated and stored (so
# DescribeConfigs shows them) but have no effect here: a broker that rejected them would
# break topic creation for those clients.
_INERT_RULES: dict[str, _Rule] = {
    "file.delete.delay.ms": ("int", 0, LONG_MAX),
    "flush.messages": ("int", 1, LONG_MAX),
    "flush.ms": ("int", 0, LONG_MAX),
    "index.interval.bytes": ("int", 0, INT_MAX),
    "local.retention.bytes": ("int", -2, LONG_MAX),
    "local.retention.ms": ("int", -2, LONG_MAX),
    "message.downconversion.enable": ("enum", ("true", "false"), None),
    "preallocate": ("enum", ("true", "false"), None),
    "remote.storage.enable": ("enum", ("true", "false"), None),
    "segment.index.bytes": ("int", 4, INT_MAX),
    "segment.jitter.ms": ("int", 0, LONG_MAX),
    "unclean.leader.election.enable": ("enum", ("true", "false"), None),
    # Replication throttles, set by kafka-reassign-partitions: "*" or partition:broker pairs.
    "follower.replication.throttled.replicas": ("pattern", r"\*|(\d+:\d+(,\d+:\d+)*)?", None),
    "leader.replication.throttled.replicas": ("pattern", r"\*|(\d+:\d+(,\d+:\d+)*)?", None),
}

# Deprecated in Kafka 3.x but still accepted there (and ignored): tools and old clients set
# them, so rejecting them would fail those clients' topic creation and config changes.
_DEPRECATED_RULES: dict[str, _Rule] = {
    # A Kafka version, as Kafka's MetadataVersion accepts it: 0.10.2, 2.8, 3.0-IV1.
    "message.format.version": ("pattern", r"\d+\.\d+(\.\d+)?(-IV\d+)?", None),
}
_INERT_RULES.update(_DEPRECATED_RULES)


def default_topic_configs(
    segment_bytes: int | None = None, segment_ms: int | None = None
) -> dict[str, str]:
    """Kafka's topic defaults, with the broker's own segment size/age when given."""
    out = dict(KAFKA_DEFAULTS)
    if segment_bytes is not None:
        out["segment.bytes"] = str(segment_bytes)
    if segment_ms is not None:
        out["segment.ms"] = str(segment_ms)
    return out


def _check(key: str, value: str, rule: _Rule) -> str:
    kind, low, high = rule
    if kind in ("int", "float"):
        try:
            number: float = int(value) if kind == "int" else float(value)
        except ValueError:
            raise InvalidConfig(key, f"invalid value {value!r} for {key}: not a number") from None
        assert isinstance(low, int | float) and isinstance(high, int | float)
        if not low <= number <= high:
            raise InvalidConfig(
                key, f"invalid value {value!r} for {key}: must be between {low} and {high}"
            )
        return str(number)
    if kind == "pattern":
        assert isinstance(low, str)
        if not re.fullmatch(low, value):
            raise InvalidConfig(key, f"invalid value {value!r} for {key}")
        return value
    assert isinstance(low, tuple)
    if kind == "enum":
        if value not in low:
            raise InvalidConfig(
                key, f"invalid value {value!r} for {key}: must be one of {', '.join(low)}"
            )
        return value
    items = [v.strip() for v in value.split(",")]
    if not items or any(v not in low for v in items):
        raise InvalidConfig(key, f"invalid value {value!r} for {key}: a list of {', '.join(low)}")
    return ",".join(dict.fromkeys(items))


def value_type(key: str) -> str | None:
    """Kafka's ConfigDef type of a topic config ("int", "long", "double", "boolean",
    "string" or "list"), which DescribeConfigs reports; None for an unknown key."""
    rule = _RULES.get(key) or _INERT_RULES.get(key)
    if rule is None:
        return None
    kind, low, high = rule
    if kind == "int":
        return "int" if high == INT_MAX else "long"
    if kind == "float":
        return "double"
    if kind == "enum":
        return "boolean" if low == ("true", "false") else "string"
    if kind == "pattern":
        return "list" if key.endswith(".replicas") else "string"
    return "list"


def is_deprecated(key: str) -> bool:
    return key in _DEPRECATED_RULES


def is_inert(key: str) -> bool:
    """A config that is accepted and stored but does not change what the broker does."""
    return key in _INERT_RULES


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Checked and normalised overrides. A None value means "use the default" and is dropped;
    an unknown key or a bad value raises InvalidConfig naming the key."""
    out: dict[str, str] = {}
    for key, value in configs.items():
        rule = _RULES.get(key) or _INERT_RULES.get(key)
        if rule is None:
            raise InvalidConfig(key, f"unknown topic config {key!r}")
        if value is None:
            continue
        out[key] = _check(key, str(value).strip(), rule)
    return out


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The configs a PartitionLog acts on, parsed once per change."""

    segment_bytes: int = int(KAFKA_DEFAULTS["segment.bytes"])
    segment_ms: int = int(KAFKA_DEFAULTS["segment.ms"])
    retention_ms: int = int(KAFKA_DEFAULTS["retention.ms"])
    retention_bytes: int = -1
    log_append_time: bool = False
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    delete_enabled: bool = True
    compact: bool = False
    # The log cleaner's (clean/cleaner.py).
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = LONG_MAX
    delete_retention_ms: int = int(KAFKA_DEFAULTS["delete.retention.ms"])
    # How far a CreateTime may lie behind / ahead of the broker's clock (LONG_MAX: no limit).
    timestamp_before_max_ms: int = LONG_MAX
    timestamp_after_max_ms: int = LONG_MAX

    @classmethod
    def from_configs(cls, configs: Mapping[str, str]) -> LogConfig:
        merged = {**KAFKA_DEFAULTS, **configs}
        return cls(
            segment_bytes=int(merged["segment.bytes"]),
            segment_ms=int(merged["segment.ms"]),
            retention_ms=int(merged["retention.ms"]),
            retention_bytes=int(merged["retention.bytes"]),
            log_append_time=merged["message.timestamp.type"] == "LogAppendTime",
            max_message_bytes=int(merged["max.message.bytes"]),
            delete_enabled="delete" in merged["cleanup.policy"].split(","),
            compact="compact" in merged["cleanup.policy"].split(","),
            min_cleanable_dirty_ratio=float(merged["min.cleanable.dirty.ratio"]),
            min_compaction_lag_ms=int(merged["min.compaction.lag.ms"]),
            max_compaction_lag_ms=int(merged["max.compaction.lag.ms"]),
            delete_retention_ms=int(merged["delete.retention.ms"]),
            timestamp_before_max_ms=_timestamp_bound(merged, "before"),
            timestamp_after_max_ms=_timestamp_bound(merged, "after"),
        )


def _timestamp_bound(configs: Mapping[str, str], side: str) -> int:
    """Kafka's LogConfig: before/after.max.ms when set, else the deprecated
    message.timestamp.difference.max.ms, which bounded both sides."""
    own = configs.get(f"message.timestamp.{side}.max.ms")
    if own is not None and int(own) != LONG_MAX:
        return int(own)
    return int(configs.get("message.timestamp.difference.max.ms", LONG_MAX))
