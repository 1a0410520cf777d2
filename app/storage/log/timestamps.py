"""Timestamp lookups over a partition's local WAL (ListOffsets by time and max timestamp).
The service combines them with the search segments' batch indexes for older offsets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.storage.log.batch import BatchHeader
from app.storage.log.codecs import DecompressError
from app.storage.log.records import RecordError, iter_records

if TYPE_CHECKING:
    from app.storage.log.partition import PartitionLog

log = logging.getLogger(__name__)


def first_record_at_or_after(
    batch: bytes | memoryview, ts: int, min_offset: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the batch's first record at or after `min_offset` stamped at
    or after `ts`. This decodes (and may decompress) one batch: ListOffsets is rare enough
    that exact answers are worth it, and fetch never comes this way."""
    try:
        for rec in iter_records(batch):
            if rec.offset >= min_offset and rec.timestamp >= ts:
                return rec.offset, rec.timestamp
    except (RecordError, DecompressError) as exc:
        log.warning("cannot decode a batch for a timestamp lookup: %s", exc)
    return None


def wal_offset_for_timestamp(
    plog: PartitionLog, ts: int, min_offset: int = 0
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record in the local WAL at or after `min_offset`
    (and the log start) stamped at or after `ts`. Records without a timestamp (-1) are never
    found, whatever `ts` is (as in Kafka)."""
    ts = max(ts, 0)
    hw, start = plog.high_watermark, max(plog.log_start_offset, min_offset)
    for seg in plog.wal.segments:
        if seg.max_timestamp < ts or seg.next_offset <= start:
            continue
        if seg.base_offset >= hw:
            return None
        h = seg.find_timestamp(ts, start, hw)
        if h is not None:
            return _exact(plog, h, ts, start)
    return None


def _exact(plog: PartitionLog, h: BatchHeader, ts: int, start: int) -> tuple[int, int]:
    fallback = (max(h.base_offset, start), h.max_timestamp)
    chunks = plog.read(max(h.base_offset, start), 1)
    if not chunks:
        return fallback
    return first_record_at_or_after(chunks[0][: h.size], ts, start) or fallback


def wal_max_timestamp(plog: PartitionLog, min_offset: int = 0) -> tuple[int, int]:
    """(timestamp, offset) of the largest timestamp in the WAL at or after `min_offset`; the
    offset is the last offset of the batch holding it. (-1, -1) when there is none."""
    best = (-1, -1)
    for seg in plog.wal.segments:
        if seg.max_timestamp <= best[0] or seg.next_offset <= min_offset:
            continue
        if seg.max_timestamp_offset >= min_offset:
            best = (seg.max_timestamp, seg.max_timestamp_offset)
            continue
        # The segment's maximum is below `min_offset` (served by cleaned segments, where it
        # may be gone): look at its batches from there.
        start = seg.offset_index.lookup(max(min_offset - seg.base_offset, 0))
        for _pos, h in seg.iter_headers(start):
            if h.last_offset >= min_offset and h.max_timestamp > best[0]:
                best = (h.max_timestamp, h.last_offset)
    return best
