"""Broker benchmark with a real client (confluent-kafka) against a real server.

Starts Chronik in a subprocess (temporary data dir, fsync always unless told
otherwise), then:

1. produces N messages of S bytes (linger.ms=5, batch.size=1 MiB, acks=all,
   idempotent): throughput and per-message ack latency (send -> delivery
   callback), p50/p99;
2. consumes them all back: throughput;
3. end-to-end latency: M messages at R msg/s with a consumer running
   concurrently (small fetch.wait.max.ms), send -> receive, p50/p99;
4. the server's peak RSS (its own and its process tree's), sampled throughout.

Prints one `metric value unit` line per figure.

    python bench/broker_bench.py                      # 1,000,000 messages
    python bench/broker_bench.py --messages 100000    # quick run
    python bench/broker_bench.py --bootstrap host:9092  # an already running broker
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import psutil
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    def __init__(self, data_dir: Path, fsync: str, extra: list[str]) -> None:
        self.kafka_port, self.http_port = free_ports(2)
        self.data_dir = data_dir
        self.log_path = data_dir.parent / "server.log"
        cmd = [
            sys.executable,
            "-m",
            "app",
            "--data-dir",
            str(data_dir),
            "--kafka-host",
            "127.0.0.1",
            "--kafka-port",
            str(self.kafka_port),
            "--advertised-host",
            "127.0.0.1",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--fsync",
            fsync,
            "--log-level",
            "WARNING",
            *extra,
        ]
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("server not ready within 30s:\n" + self.tail())
            time.sleep(0.05)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class RssSampler(threading.Thread):
    """Peak RSS of the server process and of its whole process tree."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_main = 0
        self.peak_tree = 0
        self.done = threading.Event()

    def sample(self) -> None:
        try:
            main = self.proc.memory_info().rss
            tree = main
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    tree += child.memory_info().rss
        except psutil.Error:
            return
        self.peak_main = max(self.peak_main, main)
        self.peak_tree = max(self.peak_tree, tree)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()


def pct(values: list[float] | array, p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def emit(name: str, value: float, unit: str) -> None:
    if abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    print(f"{name} {text} {unit}", flush=True)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def queue_all(p: confluent_kafka.Producer, topic: str, msgs: list[dict[str, Any]]) -> None:
    """produce_batch() until every message is queued: those refused (queue full) carry
    "_error" and are sent again after a poll."""
    while msgs:
        try:
            queued = p.produce_batch(topic, msgs)
        except BufferError:
            queued = 0
        if queued >= len(msgs):
            return
        msgs = [m for m in msgs if "_error" in m]
        for m in msgs:
            del m["_error"]
        p.poll(0.005)


def bench_produce(bootstrap: str, topic: str, n: int, size: int, partitions: int) -> None:
    """Saturating produce with the client's batch API.

    A per-message produce() loop costs ~3 us of Python per message, which on a
    2-core machine shared with the broker caps the client near 230k msg/s
    whatever the broker does; produce_batch() hands librdkafka 1,000
    messages per call. Every 100th message carries a delivery callback:
    enough samples for p99 without a Python call per message.
    """
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1048576,
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1048576,
        }
    )
    # warm up: connection, metadata and the producer id before the clock starts
    p.produce(topic, b"warm-up", partition=0)
    p.flush(30)
    lat: list[float] = []
    errors = [0]
    clock = time.perf_counter

    def sampled(sent: float) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors[0] += 1
            else:
                lat.append(clock() - sent)

        return on_delivery

    filler = os.urandom(size)
    pack = struct.Struct(">Q").pack
    chunk = 1000
    t0 = clock()
    for first in range(0, n, chunk):
        sent = clock()
        msgs: list[dict[str, Any]] = []
        for i in range(first, min(first + chunk, n)):
            key = pack(i)
            msgs.append({"key": key, "value": key + filler[8:], "partition": i % partitions})
        for j in range(0, len(msgs), 100):
            msgs[j]["callback"] = sampled(sent)
        queue_all(p, topic, msgs)
        p.poll(0)
    left = p.flush(300)
    elapsed = clock() - t0
    stored = sum(watermarks(bootstrap, topic, part)[1] for part in range(partitions)) - 1
    if left or errors[0] or stored != n:
        print(
            f"# produce: {left} undelivered, {errors[0]} failed, {stored} stored",
            file=sys.stderr,
        )
    emit("produce_throughput", n / elapsed, "msg/s")
    emit("produce_throughput_bytes", n * size / elapsed / 1e6, "MB/s")
    # Under saturation this is dominated by time queued inside the client.
    emit("produce_ack_latency_saturated_p50", pct(lat, 50) * 1000, "ms")
    emit("produce_ack_latency_saturated_p99", pct(lat, 99) * 1000, "ms")


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-wm"})
    try:
        low, high = c.get_watermark_offsets(
            confluent_kafka.TopicPartition(topic, partition), timeout=10
        )
        return int(low), int(high)
    finally:
        c.close()


