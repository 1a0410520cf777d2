"""Consumer-group benchmark with a real client (confluent-kafka) against a real server.

Starts Chronik in a subprocess (as broker_bench.py does), produces N messages
of S bytes over P partitions (produce_batch), then:

1. one group member alone consumes them all: throughput;
2. C members of one group, each in its own process (so they are not bound by
   one GIL), auto-commit on, consume them all: group throughput and its ratio
   to the single member; also the time for the group to form (subscribe ->
   every partition assigned);
3. rebalance time: one member close()s; time from the start of close() to
   the last remaining member's on_assign of the new generation, once all
   partitions are assigned among the remaining members.

Consumers set fetch.queue.backoff.ms=10 (see broker_bench.py: the 1 s default
measures librdkafka's pauses, not the broker). Throughput is counted from the
first message received to the last (the group's join is reported apart).
Prints one `metric value unit` line per figure.

    python bench/group_bench.py                     # 1,000,000 messages
    python bench/group_bench.py --messages 100000   # quick run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_bench import (
    RssSampler,
    ServerProcess,
    bench_produce,
    create_topic,
    emit,
    watermarks,
)

NO_OFFSET = -1


def consumer_conf(bootstrap: str, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "check.crcs": True,
        "fetch.max.bytes": 52428800,
        "max.partition.fetch.bytes": 10485760,
        "fetch.queue.backoff.ms": 10,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    }


def member_main(
    index: int,
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    go: Any,
    stop: Any,
    close_now: Any,
    highest: Any,
    counts: Any,
    events: Any,
) -> None:
    """One group member (in its own process).

    highest[index * partitions + p] is the highest offset of partition p this
    member has received; counts[index] the messages it received; events gets
    ("first"|"last"|"assign"|"close"|"closed", index, monotonic time, data).
    """
    c = confluent_kafka.Consumer(consumer_conf(bootstrap, group))

    def on_assign(_c: Any, tps: list[Any]) -> None:
        events.put(("assign", index, time.monotonic(), sorted(tp.partition for tp in tps)))

    def on_revoke(_c: Any, tps: list[Any]) -> None:
        events.put(("revoke", index, time.monotonic(), sorted(tp.partition for tp in tps)))

    # connect before the clock starts
    c.list_topics(topic, timeout=10)
    go.wait()
    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    base = index * partitions
    n = 0
    first = last = 0.0
    local_high = [NO_OFFSET] * partitions
    while not stop.is_set() and not close_now.is_set():
        msgs = c.consume(num_messages=10000, timeout=0.1)
        if not msgs:
            continue
        now = time.monotonic()
        if not n:
            first = now
        for m in msgs:
            if m.error() is not None:
                continue
            p = m.partition()
            o = m.offset()
            if o > local_high[p]:
                local_high[p] = o
            n += 1
        last = now
        for p in range(partitions):
            highest[base + p] = local_high[p]
        counts[index] = n
    if close_now.is_set():
        events.put(("close", index, time.monotonic(), None))
    c.close()
    events.put(("closed", index, time.monotonic(), None))
    events.put(("stats", index, first, (last, n)))


class Group:
    """C member processes of one group over one topic."""

    def __init__(self, ctx: Any, bootstrap: str, topic: str, partitions: int, members: int):
        self.partitions = partitions
        self.members = members
        self.group = f"gbench-{uuid.uuid4().hex[:8]}"
        self.go = ctx.Event()
        self.stop = ctx.Event()
        self.close_now = [ctx.Event() for _ in range(members)]
        self.highest = ctx.Array("q", [NO_OFFSET] * (partitions * members), lock=False)
        self.counts = ctx.Array("q", [0] * members, lock=False)
        self.events = ctx.Queue()
        self.procs = [
            ctx.Process(
                target=member_main,
                args=(
                    i,
                    bootstrap,
                    self.group,
                    topic,
                    partitions,
                    self.go,
                    self.stop,
                    self.close_now[i],
                    self.highest,
                    self.counts,
                    self.events,
                ),
                daemon=True,
            )
            for i in range(members)
        ]
        self.log: list[tuple[str, int, float, Any]] = []
        for p in self.procs:
            p.start()

    def drain(self, timeout: float = 0.05) -> None:
        try:
            while True:
                self.log.append(self.events.get(timeout=timeout))
                timeout = 0
        except queue.Empty:
            pass

    def done(self, ends: dict[int, int]) -> bool:
        for p, end in ends.items():
            if end == 0:
                continue
            best = max(self.highest[i * self.partitions + p] for i in range(self.members))
            if best < end - 1:
                return False
        return True

    def assignments(self, after: float, who: list[int]) -> tuple[dict[int, set[int]], float]:
        """Each member's assignment from its assign events after `after` (eager protocol)."""
        held: dict[int, set[int]] = {i: set() for i in who}
        latest = 0.0
        for kind, i, t, data in self.log:
            if t < after or i not in held:
                continue
            if kind == "assign":
                held[i] = set(data)
                latest = max(latest, t)
            elif kind == "revoke":
                held[i] -= set(data)
        return held, latest

    def finish(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        self.drain()


def run_consume(
    ctx: Any, bootstrap: str, topic: str, partitions: int, members: int, ends: dict[int, int]
) -> tuple[Group, float, int]:
    """(group, join seconds, messages received); the members stay up."""
    g = Group(ctx, bootstrap, topic, partitions, members)
    time.sleep(0.5)  # let the processes import and connect; the clock starts at `go`
    t_go = time.monotonic()
    g.go.set()
    deadline = t_go + 600
    while not g.done(ends):
        if time.monotonic() > deadline:
            print("# consume: not complete within 600s", file=sys.stderr)
            break
        g.drain(0.05)
    g.drain(0.2)
    held, t_assigned = g.assignments(t_go, list(range(members)))
    join = t_assigned - t_go if sum(len(h) for h in held.values()) == partitions else float("nan")
    received = sum(g.counts[i] for i in range(members))
    return g, join, received


def span(g: Group) -> float:
    """Seconds from the first message any member received to the last (from exit stats)."""
    stats = [(t, d[0]) for kind, _i, t, d in g.log if kind == "stats" and t > 0]
    if not stats:
        return float("nan")
    return max(last for _, last in stats) - min(first for first, _ in stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="messages to produce/consume")
    ap.add_argument("--size", type=int, default=100, help="message value size in bytes")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the bench topic")
    ap.add_argument("--consumers", type=int, default=4, help="members of the group")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    tmp = Path(tempfile.mkdtemp(prefix="chronik-gbench-"))
    server = None
    sampler = None
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            server = ServerProcess(tmp / "data", args.fsync, args.server_arg)
            bootstrap = server.bootstrap
            sampler = RssSampler(server.proc.pid)
            sampler.start()
        topic = f"gbench-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, args.partitions)
        print(
            f"# {args.messages} x {args.size} B, {args.partitions} partitions, "
            f"{args.consumers} group members, fsync={args.fsync}",
            flush=True,
        )
        bench_produce(bootstrap, topic, args.messages, args.size, args.partitions)
        ends = {p: watermarks(bootstrap, topic, p)[1] for p in range(args.partitions)}
        total = sum(ends.values())

        # (a) one member alone
        g1, join1, got1 = run_consume(ctx, bootstrap, topic, args.partitions, 1, ends)
        g1.finish()
        single = total / span(g1)
        emit("single_consumer_throughput", single, "msg/s")
        emit("single_consumer_join", join1 * 1000, "ms")
        if got1 != total:
            print(f"# single consumer received {got1} of {total}", file=sys.stderr)

        # (b) a group of C members, one process each
        n = args.consumers
        g, join, got = run_consume(ctx, bootstrap, topic, args.partitions, n, ends)
        # (c) rebalance after one member's close(), while the others stay up
        g.drain(0.5)
        g.close_now[0].set()
        t_close = None
        deadline = time.monotonic() + 60
        rebalance = float("nan")
        survivors = list(range(1, n))
        while time.monotonic() < deadline:
            g.drain(0.05)
            if t_close is None:
                t_close = next((t for k, i, t, _ in g.log if k == "close" and i == 0), None)
                continue
            held, latest = g.assignments(t_close, survivors)
            assigned_all = sorted(p for h in held.values() for p in h) == list(
                range(args.partitions)
            )
            everyone = all(
                any(k == "assign" and i == s and t >= t_close for k, i, t, _ in g.log)
                for s in survivors
            )
            if assigned_all and everyone:
                rebalance = latest - t_close
                break
        g.finish()
        group_tp = total / span(g)
        emit("group_consume_throughput", group_tp, "msg/s")
        emit("group_vs_single_ratio", group_tp / single, "x")
        emit("group_join", join * 1000, "ms")
        if got != total:
            print(f"# group received {got} messages for {total} stored", file=sys.stderr)
        emit("group_rebalance_after_close", rebalance * 1000, "ms")
        if sampler is not None:
            sampler.stop()
            emit("server_rss_peak", sampler.peak_main / 1e6, "MB")
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
