"""Rewriting one stored RecordBatch v2 to hold only some of its records, as Kafka's log
cleaner does (MemoryRecords.filterTo and buildRetainedRecordsInto, MemoryRecordsBuilder):

- baseOffset and lastOffsetDelta stay the original batch's, so the batch keeps its offset
  range and the producer's last sequence (baseSequence + lastOffsetDelta) even when its
  first or last records go; every kept record keeps its offset delta;
- baseTimestamp is the first kept record's timestamp and the record timestamp deltas are
  re-based on it; maxTimestamp is the kept records' largest (CreateTime) or the original
  maxTimestamp (LogAppendTime, where every record reads as maxTimestamp, so the rewritten
  records get delta 0 from a baseTimestamp equal to it);
- partitionLeaderEpoch, producer id/epoch, baseSequence, the transactional and control
  flags and the codec are the original's; the records are re-encoded canonically (record
  attributes 0), the payload compressed as the Java client compresses it;
- KIP-534's delete horizon: a batch flagged 0x40 has it in baseTimestamp and keeps it; one
  without it that keeps a tombstone, or a control batch the caller marks as removable, is
  given `delete_horizon_ms` (filterTo's needToSetDeleteHorizon), written even when every
  record is kept, its record timestamp deltas re-based on the horizon so each record reads
  the timestamp it had (MemoryRecordsBuilder with deleteHorizonMs);
- a batch whose records are all kept is written as it was; one with none kept is dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import crc32c

from .batch import (
    ATTR_CODEC_MASK,
    ATTR_CONTROL,
    ATTR_LOG_APPEND_TIME,
    ATTR_TRANSACTIONAL,
    CRC_POS,
    CRC_START,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    parse_header,
)
from .codecs import compress
from .records import Record, RecordError, iter_records, zigzag_varint

_CRC = struct.Struct(">I")
# KIP-534: the attribute bit "deleteHorizonMs set"; baseTimestamp then holds the horizon.
_DELETE_HORIZON = 0x40
_FLAGS = ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL
_KEPT_ATTRIBUTES = ATTR_CODEC_MASK | _FLAGS | _DELETE_HORIZON

_NULL = b"\x01"  # zigzag varint -1: a null key, value or header value
_SMALL = 1 << 14  # zigzag varints of 0 .. 16383 (one or two bytes), precomputed
_ZZ = [zigzag_varint(n) for n in range(_SMALL)]

Keep = Callable[[int, Record], bool]


def _zz(n: int) -> bytes:
    return _ZZ[n] if 0 <= n < _SMALL else zigzag_varint(n)


def encode_records(records: list[Record], base_offset: int, base_timestamp: int) -> bytes:
    """The records section of a batch (uncompressed), as Kafka's DefaultRecord.writeTo
    writes each record: length, attributes 0, timestamp and offset deltas, key, value,
    headers (keys UTF-8)."""
    zz = _ZZ
    parts: list[bytes] = []
    add = parts.append
    for rec in records:
        ts_delta = rec.timestamp - base_timestamp
        off_delta = rec.offset - base_offset
        head = (
            b"\x00"
            + (zz[ts_delta] if 0 <= ts_delta < _SMALL else zigzag_varint(ts_delta))
            + (zz[off_delta] if 0 <= off_delta < _SMALL else zigzag_varint(off_delta))
        )
        key, value, headers = rec.key, rec.value, rec.headers
        if key is None:
            head += _NULL
            size = len(head)
        else:
            n = len(key)
            head += zz[n] if n < _SMALL else zigzag_varint(n)
            size = len(head) + n
        if value is None:
            vlen = _NULL
        else:
            n = len(value)
            vlen = zz[n] if n < _SMALL else zigzag_varint(n)
            size += n
        if headers:
            tail = bytearray(_zz(len(headers)))
            for hkey, hval in headers:
                raw = hkey.encode("utf-8")
                tail += _zz(len(raw))
                tail += raw
                if hval is None:
                    tail += _NULL
                else:
                    tail += _zz(len(hval))
                    tail += hval
            htail = bytes(tail)
        else:
            htail = b"\x00"
        size += len(vlen) + len(htail)
        add(zz[size] if size < _SMALL else zigzag_varint(size))
        add(head)
        if key is not None:
            add(key)
        add(vlen)
        if value is not None:
            add(value)
        add(htail)
    return b"".join(parts)


def delete_horizon(h: BatchHeader) -> int | None:
    """The batch's KIP-534 delete horizon (DefaultRecordBatch.deleteHorizonMs), None if unset."""
    return h.base_timestamp if h.attributes & _DELETE_HORIZON else None


