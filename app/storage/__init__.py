"""The storage layer: partition logs (memory tail over WAL segments), group commit, topic
metadata. It never imports app.broker or app.api."""

from app.storage.errors import (
    CorruptBatch,
    DuplicateSequence,
    InvalidConfig,
    InvalidPartitions,
    InvalidProducerEpoch,
    InvalidReplicationFactor,
    InvalidTopic,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RecordTooLarge,
    StorageError,
    TopicExists,
    UnknownTopic,
    UnsupportedMagic,
)
from app.storage.log.batch import BatchHeader, parse_header, validate_batches
from app.storage.log.metadata import MetadataStore, TopicMeta, validate_replication_factor
from app.storage.log.partition import AppendResult, PartitionLog
from app.storage.log.topicconfig import default_topic_configs, validate_topic_configs
from app.storage.store import Storage, StorageConfig

__all__ = [
    "AppendResult",
    "BatchHeader",
    "CorruptBatch",
    "DuplicateSequence",
    "InvalidConfig",
    "InvalidPartitions",
    "InvalidProducerEpoch",
    "InvalidReplicationFactor",
    "InvalidTopic",
    "MetadataStore",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "PartitionLog",
    "RecordTooLarge",
    "Storage",
    "StorageConfig",
    "StorageError",
    "TopicExists",
    "TopicMeta",
    "UnknownTopic",
    "UnsupportedMagic",
    "default_topic_configs",
    "parse_header",
    "validate_batches",
    "validate_replication_factor",
    "validate_topic_configs",
]
