"""What makes a partition log durable and fetchable from local disk: RecordBatch and
record decoding, codecs, the cleaner's batch rewriting, the memory tail over WAL segments,
fsync group commit, producer state, transaction markers and the aborted-transaction index,
the partition log, topic metadata and configs. Runs in the service process;
imports no other layer."""

from app.storage.log import metadata, topicconfig
from app.storage.log.batch import (
    HEADER_SIZE,
    BatchHeader,
    end_offset,
    parse_header,
    validate_batches,
)
from app.storage.log.codecs import DecompressError
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.memtail import MemTailBudget
from app.storage.log.metadata import (
    MetadataStore,
    PartitionLimit,
    TopicMeta,
    validate_replication_factor,
    validate_topic_name,
)
from app.storage.log.partition import AppendResult, PartitionLog
from app.storage.log.records import (
    Record,
    RecordError,
    batch_span,
    iter_records,
    read_uvarint,
    records_at,
)
from app.storage.log.rewrite import delete_horizon, empty_batch, filter_batch
from app.storage.log.timestamps import (
    first_record_at_or_after,
    wal_max_timestamp,
    wal_offset_for_timestamp,
)
from app.storage.log.topicconfig import default_topic_configs, validate_topic_configs
from app.storage.log.txn import COMMIT, AbortedTxn, control_type, read_aborted
from app.storage.log.validation import check_records
from app.storage.log.walreader import WalTail

__all__ = [
    "COMMIT",
    "HEADER_SIZE",
    "AbortedTxn",
    "AppendResult",
    "BatchHeader",
    "DecompressError",
    "FsyncScheduler",
    "MemTailBudget",
    "MetadataStore",
    "PartitionLimit",
    "PartitionLog",
    "Record",
    "RecordError",
    "TopicMeta",
    "WalTail",
    "batch_span",
    "check_records",
    "control_type",
    "default_topic_configs",
    "delete_horizon",
    "empty_batch",
    "end_offset",
    "filter_batch",
    "first_record_at_or_after",
    "iter_records",
    "metadata",
    "parse_header",
    "read_aborted",
    "read_uvarint",
    "records_at",
    "topicconfig",
    "validate_batches",
    "validate_replication_factor",
    "validate_topic_configs",
    "validate_topic_name",
    "wal_max_timestamp",
    "wal_offset_for_timestamp",
]
