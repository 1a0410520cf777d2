from __future__ import annotations

from app.storage.log.memtail import MemTail, MemTailBudget


def add(tail: MemTail, base: int, size: int, count: int = 1) -> None:
    tail.append([(base, base + count, memoryview(bytes([base % 256]) * size))])


def test_read_and_limits() -> None:
    tail = MemTail(MemTailBudget(10_000))
    for i in range(10):
        add(tail, i * 2, 100, count=2)
    assert tail.first_offset == 0
    got = tail.read(5, 250, 20)
    assert got is not None
    assert [bytes(g)[0] for g in got] == [4, 6]
    # The first batch is whole even when larger than max_bytes.
    got = tail.read(5, 1, 20)
    assert got is not None and len(got) == 1 and len(got[0]) == 100
    got = tail.read(0, 10_000, 6)
    assert got is not None and len(got) == 3  # stops at the high watermark
    assert tail.read(20, 100, 20) is None


def test_budget_evicts_appending_partition_first() -> None:
    budget = MemTailBudget(1000)
    a, b = MemTail(budget), MemTail(budget)
    for i in range(5):
        add(a, i, 100)
    for i in range(5):
        add(b, i, 100)
    assert budget.used == 1000
    add(a, 5, 100)
    assert (a.count, b.count) == (5, 5)
    assert a.first_offset == 1 and b.first_offset == 0
    assert a.read(0, 100, 10) is None
    # A partition with only its newest batch takes room from the others.
    c = MemTail(budget)
    add(c, 0, 300)
    assert c.count == 1
    assert budget.used <= 1000
    assert a.count + b.count == 7
    # A batch bigger than the whole budget is not kept.
    add(c, 1, 5000)
    assert budget.used <= 1000
    assert c.count == 0


def test_truncate_and_compaction() -> None:
    budget = MemTailBudget(10**9)
    tail = MemTail(budget)
    for i in range(3000):
        add(tail, i, 10)
    tail.truncate_before(2500)
    assert tail.first_offset == 2500
    assert tail.count == 500
    assert budget.used == 5000
    got = tail.read(2999, 100, 3000)
    assert got is not None and bytes(got[0])[0] == 2999 % 256
    tail.close()
    assert budget.used == 0


def test_disabled_budget_keeps_nothing() -> None:
    tail = MemTail(MemTailBudget(0))
    add(tail, 0, 10)
    assert tail.count == 0
    assert tail.read(0, 100, 1) is None
