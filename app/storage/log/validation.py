"""Record-level checks a topic's configs ask for before a produce is appended (Kafka's
LogValidator): keys on compacted topics and CreateTime bounds. Records are decoded only
when one of those configs is in force; every other produce appends batches unread."""

from __future__ import annotations

from app.storage.errors import CorruptBatch, InvalidRecords, InvalidTimestamps
from app.storage.log.batch import BatchHeader, Buffer
from app.storage.log.codecs import DecompressError
from app.storage.log.records import RecordError, iter_records
from app.storage.log.topicconfig import LONG_MAX, LogConfig

NO_TIMESTAMP = -1

# Kafka shows at most this many record errors in the top-level message.
_SHOWN = 3
# Kafka lists every refused record; a compressed batch of tiny records holds millions in a
# few KB, so the list stops here (the message still counts them all).
MAX_RECORD_ERRORS = 1000


def _needs_records(cfg: LogConfig) -> bool:
    return cfg.compact or (
        not cfg.log_append_time
        and (cfg.timestamp_before_max_ms != LONG_MAX or cfg.timestamp_after_max_ms != LONG_MAX)
    )


def check_records(
    data: Buffer,
    batches: list[tuple[int, int, BatchHeader]],
    cfg: LogConfig,
    now_ms: int,
    topic: str,
    partition: int,
) -> None:
    """Raise InvalidRecords (or InvalidTimestamps) naming every refused record by its index
    in its batch."""
    if not _needs_records(cfg):
        return
    where = f"{topic}-{partition}"
    check_time = not cfg.log_append_time
    low = now_ms - cfg.timestamp_before_max_ms
    high = now_ms + cfg.timestamp_after_max_ms
    no_key = f"Compacted topic cannot accept message without key in {where}."
    errors: list[tuple[int, str]] = []
    refused = 0
    bad_time = False
    view = memoryview(data)
    for start, end, header in batches:
        if header.is_control:
            continue
        try:
            # One error a record, the key's first, as Kafka's LogValidator.validateRecord.
            for index, record in enumerate(iter_records(view[start:end])):
                ts = record.timestamp
                if cfg.compact and record.key is None:
                    message = no_key
                elif check_time and ts != NO_TIMESTAMP and not low <= ts <= high:
                    bad_time = True
                    message = (
                        f"Timestamp {ts} of message with offset {record.offset} is out of "
                        f"range. The timestamp should be within [{low}, {high}]"
                    )
                else:
                    continue
                refused += 1
                if len(errors) < MAX_RECORD_ERRORS:
                    errors.append((index, message))
        except (RecordError, DecompressError) as exc:
            raise CorruptBatch(f"record batch at {start} in {where}: {exc}") from None
    if not errors:
        return
    if bad_time:
        raise InvalidTimestamps(
            "One or more records have been rejected due to invalid timestamp", errors
        )
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:_SHOWN])
    raise InvalidRecords(
        f"One or more records have been rejected due to {refused} record errors in "
        f"total, and only showing the first three errors at most: [{shown}]",
        errors,
    )
