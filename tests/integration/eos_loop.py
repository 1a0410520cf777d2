"""A consume-transform-produce loop with exactly-once semantics, run as its own process by
test_exactly_once.py so that it can be killed with SIGKILL at any point.

It behaves as a correct confluent-kafka EOS application: init_transactions first (which
fences an earlier incarnation with the same transactional.id and aborts its open
transaction), then per consumed batch begin / produce / send_offsets_to_transaction /
commit. Retriable errors are retried, abortable ones abort the transaction and rewind the
consumer to the group's committed offsets, and anything else ends the process with a
non-zero code so that its supervisor (the test) starts it again.

`--die-at STEP:N` makes the process SIGKILL itself at STEP of its N-th transaction, which
reaches the points a timed kill rarely hits (at "produced" and "offsets_sent" the records
are flushed first, so the log holds them when the transaction is cut off).
`--kill-broker PID:N:MS` SIGKILLs the broker MS milliseconds after the N-th transaction's
commit_transaction is called, to land inside EndTxn. It exits 0 once the group's committed offsets
reach `--ends`. One line per event goes to stdout.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

T = TypeVar("T")

STEPS = ("begin", "mid_produce", "produced", "offsets_sent", "committed")
RETRY_FOR_S = 60.0
EXIT_FATAL = 3
EXIT_GAVE_UP = 4


def say(*parts: object) -> None:
    print(f"{time.monotonic():.3f}", *parts, flush=True)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def retrying(what: str, call: Callable[[], T]) -> T:
    """Retry `call` while librdkafka calls its error retriable (and not abortable)."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            return call()
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            retriable = err.retriable() and not err.txn_requires_abort() and not err.fatal()
            if not retriable or time.monotonic() > deadline:
                raise
            say("retry", what, err.name())
            time.sleep(0.1)


def partition_of(m: confluent_kafka.Message) -> int:
    partition = m.partition()
    assert partition is not None
    return partition


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--txn-id", required=True)
    ap.add_argument("--ends", required=True, help="end offsets of the input, p:offset,...")
    ap.add_argument("--max-batch", type=int, default=100)
    ap.add_argument("--die-at", default="", help="STEP:N, SIGKILL itself there")
    ap.add_argument("--kill-broker", default="", help="PID:N:MS, SIGKILL the broker then")
    ap.add_argument("--txn-timeout-ms", type=int, default=10000)
    return ap.parse_args(argv)


