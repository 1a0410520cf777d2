"""Sparse offset and time indexes of a WAL segment, kept in memory and saved in Kafka's
.index / .timeindex layouts (big-endian 8- and 12-byte entries, offsets relative to the
segment's base offset)."""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right

_OFFSET_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")


def _big_endian(a: array[int]) -> bytes:
    if sys.byteorder == "little":
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


class OffsetIndex:
    """Entries (relative offset, file position). Like Kafka, the offset of an entry is the
    last offset of the batch that starts at that position."""

    __slots__ = ("positions", "rel_offsets")

    def __init__(self) -> None:
        self.rel_offsets: array[int] = array("I")
        self.positions: array[int] = array("I")

    def __len__(self) -> int:
        return len(self.rel_offsets)

    def append(self, rel_offset: int, position: int) -> None:
        self.rel_offsets.append(rel_offset)
        self.positions.append(position)

    def lookup(self, rel_offset: int) -> int:
        """File position of a batch at or before the one holding `rel_offset`."""
        # An entry equal to the target is the last offset of the batch at that position,
        # so that batch holds it; a greater one may be a batch that starts earlier.
        i = bisect_right(self.rel_offsets, rel_offset) - 1
        return self.positions[i] if i >= 0 else 0

    def last(self) -> tuple[int, int] | None:
        if not self.rel_offsets:
            return None
        return self.rel_offsets[-1], self.positions[-1]

    def to_bytes(self) -> bytes:
        inter = array("I", bytes(8 * len(self.rel_offsets)))
        inter[0::2] = self.rel_offsets
        inter[1::2] = self.positions
        return _big_endian(inter)

    @classmethod
    def from_bytes(cls, data: bytes, log_size: int) -> OffsetIndex | None:
        """Parse a saved index; None when it cannot belong to a log of `log_size` bytes."""
        if len(data) % _OFFSET_ENTRY.size:
            return None
        index = cls()
        prev_rel = prev_pos = -1
        for rel, pos in _OFFSET_ENTRY.iter_unpack(data):
            if rel <= prev_rel or pos <= prev_pos or pos >= log_size:
                return None
            index.append(rel, pos)
            prev_rel, prev_pos = rel, pos
        return index


class TimeIndex:
    """Entries (max timestamp so far, relative offset where it was found), timestamps
    strictly increasing. A negative timestamp means the batch had none (-1): like Kafka's,
    the index never holds one, so a lookup by time never finds such batches."""

    __slots__ = ("rel_offsets", "timestamps")

    def __init__(self) -> None:
        self.timestamps: array[int] = array("q")
        self.rel_offsets: array[int] = array("I")

    def __len__(self) -> int:
        return len(self.timestamps)

    def maybe_append(self, timestamp: int, rel_offset: int) -> None:
        if timestamp > (self.timestamps[-1] if self.timestamps else -1):
            self.timestamps.append(timestamp)
            self.rel_offsets.append(rel_offset)

    def lookup_before(self, timestamp: int) -> int | None:
        """Relative offset of the last entry whose timestamp is below `timestamp`: every batch
        up to it is older, so a search for `timestamp` can start at its batch."""
        i = bisect_left(self.timestamps, timestamp) - 1
        return self.rel_offsets[i] if i >= 0 else None

    def last(self) -> tuple[int, int] | None:
        if not self.timestamps:
            return None
        return self.timestamps[-1], self.rel_offsets[-1]

    def to_bytes(self) -> bytes:
        out = bytearray(_TIME_ENTRY.size * len(self.timestamps))
        for i, (ts, rel) in enumerate(zip(self.timestamps, self.rel_offsets, strict=True)):
            _TIME_ENTRY.pack_into(out, i * _TIME_ENTRY.size, ts, rel)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, max_rel_offset: int) -> TimeIndex | None:
        if len(data) % _TIME_ENTRY.size:
            return None
        index = cls()
        prev_ts = prev_rel = -1
        for ts, rel in _TIME_ENTRY.iter_unpack(data):
            if ts <= prev_ts or rel < prev_rel or rel > max_rel_offset:
                return None
            index.timestamps.append(ts)
            index.rel_offsets.append(rel)
            prev_ts, prev_rel = ts, rel
        return index
