"""Exactly-once consume-transform-produce across SIGKILLs, and the transaction coordinator's
recovery after a SIGKILL of the broker.

The loop (eos_loop.py) runs as its own process. Each trial fills an input topic, then runs
the loop to completion while killing it with SIGKILL after a few commits or at a chosen
step of a transaction, and in every other trial the broker too: after a few commits, or
by the loop itself a few milliseconds into a commit_transaction (inside EndTxn). The
broker restarts on the same data dir; the loop is killed with it or carries on. At the
end the output read with read_committed holds each input record's output exactly once and
in order, read_uncommitted holds at least that (and more where a transaction was cut off
after its records were written), and the group's committed offsets are the input's end
offsets.

CHRONIK_EOS_SEED=<seed> replays a run; the seed is in every failure message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition

from .conftest import REPO, Server, unique_topic
from .grouputil import committed_offsets, create_topic, end_offsets, wait_until

pytestmark = pytest.mark.timeout(240)

LOOP = Path(__file__).with_name("eos_loop.py")
PARTITIONS = 2
RECORDS = 3000
TRIALS = int(os.environ.get("CHRONIK_EOS_TRIALS", "10"))
TRIAL_BUDGET_S = 40.0
LOOP_RUN_BUDGET_S = 25.0
STEPS = ("begin", "mid_produce", "produced", "offsets_sent", "committed")


# --------------------------------------------------------------------------- reading


def _consumer(bootstrap: str, isolation: str) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "check.crcs": True,
        }
    )


def read_partition(
    bootstrap: str, topic: str, partition: int, isolation: str, timeout: float = 30
) -> list[tuple[int, bytes]]:
    """Every record a consumer of `isolation` sees, up to the end it is told (the LSO for
    read_committed, the high watermark otherwise); the position passes control batches."""
    c = _consumer(bootstrap, isolation)
    try:
        tp = TopicPartition(topic, partition)
        _low, end = c.get_watermark_offsets(tp, timeout=10)
        c.assign([TopicPartition(topic, partition, 0)])
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while c.position([tp])[0].offset < end:
            assert time.monotonic() < deadline, (
                f"{topic}-{partition} {isolation}: stuck at {c.position([tp])[0].offset} "
                f"of {end} after {len(out)} records"
            )
            for m in c.consume(1000, 0.2):
                assert m.error() is None, m.error()
                offset, value = m.offset(), m.value()
                assert offset is not None and value is not None
                out.append((offset, value))
        return out
    finally:
        c.close()


def stable_end(bootstrap: str, topic: str, partition: int) -> int:
    """ListOffsets latest with read_committed: the last stable offset."""
    c = _consumer(bootstrap, "read_committed")
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])
    finally:
        c.close()


# --------------------------------------------------------------------------- the loop


@dataclass
class LoopRun:
    proc: subprocess.Popen[bytes]
    log: Path
    start_pos: int

    def lines(self) -> list[str]:
        text = self.log.read_text(errors="replace")[self.start_pos :]
        return text.splitlines()

    def commits(self) -> int:
        return sum(1 for line in self.lines() if line.split()[1:2] == ["commit"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@dataclass
class Trial:
    number: int
    seed: int
    srv: Server
    workdir: Path
    rng: random.Random
    input: str = field(default_factory=lambda: unique_topic("eos-in"))
    output: str = field(default_factory=lambda: unique_topic("eos-out"))
    group: str = field(default_factory=lambda: f"eos-{uuid.uuid4().hex[:10]}")
    txn_id: str = field(default_factory=lambda: f"eos-{uuid.uuid4().hex[:10]}")
    expected: dict[int, list[bytes]] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    runs: list[LoopRun] = field(default_factory=list)
    unexpected_exits: list[int] = field(default_factory=list)
    done: bool = False
    # A transaction was cut off after its records were flushed: aborted records must exist.
    cut_after_records: bool = False

    @property
    def log(self) -> Path:
        return self.workdir / f"loop-{self.number}.log"

    def where(self) -> str:
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-25:])
        return (
            f"seed {self.seed} trial {self.number} (CHRONIK_EOS_SEED={self.seed}); "
            f"events {self.events}; loop log {self.log}, its tail:\n{tail}"
        )

    def fill(self) -> None:
        create_topic(self.srv.bootstrap, self.input, PARTITIONS)
        create_topic(self.srv.bootstrap, self.output, PARTITIONS)
        p = confluent_kafka.Producer(
            {"bootstrap.servers": self.srv.bootstrap, "linger.ms": 5, "acks": "all"}
        )
        failed: list[object] = []
        self.expected = {q: [] for q in range(PARTITIONS)}
        for i in range(RECORDS):
            q = self.rng.randrange(PARTITIONS)
            value = f"t{self.number}-id-{i:06d}".encode()
            self.expected[q].append(b"out:" + value)
            p.produce(
                self.input, key=str(i).encode(), value=value, partition=q,
                on_delivery=lambda err, _m: failed.append(err) if err else None,
            )  # fmt: skip
        assert p.flush(30) == 0 and not failed, failed[:3]
        self.ends = end_offsets(self.srv.bootstrap, self.input, PARTITIONS)
        assert self.ends == {q: len(v) for q, v in self.expected.items()}

    def start_loop(self, die_at: str = "", kill_broker: str = "") -> LoopRun:
        max_batch = self.rng.choice((7, 30, 100, 250))
        cmd = [
            sys.executable, str(LOOP),
            "--bootstrap", self.srv.bootstrap,
            "--input", self.input, "--output", self.output,
            "--group", self.group, "--txn-id", self.txn_id,
            "--ends", ",".join(f"{q}:{o}" for q, o in sorted(self.ends.items())),
            "--max-batch", str(max_batch),
        ]  # fmt: skip
        if die_at:
            cmd += ["--die-at", die_at]
        if kill_broker:
            cmd += ["--kill-broker", kill_broker]
        extra = (
            f", die {die_at}" if die_at else f", kill broker {kill_broker}" if kill_broker else ""
        )
        self.events.append(f"loop(batch={max_batch}{extra})")
        with self.log.open("ab") as f:
            f.write(f"===== {' '.join(cmd)}\n".encode())
            start_pos = f.tell()
            proc = subprocess.Popen(
                cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        run = LoopRun(proc, self.log, start_pos)
        self.runs.append(run)
        return run

    def wait_commits(self, run: LoopRun, n: int, budget: float = LOOP_RUN_BUDGET_S) -> bool:
        """Until the run has committed n transactions; False if it ended or ran out of time."""
        deadline = time.monotonic() + budget
        while run.commits() < n:
            if run.proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def ended(self, run: LoopRun) -> bool:
        """Whether the run ended on its own; a clean end means the work is done."""
        code = run.proc.poll()
        if code is None:
            return False
        self.events.append(f"ended by itself: {code}")
        if code == 0:
            self.done = True
        elif code != -signal.SIGKILL:
            self.unexpected_exits.append(code)
        return True

    def interrupt(self, kind: str) -> None:
        """Start the loop, let it commit a few transactions, then kill it (kind "loop") or
        the broker ("broker")."""
        run = self.start_loop()
        self.wait_commits(run, self.rng.randrange(1, 6))
        time.sleep(self.rng.uniform(0, 0.05))
        if self.ended(run):
            return
        if kind == "loop":
            self.events.append(f"kill loop after {run.commits()} commits")
            run.kill()
            return
        self.events.append(f"kill broker after {run.commits()} commits")
        self.srv.kill()
        self.restart_broker(run)

    def kill_broker_in_commit(self) -> None:
        """The loop itself SIGKILLs the broker a few milliseconds into a commit_transaction,
        inside EndTxn's markers and offset completion, or just before or after them."""
        n, ms = self.rng.randrange(1, 6), self.rng.uniform(0, 8)
        run = self.start_loop(kill_broker=f"{self.srv.pid}:{n}:{ms:.2f}")
        deadline = time.monotonic() + LOOP_RUN_BUDGET_S
        while self.srv.running() and run.proc.poll() is None:
            assert time.monotonic() < deadline, "the loop did not kill the broker; " + self.where()
            time.sleep(0.005)
        if self.srv.running():
            self.ended(run)
            return
        self.events.append(f"broker killed {ms:.1f}ms into commit {n}")
        self.restart_broker(run)

    def restart_broker(self, run: LoopRun) -> None:
        """The broker is dead: the loop is killed too, or carries on against the restarted
        broker and is killed a few commits later."""
        keep_loop = run.proc.poll() is None and self.rng.random() < 0.5
        if not keep_loop:
            run.kill()
            self.events.append("kill loop")
        time.sleep(self.rng.uniform(0, 1.0))
        down = time.monotonic()
        self.srv.start()
        self.events.append(f"broker back after {time.monotonic() - down:.1f}s")
        if keep_loop:
            before = run.commits()
            progressed = self.wait_commits(run, before + self.rng.randrange(1, 5))
            if self.ended(run):
                return
            assert progressed, (
                f"the loop committed {run.commits() - before} transactions in "
                f"{LOOP_RUN_BUDGET_S}s after the broker restart; " + self.where()
            )
            self.events.append(f"kill loop after {run.commits()} commits")
            run.kill()

    def self_kill(self) -> None:
        step = self.rng.choice(STEPS)
        run = self.start_loop(f"{step}:{self.rng.randrange(1, 6)}")
        self.finish(run)
        if run.proc.returncode == -signal.SIGKILL and step in ("produced", "offsets_sent"):
            self.cut_after_records = True

    def finish(self, run: LoopRun) -> None:
        try:
            run.proc.wait(LOOP_RUN_BUDGET_S)
        except subprocess.TimeoutExpired:
            run.kill()
            raise AssertionError(
                f"loop did not end in {LOOP_RUN_BUDGET_S}s; " + self.where()
            ) from None
        self.ended(run)

    def run_to_completion(self) -> None:
        deadline = time.monotonic() + TRIAL_BUDGET_S
        while not self.done:
            assert time.monotonic() < deadline, "trial over its budget; " + self.where()
            # A loop that gave up (not a kill of ours) is restarted, as its supervisor would.
            assert len(self.unexpected_exits) <= 5, "loop keeps failing; " + self.where()
            self.finish(self.start_loop())

    def verify(self) -> dict[str, int]:
        bootstrap = self.srv.bootstrap
        extra = 0
        for q in range(PARTITIONS):
            committed = _values(bootstrap, self.output, q, "read_committed")
            want = self.expected[q]
            if committed != want:
                seen = set(committed)
                dups = len(committed) - len(seen)
                lost = [v for v in want if v not in seen]
                raise AssertionError(
                    f"output partition {q} read_committed: {len(committed)} records for "
                    f"{len(want)} inputs, {dups} duplicates, {len(lost)} lost (e.g. "
                    f"{lost[:3]}), in order: {committed == sorted(committed)}; " + self.where()
                )
            uncommitted = _values(bootstrap, self.output, q, "read_uncommitted")
            missing = set(want) - set(uncommitted)
            assert not missing, f"read_uncommitted misses {sorted(missing)[:3]}; " + self.where()
            extra += len(uncommitted) - len(want)
            high = end_offsets(bootstrap, self.output, PARTITIONS)[q]
            assert stable_end(bootstrap, self.output, q) == high, (
                "an open transaction is left on the output; " + self.where()
            )
        got = committed_offsets(bootstrap, self.group, self.input, range(PARTITIONS))
        assert got == self.ends, f"group offsets {got} != input ends {self.ends}; " + self.where()
        if self.cut_after_records:
            assert extra > 0, "no aborted records in the output's log; " + self.where()
        return {"aborted_records": extra, "loop_runs": len(self.runs)}


