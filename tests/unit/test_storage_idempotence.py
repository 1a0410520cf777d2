from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.storage.errors import DuplicateSequence, InvalidProducerEpoch, OutOfOrderSequence
from app.storage.log.batch import validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.memtail import MemTailBudget
from app.storage.log.partition import PRODUCER_SNAPSHOT, AppendResult, PartitionLog
from tests.unit.batchgen import make_batch


def open_log(root: Path, configs: dict[str, str] | None = None) -> PartitionLog:
    return PartitionLog(
        root / "t-0", "t", 0, configs or {}, FsyncScheduler("always"), MemTailBudget(1 << 20)
    )


def produce(
    plog: PartitionLog, pid: int, epoch: int, seq: int, n: int = 1, now: int = 1000
) -> AppendResult:
    data = make_batch(
        [b"v%d" % i for i in range(n)], producer_id=pid, producer_epoch=epoch, base_sequence=seq
    )
    return plog.append(data, validate_batches(data), now)


def test_duplicate_returns_original_offsets(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"message.timestamp.type": "LogAppendTime"})
    first = produce(plog, 1, 0, 0, n=3, now=111)
    produce(plog, 1, 0, 3, n=2, now=222)
    with pytest.raises(DuplicateSequence) as dup:
        produce(plog, 1, 0, 0, n=3, now=333)
    assert (dup.value.base_offset, dup.value.last_offset) == (first.base_offset, first.last_offset)
    assert dup.value.log_append_time_ms == 111
    with pytest.raises(DuplicateSequence) as dup:
        produce(plog, 1, 0, 3, n=2)
    assert (dup.value.base_offset, dup.value.last_offset) == (3, 4)
    assert plog.log_end_offset == 5
    plog.close()


def test_sequence_rules(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 1, 0, 0, n=2)
    with pytest.raises(OutOfOrderSequence):
        produce(plog, 1, 0, 3)  # gap: expected 2
    produce(plog, 1, 0, 2)
    with pytest.raises(DuplicateSequence):
        produce(plog, 1, 0, 0, n=2)  # an older cached batch, not only the latest
    with pytest.raises(OutOfOrderSequence):
        produce(plog, 1, 0, 1, n=2)  # overlaps cached batches without matching one
    assert produce(plog, 1, 0, 3).base_offset == 3
    plog.close()


def test_unknown_producer_may_start_at_any_sequence(tmp_path: Path) -> None:
    # Kafka since KIP-360: its batches may all be gone (retention, DeleteRecords).
    plog = open_log(tmp_path)
    produce(plog, 9, 0, 5)
    produce(plog, 9, 0, 6)
    with pytest.raises(OutOfOrderSequence):
        produce(plog, 9, 0, 8)
    plog.close()


def test_epochs(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 9, 3, 0, n=2)
    with pytest.raises(InvalidProducerEpoch):
        produce(plog, 9, 2, 2)
    with pytest.raises(OutOfOrderSequence):
        produce(plog, 9, 4, 2)  # a new epoch restarts at 0
    produce(plog, 9, 4, 0)
    with pytest.raises(InvalidProducerEpoch):
        produce(plog, 9, 3, 2)
    # Non-idempotent batches are not checked.
    data = make_batch([b"plain"])
    plog.append(data, validate_batches(data), 0)
    plog.append(data, validate_batches(data), 0)
    plog.close()


def test_sequence_wrap(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 5, 0, 0)
    state = plog.producer_state.producers[5]
    # Pretend the producer has been running for a long time.
    state.batches[-1] = state.batches[-1]._replace(last_seq=2**31 - 3)
    produce(plog, 5, 0, 2**31 - 2, n=2)
    produce(plog, 5, 0, 0)
    plog.close()


