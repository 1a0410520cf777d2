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


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TLS_CLIENT_AUTH = ("none", "requested", "required")
AUTHORIZERS = ("none", "acl")
HTTP_AUTH = ("none", "required")


def _split(value: str, seps: str) -> list[str]:
    for sep in seps[1:]:
        value = value.replace(sep, seps[0])
    return [part.strip() for part in value.split(seps[0]) if part.strip()]


def _one_of(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


@dataclass(frozen=True)
class SecurityConfig:
    """TLS on both listeners, SASL on the Kafka one, the ACL authorizer and HTTP auth."""

    tls_cert_file: str = _opt("", "PEM certificate chain of both listeners")
    tls_key_file: str = _opt("", "PEM private key of tls_cert_file")
    tls_ca_file: str = _opt("", "PEM CA bundle that client certificates are checked against")
    tls_client_auth: str = _opt("none", "client certificates: none | requested | required")
    http_tls: bool = _opt(True, "when a certificate is set, the HTTP listener uses TLS too")
    kafka_security_protocol: str = _opt(
        "PLAINTEXT", "Kafka listener: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL"
    )
    sasl_mechanisms: str = _opt(
        "SCRAM-SHA-256,SCRAM-SHA-512",
        "enabled SASL mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
    )
    connections_max_reauth_ms: int = _opt(
        0, "SASL session lifetime before re-authentication (0: sessions never expire)"
    )
    sasl_failures_per_minute: int = _opt(
        30,
        "failed authentications per client address per minute before attempts are "
        "refused (0: no limit)",
    )
    sasl_failure_delay_ms: int = _opt(
        100,
        "delay before a failed authentication is answered (Kafka's "
        "connection.failed.authentication.delay.ms)",
    )
    authorizer: str = _opt("none", "none | acl")
    super_users: str = _opt("", "principals that pass every ACL check: User:alice;User:bob")
    allow_everyone_if_no_acl: bool = _opt(
        False, "allow a resource that has no ACL at all (allow.everyone.if.no.acl.found)"
    )
    http_auth: str = _opt("none", "HTTP authentication: none | required")
    http_open_paths: str = _opt("", "comma list of exact HTTP paths served without auth")
    http_token_max_ttl_s: int = _opt(90 * 86400, "longest lifetime of an HTTP API token")

    @property
    def tls_enabled(self) -> bool:
        """The Kafka listener speaks TLS."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl_enabled(self) -> bool:
        return self.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return tuple(_split(self.sasl_mechanisms, ","))

    @property
    def super_user_set(self) -> frozenset[str]:
        return frozenset(_split(self.super_users, ";,"))

    @property
    def open_paths(self) -> frozenset[str]:
        return frozenset(_split(self.http_open_paths, ","))

    def __post_init__(self) -> None:
        _one_of("tls_client_auth", self.tls_client_auth, TLS_CLIENT_AUTH)
        _one_of("kafka_security_protocol", self.kafka_security_protocol, KAFKA_SECURITY_PROTOCOLS)
        _one_of("authorizer", self.authorizer, AUTHORIZERS)
        _one_of("http_auth", self.http_auth, HTTP_AUTH)
        for mechanism in self.mechanisms:
            _one_of("each of sasl_mechanisms", mechanism, SASL_MECHANISMS)
        if self.sasl_enabled and not self.mechanisms:
            raise ValueError(f"{self.kafka_security_protocol} needs at least one sasl_mechanisms")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_enabled and not self.tls_cert_file:
            raise ValueError(f"{self.kafka_security_protocol} needs tls_cert_file and tls_key_file")
        if self.tls_client_auth != "none" and not self.tls_ca_file:
            raise ValueError(f"tls_client_auth={self.tls_client_auth} needs tls_ca_file")
        for principal in self.super_user_set:
            kind, _, name = principal.partition(":")
            if not kind or not name:
                raise ValueError(f"super_users entries look like User:name, not {principal!r}")
        for path in self.open_paths:
            if not path.startswith("/"):
                raise ValueError(f"http_open_paths entries are paths like /metrics, not {path!r}")
        if (
            self.connections_max_reauth_ms < 0
            or self.sasl_failures_per_minute < 0
            or self.sasl_failure_delay_ms < 0
        ):
            raise ValueError(
                "connections_max_reauth_ms, sasl_failures_per_minute and "
                "sasl_failure_delay_ms must not be negative"
            )
        if self.http_token_max_ttl_s < 1:
            raise ValueError("http_token_max_ttl_s must be positive")


@dataclass(frozen=True)
class LimitsConfig:
    """Caps that keep one client from exhausting the service."""

    max_connections: int = _opt(10000, "Kafka connections in total")
    max_connections_per_ip: int = _opt(1000, "Kafka connections per client address")
    connection_max_inflight_bytes: int = _opt(
        100 * MiB, "request bytes read but not answered, per connection, before reading pauses"
    )
    max_inflight_bytes: int = _opt(
        512 * MiB, "the same over all connections together (queued.max.request.bytes)"
    )
    connections_max_idle_ms: int = _opt(
        600_000, "a connection without a complete request for this long is closed"
    )
    http_max_query_length: int = _opt(4096, "longest search query q, in characters")
    http_max_query_clauses: int = _opt(64, "most terms and clauses in one query q")
    http_max_buckets: int = _opt(10000, "most histogram buckets or terms in one answer")
    http_max_page: int = _opt(1000, "most hits in one page")
    max_concurrent_searches: int = _opt(
        8, "expensive searches running at once; more answer 429 with Retry-After"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be positive")


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
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)


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