class Loop:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ends = {int(p): int(o) for p, o in (item.split(":") for item in args.ends.split(","))}
        self.die_step, self.die_txn = "", -1
        if args.die_at:
            step, n = args.die_at.split(":")
            assert step in STEPS, step
            self.die_step, self.die_txn = step, int(n)
        self.broker_pid, self.kill_broker_txn, self.kill_broker_after = 0, -1, 0.0
        if args.kill_broker:
            pid, n, ms = args.kill_broker.split(":")
            self.broker_pid, self.kill_broker_txn = int(pid), int(n)
            self.kill_broker_after = float(ms) / 1000
        self.txns = 0
        self.committed: dict[int, int] = {}
        common = {
            "bootstrap.servers": args.bootstrap,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            # With one broker every restart is "all brokers down", which starts a
            # re-bootstrap that decommissions the known broker; a cached group coordinator
            # that was decommissioned leaves send_offsets_to_transaction waiting for a state
            # change that never comes (librdkafka issue 5511). A client of a one-broker
            # cluster has nothing to re-bootstrap from anyway.
            "metadata.recovery.strategy": "none",
        }
        self.producer = confluent_kafka.Producer(
            {
                **common,
                "transactional.id": args.txn_id,
                "transaction.timeout.ms": args.txn_timeout_ms,
                "socket.timeout.ms": min(args.txn_timeout_ms, 10000),
                "linger.ms": 5,
                **({"debug": debug} if (debug := os.environ.get("EOS_LOOP_DEBUG")) else {}),
            }
        )
        self.consumer = confluent_kafka.Consumer(
            {
                **common,
                "group.id": args.group,
                # The same instance across restarts: a restarted loop takes its
                # predecessor's place at once instead of waiting out its session.
                "group.instance.id": f"{args.txn_id}-member",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                "max.poll.interval.ms": 60000,
                "fetch.wait.max.ms": 100,
                "check.crcs": True,
            }
        )

    def maybe_die(self, step: str) -> None:
        if step == self.die_step and self.txns == self.die_txn:
            say("die", step, self.txns)
            die()

    def partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.args.input, p) for p in sorted(self.ends)]

    def fetch_committed(self) -> dict[int, int]:
        tps = retrying("committed", lambda: self.consumer.committed(self.partitions(), 30))
        for tp in tps:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return {tp.partition: tp.offset for tp in tps}

    def done(self) -> bool:
        return all(self.committed.get(p, -1) >= end for p, end in self.ends.items())

    def rewind(self) -> None:
        """After an abort: back to what the group has committed, as if freshly assigned."""
        self.committed = self.fetch_committed()
        for tp in self.consumer.assignment():
            offset = self.committed.get(tp.partition, -1)
            tp.offset = offset if offset >= 0 else confluent_kafka.OFFSET_BEGINNING
            self.consumer.seek(tp)
        say("rewound", self.committed)

    def transaction(self, msgs: list[confluent_kafka.Message]) -> None:
        self.txns += 1
        p = self.producer
        self.maybe_die("begin")
        p.begin_transaction()
        for i, m in enumerate(msgs):
            if i == len(msgs) // 2:
                self.maybe_die("mid_produce")
            while True:
                try:
                    p.produce(
                        self.args.output,
                        key=m.key(),
                        value=b"out:" + (m.value() or b""),
                        partition=partition_of(m),
                    )
                    break
                except BufferError:
                    p.poll(0.05)
        p.poll(0)
        if self.txns == self.die_txn and self.die_step in ("produced", "offsets_sent"):
            p.flush(30)
        self.maybe_die("produced")
        parts = sorted({partition_of(m) for m in msgs})
        positions = self.consumer.position([TopicPartition(self.args.input, q) for q in parts])
        offsets = [tp for tp in positions if tp.offset >= 0]
        metadata = self.consumer.consumer_group_metadata()
        retrying("send_offsets", lambda: p.send_offsets_to_transaction(offsets, metadata, 30))
        self.maybe_die("offsets_sent")
        if self.txns == self.kill_broker_txn:
            say("kill broker", self.txns, self.kill_broker_after)
            threading.Timer(
                self.kill_broker_after, os.kill, (self.broker_pid, signal.SIGKILL)
            ).start()
        retrying("commit", lambda: p.commit_transaction(30))
        for tp in offsets:
            self.committed[tp.partition] = tp.offset
        say("commit", self.txns, len(msgs), {tp.partition: tp.offset for tp in offsets})
        self.maybe_die("committed")

    def run(self) -> int:
        retrying("init", lambda: self.producer.init_transactions(30))
        say("init")
        # init_transactions aborted any transaction left open by a predecessor, so the
        # group's offsets are stable now.
        self.committed = self.fetch_committed()
        say("start", self.committed)
        if self.done():
            say("done")
            return 0
        self.consumer.subscribe([self.args.input])
        while True:
            msgs = self.consumer.consume(self.args.max_batch, 0.5)
            batch = []
            for m in msgs:
                err = m.error()
                if err is None:
                    batch.append(m)
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    say("consumer error", err.name())
            if not batch:
                continue
            try:
                self.transaction(batch)
            except KafkaException as exc:
                err = exc.args[0]
                if not err.txn_requires_abort() or err.fatal():
                    raise
                say("abort", self.txns, err.name(), err.str())
                retrying("abort", lambda: self.producer.abort_transaction(30))
                self.rewind()
                continue
            if self.done():
                say("done")
                return 0

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)


def main(argv: list[str]) -> int:
    # The supervisor sends SIGUSR1 to a loop that makes no progress, for its stack.
    faulthandler.register(signal.SIGUSR1, all_threads=False)
    loop = Loop(parse_args(argv))
    try:
        code = loop.run()
    except KafkaException as exc:
        err = exc.args[0]
        say("exit", "fatal" if err.fatal() else "error", err.name(), err.str())
        return EXIT_FATAL if err.fatal() else EXIT_GAVE_UP
    loop.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
