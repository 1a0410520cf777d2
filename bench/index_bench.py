"""Indexing and layered-storage benchmark with a real client (confluent-kafka).

Starts Chronik in subprocesses (as broker_bench.py does; fsync=always unless told) and
produces ~120-byte JSON log records with produce_batch(). Prints `metric value unit` lines:

1. indexing throughput: N records as fast as the client goes to 1 partition, one indexer
   worker indexing while they arrive (on the cores the broker and producer use). From
   chronik_indexer_records_total polled every 100 ms: index_throughput_per_worker is its
   increase over the window from the last sample before the first indexed record to the
   first sample after the last. index_end_to_end: N over first produce -> the committed
   checkpoint (registry) at the high watermark. Then --index-workers W with W partitions
   (the server puts one on each worker).
2. index size: once every record is in a sealed, uploaded segment (--segment-max-records
   N/4, the tail sealed by age after 5 s), manifest Tantivy and batch bytes per record.
3. fetch from segments: --wal-retain-ms 0, --tiering-interval-ms 200 and 4 MiB WAL segments
   drop the WAL once uploaded (but its active segment); --memtail-bytes 1 MiB. All records
   are consumed from offset 0 (check.crcs, fetch.queue.backoff.ms 10, the clock started once
   the consumer has metadata) with the segments in the local cache, then after a restart
   with DATA/segments deleted (cold). chronik_fetch_bytes_total deltas name the layer. The
   default object store is a directory: cold reads hit the page cache, not a network.
4. lag: a fresh server (default index settings), R msg/s for S seconds in bursts every
   10 ms. Every 100 ms, lag = now - send time of the first record at or past the committed
   (searchable) checkpoint, 0 when all sent is indexed; chronik_indexer_lag_seconds alongside.
5. peak RSS of the servers, alone and with their process trees (indexer workers).

    python bench/index_bench.py                                # 1,000,000 records, 20 s lag
    python bench/index_bench.py --records 200000 --seconds 5   # quick run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_bench import (
    RssSampler,
    ServerProcess,
    create_topic,
    emit,
    pct,
    queue_all,
    watermarks,
)

MIB = 1024 * 1024
LAYERS = ("memory", "wal", "segment_cache", "object_store")
LEVELS = (b"info",) * 7 + (b"debug", b"warn", b"error")
SERVICES = (b"api", b"auth", b"billing", b"search", b"cart")
ROUTES = (b"GET /users", b"GET /items", b"POST /orders", b"PUT /carts", b"GET /search")
STATUSES = (200, 200, 200, 200, 201, 204, 304, 400, 404, 500)
CHUNK = 1000
PRODUCER = {
    "linger.ms": 5,
    "batch.size": 1048576,
    "acks": "all",
    "enable.idempotence": True,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1048576,
}
LOG_LINE = (
    b'{"ts":%d,"level":"%s","service":"%s","status":%d,"latency_ms":%d,"msg":"%s/%d","req":"%06x"}'
)


def log_record(i: int, ts: int) -> bytes:
    """A JSON log line of 115-128 bytes (122 on average)."""
    head = (ts, LEVELS[i % 10], SERVICES[i % 5], STATUSES[i % 10], i % 997, ROUTES[i % 5])
    return LOG_LINE % (*head, i % 10_007, (i * 2654435761) & 0xFFFFFF)


def now_ms() -> int:
    return int(time.time() * 1000)


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def layer_bytes(port: int) -> dict[str, float]:
    m = scrape(port)
    return {x: m.get(f'chronik_fetch_bytes_total{{layer="{x}"}}', 0.0) for x in LAYERS}


def query(data_dir: Path, sql: str, *args: Any) -> list[Any]:
    """Read the registry (read-only; empty while it does not exist yet)."""
    try:
        db = sqlite3.connect(f"file:{data_dir / 'registry.sqlite'}?mode=ro", uri=True, timeout=5)
        with contextlib.closing(db):
            return db.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def committed(data_dir: Path, topic: str) -> dict[int, int]:
    sql = "SELECT partition, indexed_offset FROM checkpoints WHERE topic=?"
    return dict(query(data_dir, sql, topic))


def segments(data_dir: Path, topic: str) -> list[tuple[str, dict[str, Any]]]:
    sql = "SELECT state, manifest FROM segments WHERE topic=? AND state IN ('local', 'uploaded')"
    return [(state, json.loads(m)) for state, m in query(data_dir, sql, topic)]


def wal_bases(data_dir: Path, topic: str, partition: int = 0) -> list[int]:
    return sorted(int(p.stem) for p in (data_dir / "logs" / f"{topic}-{partition}").glob("*.log"))


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> float | None:
    """Monotonic time at which `cond()` held (polled every 100 ms), None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(0.1)
    print(f"# timed out after {timeout:.0f}s waiting for {what}", file=sys.stderr)
    return None