def filter_batch(
    batch: bytes | memoryview, keep: Keep, delete_horizon_ms: int | None = None
) -> bytes | None:
    """`batch` holding only the records for which keep(offset, record) is true, rewritten
    as Kafka's cleaner rewrites it (see the module doc); the original bytes when every record
    is kept and no horizon is set, None when none is kept. Whether a control batch is kept
    is the caller's decision; given one, this treats its records like any other, and a
    `delete_horizon_ms` given with it is set (pass it only for a marker that may go once
    the horizon passes, Kafka's containsMarkerForEmptyTxn). For a data batch it is set when
    a kept record is a tombstone; a batch that has a horizon keeps its own."""
    if len(batch) < HEADER_SIZE:
        raise RecordError("batch shorter than its header")
    h = parse_header(batch)
    if h.magic != 2:
        raise RecordError(f"record batch magic {h.magic} is not supported, only magic 2")
    kept: list[Record] = []
    seen = 0
    tombstone = False
    for rec in iter_records(batch):
        seen += 1
        if keep(rec.offset, rec):
            kept.append(rec)
            tombstone = tombstone or rec.value is None
    if not kept:
        return None  # an empty batch too: Kafka drops those unless told to retain them
    attributes = h.attributes & _KEPT_ATTRIBUTES
    stamp = None
    if not attributes & _DELETE_HORIZON and (tombstone or attributes & ATTR_CONTROL):
        stamp = delete_horizon_ms
    if len(kept) == seen and stamp is None:
        return bytes(batch)
    if stamp is not None:
        attributes |= _DELETE_HORIZON
        base_timestamp = stamp
    elif attributes & _DELETE_HORIZON:
        base_timestamp = h.base_timestamp
    else:
        base_timestamp = kept[0].timestamp
    if h.attributes & ATTR_LOG_APPEND_TIME:
        max_timestamp = h.max_timestamp  # every record reads as it
    else:
        max_timestamp = max(-1, max(rec.timestamp for rec in kept))
    payload = compress(h.compression, encode_records(kept, h.base_offset, base_timestamp))
    out = bytearray(HEADER_SIZE + len(payload))
    HEADER.pack_into(
        out,
        0,
        h.base_offset,
        len(out) - LOG_OVERHEAD,
        h.partition_leader_epoch,
        2,
        0,
        attributes,
        h.last_offset_delta,
        base_timestamp,
        max_timestamp,
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        len(kept),
    )
    out[HEADER_SIZE:] = payload
    _CRC.pack_into(out, CRC_POS, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


def empty_batch(batch: bytes | memoryview) -> bytes:
    """The record-less header Kafka's cleaner leaves for a batch it must keep for its
    producer state or offsets but none of whose records it keeps (BatchRetention.RETAIN_EMPTY,
    DefaultRecordBatch.writeEmptyHeader): same offsets and producer fields, no compression,
    baseTimestamp -1, maxTimestamp the original's, 0 records."""
    if len(batch) < HEADER_SIZE:
        raise RecordError("batch shorter than its header")
    h = parse_header(batch)
    out = bytearray(
        HEADER.pack(
            h.base_offset,
            HEADER_SIZE - LOG_OVERHEAD,
            h.partition_leader_epoch,
            2,
            0,
            h.attributes & _FLAGS,
            h.last_offset_delta,
            -1,
            h.max_timestamp,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            0,
        )
    )
    _CRC.pack_into(out, CRC_POS, crc32c.crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)
