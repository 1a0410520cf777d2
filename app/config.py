"""Settings from CLI flags and CHRONIK_* environment variables (flags win).

Every setting is declared once, as a field of the frozen section its subsystem receives;
the field's metadata names its flag (``--kafka-port``, env ``CHRONIK_KAFKA_PORT``) and
help. A new setting is one field here plus the code that reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

FSYNC_MODES = ("always", "interval", "never")
MiB = 1024 * 1024


def _opt(default: Any, help: str, flag: str | None = None) -> Any:
    """A setting; `flag` when its flag is not the field's name (section fields drop the
    prefix their flag needs to be unambiguous on the command line)."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class BrokerConfig:
    """The Kafka listener, the identity Metadata advertises and what handlers decide."""

    host: str = _opt("0.0.0.0", "Kafka listen address", flag="kafka_host")
    port: int = _opt(9092, "Kafka listen port", flag="kafka_port")
    advertised_host: str = _opt("localhost", "host that Metadata tells clients")
    advertised_port: int | None = _opt(
        None, "port that Metadata tells clients (default: kafka port)"
    )
    auto_create_topics: bool = _opt(True, "create unknown topics on Metadata/Produce")
    default_partitions: int = _opt(1, "partitions of new topics")
    max_request_bytes: int = _opt(100 * MiB, "largest accepted Kafka request")
    node_id: int = _opt(1, "broker and controller id")
    transaction_max_timeout_ms: int = _opt(
        900_000, "largest transaction.timeout.ms a producer may ask for"
    )
    transaction_abort_check_ms: int = _opt(
        1000, "how often transactions older than their timeout are looked for and aborted"
    )

    @property
    def advertised_kafka_port(self) -> int:
        return self.advertised_port if self.advertised_port is not None else self.port

    def __post_init__(self) -> None:
        if self.default_partitions < 1:
            raise ValueError("default_partitions must be at least 1")
        if self.max_request_bytes < 1024:
            raise ValueError("max_request_bytes must be at least 1024")
        if self.transaction_max_timeout_ms < 1 or self.transaction_abort_check_ms < 1:
            raise ValueError(
                "transaction_max_timeout_ms and transaction_abort_check_ms must be positive"
            )


@dataclass(frozen=True)
class HttpConfig:
    host: str = _opt("0.0.0.0", "HTTP listen address", flag="http_host")
    port: int = _opt(8080, "HTTP listen port", flag="http_port")


@dataclass(frozen=True)
class LogConfig:
    """Partition logs: WAL durability, the topic defaults for segment rolls, the memory
    tail and retention."""

    fsync: str = _opt("always", "always | interval | never")
    fsync_interval_ms: int = _opt(1000, "period for fsync=interval")
    segment_bytes: int = _opt(128 * MiB, "default WAL segment size (segment.bytes)")
    segment_ms: int = _opt(7 * 24 * 3600 * 1000, "default WAL segment age (segment.ms)")
    memtail_bytes: int = _opt(64 * MiB, "memory tail budget across all partitions")
    retention_check_ms: int = _opt(30_000, "how often retention runs")

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {self.fsync!r}")


@dataclass(frozen=True)
class GroupsConfig:
    initial_rebalance_delay_ms: int = _opt(
        300,
        "wait for more members before a new group's first rebalance",
        flag="group_initial_rebalance_delay_ms",
    )
    min_session_timeout_ms: int = _opt(
        6000, "smallest session timeout a member may ask for", flag="group_min_session_timeout_ms"
    )
    max_session_timeout_ms: int = _opt(
        1_800_000,
        "largest session timeout a member may ask for",
        flag="group_max_session_timeout_ms",
    )
    offsets_retention_minutes: int = _opt(
        10080, "how long an empty group keeps its committed offsets"
    )


@dataclass(frozen=True)
class IndexConfig:
    """Indexer workers and when they seal a search segment (also the merge target)."""

    workers: int = _opt(
        1, "indexer worker processes (0: records are not indexed)", flag="index_workers"
    )
    commit_ms: int = _opt(
        1000, "longest time before indexed records are searchable", flag="index_commit_ms"
    )
    segment_max_records: int = _opt(1_000_000, "records per search segment before it is sealed")
    segment_max_bytes: int = _opt(256 * MiB, "batch bytes per search segment")
    segment_max_age_ms: int = _opt(600_000, "age at which an open search segment is sealed")

    def __post_init__(self) -> None:
        if self.workers < 0 or self.commit_ms < 10:
            raise ValueError("index_workers must be >= 0 and index_commit_ms >= 10")
        if self.segment_max_records < 1 or self.segment_max_bytes < 1:
            raise ValueError("segment_max_records and segment_max_bytes must be positive")