class Poller(threading.Thread):
    """Calls fn() every `interval` seconds and keeps (monotonic time, result)."""

    def __init__(self, fn: Callable[[], Any], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.fn, self.interval = fn, interval
        self.samples: list[tuple[float, Any]] = []
        self.done = threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while not self.done.is_set():
            with contextlib.suppress(httpx.HTTPError):
                value = self.fn()
                self.samples.append((time.monotonic(), value))
            due += self.interval
            self.done.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self.done.set()
        self.join()


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.servers: list[ServerProcess] = []
        self.samplers: list[tuple[str, RssSampler]] = []
        self.layered: list[str] = []  # the flags of phases 1-3 (set by phase_index)

    def start(self, name: str, extra: list[str]) -> ServerProcess:
        (self.tmp / name).mkdir(exist_ok=True)
        srv = ServerProcess(self.tmp / name / "data", self.args.fsync, extra)
        self.servers.append(srv)
        sampler = RssSampler(srv.proc.pid)
        sampler.start()
        self.samplers.append((name, sampler))
        return srv

    def restart(
        self, srv: ServerProcess, extra: list[str], between: Callable[[], Any]
    ) -> ServerProcess:
        """Stop `srv`, keep its log, call between(), start it again on the same data dir."""
        srv.stop()
        n = sum(1 for _ in srv.log_path.parent.glob("server*.log"))
        srv.log_path.rename(srv.log_path.with_name(f"server.run{n}.log"))
        between()
        return self.start(srv.data_dir.parent.name, extra)

    def produce_all(self, bootstrap: str, topic: str, n: int, partitions: int) -> float:
        """Produce n records as fast as the client goes (after one warm-up record per
        partition); returns the monotonic time the first batch was handed to the client."""
        p = confluent_kafka.Producer({**PRODUCER, "bootstrap.servers": bootstrap})
        for part in range(partitions):
            p.produce(topic, log_record(0, now_ms()), partition=part)
        p.flush(30)
        t0 = time.monotonic()
        for first in range(0, n, CHUNK):
            ts = now_ms()
            msgs = [
                {"value": log_record(i, ts), "partition": i % partitions}
                for i in range(first, min(first + CHUNK, n))
            ]
            queue_all(p, topic, msgs)
            p.poll(0)
        if p.flush(300):
            print("# produce: records left undelivered", file=sys.stderr)
        emit(f"produce_throughput_{partitions}p", n / (time.monotonic() - t0), "msg/s")
        return t0

    def phase_index(self, workers: int) -> tuple[ServerProcess, str, int]:
        """Phase 1 (and the server and topic for phases 2 and 3)."""
        args = self.args
        self.layered = [
            *("--index-workers", str(workers), "--segment-max-age-ms", "5000"),
            *("--segment-max-records", str(max(args.records // 4, 1000))),
            *("--wal-retain-ms", "0", "--tiering-interval-ms", "200"),
            *("--segment-bytes", str(4 * MIB), "--memtail-bytes", str(MIB)),
        ]
        srv = self.start(f"index-{workers}w", self.layered)
        data = srv.data_dir
        # Indexer.worker_for assigns a topic's partitions round-robin: one each.
        topic, parts = f"idx-{uuid.uuid4().hex[:8]}", workers
        create_topic(srv.bootstrap, topic, parts)
        counter = Poller(lambda: scrape(srv.http_port).get("chronik_indexer_records_total", 0))
        counter.start()
        time.sleep(0.3)
        t0 = self.produce_all(srv.bootstrap, topic, args.records, parts)
        ends = {p: watermarks(srv.bootstrap, topic, p)[1] for p in range(parts)}
        total = sum(ends.values())
        if total != args.records + parts:
            print(f"# stored {total} records for {args.records} + warm-up", file=sys.stderr)
        done = wait_until(
            lambda: all(committed(data, topic).get(p, -1) >= e for p, e in ends.items()),
            900,
            "the committed checkpoint to reach the high watermark",
        )
        time.sleep(0.3)
        counter.stop()
        # The counter's value when the clock started; then the indexing window.
        samples = counter.samples
        base = next((v for t, v in reversed(samples) if t <= t0), samples[0][1])
        final = samples[-1][1]
        if final <= base:
            raise SystemExit("the indexer never reported a record")
        start = next(t for t, v in reversed(samples) if v <= base)
        end = next(t for t, v in samples if v >= final)
        rate = (final - base) / (end - start)
        sfx = "" if workers == 1 else f"_{workers}w"
        if workers > 1:
            print(f"# {workers} workers, {parts} partitions ({parts // workers} per worker)")
            emit(f"index_throughput{sfx}_total", rate, "records/s")
        emit(f"index_throughput{sfx}_per_worker", rate / workers, "records/s")
        if done is not None:
            emit(f"index_end_to_end{sfx}", args.records / (done - t0), "records/s")
            emit(f"index_done_after_produce_start{sfx}", done - t0, "s")
        return srv, topic, total

    def phase_size(self, srv: ServerProcess, topic: str, total: int) -> None:
        data = srv.data_dir

        def sealed() -> bool:
            rows = segments(data, topic)
            return sum(m["records"] for _, m in rows) >= total and all(
                s == "uploaded" for s, _ in rows
            )

        wait_until(sealed, 120, "every record to be in an uploaded segment")
        rows = [m for _, m in segments(data, topic)]
        records = sum(m["records"] for m in rows)
        tantivy = sum(m["sections"]["tantivy"]["size"] for m in rows)
        batches = sum(m["sections"]["batches"]["size"] for m in rows)
        emit("sealed_segments", len(rows), "segments")
        emit("index_bytes_per_record", tantivy / records, "B")
        emit("batch_bytes_per_record", batches / records, "B")

    def consume(self, srv: ServerProcess, topic: str, n: int, name: str) -> None:
        c = confluent_kafka.Consumer(
            {
                "bootstrap.servers": srv.bootstrap,
                "group.id": f"ibench-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "check.crcs": True,
                "fetch.max.bytes": 52428800,
                "max.partition.fetch.bytes": 10485760,
                "fetch.queue.backoff.ms": 10,
            }
        )
        c.list_topics(topic, timeout=10)  # connect and learn the leader before the clock
        before = layer_bytes(srv.http_port)
        c.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        count = 0
        t0 = time.perf_counter()
        first = math.nan
        deadline = time.monotonic() + 600
        while count < n and time.monotonic() < deadline:
            # never ask for more than is left: consume() waits for all it asks for
            for m in c.consume(num_messages=min(10000, n - count), timeout=1.0):
                if m.error() is not None:
                    raise SystemExit(f"consume error: {m.error()}")
                if not count:
                    first = time.perf_counter() - t0
                count += 1
        elapsed = time.perf_counter() - t0
        c.close()
        if count < n:
            print(f"# {name}: got {count} of {n}", file=sys.stderr)
        emit(f"{name}_throughput", count / elapsed, "msg/s")
        emit(f"{name}_first_message", first * 1000, "ms")
        after = layer_bytes(srv.http_port)
        for layer in LAYERS:
            emit(f"{name}_bytes_{layer}", after[layer] - before[layer], "bytes")

    def phase_fetch(self, srv: ServerProcess, topic: str, total: int) -> ServerProcess:
        data = srv.data_dir
        wait_until(lambda: len(wal_bases(data, topic)) == 1, 60, "the WAL to be tiered away")
        emit("records_only_in_segments", wal_bases(data, topic)[0], "records")
        self.consume(srv, topic, total, "segment_cache_fetch")
        srv = self.restart(srv, self.layered, lambda: shutil.rmtree(data / "segments"))
        self.consume(srv, topic, total, "cold_fetch")
        cached = [p for p in (data / "segments").rglob("*") if p.is_file()]
        if not cached:
            print("# cold reads did not refill the segment cache (DATA/segments is empty):")
            print("#   a second pass would read the object store again; not measured")
        return srv

    def phase_lag(self) -> None:
        args = self.args
        srv = self.start("lag", ["--index-workers", "1"])
        data, topic = srv.data_dir, f"lag-{uuid.uuid4().hex[:8]}"
        create_topic(srv.bootstrap, topic, 1)
        p = confluent_kafka.Producer(
            {**PRODUCER, "bootstrap.servers": srv.bootstrap, "linger.ms": 1}
        )
        p.produce(topic, log_record(0, now_ms()), partition=0)
        p.flush(30)
        base = watermarks(srv.bootstrap, topic, 0)[1]
        wait_until(lambda: committed(data, topic).get(0, -1) >= base, 30, "warm-up indexing")
        burst = max(1, round(args.rate / 100))
        interval = burst / args.rate
        bursts = max(1, round(args.rate * args.seconds / burst))
        sent_at: list[float] = []  # send time of each burst

        def sample() -> tuple[float, float]:
            k = (committed(data, topic).get(0, base) - base) // burst
            m = scrape(srv.http_port).items()
            gauge = [v for n, v in m if n.startswith("chronik_indexer_lag_seconds") and topic in n]
            now = time.monotonic()
            return (now - sent_at[k] if k < len(sent_at) else 0.0), gauge[0] if gauge else math.nan

        poller = Poller(sample)
        poller.start()
        start = time.monotonic()
        for k in range(bursts):
            delay = start + k * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ts = now_ms()
            msgs = [{"value": log_record(k * burst + j, ts), "partition": 0} for j in range(burst)]
            sent_at.append(time.monotonic())
            if p.produce_batch(topic, msgs) != burst:
                print("# lag: produce_batch refused records", file=sys.stderr)
            p.poll(0)
        stop = time.monotonic()
        p.flush(30)
        del p  # or it logs the server's shutdown
        end = base + bursts * burst
        if watermarks(srv.bootstrap, topic, 0)[1] != end:
            print("# lag: high watermark is not what was sent", file=sys.stderr)
        done = wait_until(lambda: committed(data, topic).get(0, -1) >= end, 120, "lag catch-up")
        poller.stop()
        window = [v for t, v in poller.samples if start <= t <= stop]
        lags, gauges = [v[0] for v in window], [v[1] for v in window]
        emit("lag_produce_rate", bursts * burst / (stop - start), "msg/s")
        emit("index_lag_p50", pct(lags, 50), "s")
        emit("index_lag_p99", pct(lags, 99), "s")
        emit("index_lag_max", max(lags), "s")
        emit("index_lag_gauge_p99", pct(gauges, 99), "s")
        emit("index_lag_gauge_max", max(gauges), "s")
        if done is not None:
            emit("index_lag_drain_after_last_send", done - stop, "s")
        srv.stop()

    def close(self) -> None:
        for _, s in self.samplers:
            s.stop()
        for srv in self.servers:
            srv.stop()
        for name in dict.fromkeys(n for n, _ in self.samplers):
            peaks = [(s.peak_main, s.peak_tree) for n, s in self.samplers if n == name]
            main, tree = (max(x) / 1e6 for x in zip(*peaks, strict=True))
            print(
                f"# server {name}: peak RSS {main:.0f} MB, with its indexer workers {tree:.0f} MB"
            )
        if self.samplers:
            emit("server_rss_peak", max(s.peak_main for _, s in self.samplers) / 1e6, "MB")
            emit("server_tree_rss_peak", max(s.peak_tree for _, s in self.samplers) / 1e6, "MB")
        for log in sorted(self.tmp.rglob("server*.log")):
            lines = log.read_text(errors="replace").splitlines()
            for line in lines[:30]:
                print(f"# {log.parent.name}/{log.name}: {line}", file=sys.stderr)
            if len(lines) > 30:
                print(f"# ... {len(lines) - 30} more lines in {log}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records for phases 1-3")
    ap.add_argument("--rate", type=float, default=10_000.0, help="lag phase send rate (msg/s)")
    ap.add_argument("--seconds", type=float, default=20.0, help="lag phase duration")
    ap.add_argument("--workers", type=int, default=2, help="workers of the second indexing run")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--keep", action="store_true", help="keep the data dirs and server logs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chronik-ibench-"))
    bench = Bench(args, tmp)
    size = len(log_record(12345, now_ms()))
    print(f"# {args.records} JSON records of ~{size} B, fsync={args.fsync}, {os.cpu_count()} CPUs")
    try:
        srv, topic, total = bench.phase_index(1)
        bench.phase_size(srv, topic, total)
        srv = bench.phase_fetch(srv, topic, total)
        srv.stop()
        if args.workers > 1:
            srv, _topic, _total = bench.phase_index(args.workers)
            srv.stop()
        bench.phase_lag()
    finally:
        bench.close()
        if args.keep:
            print(f"# data and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
