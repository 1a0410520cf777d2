"""Memory tail: the most recent stored batches of each partition, so that consumers keeping up
with producers are served without touching the file system. One byte budget is shared by all
partitions."""

from __future__ import annotations

from bisect import bisect_right

_COMPACT_AT = 1024


class MemTailBudget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        # Insertion-ordered: tails that just lost data move to the back, so eviction from
        # "the others" rotates instead of always draining the same partition.
        self._tails: dict[MemTail, None] = {}

    def register(self, tail: MemTail) -> None:
        self._tails[tail] = None

    def unregister(self, tail: MemTail) -> None:
        self._tails.pop(tail, None)

    def charge(self, appending: MemTail) -> None:
        """Called after `appending` grew: evict until the budget holds again, starting with
        the appending partition's own oldest batches (keeping its newest), then the others'."""
        if self.used <= self.max_bytes:
            return
        while self.used > self.max_bytes and appending.count > 1:
            appending.evict_oldest()
        for other in list(self._tails):
            if self.used <= self.max_bytes:
                return
            if other is appending:
                continue
            while self.used > self.max_bytes and other.count:
                other.evict_oldest()
            self._tails.pop(other, None)
            self._tails[other] = None
        if self.used > self.max_bytes:
            appending.clear()


class MemTail:
    """Consecutive batches (exact stored bytes) of one partition, oldest first."""

    def __init__(self, budget: MemTailBudget) -> None:
        self._budget = budget
        self._bases: list[int] = []
        self._nexts: list[int] = []
        self._data: list[memoryview] = []
        self._head = 0
        self.bytes = 0
        budget.register(self)

    @property
    def count(self) -> int:
        return len(self._bases) - self._head

    @property
    def first_offset(self) -> int | None:
        return self._bases[self._head] if self.count else None

    def append(self, batches: list[tuple[int, int, memoryview]]) -> None:
        """Add (base offset, next offset, bytes) batches that follow the held ones."""
        if self._budget.max_bytes <= 0:
            return
        if self.count and batches and batches[0][0] != self._nexts[-1]:
            self.clear()
        for base, nxt, data in batches:
            self._bases.append(base)
            self._nexts.append(nxt)
            self._data.append(data)
            self.bytes += len(data)
            self._budget.used += len(data)
        self._budget.charge(self)

    def read(self, offset: int, max_bytes: int, stop_offset: int) -> list[memoryview] | None:
        """Batches from the one holding `offset` (see PartitionLog.read), or None when the
        tail does not hold `offset`."""
        if not self.count or offset < self._bases[self._head]:
            return None
        i = bisect_right(self._bases, offset, lo=self._head) - 1
        n = len(self._bases)
        if self._nexts[i] <= offset:
            return None
        out: list[memoryview] = []
        total = 0
        while i < n and self._bases[i] < stop_offset:
            data = self._data[i]
            if out and total + len(data) > max_bytes:
                break
            out.append(data)
            total += len(data)
            i += 1
        return out

    def evict_oldest(self) -> None:
        if not self.count:
            return
        size = len(self._data[self._head])
        self._data[self._head] = memoryview(b"")
        self._head += 1
        self.bytes -= size
        self._budget.used -= size
        if self._head >= _COMPACT_AT and self._head * 2 >= len(self._bases):
            del self._bases[: self._head]
            del self._nexts[: self._head]
            del self._data[: self._head]
            self._head = 0

    def truncate_before(self, offset: int) -> None:
        """Drop batches entirely below `offset` (the log start moved past them)."""
        while self.count and self._nexts[self._head] <= offset:
            self.evict_oldest()

    def clear(self) -> None:
        self._budget.used -= self.bytes
        self.bytes = 0
        self._bases.clear()
        self._nexts.clear()
        self._data.clear()
        self._head = 0

    def close(self) -> None:
        self.clear()
        self._budget.unregister(self)