def test_several_batches_in_one_call_are_one_unit(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    a = make_batch([b"a"], producer_id=3, producer_epoch=0, base_sequence=0)
    b = make_batch([b"b"], producer_id=3, producer_epoch=0, base_sequence=1)
    bad = make_batch([b"c"], producer_id=3, producer_epoch=0, base_sequence=5)
    with pytest.raises(OutOfOrderSequence):
        plog.append(a + bad, validate_batches(a + bad), 0)
    assert plog.log_end_offset == 0
    result = plog.append(a + b, validate_batches(a + b), 0)
    assert (result.base_offset, result.last_offset) == (0, 1)
    produce(plog, 3, 0, 2)
    plog.close()


def _state(plog: PartitionLog) -> dict[int, tuple[int, list[tuple[int, ...]]]]:
    return {
        pid: (e.epoch, [tuple(b) for b in e.batches])
        for pid, e in plog.producer_state.producers.items()
    }


def _fill(plog: PartitionLog) -> None:
    for pid in range(1, 4):
        for seq in range(0, 14, 2):
            produce(plog, pid, 0, seq, n=2, now=seq)
    produce(plog, 2, 1, 0)


def test_state_survives_clean_restart(tmp_path: Path) -> None:
    plog = open_log(tmp_path, {"segment.bytes": "800"})
    _fill(plog)
    before = _state(plog)
    assert all(len(b) == 5 for pid, (e, b) in before.items() if pid != 2)
    plog.close()
    plog = open_log(tmp_path, {"segment.bytes": "800"})
    assert _state(plog) == before
    with pytest.raises(DuplicateSequence):
        produce(plog, 1, 0, 12, n=2)
    produce(plog, 1, 0, 14)
    plog.close()


@pytest.mark.parametrize("snapshot", ["kept", "deleted", "garbage"])
def test_state_rebuilt_after_kill(tmp_path: Path, snapshot: str) -> None:
    plog = open_log(tmp_path, {"segment.bytes": "800"})
    _fill(plog)
    before = _state(plog)
    # No close(): killed. Snapshots exist only from rolls.
    path = tmp_path / "t-0" / PRODUCER_SNAPSHOT
    if snapshot == "deleted":
        path.unlink()
    elif snapshot == "garbage":
        path.write_bytes(b"{not json")
    plog2 = open_log(tmp_path, {"segment.bytes": "800"})
    assert _state(plog2) == before
    with pytest.raises(DuplicateSequence) as dup:
        produce(plog2, 3, 0, 10, n=2)
    assert dup.value.log_append_time_ms == -1
    with pytest.raises(OutOfOrderSequence):
        produce(plog2, 3, 0, 20)
    plog2.close()


def test_snapshot_ahead_of_log_is_ignored(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    produce(plog, 1, 0, 0)
    plog.close()
    # A snapshot claiming offsets the log no longer has (lost unsynced tail).
    fake = open_log(tmp_path / "other")
    for seq in range(5):
        produce(fake, 1, 0, seq)
    fake.close()
    (tmp_path / "t-0" / PRODUCER_SNAPSHOT).write_bytes(
        (tmp_path / "other" / "t-0" / PRODUCER_SNAPSHOT).read_bytes()
    )
    plog = open_log(tmp_path)
    produce(plog, 1, 0, 1)
    plog.close()


_CHILD = """
import json, os, signal, sys
from pathlib import Path
from app.storage.log.batch import validate_batches
from app.storage.log.fsync import FsyncScheduler
from app.storage.log.partition import PartitionLog
from app.storage.log.memtail import MemTailBudget
from tests.unit.batchgen import make_batch

plog = PartitionLog(Path(sys.argv[1]), "t", 0, {"segment.bytes": "600"},
                    FsyncScheduler("always"), MemTailBudget(1 << 20))
for pid in (1, 2):
    for seq in range(0, 20, 2):
        data = make_batch([b"a", b"b"], producer_id=pid, producer_epoch=0, base_sequence=seq)
        plog.append(data, validate_batches(data), seq)
state = {pid: [e.epoch, [list(b) for b in e.batches]]
         for pid, e in plog.producer_state.producers.items()}
print(json.dumps({"state": state, "leo": plog.log_end_offset}), flush=True)
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
    before = json.loads(proc.stdout)
    plog = open_log(tmp_path, {"segment.bytes": "600"})
    assert plog.log_end_offset == before["leo"]
    after = {
        str(pid): [e.epoch, [list(b) for b in e.batches]]
        for pid, e in plog.producer_state.producers.items()
    }
    assert after == before["state"]
    with pytest.raises(DuplicateSequence):
        produce(plog, 2, 0, 18, n=2)
    produce(plog, 2, 0, 20)
    plog.close()
