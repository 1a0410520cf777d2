"""RecordBatch v2 header parsing, produce-side validation and the two in-place rewrites the
broker is allowed to make (baseOffset, and LogAppendTime + CRC). Records are never decoded."""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable
from typing import NamedTuple

import crc32c

from app.storage.errors import CorruptBatch, UnsupportedMagic

Buffer = bytes | bytearray | memoryview | mmap.mmap

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
MAGIC_POS = 16
CRC_POS = 17
CRC_START = 21  # the CRC covers attributes..end, so baseOffset and leader epoch are free
ATTRIBUTES_POS = 21
MAX_TIMESTAMP_POS = 35

ATTR_CODEC_MASK = 0x07
ATTR_LOG_APPEND_TIME = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

CREATE_TIME = 0
LOG_APPEND_TIME = 1

_I64 = struct.Struct(">q")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_INT32_MAX = 2**31 - 1


class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & ATTR_CODEC_MASK

    @property
    def timestamp_type(self) -> int:
        return LOG_APPEND_TIME if self.attributes & ATTR_LOG_APPEND_TIME else CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def last_sequence(self) -> int:
        return increment_sequence(self.base_sequence, self.last_offset_delta)

    @property
    def is_idempotent(self) -> bool:
        return self.producer_id >= 0 and self.base_sequence >= 0 and not self.is_control


_make_header = BatchHeader._make


def increment_sequence(sequence: int, increment: int) -> int:
    """Sequences wrap from 2**31-1 to 0 (Kafka's DefaultRecordBatch.incrementSequence)."""
    if sequence > _INT32_MAX - increment:
        return increment - (_INT32_MAX - sequence) - 1
    return sequence + increment


def parse_header(buf: Buffer, pos: int = 0) -> BatchHeader:
    """Parse the 61-byte header at `pos` without any validation."""
    return _make_header(HEADER.unpack_from(buf, pos))


def end_offset(buffers: Iterable[Buffer]) -> int | None:
    """The offset after the last of the whole batches these buffers hold (None if none)."""
    end = None
    for buf in buffers:
        pos, n = 0, len(buf)
        while pos + HEADER_SIZE <= n:
            h = parse_header(buf, pos)
            end = h.next_offset
            pos += h.size
    return end


def batch_crc(buf: Buffer, pos: int, size: int) -> int:
    return int(crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size]))


def validate_batches(data: Buffer) -> list[tuple[int, int, BatchHeader]]:
    """Split a produce request's records into batches as (start, end, header), rejecting
    anything a client could not have produced intact. The whole buffer must be batches."""
    n = len(data)
    if n == 0:
        raise CorruptBatch("produce request carries no record batch")
    view = memoryview(data)
    out: list[tuple[int, int, BatchHeader]] = []
    pos = 0
    while pos < n:
        remaining = n - pos
        if remaining <= MAGIC_POS:
            raise CorruptBatch(f"truncated record batch: {remaining} trailing bytes at {pos}")
        # Legacy message sets (magic 0/1) also keep magic at byte 16, so this check is safe
        # before we trust any v2 field.
        magic = view[pos + MAGIC_POS]
        if magic != 2:
            raise UnsupportedMagic(magic if magic < 128 else magic - 256)
        header = parse_header(view, pos) if remaining >= HEADER_SIZE else None
        if header is None:
            raise CorruptBatch(f"truncated record batch header at {pos}")
        if header.batch_length < MIN_BATCH_LENGTH:
            raise CorruptBatch(f"record batch length {header.batch_length} is too small")
        end = pos + header.size
        if end > n:
            raise CorruptBatch(
                f"truncated record batch at {pos}: needs {header.size} bytes, has {remaining}"
            )
        crc = batch_crc(view, pos, header.size)
        if crc != header.crc:
            raise CorruptBatch(
                f"record batch CRC mismatch at {pos}: stored {header.crc:#010x}, "
                f"computed {crc:#010x}"
            )
        if header.records_count < 0 or header.last_offset_delta < 0:
            raise CorruptBatch(
                f"record batch has records_count={header.records_count} "
                f"last_offset_delta={header.last_offset_delta}"
            )
        out.append((pos, end, header))
        pos = end
    return out


def set_base_offset(buf: bytearray, pos: int, offset: int) -> None:
    _I64.pack_into(buf, pos, offset)


def set_log_append_time(buf: bytearray, pos: int, size: int, now_ms: int) -> None:
    """What Kafka does for message.timestamp.type=LogAppendTime: flag the batch and stamp
    maxTimestamp, then recompute the CRC because both fields are covered by it."""
    (attributes,) = _I16.unpack_from(buf, pos + ATTRIBUTES_POS)
    _I16.pack_into(buf, pos + ATTRIBUTES_POS, attributes | ATTR_LOG_APPEND_TIME)
    _I64.pack_into(buf, pos + MAX_TIMESTAMP_POS, now_ms)
    _U32.pack_into(buf, pos + CRC_POS, batch_crc(buf, pos, size))


def check_batch(buf: Buffer, pos: int, limit: int, verify_crc: bool) -> BatchHeader | None:
    """Header of the stored batch at `pos` if it is complete (and its CRC matches when asked),
    else None. Used by recovery to find where a torn tail begins."""
    if limit - pos < HEADER_SIZE:
        return None
    header = parse_header(buf, pos)
    if (
        header.magic != 2
        or header.batch_length < MIN_BATCH_LENGTH
        or pos + header.size > limit
        or header.last_offset_delta < 0
    ):
        return None
    if verify_crc and batch_crc(buf, pos, header.size) != header.crc:
        return None
    return header
