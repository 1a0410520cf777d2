"""Record-level checks a topic's configs ask for before a produce is appended (Kafka's
LogValidator): keys on compacted topics and CreateTime bounds. Records are decoded only
when one of those configs is in force; every other produce appends batches unread."""

from __future__ import annotations

from app.storage.errors import CorruptBatch, InvalidRecords, InvalidTimestamps
from app.storage.log.batch import BatchHeader, Buffer
from app.storage.log.records import RecordError, iter_records
from app.storage.log.topicconfig import LONG_MAX, LogConfig

NO_TIMESTAMP = -1

# Kafka shows at most this many record errors in the top-level message.
_SHOWN = 3


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
    errors: list[tuple[int, str]] = []
    bad_time = False
    view = memoryview(data)
    for start, end, header in batches:
        if header.is_control:
            continue
        try:
            records = list(iter_records(view[start:end]))
        except RecordError as exc:
            raise CorruptBatch(f"record batch at {start} in {where}: {exc}") from None
        # One error a record, the key's first, as Kafka's LogValidator.validateRecord.
        for index, record in enumerate(records):
            ts = record.timestamp
            if cfg.compact and record.key is None:
                errors.append(
                    (index, f"Compacted topic cannot accept message without key in {where}.")
                )
            elif check_time and ts != NO_TIMESTAMP and not low <= ts <= high:
                bad_time = True
                errors.append(
                    (
                        index,
                        f"Timestamp {ts} of message with offset {record.offset} is out of "
                        f"range. The timestamp should be within [{low}, {high}]",
                    )
                )
    if not errors:
        return
    if bad_time:
        raise InvalidTimestamps(
            "One or more records have been rejected due to invalid timestamp", errors
        )
    shown = ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:_SHOWN])
    raise InvalidRecords(
        f"One or more records have been rejected due to {len(errors)} record errors in "
        f"total, and only showing the first three errors at most: [{shown}]",
        errors,
    )
