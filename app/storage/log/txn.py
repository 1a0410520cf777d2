"""Transactions in one partition's log: the control batches (COMMIT/ABORT markers) the
coordinator writes, and the aborted-transaction index that read_committed fetches return.

The index is one file per partition, `aborted-txns`, of fixed 32-byte entries (producer id,
first offset, marker offset, last stable offset when the marker was written), like Kafka's
`.txnindex` but not split by segment: WAL segments are deleted once tiered while their
offsets are still fetched from the object store, so the index must outlive them. It is
dropped only below the log start offset."""

from __future__ import annotations

import contextlib
import os
import struct
from bisect import bisect_left
from pathlib import Path
from typing import NamedTuple

import crc32c

from app.storage.errors import CorruptBatch
from app.storage.fileutil import atomic_write
from app.storage.log.batch import (
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    CRC_START,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    Buffer,
)
from app.storage.log.records import RecordError, read_uvarint, zigzag_varint

ABORTED_FILE = "aborted-txns"
ABORT = 0
COMMIT = 1
CONTROL_VERSION = 0
_ENTRY = struct.Struct(">qqqq")
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the ABORT marker's offset


def build_marker(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, now_ms: int
) -> bytes:
    """A control batch holding one end-transaction marker, as Kafka's
    MemoryRecords.withEndTransactionMarker writes it (offset 0: the log assigns it)."""
    key = _CONTROL_KEY.pack(CONTROL_VERSION, COMMIT if commit else ABORT)
    value = _CONTROL_VALUE.pack(CONTROL_VERSION, coordinator_epoch)
    body = (
        b"\x00"  # record attributes
        + zigzag_varint(0)  # timestamp delta
        + zigzag_varint(0)  # offset delta
        + zigzag_varint(len(key))
        + key
        + zigzag_varint(len(value))
        + value
        + zigzag_varint(0)  # headers
    )
    record = zigzag_varint(len(body)) + body
    batch = bytearray(HEADER_SIZE) + record
    HEADER.pack_into(
        batch,
        0,
        0,  # base offset
        len(batch) - LOG_OVERHEAD,
        -1,  # partition leader epoch
        2,  # magic
        0,  # crc, below
        ATTR_TRANSACTIONAL | ATTR_CONTROL,
        0,  # last offset delta
        now_ms,
        now_ms,
        producer_id,
        producer_epoch,
        -1,  # base sequence: markers carry none
        1,
    )
    struct.pack_into(">I", batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)


def control_type(batch: Buffer, pos: int = 0) -> int:
    """ABORT or COMMIT for the control batch at `pos` (its first record's key); control
    batches are never compressed. Unknown types (Kafka has others for KRaft) read as -1."""
    # Length, attributes, two deltas and the key length take at most 22 bytes.
    data = bytes(memoryview(batch)[pos + HEADER_SIZE : pos + HEADER_SIZE + 32])
    try:
        _length, p = read_uvarint(data, 0)
        p += 1  # attributes
        for _ in range(2):  # timestamp delta, offset delta
            _v, p = read_uvarint(data, p)
        key_len, p = read_uvarint(data, p)
        key_len = (key_len >> 1) ^ -(key_len & 1)
        if key_len < _CONTROL_KEY.size:
            raise CorruptBatch("control record key is too short")
        _version, kind = _CONTROL_KEY.unpack_from(data, p)
    except (RecordError, struct.error) as exc:
        raise CorruptBatch(f"unreadable control record: {exc}") from None
    return kind if kind in (ABORT, COMMIT) else -1


def _parse(data: bytes) -> list[AbortedTxn]:
    """The entries of an index file up to the first one that cannot be right: a partial
    one (an append under way), or one out of marker order or inconsistent (a torn or
    zero-filled tail after a power loss)."""
    out: list[AbortedTxn] = []
    usable = len(data) - len(data) % _ENTRY.size
    prev = -1
    for pid, first, last, _lso in _ENTRY.iter_unpack(memoryview(data)[:usable]):
        if pid < 0 or not 0 <= first <= last or last <= prev:
            break
        out.append(AbortedTxn(pid, first, last))
        prev = last
    return out


def read_aborted(directory: Path) -> list[AbortedTxn]:
    """The aborted transactions in a partition's `aborted-txns` file, for another process
    (the indexer worker) than the one appending to it. A partial trailing entry (an append
    under way) is skipped; a rewrite replaces the file by rename, so a reader sees the old
    file or the new one; a missing file is no transaction."""
    try:
        data = (directory / ABORTED_FILE).read_bytes()
    except FileNotFoundError:
        return []
    return _parse(data)


class AbortedIndex:
    """The aborted transactions of a partition, ordered by marker offset (so also by
    append). Appends go to the page cache at once; `sync` (run by the fsync thread before
    the round that acks the marker completes) makes them durable."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ABORTED_FILE
        self.entries: list[AbortedTxn] = []
        self._lasts: list[int] = []
        self._fd: int | None = None

    def load(self, valid_below: int, end_offset: int) -> None:
        """Read the file, keeping entries whose marker is below `valid_below` (the offset the
        producer snapshot covers; recovery replays the rest from the WAL) and below
        `end_offset` (a marker lost in a crash)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        limit = min(valid_below, end_offset)
        self.entries = [e for e in _parse(data) if e.last_offset < limit]
        self._lasts = [e.last_offset for e in self.entries]
        if len(self.entries) * _ENTRY.size != len(data):
            self._rewrite()

    def _rewrite(self) -> None:
        self.close()
        atomic_write(self.path, b"".join(_ENTRY.pack(*e, -1) for e in self.entries))

    def append(self, txn: AbortedTxn, last_stable: int) -> None:
        if self._lasts and txn.last_offset <= self._lasts[-1]:
            return  # replayed twice
        self.entries.append(txn)
        self._lasts.append(txn.last_offset)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, _ENTRY.pack(*txn, last_stable))

    def sync(self) -> None:
        fd = self._fd
        if fd is not None:
            # Closed by a concurrent truncation, which fsynced what it wrote.
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def overlapping(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions with marker >= `start` and first offset < `end`."""
        i = bisect_left(self._lasts, start)
        found = [e for e in self.entries[i:] if e.first_offset < end]
        found.sort(key=lambda e: e.first_offset)
        return found

    def truncate_before(self, offset: int) -> None:
        """Forget transactions entirely below `offset` (the new log start)."""
        i = bisect_left(self._lasts, offset)
        if i == 0:
            return
        del self.entries[:i]
        del self._lasts[:i]
        self._rewrite()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