def bench_consume(bootstrap: str, topic: str, n: int, partitions: int) -> None:
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "check.crcs": True,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 10485760,
            # librdkafka pauses fetching for fetch.queue.backoff.ms (1 s by
            # default) whenever its local queue is full; with a Python loop
            # draining it that measures the client's pauses, not the broker.
            "fetch.queue.backoff.ms": 10,
        }
    )
    c.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
    count = 0
    nbytes = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 600
    while count < n and time.monotonic() < deadline:
        for m in c.consume(num_messages=10000, timeout=1.0):
            if m.error() is not None:
                raise SystemExit(f"consume error: {m.error()}")
            count += 1
            nbytes += len(m.value() or b"")
    elapsed = time.perf_counter() - t0
    c.close()
    if count < n:
        print(f"# consume: got {count} of {n}", file=sys.stderr)
    emit("consume_throughput", count / elapsed, "msg/s")
    emit("consume_throughput_bytes", nbytes / elapsed / 1e6, "MB/s")


def paced_acks(
    p: confluent_kafka.Producer,
    topic: str,
    n: int,
    rate: float,
    value: Callable[[float], bytes],
    **produce: Any,
) -> list[float]:
    """Produce n records at `rate` per second (`value(send time)` each) and return each one's
    ack latency (send -> delivery callback) in seconds, once all are flushed."""
    acks: list[float] = []

    def acked(sent: float) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                acks.append(time.perf_counter() - sent)

        return on_delivery

    # A thread blocked in poll() runs each delivery callback as its ack
    # arrives, and releases the GIL while it waits.
    polling = threading.Event()
    polling.set()

    def poll_acks() -> None:
        while polling.is_set():
            p.poll(0.05)

    poller = threading.Thread(target=poll_acks, daemon=True)
    poller.start()
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        p.produce(topic, value(sent), on_delivery=acked(sent), **produce)
    p.flush(30)
    polling.clear()
    poller.join(5)
    return acks


def bench_e2e(bootstrap: str, topic: str, n: int, rate: float, size: int) -> None:
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 1,
        }
    )
    c.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    latencies: list[float] = []
    ready = threading.Event()
    done = threading.Event()

    def consume() -> None:
        ready.set()
        while len(latencies) < n and not done.is_set():
            # poll() returns as soon as one message is there (consume(n) would wait for n)
            m = c.poll(0.1)
            now = time.perf_counter()
            if m is None or m.error() is not None:
                continue
            (sent,) = struct.unpack_from(">d", m.value())
            if sent > 0:  # the warm-up message carries 0.0
                latencies.append(now - sent)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    ready.wait(10)
    p = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": True}
    )
    pad = os.urandom(max(0, size - 8))
    # warm up: connections, metadata and the producer id before the clock starts
    p.produce(topic, struct.pack(">d", 0.0) + pad, partition=0)
    p.flush(30)
    time.sleep(0.5)
    acks = paced_acks(p, topic, n, rate, lambda sent: struct.pack(">d", sent) + pad, partition=0)
    t.join(30)
    done.set()
    c.close()
    if len(latencies) < n:
        print(f"# e2e: received {len(latencies)} of {n}", file=sys.stderr)
    emit("e2e_latency_p50", pct(latencies, 50) * 1000, "ms")
    emit("e2e_latency_p99", pct(latencies, 99) * 1000, "ms")
    emit("produce_ack_latency_p50", pct(acks, 50) * 1000, "ms")
    emit("produce_ack_latency_p99", pct(acks, 99) * 1000, "ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000, help="messages to produce/consume")
    ap.add_argument("--size", type=int, default=100, help="message value size in bytes")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of the bench topic")
    ap.add_argument("--e2e-messages", type=int, default=2000, help="end-to-end latency messages")
    ap.add_argument("--e2e-rate", type=float, default=200.0, help="end-to-end send rate (msg/s)")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--bootstrap", help="use a running broker instead of starting one")
    ap.add_argument("--data-dir", help="server data dir (default: a temporary dir, removed after)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chronik-bench-"))
    server = None
    sampler = None
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
        else:
            data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
            server = ServerProcess(data_dir, args.fsync, args.server_arg)
            bootstrap = server.bootstrap
            sampler = RssSampler(server.proc.pid)
            sampler.start()
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        e2e_topic = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, args.partitions)
        create_topic(bootstrap, e2e_topic, 1)
        print(
            f"# {args.messages} x {args.size} B, {args.partitions} partition(s), "
            f"fsync={args.fsync}",
            flush=True,
        )
        bench_produce(bootstrap, topic, args.messages, args.size, args.partitions)
        bench_consume(bootstrap, topic, args.messages, args.partitions)
        bench_e2e(bootstrap, e2e_topic, args.e2e_messages, args.e2e_rate, args.size)
        if sampler is not None:
            sampler.stop()
            emit("server_rss_peak", sampler.peak_main / 1e6, "MB")
            emit("server_tree_rss_peak", sampler.peak_tree / 1e6, "MB")
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