@dataclass(frozen=True)
class TieringConfig:
    object_store: str = _opt("", "file:///path or s3://bucket/prefix (default: data dir)")
    s3_endpoint_url: str = _opt("", "S3 API endpoint (MinIO, moto, other clouds)")
    wal_retain_ms: int = _opt(3_600_000, "keep published WAL segments locally this long")
    segment_cache_bytes: int = _opt(1024 * MiB, "local cache of sealed segments")
    interval_ms: int = _opt(
        1000, "how often uploads and WAL cleanup run", flag="tiering_interval_ms"
    )

    def __post_init__(self) -> None:
        if self.object_store and not self.object_store.startswith(("file://", "s3://")):
            raise ValueError("object_store must be file:///path or s3://bucket/prefix")


@dataclass(frozen=True)
class SearchConfig:
    workers: int = _opt(
        2, "processes that run searches over segment indexes", flag="search_workers"
    )
    timeout_ms: int = _opt(10_000, "a search taking longer answers 504", flag="search_timeout_ms")

    def __post_init__(self) -> None:
        if self.workers < 1 or self.timeout_ms < 1:
            raise ValueError("search_workers and search_timeout_ms must be positive")


@dataclass(frozen=True)
class CleanerConfig:
    """The log cleaner of compacted topics (cleanup.policy=compact)."""

    enabled: bool = _opt(
        True, "compact topics whose cleanup.policy has compact", flag="cleaner_enabled"
    )
    interval_ms: int = _opt(
        15_000, "how often partitions are checked for cleaning", flag="cleaner_interval_ms"
    )
    dedupe_buffer_bytes: int = _opt(
        128 * MiB,
        "memory of one run's key -> offset map (144 bytes per key)",
        flag="cleaner_dedupe_buffer_bytes",
    )

    def __post_init__(self) -> None:
        if self.interval_ms < 1 or self.dedupe_buffer_bytes < 144:
            raise ValueError(
                "cleaner_interval_ms must be positive, cleaner_dedupe_buffer_bytes >= 144"
            )


@dataclass(frozen=True)
class Settings:
    """The process-wide settings and one section per subsystem."""

    data_dir: Path = field(
        default=Path("./data"), metadata={"help": "where all state lives", "flag": None}
    )
    log_level: str = _opt("INFO", "logging level")
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    tiering: TieringConfig = field(default_factory=TieringConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    cleaner: CleanerConfig = field(default_factory=CleanerConfig)


@dataclass(frozen=True)
class _Flag:
    name: str  # the field's name in its section
    flag: str  # the flag's name, underscores for dashes; env CHRONIK_<FLAG>
    kind: Any
    help: str


def _flag(f: dataclasses.Field[Any], kind: Any) -> _Flag:
    return _Flag(f.name, f.metadata["flag"] or f.name, kind, f.metadata["help"])


def _flags() -> list[tuple[str | None, list[_Flag]]]:
    """Every setting by section (None: the fields of Settings itself), in declaration order."""
    top: list[_Flag] = []
    sections: list[tuple[str | None, list[_Flag]]] = [(None, top)]
    for f in fields(Settings):
        kind = get_type_hints(Settings)[f.name]
        if dataclasses.is_dataclass(kind):
            hints = get_type_hints(kind)
            sections.append((f.name, [_flag(sf, hints[sf.name]) for sf in fields(kind)]))
        else:
            top.append(_flag(f, kind))
    return sections


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _convert(kind: Any, raw: str) -> Any:
    if isinstance(kind, types.UnionType):  # `int | None`: an empty value never gets here
        kind = next(k for k in kind.__args__ if k is not type(None))
    if kind is bool:
        return _bool(raw)
    if kind is int:
        return int(raw)
    if kind is Path:
        return Path(raw)
    return raw


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="chronik", description="Kafka-compatible broker and search service"
    )
    sections = _flags()
    for section, flags in sections:
        group = parser if section is None else parser.add_argument_group(section)
        for fl in flags:
            group.add_argument(
                "--" + fl.flag.replace("_", "-"),
                dest=fl.flag,
                default=None,
                help=f"{fl.help} (env CHRONIK_{fl.flag.upper()})",
            )
    args = parser.parse_args(argv)
    values: dict[str | None, dict[str, Any]] = {section: {} for section, _ in sections}
    for section, flags in sections:
        for fl in flags:
            raw = getattr(args, fl.flag)
            if raw is None:
                raw = env.get("CHRONIK_" + fl.flag.upper())
            if raw is None or raw == "":
                continue
            try:
                values[section][fl.name] = _convert(fl.kind, raw)
            except ValueError as exc:
                parser.error(f"invalid value for {fl.flag}: {exc}")
    hints = get_type_hints(Settings)
    try:
        built = {s: hints[s](**v) for s, v in values.items() if s is not None}
        return Settings(**values[None], **built)
    except ValueError as exc:
        parser.error(str(exc))
