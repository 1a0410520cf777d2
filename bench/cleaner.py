"""Log cleaner benchmark against a real server, and the cleaner's effect on produce latency.

Starts Chronik in a subprocess (as broker_bench.py does: temporary data dir, fsync always
unless told otherwise, `--cleaner-interval-ms 200`), then in the same run:

1. load: `--records` records of `--size` bytes (uncompressed, so MB/s are the records')
   over `--keys` random keys to a 1-partition topic with cleanup.policy=compact,
   segment.ms=1000 and min.compaction.lag.ms at its maximum (nothing is cleanable yet),
   produce_batch() as fast as the client goes; then it
   waits until every record is indexed and in a sealed search segment (`/topics/{topic}`);
2. idle: `--seconds` of paced produce (`--rate` msg/s, linger.ms=0, acks=all, idempotent)
   to another topic: produce->ack latency with nothing else running;
3. cleaning: min.compaction.lag.ms is set to 0 (IncrementalAlterConfigs), which makes the
   whole log due; the same paced produce runs until the cleaner's run has been swapped in
   (`chronik_cleaner_runs_total` grows and the partition's dirty_ratio is 0). Cleaner
   throughput is the growth of `chronik_cleaner_bytes_total{direction="read"}` (batch bytes
   of the log read) over that window, from the config change to the run's swap; ack latency
   is that of the records sent in the window.

Prints one `metric value unit` line per figure.

    python bench/cleaner.py                          # 1,000,000 records over 100,000 keys
    python bench/cleaner.py --records 200000 --keys 20000   # quick run
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_bench import ServerProcess, create_topic, emit, pct, queue_all

LONG_MAX = 2**63 - 1
CHUNK = 1000


def load(bootstrap: str, topic: str, n: int, keys: int, size: int) -> float:
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1048576,
            "acks": "all",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1048576,
        }
    )
    rnd = random.Random(0)
    filler = os.urandom(size)
    pack = struct.Struct(">Q").pack
    t0 = time.perf_counter()
    for first in range(0, n, CHUNK):
        msgs = []
        for i in range(first, min(first + CHUNK, n)):
            key = b"key-%08d" % rnd.randrange(keys)
            msgs.append({"key": key, "value": pack(i) + filler[8:], "partition": 0})
        queue_all(p, topic, msgs)
        p.poll(0)
    left = p.flush(300)
    if left:
        raise SystemExit(f"load: {left} records not delivered")
    return time.perf_counter() - t0


class PacedProducer:
    """`rate` records a second to `topic` from a thread; the produce->ack latency of each."""

    def __init__(self, bootstrap: str, topic: str, rate: float, size: int) -> None:
        self.p = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 0,
                "acks": "all",
                "enable.idempotence": True,
            }
        )
        self.topic = topic
        self.interval = 1.0 / rate
        self.pad = os.urandom(size)
        self.p.produce(topic, b"warm-up", partition=0)  # connection, metadata, producer id
        self.p.flush(30)
        self.acks: list[float] = []
        self.errors = 0
        self._run = threading.Event()
        self._threads: list[threading.Thread] = []

    def _acked(self, sent: float, into: list[float]) -> Any:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                into.append(time.perf_counter() - sent)
            else:
                self.errors += 1

        return on_delivery

    def _send(self, into: list[float]) -> None:
        start = time.perf_counter()
        i = 0
        while self._run.is_set():
            delay = start + i * self.interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            self.p.produce(self.topic, self.pad, partition=0, on_delivery=self._acked(sent, into))
            i += 1

    def _poll(self) -> None:
        # A thread blocked in poll() runs each delivery callback as its ack arrives.
        while self._run.is_set():
            self.p.poll(0.05)

    def start(self) -> list[float]:
        into: list[float] = []
        self._run.set()
        self._threads = [
            threading.Thread(target=self._send, args=(into,), daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return into

    def stop(self) -> None:
        self._run.clear()
        for t in self._threads:
            t.join(10)
        self.p.flush(30)


def metric(http: str, name: str, **labels: str) -> float:
    text = httpx.get(http + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def partition0(http: str, topic: str) -> dict[str, Any]:
    r = httpx.get(f"{http}/topics/{topic}", timeout=10)
    r.raise_for_status()
    return next(p for p in r.json()["partitions"] if p["partition"] == 0)


def wait_sealed(http: str, topic: str, n: int, timeout: float = 600) -> float:
    """Seconds until all `n` records are indexed and in sealed search segments."""
    t0 = time.perf_counter()
    while True:
        p = partition0(http, topic)
        sealed = p["layers"].get("segments", {}).get("records", 0)
        if p["indexed_offset"] == n and sealed >= n:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"not sealed after {timeout}s: {p}")
        time.sleep(0.2)


def set_config(bootstrap: str, topic: str, name: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([res])[res].result(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records in the compacted log")
    ap.add_argument("--keys", type=int, default=100_000, help="distinct keys among them")
    ap.add_argument("--size", type=int, default=100, help="value size in bytes")
    ap.add_argument("--rate", type=float, default=200.0, help="paced produce rate (msg/s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="idle paced-produce window")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chronik-cleaner-bench-"))
    server = None
    try:
        server = ServerProcess(
            tmp / "data", args.fsync, ["--cleaner-interval-ms", "200", *args.server_arg]
        )
        http = f"http://127.0.0.1:{server.http_port}"
        topic = f"changelog-{uuid.uuid4().hex[:8]}"
        acks_topic = f"acks-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": server.bootstrap})
        config = {
            "cleanup.policy": "compact",
            "segment.ms": "1000",
            "min.compaction.lag.ms": str(LONG_MAX),
        }
        admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)
        create_topic(server.bootstrap, acks_topic, 1)
        print(
            f"# {args.records} x {args.size} B over {args.keys} keys, paced produce "
            f"{args.rate:.0f} msg/s, fsync={args.fsync}",
            flush=True,
        )
        elapsed = load(server.bootstrap, topic, args.records, args.keys, args.size)
        emit("load_produce_throughput", args.records / elapsed, "msg/s")
        emit("load_index_and_seal_wait", wait_sealed(http, topic, args.records), "s")

        paced = PacedProducer(server.bootstrap, acks_topic, args.rate, args.size)
        idle = paced.start()
        time.sleep(args.seconds)
        paced.stop()

        runs0 = metric(http, "chronik_cleaner_runs_total")
        read0 = metric(http, "chronik_cleaner_bytes_total", direction="read")
        written0 = metric(http, "chronik_cleaner_bytes_total", direction="written")
        cleaning = paced.start()
        t0 = time.perf_counter()
        set_config(server.bootstrap, topic, "min.compaction.lag.ms", "0")
        while True:
            runs = metric(http, "chronik_cleaner_runs_total")
            if runs > runs0 and partition0(http, topic)["dirty_ratio"] == 0.0:
                break
            if time.perf_counter() - t0 > 1800:
                raise SystemExit("the cleaner did not finish within 30 minutes")
            time.sleep(0.05)
        window = time.perf_counter() - t0
        paced.stop()
        read = metric(http, "chronik_cleaner_bytes_total", direction="read") - read0
        written = metric(http, "chronik_cleaner_bytes_total", direction="written") - written0

        emit("cleaner_runs", runs - runs0, "runs")
        emit("cleaner_window", window, "s")
        emit("cleaner_log_read", read / 1e6, "MB")
        emit("cleaner_log_written", written / 1e6, "MB")
        emit("cleaner_read_throughput", read / window / 1e6, "MB/s")
        emit("cleaner_records_throughput", args.records / window, "rec/s")
        emit("produce_ack_latency_idle_p50", pct(idle, 50) * 1000, "ms")
        emit("produce_ack_latency_idle_p99", pct(idle, 99) * 1000, "ms")
        emit("produce_ack_latency_cleaning_p50", pct(cleaning, 50) * 1000, "ms")
        emit("produce_ack_latency_cleaning_p99", pct(cleaning, 99) * 1000, "ms")
        emit("paced_samples_idle", len(idle), "acks")
        emit("paced_samples_cleaning", len(cleaning), "acks")
        if paced.errors:
            print(f"# paced produce: {paced.errors} failed", file=sys.stderr)
        del paced  # its connections close before the server stops
        gc.collect()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
