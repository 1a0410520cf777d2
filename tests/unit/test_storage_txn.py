"""Transactions in one partition log: open transactions and the last stable offset,
markers, the aborted-transaction index, read_committed reads, and recovery."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.storage.errors import InvalidProducerEpoch, InvalidTxnState, OutOfOrderSequence
from app.storage.log import AbortedTxn, iter_records, parse_header
from app.storage.log.batch import end_offset, validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.memtail import MemTailBudget
from app.storage.log.partition import PRODUCER_SNAPSHOT, AppendResult, PartitionLog
from app.storage.log.txn import ABORT, COMMIT, build_marker, control_type, read_aborted
from tests.unit.batchgen import make_batch


def open_log(root: Path, configs: dict[str, str] | None = None) -> PartitionLog:
    return PartitionLog(
        root / "t-0", "t", 0, configs or {}, FsyncScheduler("always"), MemTailBudget(1 << 20)
    )


def produce(
    plog: PartitionLog, pid: int, seq: int, n: int = 1, epoch: int = 0, txn: bool = True
) -> AppendResult:
    data = make_batch(
        [b"p%d-%d" % (pid, seq + i) for i in range(n)],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        transactional=txn,
    )
    return plog.append(data, validate_batches(data), 1000)


def plain(plog: PartitionLog, n: int = 1) -> AppendResult:
    data = make_batch([b"plain"] * n)
    return plog.append(data, validate_batches(data), 1000)


def test_marker_batch_is_a_valid_control_batch() -> None:
    data = build_marker(7, 3, commit=False, coordinator_epoch=5, now_ms=1234)
    [(_s, _e, h)] = validate_batches(data)  # checks the CRC
    assert h.is_control and h.is_transactional
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.records_count) == (7, 3, -1, 1)
    assert control_type(data) == ABORT
    assert control_type(build_marker(7, 3, True, 0, 1)) == COMMIT
    [rec] = list(iter_records(data))
    assert rec.key == b"\x00\x00\x00\x00" and rec.value == b"\x00\x00\x00\x00\x00\x05"


def test_lso_follows_open_transactions(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    plain(plog, 2)  # 0-1
    assert plog.last_stable_offset == plog.high_watermark == 2
    produce(plog, 1, 0, n=3)  # 2-4, pid 1 opens at 2
    plain(plog)  # 5
    produce(plog, 2, 0)  # 6, pid 2 opens at 6
    produce(plog, 1, 3)  # 7, same txn
    assert plog.open_transactions() == {1: 2, 2: 6}
    assert plog.last_stable_offset == 2
    plog.append_marker(1, 0, True, 0, 1000)  # 8
    assert plog.open_transactions() == {2: 6}
    assert plog.last_stable_offset == 6
    plog.append_marker(2, 0, False, 0, 1000)  # 9
    assert plog.last_stable_offset == plog.high_watermark == 10
    assert plog.aborted_transactions(0, 10) == [AbortedTxn(2, 6, 9)]
    assert plog.aborted_transactions(10, 20) == []
    assert plog.aborted_transactions(0, 6) == []
    assert plog.aborted_transactions(9, 10) == [AbortedTxn(2, 6, 9)]
    plog.close()


def test_read_committed_stops_at_lso(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    plain(plog)  # 0
    produce(plog, 1, 0, n=2)  # 1-2
    plain(plog)  # 3
    lso = plog.last_stable_offset
    assert lso == 1
    committed = plog.read(0, 1 << 20, upper=lso)
    assert committed is not None and end_offset(committed) == 1
    assert plog.read(1, 1 << 20, upper=lso) == []
    everything = plog.read(0, 1 << 20)
    assert everything is not None and end_offset(everything) == 4
    plog.append_marker(1, 0, True, 0, 1000)
    after = plog.read(0, 1 << 20, upper=plog.last_stable_offset)
    assert after is not None and end_offset(after) == 5
    plog.close()


def test_marker_fences_older_epoch_and_resets_sequences(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 1, 0, n=2)
    plog.append_marker(1, 1, False, 0, 1000)  # the coordinator bumped the epoch
    with pytest.raises(InvalidProducerEpoch):
        produce(plog, 1, 2)  # the zombie, still at epoch 0
    with pytest.raises(InvalidProducerEpoch):
        plog.append_marker(1, 0, True, 0, 1000)
    with pytest.raises(OutOfOrderSequence):
        produce(plog, 1, 2, epoch=1)  # the new epoch starts over at 0
    produce(plog, 1, 0, epoch=1)
    assert plog.open_transactions() == {1: 3}
    # Sequences continue across transactions of one epoch.
    plog.append_marker(1, 1, True, 0, 1000)
    produce(plog, 1, 1, epoch=1)
    plog.close()


def test_plain_batch_inside_own_transaction_is_refused(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 1, 0)
    with pytest.raises(InvalidTxnState):
        produce(plog, 1, 1, txn=False)
    plog.append_marker(1, 0, True, 0, 1000)
    produce(plog, 1, 1, txn=False)
    plog.close()


def test_marker_without_data_is_written_but_aborts_nothing(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    plog.append_marker(5, 0, False, 0, 1000)
    assert plog.log_end_offset == 1
    assert plog.aborted_transactions(0, 10) == []
    plog.close()


def _fill(plog: PartitionLog) -> None:
    """Committed, aborted and open transactions across several WAL segments."""
    seqs = {1: 0, 2: 0, 3: 0}
    for round_ in range(6):
        for pid in (1, 2):
            produce(plog, pid, seqs[pid], n=2)
            seqs[pid] += 2
            plain(plog)
        plog.append_marker(1, 0, round_ % 2 == 0, 0, 1000)
        plog.append_marker(2, 0, round_ % 3 != 0, 0, 1000)
    produce(plog, 3, 0, n=3)
    plain(plog)


def _txn_state(plog: PartitionLog) -> tuple[dict[int, int], list[AbortedTxn], int]:
    return (
        plog.open_transactions(),
        plog.aborted_transactions(0, plog.log_end_offset),
        plog.last_stable_offset,
    )


@pytest.mark.parametrize("snapshot", ["kept", "deleted"])
def test_state_rebuilt_after_kill(tmp_path: Path, snapshot: str) -> None:
    plog = open_log(tmp_path, {"segment.bytes": "700"})
    _fill(plog)
    assert len(plog.wal.segments) > 3
    before = _txn_state(plog)
    assert len(before[1]) == 5 and before[0] == {3: plog.log_end_offset - 4}
    # Not closed: killed. Index entries written after the last snapshot are found again.
    if snapshot == "deleted":
        (tmp_path / "t-0" / PRODUCER_SNAPSHOT).unlink()
    plog2 = open_log(tmp_path, {"segment.bytes": "700"})
    assert _txn_state(plog2) == before
    plog2.close()
    plog3 = open_log(tmp_path, {"segment.bytes": "700"})
    assert _txn_state(plog3) == before
    plog3.close()


def test_index_outlives_trimmed_wal_and_follows_log_start(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"segment.bytes": "700"})
    _fill(plog)
    before = _txn_state(plog)
    # Tiering deletes WAL segments without moving the log start: the index keeps them.
    trimmed = plog.wal.segments[2].base_offset
    plog.delete_wal_before(trimmed, 0, now_s=1e12)
    assert plog.wal_start_offset == trimmed
    plog.close()
    plog = open_log(tmp_path, {"segment.bytes": "700"})
    assert plog.aborted_transactions(0, plog.log_end_offset) == before[1]
    # Moving the log start forgets the transactions entirely below it.
    cut = before[1][2].last_offset + 1
    plog.delete_records(cut)
    assert plog.aborted_transactions(0, plog.log_end_offset) == [
        a for a in before[1] if a.last_offset >= cut
    ]
    plog.close()
    plog = open_log(tmp_path, {"segment.bytes": "700"})
    assert plog.aborted_transactions(0, plog.log_end_offset) == [
        a for a in before[1] if a.last_offset >= cut
    ]
    plog.close()


_CHILD = """
import os, signal, sys
from pathlib import Path
from app.storage.log.batch import validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.partition import PartitionLog
from app.storage.log.memtail import MemTailBudget
from tests.unit.batchgen import make_batch

