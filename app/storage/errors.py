"""Storage exceptions. The broker maps each one to a Kafka error code."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class CorruptBatch(StorageError):
    """A record batch whose length, CRC or framing is wrong (CORRUPT_MESSAGE)."""


class UnsupportedMagic(StorageError):
    """A message set in a format other than RecordBatch v2 (UNSUPPORTED_FOR_MESSAGE_FORMAT)."""

    def __init__(self, magic: int) -> None:
        super().__init__(f"record batch magic {magic} is not supported, only magic 2")
        self.magic = magic


class RecordTooLarge(StorageError):
    """A batch bigger than max.message.bytes or segment.bytes (MESSAGE_TOO_LARGE)."""

    def __init__(self, size: int, limit: int, what: str = "max.message.bytes") -> None:
        super().__init__(f"record batch of {size} bytes exceeds {what}={limit}")
        self.size = size
        self.limit = limit


class BatchLargerThanSegment(RecordTooLarge):
    """A batch that cannot fit in any segment (Kafka: RECORD_LIST_TOO_LARGE)."""


class OffsetOutOfRange(StorageError):
    """A fetch or DeleteRecords offset outside [log start, high watermark]."""

    def __init__(self, offset: int, log_start_offset: int, high_watermark: int) -> None:
        super().__init__(f"offset {offset} is out of range [{log_start_offset}, {high_watermark}]")
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.high_watermark = high_watermark


class DuplicateSequence(StorageError):
    """An idempotent retry of a batch already in the log. The broker answers success with
    the original offsets and appends nothing."""

    def __init__(self, base_offset: int, last_offset: int, log_append_time_ms: int) -> None:
        super().__init__(f"duplicate batch already stored at offsets {base_offset}..{last_offset}")
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.log_append_time_ms = log_append_time_ms


class OutOfOrderSequence(StorageError):
    """An idempotent batch whose sequence does not follow the producer's last one."""


class InvalidProducerEpoch(StorageError):
    """A batch from a producer epoch older than the one the partition has seen (fenced)."""


class InvalidTxnState(StorageError):
    """A non-transactional batch from a producer whose transaction is open here."""


class UnknownTopic(StorageError):
    """The topic or partition does not exist (UNKNOWN_TOPIC_OR_PARTITION)."""


class TopicExists(StorageError):
    """CreateTopics for a name already in use (TOPIC_ALREADY_EXISTS)."""


class InvalidTopic(StorageError):
    """An illegal topic name (INVALID_TOPIC_EXCEPTION)."""


class InvalidConfig(StorageError):
    """A topic config with an unknown key or an invalid value (INVALID_CONFIG)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class InvalidPartitions(StorageError):
    """A partition count below 1 or not above the current one (INVALID_PARTITIONS)."""


class InvalidReplicationFactor(StorageError):
    """A replication factor this single-node broker cannot honour
    (INVALID_REPLICATION_FACTOR)."""


class InvalidRecords(StorageError):
    """A batch with records the topic refuses (INVALID_RECORD): the whole batch is rejected
    and `record_errors` says which records, by their index in the batch, and why."""

    def __init__(self, message: str, record_errors: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.record_errors = record_errors


class InvalidTimestamps(InvalidRecords):
    """Records whose CreateTime is outside the topic's allowed range (INVALID_TIMESTAMP)."""
