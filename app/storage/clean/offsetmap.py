"""The cleaner's two lookups: the offset map (key -> last offset of the key in the dirty part,
bounded) and the aborted transactions of the range by producer."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable

from app.storage.log import AbortedTxn


def key_digest(key: bytes) -> bytes:
    """The 16-byte MD5 of a key, as Kafka's SkimpyOffsetMap stores keys: long keys cost the
    map no more than short ones, and a collision (two keys sharing a digest, one dropping
    the other's records) is as unlikely as in Kafka."""
    return hashlib.md5(key, usedforsecurity=False).digest()


class OffsetMap:
    """Key digest -> the offset of the key's last record, for at most `capacity` keys.

    `end`: the map is complete below it (from the dirty start): a record at or past `end`
    may have a later version the map never saw, so the keep rule does not apply to it
    (Kafka's `pastLatestOffset`)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the offset map needs room for at least one key")
        self.capacity = capacity
        self.end = 0
        self._offsets: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._offsets)

    def put(self, digest: bytes, offset: int) -> bool:
        """Record `offset` as the digest's last; False (nothing changed) when the map is full
        and the digest is not in it."""
        offsets = self._offsets
        if len(offsets) >= self.capacity and digest not in offsets:
            return False
        offsets[digest] = offset
        return True

    def latest(self, key: bytes) -> int:
        """The key's last offset, -1 if the map does not hold it."""
        return self._offsets.get(key_digest(key), -1)


class AbortedRanges:
    """The aborted transactions of a range: does a producer's batch at an offset belong to
    one? A producer has one transaction at a time, so its ranges do not overlap."""

    def __init__(self, txns: Iterable[AbortedTxn]) -> None:
        by_pid: dict[int, list[tuple[int, int]]] = {}
        for t in txns:
            by_pid.setdefault(t.producer_id, []).append((t.first_offset, t.last_offset))
        self._firsts: dict[int, list[int]] = {}
        self._lasts: dict[int, list[int]] = {}
        for pid, ranges in by_pid.items():
            ranges.sort()
            self._firsts[pid] = [f for f, _ in ranges]
            self._lasts[pid] = [last for _, last in ranges]

    def covers(self, producer_id: int, offset: int) -> bool:
        firsts = self._firsts.get(producer_id)
        if firsts is None:
            return False
        i = bisect_right(firsts, offset) - 1
        return i >= 0 and offset <= self._lasts[producer_id][i]
