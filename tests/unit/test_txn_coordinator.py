"""The transaction coordinator's state machine and recovery, on a real TransactionStore.

The marker writer and offset completer are recorders: what the coordinator asks of the
log and of the groups is exactly what these tests check."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from app.broker import errors as e
from app.broker.txn import TransactionCoordinator, TransactionStore, TxnState
from app.storage.errors import StorageError, UnknownTopic

TIMEOUT = 60_000


class Log:
    """What the coordinator wrote: markers and group completions, in order."""

    def __init__(self) -> None:
        self.markers: list[tuple[str, int, int, int, bool]] = []
        self.offsets: list[tuple[str, int, int, bool]] = []
        self.gone: set[str] = set()
        self.failing = False

    async def write_marker(self, topic: str, partition: int, pid: int, epoch: int, commit: bool):
        if topic in self.gone:
            raise UnknownTopic(topic)
        if self.failing:
            raise StorageError("disk on fire")
        self.markers.append((topic, partition, pid, epoch, commit))

    async def complete(self, group: str, pid: int, epoch: int, commit: bool) -> None:
        self.offsets.append((group, pid, epoch, commit))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def make(tmp_path: Path, log: Log, clock: Clock, ids: itertools.count[int] | None = None):
    pids = ids if ids is not None else itertools.count(1000)
    return TransactionCoordinator(
        TransactionStore(tmp_path / "transactions.sqlite"),
        next_producer_id=lambda: next(pids),
        write_marker=log.write_marker,
        complete_offsets=log.complete,
        max_timeout_ms=900_000,
        clock=clock,
    )


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def started(tmp_path: Path, log: Log, clock: Clock, **kw) -> TransactionCoordinator:
    coord = make(tmp_path, log, clock, **kw)
    await coord.start()
    return coord


async def test_commit_writes_markers_then_offsets_then_completes(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    r = await coord.init_producer_id("t1", TIMEOUT)
    assert (r.error, r.epoch) == (e.NONE, 0)
    pid = r.producer_id
    assert coord.check_produce(pid, 0, "a", 0) == e.INVALID_TXN_STATE
    assert await coord.add_partitions("t1", pid, 0, [("a", 0), ("b", 1)]) == e.NONE
    assert await coord.add_partitions("t1", pid, 0, groups=["g"]) == e.NONE
    assert coord.check_produce(pid, 0, "a", 0) == e.NONE
    assert coord.check_produce(pid, 0, "a", 1) == e.INVALID_TXN_STATE
    assert coord.check_produce(pid, 1, "a", 0) == e.INVALID_PRODUCER_EPOCH
    assert coord.check_produce(pid + 1, 0, "a", 0) == e.INVALID_PRODUCER_ID_MAPPING
    assert await coord.end_txn("t1", pid, 0, commit=True) == e.NONE
    assert log.markers == [("a", 0, pid, 0, True), ("b", 1, pid, 0, True)]
    assert log.offsets == [("g", pid, 0, True)]
    meta = coord.get("t1")
    assert meta is not None
    assert (meta.state, meta.partitions, meta.groups) == (
        TxnState.COMPLETE_COMMIT,
        frozenset(),
        frozenset(),
    )
    # A retried EndTxn of the same outcome is answered NONE and writes nothing again.
    assert await coord.end_txn("t1", pid, 0, commit=True) == e.NONE
    assert await coord.end_txn("t1", pid, 0, commit=False) == e.INVALID_TXN_STATE
    assert len(log.markers) == 2
    # The next transaction of the same producer.
    assert coord.check_produce(pid, 0, "a", 0) == e.INVALID_TXN_STATE
    assert await coord.add_partitions("t1", pid, 0, [("a", 0)]) == e.NONE
    assert await coord.end_txn("t1", pid, 0, commit=False) == e.NONE
    assert log.markers[-1] == ("a", 0, pid, 0, False)
    assert coord.get("t1").state is TxnState.COMPLETE_ABORT  # type: ignore[union-attr]


async def test_end_txn_errors(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    assert await coord.end_txn("nope", 1, 0, True) == e.INVALID_PRODUCER_ID_MAPPING
    assert await coord.end_txn("", 1, 0, True) == e.INVALID_REQUEST
    r = await coord.init_producer_id("t", TIMEOUT)
    pid = r.producer_id
    assert await coord.end_txn("t", pid, 0, True) == e.INVALID_TXN_STATE  # Empty
    assert await coord.end_txn("t", pid + 7, 0, True) == e.INVALID_PRODUCER_ID_MAPPING
    assert await coord.end_txn("t", pid, 3, True) == e.PRODUCER_FENCED
    assert await coord.add_partitions("t", pid, 1, [("a", 0)]) == e.PRODUCER_FENCED
    assert await coord.add_partitions("t", pid + 1, 0, [("a", 0)]) == e.INVALID_PRODUCER_ID_MAPPING
    assert await coord.add_partitions("", pid, 0, [("a", 0)]) == e.INVALID_REQUEST
    assert log.markers == []


async def test_init_validation(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    assert (await coord.init_producer_id("", TIMEOUT)).error == e.INVALID_REQUEST
    assert (await coord.init_producer_id("t", 0)).error == e.INVALID_TRANSACTION_TIMEOUT
    assert (await coord.init_producer_id("t", 900_001)).error == e.INVALID_TRANSACTION_TIMEOUT
    assert (await coord.init_producer_id("t", TIMEOUT, 5, -1)).error == e.INVALID_REQUEST
    assert coord.get("t") is None


async def test_second_producer_fences_and_aborts_the_first(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    first = await coord.init_producer_id("t", TIMEOUT)
    pid = first.producer_id
    assert await coord.add_partitions("t", pid, 0, [("a", 0)], groups=["g"]) == e.NONE
    second = await coord.init_producer_id("t", TIMEOUT)
    # The abort carries the fencing epoch 1; the new producer gets epoch 2 (Kafka's retry
    # after CONCURRENT_TRANSACTIONS, done at once here).
    assert (second.error, second.producer_id, second.epoch) == (e.NONE, pid, 2)
    assert log.markers == [("a", 0, pid, 1, False)]
    assert log.offsets == [("g", pid, 1, False)]
    assert await coord.end_txn("t", pid, 0, commit=True) == e.PRODUCER_FENCED
    assert await coord.add_partitions("t", pid, 0, [("a", 0)]) == e.PRODUCER_FENCED
    assert coord.check_produce(pid, 0, "a", 0) == e.INVALID_PRODUCER_EPOCH


async def test_kip360_bump_and_retry_of_the_same_bump(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    r0 = await coord.init_producer_id("t", TIMEOUT)
    pid = r0.producer_id
    bumped = await coord.init_producer_id("t", TIMEOUT, pid, 0)
    assert (bumped.error, bumped.producer_id, bumped.epoch) == (e.NONE, pid, 1)
    # The answer was lost; the same request again gets the same answer.
    again = await coord.init_producer_id("t", TIMEOUT, pid, 0)
    assert (again.error, again.producer_id, again.epoch) == (e.NONE, pid, 1)
    # A producer id that is not ours, or an epoch that is neither current nor last: fenced.
    assert (await coord.init_producer_id("t", TIMEOUT, pid + 50, 1)).error == e.PRODUCER_FENCED
    assert (await coord.init_producer_id("t", TIMEOUT, pid, 7)).error == e.PRODUCER_FENCED
    # A fresh producer (no id) always gets a bump and fences the rest.
    fresh = await coord.init_producer_id("t", TIMEOUT)
    assert (fresh.producer_id, fresh.epoch) == (pid, 2)
    assert (await coord.init_producer_id("t", TIMEOUT, pid, 1)).error == e.PRODUCER_FENCED


async def test_exhausted_epoch_moves_to_a_new_producer_id(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    r = await coord.init_producer_id("t", TIMEOUT)
    pid = r.producer_id
    # Jump close to the end through the store, as if after 32,765 restarts of the producer.
    meta = coord.get("t")
    assert meta is not None
    coord._put(meta.to(TxnState.EMPTY, clock.now, epoch=32765))
    r = await coord.init_producer_id("t", TIMEOUT)
    assert (r.producer_id, r.epoch) == (pid, 32766)
    # The producer with the exhausted epoch asks for a bump (KIP-360): a new id.
    r = await coord.init_producer_id("t", TIMEOUT, pid, 32766)
    assert r.error == e.NONE and r.producer_id != pid and r.epoch == 0
    # The old id no longer maps to the transactional id.
    assert coord.check_produce(pid, 32766, "a", 0) == e.INVALID_PRODUCER_ID_MAPPING
    # Its answer was lost: the retry gets the same answer.
    again = await coord.init_producer_id("t", TIMEOUT, pid, 32766)
    assert (again.error, again.producer_id, again.epoch) == (e.NONE, r.producer_id, 0)
    # And lost again: still the same answer (the rotation remembers where it came from).
    again = await coord.init_producer_id("t", TIMEOUT, pid, 32766)
    assert (again.error, again.producer_id, again.epoch) == (e.NONE, r.producer_id, 0)
    # A fresh producer at the exhausted epoch rotates too.
    meta = coord.get("t")
    assert meta is not None
    coord._put(meta.to(TxnState.EMPTY, clock.now, epoch=32766))
    fresh = await coord.init_producer_id("t", TIMEOUT)
    assert fresh.producer_id not in (pid, r.producer_id) and fresh.epoch == 0


async def test_fencing_an_ongoing_txn_at_the_last_epoch(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    pid = (await coord.init_producer_id("t", TIMEOUT)).producer_id
    meta = coord.get("t")
    assert meta is not None
    coord._put(meta.to(TxnState.EMPTY, clock.now, epoch=32766))
    assert await coord.add_partitions("t", pid, 32766, [("a", 0)]) == e.NONE
    r = await coord.init_producer_id("t", TIMEOUT)
    assert log.markers == [("a", 0, pid, 32767, False)]
    assert r.producer_id != pid and r.epoch == 0


async def test_timeout_aborts_with_a_bumped_epoch(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    pid = (await coord.init_producer_id("t", 3000)).producer_id
    assert await coord.add_partitions("t", pid, 0, [("a", 0)]) == e.NONE
    clock.now += 2000
    assert await coord.add_partitions("t", pid, 0, [("a", 1)]) == e.NONE
    clock.now += 999
    await coord.abort_timed_out()
    assert log.markers == []  # measured from the first AddPartitions, not the last
    clock.now += 2
    await coord.abort_timed_out()
    assert log.markers == [("a", 0, pid, 1, False), ("a", 1, pid, 1, False)]
    meta = coord.get("t")
    assert meta is not None and (meta.state, meta.epoch) == (TxnState.COMPLETE_ABORT, 1)
    assert await coord.end_txn("t", pid, 0, commit=True) == e.PRODUCER_FENCED
    assert coord.check_produce(pid, 0, "a", 0) == e.INVALID_PRODUCER_EPOCH


async def test_topic_gone_is_skipped(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    pid = (await coord.init_producer_id("t", TIMEOUT)).producer_id
    assert await coord.add_partitions("t", pid, 0, [("a", 0), ("gone", 0)]) == e.NONE
    log.gone.add("gone")
    assert await coord.end_txn("t", pid, 0, commit=True) == e.NONE
    assert log.markers == [("a", 0, pid, 0, True)]
    assert coord.get("t").state is TxnState.COMPLETE_COMMIT  # type: ignore[union-attr]


async def test_failed_marker_keeps_prepare_and_the_tick_finishes_it(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    pid = (await coord.init_producer_id("t", TIMEOUT)).producer_id
    assert await coord.add_partitions("t", pid, 0, [("a", 0)]) == e.NONE
    log.failing = True
    assert await coord.end_txn("t", pid, 0, commit=True) == e.NONE
    assert coord.get("t").state is TxnState.PREPARE_COMMIT  # type: ignore[union-attr]
    assert coord.check_produce(pid, 0, "a", 0) == e.NOT_ENOUGH_REPLICAS
    assert await coord.end_txn("t", pid, 0, commit=True) == e.CONCURRENT_TRANSACTIONS
    assert await coord.end_txn("t", pid, 0, commit=False) == e.INVALID_TXN_STATE
    assert await coord.add_partitions("t", pid, 0, [("b", 0)]) == e.CONCURRENT_TRANSACTIONS
    assert (await coord.init_producer_id("t", TIMEOUT)).error == e.CONCURRENT_TRANSACTIONS
    log.failing = False
    await coord.abort_timed_out()
    assert log.markers == [("a", 0, pid, 0, True)]
    assert coord.get("t").state is TxnState.COMPLETE_COMMIT  # type: ignore[union-attr]


async def test_recovery_finishes_what_a_crash_left(tmp_path, log, clock):
    ids = itertools.count(1000)
    coord = await started(tmp_path, log, clock, ids=ids)
    pids = {}
    for tid in ("commit", "abort", "ongoing", "expired", "done"):
        pids[tid] = (await coord.init_producer_id(tid, 10_000)).producer_id
        assert await coord.add_partitions(tid, pids[tid], 0, [(tid, 0)], groups=[tid]) == e.NONE
    assert await coord.end_txn("done", pids["done"], 0, True) == e.NONE
    # A crash after PrepareCommit / PrepareAbort was written, before any marker.
    for tid, state in (("commit", TxnState.PREPARE_COMMIT), ("abort", TxnState.PREPARE_ABORT)):
        meta = coord.get(tid)
        assert meta is not None
        coord.store.save(meta.to(state, clock.now))
    clock.now += 5000
    assert await coord.add_partitions("ongoing", pids["ongoing"], 0, [("more", 0)]) == e.NONE
    meta = coord.get("ongoing")
    coord.store.save(meta.to(TxnState.ONGOING, clock.now, txn_start_ms=clock.now))  # type: ignore[union-attr]
    clock.now += 5001
    coord.store.close()
    log.markers.clear()
    log.offsets.clear()

    again = make(tmp_path, log, clock, ids=ids)
    assert again.loading
    assert (await again.init_producer_id("x", TIMEOUT)).error == e.COORDINATOR_LOAD_IN_PROGRESS
    assert again.check_produce(pids["ongoing"], 0, "ongoing", 0) == e.NOT_ENOUGH_REPLICAS
    await again.start()
    try:
        got = {m[0]: m for m in log.markers}
        assert got == {
            "commit": ("commit", 0, pids["commit"], 0, True),
            "abort": ("abort", 0, pids["abort"], 0, False),
            "expired": ("expired", 0, pids["expired"], 1, False),
        }
        assert sorted(log.offsets) == [
            ("abort", pids["abort"], 0, False),
            ("commit", pids["commit"], 0, True),
            ("expired", pids["expired"], 1, False),
        ]
        states = {t: again.get(t).state for t in pids}  # type: ignore[union-attr]
        assert states == {
            "commit": TxnState.COMPLETE_COMMIT,
            "abort": TxnState.COMPLETE_ABORT,
            "ongoing": TxnState.ONGOING,
            "expired": TxnState.COMPLETE_ABORT,
            "done": TxnState.COMPLETE_COMMIT,
        }
        # The ongoing one continues: same producer, same partitions, its timer running.
        assert again.check_produce(pids["ongoing"], 0, "more", 0) == e.NONE
        assert await again.end_txn("ongoing", pids["ongoing"], 0, True) == e.NONE
        assert ("more", 0, pids["ongoing"], 0, True) in log.markers
        # New producer ids continue after the recovered ones.
        fresh = await again.init_producer_id("new", TIMEOUT)
        assert fresh.producer_id not in pids.values()
    finally:
        await again.close()
        again.store.close()


async def test_describe_and_list(tmp_path, log, clock):
    coord = await started(tmp_path, log, clock)
    a = (await coord.init_producer_id("a", TIMEOUT)).producer_id
    await coord.init_producer_id("b", TIMEOUT)
    assert await coord.add_partitions("a", a, 0, [("x", 0), ("x", 2)]) == e.NONE
    clock.now += 100
    code, meta = coord.describe("a")
    assert code == e.NONE and meta is not None
    assert (meta.state, meta.partitions, meta.txn_start_ms) == (
        TxnState.ONGOING,
        frozenset({("x", 0), ("x", 2)}),
        clock.now - 100,
    )
    assert coord.describe("zzz")[0] == e.TRANSACTIONAL_ID_NOT_FOUND
    assert coord.describe("")[0] == e.INVALID_REQUEST
    code, unknown, found = coord.list_transactions()
    assert (code, unknown, [m.transactional_id for m in found]) == (e.NONE, [], ["a", "b"])
    _, unknown, found = coord.list_transactions(states=["Ongoing", "Bogus"])
    assert unknown == ["Bogus"] and [m.transactional_id for m in found] == ["a"]
    _, _, found = coord.list_transactions(producer_ids=[a])
    assert [m.transactional_id for m in found] == ["a"]
    # As Kafka: the duration counts from txn_start_ms, -1 for a transactional id without a
    # transaction, so those always pass a duration filter.
    _, _, found = coord.list_transactions(duration_ms=50)
    assert [m.transactional_id for m in found] == ["a", "b"]
    _, _, found = coord.list_transactions(states=["Ongoing"], duration_ms=100)
    assert found == []