def _seed() -> int:
    env = os.environ.get("CHRONIK_EOS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 32)


def test_consume_transform_produce_survives_sigkills(
    fresh_server: Callable[..., Server], tmp_path: Path
) -> None:
    seed = _seed()
    print(f"CHRONIK_EOS_SEED={seed}")
    master = random.Random(seed)
    srv = fresh_server("--transaction-abort-check-ms", "200")
    t0 = time.monotonic()
    summary = []
    for number in range(TRIALS):
        rng = random.Random(master.randrange(1 << 32))
        trial = Trial(number, seed, srv, tmp_path, rng)
        started = time.monotonic()
        trial.fill()
        kinds = ["loop", "self"] + [rng.choice(("loop", "self")) for _ in range(rng.randrange(2))]
        if number % 2 == 1:
            kinds.append(rng.choice(("broker", "commit")))
        rng.shuffle(kinds)
        for kind in kinds:
            if trial.done:
                break
            if kind == "self":
                trial.self_kill()
            elif kind == "commit":
                trial.kill_broker_in_commit()
            else:
                trial.interrupt(kind)
        trial.run_to_completion()
        stats = trial.verify()
        took = time.monotonic() - started
        assert took < TRIAL_BUDGET_S + 20, f"trial took {took:.1f}s; " + trial.where()
        summary.append(
            f"trial {number}: {took:.1f}s {stats} exits {trial.unexpected_exits} {trial.events}"
        )
    print(f"seed {seed}: {TRIALS} trials in {time.monotonic() - t0:.1f}s")
    print("\n".join(summary))


def _txn_producer(bootstrap: str, txn_id: str, timeout_ms: int) -> confluent_kafka.Producer:
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txn_id,
            "transaction.timeout.ms": timeout_ms,
            "socket.timeout.ms": timeout_ms,
            "linger.ms": 5,
            # See eos_loop.py: a one-broker restart must not decommission the broker.
            "metadata.recovery.strategy": "none",
            "reconnect.backoff.max.ms": 500,
        }
    )
    p.init_transactions(30)
    return p


