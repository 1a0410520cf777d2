"""What security costs the Kafka listener: produce throughput and ack latency with a real
client (confluent-kafka) over PLAINTEXT and over SASL_SSL with SCRAM-SHA-512, in the same
run, each against its own fresh server (fsync always unless told otherwise).

Certificates (a CA and a server certificate for 127.0.0.1) are generated at run time into a
temporary directory with the `cryptography` package; the SCRAM user is created with the CLI
(`python -m app users set NAME --mechanism SCRAM-SHA-512`, password on stdin) before the
server starts. For each listener:

1. saturating produce: N records of S bytes (linger.ms=5, batch.size=1 MiB, acks=all,
   idempotent, produce_batch() 1,000 records a call): records/s, MB/s, the ack latency
   of every 100th record (mostly time queued inside the client), and the server's CPU time
   per record;
2. paced produce: M records at R records/s (linger.ms=0, acks=all): ack latency p50/p99;
3. connection setup: a new producer's first ack (TCP, then TLS handshake and SCRAM
   exchange for SASL_SSL, on the bootstrap and then on the broker connection, metadata,
   one produce), p50 over a few producers. Not idempotent: librdkafka's idempotent
   producer asks for its producer id on a 500 ms timer when no broker connection is up
   yet, which a TLS handshake makes likely, and that timer would be the figure.

Prints `metric value unit` lines per listener, then a table of both side by side.
`--rounds N` alternates the listeners N times (PLAINTEXT, SASL_SSL, PLAINTEXT, ...) and
the table shows each figure's median: on a shared machine one round is noisy.

    python bench/security_bench.py                     # 500,000 records per listener
    python bench/security_bench.py --records 100000    # quick run
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka
import psutil
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from broker_bench import REPO, ServerProcess, emit, paced_acks, pct, queue_all

from tests.integration.certs import CertAuthority

USER = "bench"
MECHANISM = "SCRAM-SHA-512"
LISTENERS = ("PLAINTEXT", "SASL_SSL")


def create_user(data_dir: Path, password: str) -> None:
    """The first user, as an operator makes it: the CLI, the password on stdin."""
    subprocess.run(
        [sys.executable, "-m", "app", "users", "set", USER, "--mechanism", MECHANISM,
         "--data-dir", str(data_dir)],
        input=password.encode(), cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip


def start(listener: str, base: Path, fsync: str, ca: CertAuthority) -> tuple[Any, dict[str, str]]:
    """A fresh server for `listener` and the client settings that reach it."""
    data_dir = base / listener.lower() / "data"
    data_dir.mkdir(parents=True)
    if listener == "PLAINTEXT":
        return ServerProcess(data_dir, fsync, []), {}
    password = secrets.token_urlsafe(24)
    create_user(data_dir, password)
    cert = ca.server()
    flags = [
        "--kafka-security-protocol", "SASL_SSL",
        "--sasl-mechanisms", MECHANISM,
        "--tls-cert-file", str(cert.cert),
        "--tls-key-file", str(cert.key),
        "--http-tls", "false",  # the harness polls /readyz over plain HTTP
    ]  # fmt: skip
    conf = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": MECHANISM,
        "sasl.username": USER,
        "sasl.password": password,
        "ssl.ca.location": str(ca.ca_file),
    }
    return ServerProcess(data_dir, fsync, flags), conf


def create_topic(bootstrap: str, conf: dict[str, str], topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, **conf})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)


def stored(bootstrap: str, conf: dict[str, str], topic: str) -> int:
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "wm", **conf})
    try:
        low, high = c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=10)
        return int(high) - int(low)
    finally:
        c.close()


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def saturated(
    bootstrap: str, conf: dict[str, str], n: int, size: int, pid: int
) -> dict[str, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, conf, topic)
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1048576,
            "acks": "all",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1048576,
            **conf,
        }
    )
    p.produce(topic, b"warm-up")  # connection, handshake, producer id: before the clock
    p.flush(30)
    lat: list[float] = []
    failed = [0]
    clock = time.perf_counter

    def sampled(sent: float) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                failed[0] += 1
            else:
                lat.append(clock() - sent)

        return on_delivery

    filler = os.urandom(size)
    pack = struct.Struct(">Q").pack
    cpu0 = cpu_seconds(pid)
    t0 = clock()
    for first in range(0, n, 1000):
        sent = clock()
        msgs: list[dict[str, Any]] = [
            {"key": pack(i), "value": pack(i) + filler[8:]}
            for i in range(first, min(first + 1000, n))
        ]
        for j in range(0, len(msgs), 100):
            msgs[j]["callback"] = sampled(sent)
        queue_all(p, topic, msgs)
        p.poll(0)
    left = p.flush(300)
    elapsed = clock() - t0
    cpu = cpu_seconds(pid) - cpu0
    got = stored(bootstrap, conf, topic) - 1
    if left or failed[0] or got != n:
        print(f"# produce: {left} undelivered, {failed[0]} failed, {got} stored", file=sys.stderr)
    return {
        "produce_throughput": n / elapsed,
        "produce_throughput_bytes": n * size / elapsed / 1e6,
        "produce_ack_latency_saturated_p50": pct(lat, 50) * 1000,
        "produce_ack_latency_saturated_p99": pct(lat, 99) * 1000,
        # the broker's main process (event loop, TLS, fsync thread) per record produced
        "server_cpu_per_record": cpu / n * 1e6,
    }


def paced(bootstrap: str, conf: dict[str, str], n: int, rate: float, size: int) -> dict[str, float]:
    topic = f"bench-paced-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, conf, topic)
    p = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": True,
         **conf}
    )  # fmt: skip
    p.produce(topic, b"warm-up")
    p.flush(30)
    value = os.urandom(size)
    acks = paced_acks(p, topic, n, rate, lambda _sent: value)
    if len(acks) < n:
        print(f"# paced: {len(acks)} of {n} acknowledged", file=sys.stderr)
    return {
        "produce_ack_latency_p50": pct(acks, 50) * 1000,
        "produce_ack_latency_p99": pct(acks, 99) * 1000,
    }


def connection_setup(bootstrap: str, conf: dict[str, str], rounds: int = 5) -> dict[str, float]:
    topic = f"bench-connect-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, conf, topic)
    took = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", **conf})
        p.produce(topic, b"first")
        if p.flush(30):
            raise SystemExit("connection setup: the first record was never acknowledged")
        took.append(time.perf_counter() - t0)
    return {"connection_to_first_ack_p50": pct(took, 50) * 1000}


UNITS = {
    "produce_throughput": "rec/s",
    "produce_throughput_bytes": "MB/s",
    "produce_ack_latency_saturated_p50": "ms",
    "produce_ack_latency_saturated_p99": "ms",
    "server_cpu_per_record": "us",
    "produce_ack_latency_p50": "ms",
    "produce_ack_latency_p99": "ms",
    "connection_to_first_ack_p50": "ms",
}


def table(results: dict[str, list[dict[str, float]]]) -> None:
    def median(listener: str) -> dict[str, float]:
        rounds = results[listener]
        return {name: statistics.median(r[name] for r in rounds) for name in UNITS}

    plain, secure = median("PLAINTEXT"), median("SASL_SSL")
    print(f"\n| metric | PLAINTEXT | SASL_SSL + {MECHANISM} | SASL_SSL / PLAINTEXT |")
    print("| --- | --- | --- | --- |")
    for name, unit in UNITS.items():
        a, b = plain[name], secure[name]
        print(f"| {name} | {a:,.2f} {unit} | {b:,.2f} {unit} | {b / a:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000, help="saturating produce records")
    ap.add_argument("--size", type=int, default=100, help="record value size in bytes")
    ap.add_argument("--paced-records", type=int, default=2000, help="paced produce records")
    ap.add_argument("--rate", type=float, default=200.0, help="paced produce rate (records/s)")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--rounds", type=int, default=1, help="alternate the listeners this often")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chronik-security-bench-"))
    results: dict[str, list[dict[str, float]]] = {listener: [] for listener in LISTENERS}
    try:
        ca = CertAuthority(tmp / "certs")
        print(f"# {args.records} x {args.size} B, fsync={args.fsync}", flush=True)
        for round_ in range(args.rounds):
            for listener in LISTENERS:
                server, conf = start(listener, tmp / str(round_), args.fsync, ca)
                try:
                    pid = server.proc.pid
                    got = saturated(server.bootstrap, conf, args.records, args.size, pid)
                    got |= paced(server.bootstrap, conf, args.paced_records, args.rate, args.size)
                    got |= connection_setup(server.bootstrap, conf)
                finally:
                    server.stop()
                results[listener].append(got)
                for name, value in got.items():
                    emit(f"{listener.lower()}_{name}", value, UNITS[name])
        table(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