plog = PartitionLog(Path(sys.argv[1]), "t", 0, {"segment.bytes": "600"},
                    FsyncScheduler("always"), MemTailBudget(1 << 20))
for seq in range(0, 40, 2):
    data = make_batch([b"a", b"b"], producer_id=1, producer_epoch=0, base_sequence=seq,
                      transactional=True)
    plog.append(data, validate_batches(data), 1)
    plog.append_marker(1, 0, seq % 4 == 0, 0, 1)
data = make_batch([b"open"], producer_id=1, producer_epoch=0, base_sequence=40,
                  transactional=True)
plog.append(data, validate_batches(data), 1)
print(plog.log_end_offset, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_state_after_sigkill(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "t-0")],
        capture_output=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    leo = int(proc.stdout)
    plog = open_log(tmp_path, {"segment.bytes": "600"})
    assert plog.log_end_offset == leo == 61
    # Every other transaction aborted: data at 3k, 3k+1, marker at 3k+2.
    assert plog.aborted_transactions(0, leo) == [
        AbortedTxn(1, 3 * k, 3 * k + 2) for k in range(20) if k % 2 == 1
    ]
    assert plog.open_transactions() == {1: 60}
    assert plog.last_stable_offset == 60
    batches = plog.read(0, 1 << 30, upper=plog.last_stable_offset)
    assert batches is not None
    assert parse_header(batches[0]).base_offset == 0
    assert end_offset(batches) == 60
    plog.close()


