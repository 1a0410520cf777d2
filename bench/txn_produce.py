"""Transaction benchmark with a real client (confluent-kafka) against a real server.

Starts Chronik in a subprocess (as broker_bench.py does: temporary data dir, fsync always
unless told otherwise), then in the same run:

1. idempotent produce: N records of S bytes (linger.ms=5, batch.size=1 MiB, acks=all,
   enable.idempotence, produce_batch() 1,000 records a call): throughput;
2. transactional produce of N records to another topic with the same settings plus a
   transactional.id: begin_transaction, 1,000 records (--txn-records), commit_transaction,
   one transaction after the other (a producer has at most one open transaction); every
   --abort-every'th transaction is aborted instead (0: none). Throughput over all records
   sent, transactions per second and the commit_transaction latency (its flush of the
   transaction's records included);
3. consume the transactional topic from offset 0 with read_uncommitted (every record) and
   with read_committed (the committed records; the client drops the aborted ones using the
   fetch responses' aborted_transactions), and the idempotent topic with read_committed
   (no transaction in it): throughput.

Consumers check CRCs and set fetch.queue.backoff.ms=10 (see broker_bench.py). Prints one
`metric value unit` line per figure.

    python bench/txn_produce.py                      # 1,000,000 records per phase
    python bench/txn_produce.py --records 200000     # quick run
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka

sys.path.insert(0, str(Path(__file__).resolve().parent))
from broker_bench import RssSampler, ServerProcess, create_topic, emit, pct, queue_all

CHUNK = 1000


def producer_conf(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "batch.size": 1048576,
        "acks": "all",
        "enable.idempotence": True,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1048576,
    }


def chunk(first: int, n: int, size: int, partitions: int) -> list[dict[str, Any]]:
    filler = os.urandom(size)
    pack = struct.Struct(">Q").pack
    out = []
    for i in range(first, first + n):
        key = pack(i)
        out.append({"key": key, "value": key + filler[8:], "partition": i % partitions})
    return out


def bench_idempotent(bootstrap: str, topic: str, n: int, size: int, partitions: int) -> None:
    p = confluent_kafka.Producer(producer_conf(bootstrap))
    p.produce(topic, b"warm-up", partition=0)  # connection, metadata, producer id
    p.flush(30)
    chunks = [chunk(first, min(CHUNK, n - first), size, partitions) for first in range(0, n, CHUNK)]
    t0 = time.perf_counter()
    for msgs in chunks:
        queue_all(p, topic, msgs)
        p.poll(0)
    left = p.flush(300)
    elapsed = time.perf_counter() - t0
    if left:
        print(f"# idempotent produce: {left} undelivered", file=sys.stderr)
    emit("idempotent_produce_throughput", n / elapsed, "records/s")
    emit("idempotent_produce_throughput_bytes", n * size / elapsed / 1e6, "MB/s")


def bench_transactional(
    bootstrap: str, topic: str, n: int, size: int, partitions: int, per_txn: int, abort_every: int
) -> int:
    """Returns the number of committed records."""
    p = confluent_kafka.Producer(
        {**producer_conf(bootstrap), "transactional.id": f"bench-{uuid.uuid4().hex[:8]}"}
    )
    p.init_transactions(30)
    # warm up: the coordinator, the partitions' leader, one whole transaction
    p.begin_transaction()
    p.produce(topic, b"warm-up", partition=0)
    p.commit_transaction(30)
    committed = 1
    ends: list[float] = []
    txns = 0
    chunks = [
        chunk(first, min(per_txn, n - first), size, partitions) for first in range(0, n, per_txn)
    ]
    t0 = time.perf_counter()
    for i, msgs in enumerate(chunks):
        p.begin_transaction()
        for j in range(0, len(msgs), CHUNK):
            queue_all(p, topic, msgs[j : j + CHUNK])
            p.poll(0)
        t = time.perf_counter()
        if abort_every and i % abort_every == abort_every - 1:
            # abort_transaction() would purge what is not sent yet: send it all first, so the
            # log holds the aborted records for the read_committed consumer to skip.
            p.flush(60)
            p.abort_transaction(60)
        else:
            p.commit_transaction(60)
            ends.append(time.perf_counter() - t)
            committed += len(msgs)
        txns += 1
    elapsed = time.perf_counter() - t0
    emit("transactional_produce_throughput", n / elapsed, "records/s")
    emit("transactional_produce_throughput_bytes", n * size / elapsed / 1e6, "MB/s")
    emit("transactions_per_second", txns / elapsed, "txn/s")
    emit("commit_transaction_latency_p50", pct(ends, 50) * 1000, "ms")
    emit("commit_transaction_latency_p99", pct(ends, 99) * 1000, "ms")
    return committed


def bench_consume(
    bootstrap: str, topic: str, n: int, partitions: int, isolation: str, name: str
) -> None:
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "check.crcs": True,
            "isolation.level": isolation,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 10485760,
            "fetch.queue.backoff.ms": 10,
        }
    )
    c.list_topics(topic, timeout=10)  # connect and learn the leader before the clock
    c.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
    count = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 600
    while count < n and time.monotonic() < deadline:
        # never ask for more than is left: consume() waits for all it asks for
        for m in c.consume(num_messages=min(10000, n - count), timeout=1.0):
            if m.error() is not None:
                raise SystemExit(f"consume error: {m.error()}")
            count += 1
    elapsed = time.perf_counter() - t0
    c.close()
    if count != n:
        print(f"# {name}: got {count} of {n}", file=sys.stderr)
    emit(name, count / elapsed, "records/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000, help="records per produce phase")
    ap.add_argument("--size", type=int, default=100, help="record value size in bytes")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of each topic")
    ap.add_argument("--txn-records", type=int, default=1000, help="records per transaction")
    ap.add_argument(
        "--abort-every", type=int, default=10, help="abort every k-th transaction (0: none)"
    )
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chronik-txn-bench-"))
    server = ServerProcess(tmp / "data", args.fsync, args.server_arg)
    sampler = RssSampler(server.proc.pid)
    sampler.start()
    try:
        bootstrap = server.bootstrap
        plain = f"bench-idem-{uuid.uuid4().hex[:8]}"
        txn = f"bench-txn-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, plain, args.partitions)
        create_topic(bootstrap, txn, args.partitions)
        print(
            f"# {args.records} x {args.size} B per phase, {args.partitions} partition(s), "
            f"{args.txn_records} records per transaction, every {args.abort_every}th aborted, "
            f"fsync={args.fsync}",
            flush=True,
        )
        n = args.records
        bench_idempotent(bootstrap, plain, n, args.size, args.partitions)
        committed = bench_transactional(
            bootstrap, txn, n, args.size, args.partitions, args.txn_records, args.abort_every
        )
        print(f"# {committed} of {n + 1} transactional records committed", flush=True)
        parts = args.partitions
        bench_consume(bootstrap, txn, n + 1, parts, "read_uncommitted", "consume_read_uncommitted")
        bench_consume(bootstrap, txn, committed, parts, "read_committed", "consume_read_committed")
        bench_consume(
            bootstrap, plain, n + 1, parts, "read_committed", "consume_read_committed_no_txn"
        )
        sampler.stop()
        emit("server_rss_peak", sampler.peak_main / 1e6, "MB")
    finally:
        if sampler.is_alive():
            sampler.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
