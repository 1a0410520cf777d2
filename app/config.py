"""Settings from CLI flags and CHRONIK_* environment variables (flags win)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

FSYNC_MODES = ("always", "interval", "never")


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass
class Settings:
    data_dir: Path = field(default=Path("./data"), metadata={"help": "where all state lives"})
    kafka_host: str = field(default="0.0.0.0", metadata={"help": "Kafka listen address"})
    kafka_port: int = field(default=9092, metadata={"help": "Kafka listen port"})
    advertised_host: str = field(
        default="localhost", metadata={"help": "host that Metadata tells clients"}
    )
    advertised_port: int | None = field(
        default=None, metadata={"help": "port that Metadata tells clients (default: kafka port)"}
    )
    http_host: str = field(default="0.0.0.0", metadata={"help": "HTTP listen address"})
    http_port: int = field(default=8080, metadata={"help": "HTTP listen port"})
    log_level: str = field(default="INFO", metadata={"help": "logging level"})
    auto_create_topics: bool = field(
        default=True, metadata={"help": "create unknown topics on Metadata/Produce"}
    )
    default_partitions: int = field(default=1, metadata={"help": "partitions of new topics"})
    fsync: str = field(default="always", metadata={"help": "always | interval | never"})
    fsync_interval_ms: int = field(default=1000, metadata={"help": "period for fsync=interval"})
    max_request_bytes: int = field(
        default=100 * 1024 * 1024, metadata={"help": "largest accepted Kafka request"}
    )
    segment_bytes: int = field(
        default=128 * 1024 * 1024, metadata={"help": "default WAL segment size (segment.bytes)"}
    )
    segment_ms: int = field(
        default=7 * 24 * 3600 * 1000, metadata={"help": "default WAL segment age (segment.ms)"}
    )
    memtail_bytes: int = field(
        default=64 * 1024 * 1024, metadata={"help": "memory tail budget across all partitions"}
    )
    retention_check_ms: int = field(default=30_000, metadata={"help": "how often retention runs"})
    node_id: int = field(default=1, metadata={"help": "broker and controller id"})
    group_initial_rebalance_delay_ms: int = field(
        default=300, metadata={"help": "wait for more members before a new group's first rebalance"}
    )
    group_min_session_timeout_ms: int = field(
        default=6000, metadata={"help": "smallest session timeout a member may ask for"}
    )
    group_max_session_timeout_ms: int = field(
        default=1_800_000, metadata={"help": "largest session timeout a member may ask for"}
    )
    index_workers: int = field(
        default=1, metadata={"help": "indexer worker processes (0: records are not indexed)"}
    )
    index_commit_ms: int = field(
        default=1000, metadata={"help": "longest time before indexed records are searchable"}
    )
    segment_max_records: int = field(
        default=1_000_000, metadata={"help": "records per search segment before it is sealed"}
    )
    segment_max_bytes: int = field(
        default=256 * 1024 * 1024, metadata={"help": "batch bytes per search segment"}
    )
    segment_max_age_ms: int = field(
        default=600_000, metadata={"help": "age at which an open search segment is sealed"}
    )
    object_store: str = field(
        default="", metadata={"help": "file:///path or s3://bucket/prefix (default: data dir)"}
    )
    s3_endpoint_url: str = field(
        default="", metadata={"help": "S3 API endpoint (MinIO, moto, other clouds)"}
    )
    wal_retain_ms: int = field(
        default=3_600_000, metadata={"help": "keep published WAL segments locally this long"}
    )
    segment_cache_bytes: int = field(
        default=1024 * 1024 * 1024, metadata={"help": "local cache of sealed segments"}
    )
    tiering_interval_ms: int = field(
        default=1000, metadata={"help": "how often uploads and WAL cleanup run"}
    )
    search_workers: int = field(
        default=2, metadata={"help": "processes that run searches over segment indexes"}
    )
    search_timeout_ms: int = field(
        default=10_000, metadata={"help": "a search taking longer answers 504"}
    )
    offsets_retention_minutes: int = field(
        default=10080, metadata={"help": "how long an empty group keeps its committed offsets"}
    )

    @property
    def advertised_kafka_port(self) -> int:
        return self.advertised_port if self.advertised_port is not None else self.kafka_port

    def validate(self) -> None:
        if self.fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {self.fsync!r}")
        if self.default_partitions < 1:
            raise ValueError("default_partitions must be at least 1")
        if self.search_workers < 1 or self.search_timeout_ms < 1:
            raise ValueError("search_workers and search_timeout_ms must be positive")
        if self.index_workers < 0 or self.index_commit_ms < 10:
            raise ValueError("index_workers must be >= 0 and index_commit_ms >= 10")
        if self.segment_max_records < 1 or self.segment_max_bytes < 1:
            raise ValueError("segment_max_records and segment_max_bytes must be positive")
        if self.object_store and not self.object_store.startswith(("file://", "s3://")):
            raise ValueError("object_store must be file:///path or s3://bucket/prefix")
        if self.max_request_bytes < 1024:
            raise ValueError("max_request_bytes must be at least 1024")


def _convert(name: str, raw: str) -> Any:
    f = next(f for f in fields(Settings) if f.name == name)
    kind = str(f.type)
    if "bool" in kind:
        return _bool(raw)
    if "int" in kind:
        return int(raw)
    if "Path" in kind:
        return Path(raw)
    return raw


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="chronik", description="Kafka-compatible broker and search service"
    )
    for f in fields(Settings):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=f"{f.metadata.get('help', '')} (env CHRONIK_{f.name.upper()})",
        )
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(args, f.name)
        if raw is None:
            raw = env.get("CHRONIK_" + f.name.upper())
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = _convert(f.name, raw)
        except ValueError as exc:
            parser.error(f"invalid value for {f.name}: {exc}")
    settings = Settings(**values)
    try:
        settings.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return settings