def test_lso_is_never_below_the_log_start(tmp_path: Path) -> None:
    """Kafka's maybeIncrementFirstUnstableOffset: a consumer sent below the log start would
    get OFFSET_OUT_OF_RANGE and reset."""
    plog = open_log(tmp_path, {"segment.bytes": "300"})
    produce(plog, 1, 0, n=4)  # open from offset 0
    for _ in range(6):
        plain(plog)
    plog.delete_records(5)
    assert plog.log_start_offset == 5
    assert plog.last_stable_offset == 5
    plog.close()


def test_wal_trim_keeps_the_start_of_open_transactions(tmp_path: Path) -> None:
    """Tiering deletes uploaded WAL segments, but not one where an open transaction starts:
    recovery without a producer snapshot replays the WAL and must find that start."""
    plog = open_log(tmp_path, {"segment.bytes": "300"})
    for _ in range(4):
        plain(plog)
    produce(plog, 1, 0)  # opens at 4
    for _ in range(8):
        plain(plog)
    assert len(plog.wal.segments) > 3
    plog.delete_wal_before(plog.log_end_offset, 0, now_s=1e12)
    assert plog.wal_start_offset <= 4
    plog.close()
    (tmp_path / "t-0" / PRODUCER_SNAPSHOT).unlink()
    plog = open_log(tmp_path, {"segment.bytes": "300"})
    assert plog.open_transactions() == {1: 4}
    plog.append_marker(1, 0, True, 0, 1000)
    plog.delete_wal_before(plog.log_end_offset, 0, now_s=1e12)
    assert plog.wal_start_offset > 4
    plog.close()


def test_torn_index_tail_is_dropped(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 1, 0)
    plog.append_marker(1, 0, False, 0, 1000)  # aborted (1, 0, 1)
    plog.close()
    path = tmp_path / "t-0" / "aborted-txns"
    # A power loss can leave a zero-filled or partial tail after the last good entry.
    path.write_bytes(path.read_bytes() + bytes(32) + b"\x01\x02")
    assert read_aborted(tmp_path / "t-0") == [AbortedTxn(1, 0, 1)]
    plog = open_log(tmp_path)
    assert plog.aborted_transactions(0, 100) == [AbortedTxn(1, 0, 1)]
    assert path.stat().st_size == 32
    plog.close()


@pytest.mark.parametrize("mode", ["interval", "never"])
async def test_markers_are_synced_in_every_fsync_mode(tmp_path: Path, mode: str) -> None:
    fsync = FsyncScheduler(mode, interval_ms=60_000)
    plog = PartitionLog(tmp_path / "t-0", "t", 0, {}, fsync, MemTailBudget(1 << 20))
    produce(plog, 1, 0)
    before = fsync.fsync_calls
    result = plog.append_marker(1, 0, False, 0, 1000)
    await asyncio.wait_for(plog.wait_synced(result.last_offset + 1), 10)
    assert fsync.fsync_calls > before
    await fsync.close()
    plog.close()