def _values(bootstrap: str, topic: str, partition: int, isolation: str) -> list[bytes]:
    return [v for _o, v in read_partition(bootstrap, topic, partition, isolation)]


def test_broker_sigkill_aborts_the_open_transaction_and_keeps_the_committed_one(
    fresh_server: Callable[..., Server],
) -> None:
    """Committed (answered) before the SIGKILL: visible after the restart, offsets too. Open
    at the SIGKILL (records and offsets written, no EndTxn): the restarted coordinator aborts
    it once its timeout has passed; read_committed never shows it, before or after that,
    nor after another SIGKILL; the old producer cannot commit it any more."""
    srv = fresh_server("--transaction-abort-check-ms", "200")
    topic = unique_topic("eos-rec")
    create_topic(srv.bootstrap, topic, 2)
    group = f"eos-rec-{uuid.uuid4().hex[:8]}"
    c = confluent_kafka.Consumer({"bootstrap.servers": srv.bootstrap, "group.id": group})
    metadata = c.consumer_group_metadata()
    c.close()
    txn_id = f"eos-rec-{uuid.uuid4().hex[:8]}"
    timeout_ms = 4000
    producer = _txn_producer(srv.bootstrap, txn_id, timeout_ms)

    committed = {q: [f"c{q}-{i}".encode() for i in range(10)] for q in (0, 1)}
    producer.begin_transaction()
    for q, values in committed.items():
        for v in values:
            producer.produce(topic, value=v, partition=q)
    producer.send_offsets_to_transaction([TopicPartition(topic, 0, 10)], metadata, 30)
    producer.commit_transaction(30)

    producer.begin_transaction()
    open_values = {q: [f"o{q}-{i}".encode() for i in range(10)] for q in (0, 1)}
    for q, values in open_values.items():
        for v in values:
            producer.produce(topic, value=v, partition=q)
    producer.send_offsets_to_transaction([TopicPartition(topic, 0, 20)], metadata, 30)
    assert producer.flush(30) == 0
    # Plain records behind the open transaction wait for it, then show.
    plain = confluent_kafka.Producer({"bootstrap.servers": srv.bootstrap})
    later = [f"n-{i}".encode() for i in range(5)]
    for v in later:
        plain.produce(topic, value=v, partition=0)
    assert plain.flush(30) == 0
    first_open = len(committed[0]) + 1  # after the COMMIT marker
    assert stable_end(srv.bootstrap, topic, 0) == first_open

    srv.kill()
    srv.start()
    restarted = time.monotonic()
    for q in (0, 1):
        assert _values(srv.bootstrap, topic, q, "read_committed") == committed[q]
        everything = _values(srv.bootstrap, topic, q, "read_uncommitted")
        assert everything == committed[q] + open_values[q] + (later if q == 0 else [])
    assert stable_end(srv.bootstrap, topic, 0) == first_open
    assert committed_offsets(srv.bootstrap, group, topic, [0]) == {0: 10}

    wait_until(
        lambda: stable_end(srv.bootstrap, topic, 0) == end_offsets(srv.bootstrap, topic, 2)[0],
        timeout_ms / 1000 + 20,
        "the open transaction was not aborted after its timeout",
    )
    aborted_after = time.monotonic() - restarted
    expected = {0: committed[0] + later, 1: committed[1]}

    def check() -> None:
        for q in (0, 1):
            assert _values(srv.bootstrap, topic, q, "read_committed") == expected[q]
            got = _values(srv.bootstrap, topic, q, "read_uncommitted")
            assert set(open_values[q]) <= set(got)
        assert committed_offsets(srv.bootstrap, group, topic, [0]) == {0: 10}

    check()
    # The coordinator fenced the old epoch when it aborted: its commit cannot succeed.
    with pytest.raises(confluent_kafka.KafkaException) as refused:
        producer.commit_transaction(20)
    error = refused.value.args[0]
    assert error.fatal() and error.code() == confluent_kafka.KafkaError._FENCED, error
    check()
    srv.kill()
    srv.start()
    check()

    # The transactional id carries on in a new producer.
    successor = _txn_producer(srv.bootstrap, txn_id, timeout_ms)
    successor.begin_transaction()
    successor.produce(topic, value=b"after", partition=1)
    successor.send_offsets_to_transaction([TopicPartition(topic, 0, 15)], metadata, 30)
    successor.commit_transaction(30)
    assert _values(srv.bootstrap, topic, 1, "read_committed") == committed[1] + [b"after"]
    assert committed_offsets(srv.bootstrap, group, topic, [0]) == {0: 15}
    print(f"open transaction aborted {aborted_after:.1f}s after the restart")
