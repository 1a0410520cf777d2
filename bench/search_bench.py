"""Search benchmark: the HTTP search API over N indexed JSON log records.

Starts Chronik (broker_bench.ServerProcess; fsync=always unless told; default index and search
settings but --segment-max-records N/(10 x partitions): ten sealed segments per partition).

1. produces N ~130-byte JSON log lines (produce(): produce_batch() refuses timestamps)
   stamped evenly over the 2 days before now: levels (70% info, 10% error), services, status
   codes, messages with recurring phrases; waits for the committed checkpoint (registry).
2. p50/p99 client-side latency, 1 and --clients clients (one request at a time each, 20 hits
   with their records, newest first), --seconds each: a term (`declined`), a phrase
   (`"connection reset by peer"`), a JSON path (`value.level:error`), all records of a random
   1-hour window, a count over everything (`q=*`, limit 1), a 1-hour histogram over the last
   day. The first search (it extracts the sealed segments' indexes) is timed apart.
3. the floor: the same queries in this process through the Tantivy binding and the server's
   query building (search_exec.base_query): on one sealed segment (windows drawn from its own
   span), and on every segment (sealed and open) one after the other.
4. live: the open segments are topped up until they seal, then R msg/s (bursts every 10 ms,
   linger.ms 1) for --seconds, alone and with --clients clients (another process) sending the
   six queries in turn. Freshness: every 100 ms a record carries a unique token; a prober
   polls /search for it (start = window start, every 20 ms). Produce-ack latency: send ->
   delivery report of every 10th record. CPU of the server's main process (event loop: Kafka
   and HTTP) and of its worker processes. Clients use http.client (a third of httpx's CPU per
   request: they share the two cores with the server). Last, the open segments are filled to
   half a window short of a seal and the window is run again alone: a seal falls in it.

    python bench/search_bench.py                     # 10,000,000 records
    python bench/search_bench.py --records 500000    # quick run
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import confluent_kafka
import psutil
import tantivy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import index_bench as ib
from broker_bench import RssSampler, ServerProcess, create_topic, emit, pct, watermarks

from app.storage.index.partition_indexer import open_index_dir
from app.storage.search.execute import base_query, rewrite_query

HOUR, DAY = 3_600_000, 86_400_000
SPAN = 2 * DAY
# Sixteenths of the records: "payment declined" and "connection reset by peer" 1/16 each.
MESSAGES = (
    b"GET /users/%d ok|" * 4 + b"GET /items/%d ok|" * 3 + b"POST /orders/%d created|" * 3
    + b"cache miss for key %d|" * 2 + b"connection reset by peer on upstream %d|"
    b"payment declined for order %d|slow query took %d ms|disk full on volume %d"
).split(b"|")  # fmt: skip
LOG_LINE = (
    b'{"ts":%d,"level":"%s","service":"%s","status":%d,"latency_ms":%d,"msg":"%s","req":"%06x"}'
)
KINDS = ("term", "phrase", "json_path", "time_range", "count_all", "histogram_1d")
Q = {"term": "declined", "phrase": '"connection reset by peer"', "json_path": "value.level:error"}
Span = tuple[int, int]
HIST_AGG = {"h": {"histogram": {"field": "timestamp", "interval": HOUR, "min_doc_count": 1}}}


def log_line(i: int, ts: int, msg: bytes | None = None) -> bytes:
    h = (i * 2654435761) & 0xFFFFFFFF
    if msg is None:
        msg = MESSAGES[(h >> 8) % 16] % (h % 10_007)
    head = (ts, ib.LEVELS[i % 10], ib.SERVICES[(h >> 4) % 5], ib.STATUSES[i % 10], h % 997)
    return LOG_LINE % (*head, msg, h & 0xFFFFFF)


def make_query(kind: str, rng: random.Random, lo: int, hi: int) -> tuple[Any, ...]:
    """(path, q, start, end, limit) of one request of `kind` over data stamped [lo, hi)."""
    if kind == "time_range":
        start = rng.randrange(lo, max(lo + 1, hi - HOUR))
        return "/search", "*", start, start + HOUR, 20
    if kind == "count_all":
        return "/search", "*", None, None, 1
    if kind == "histogram_1d":
        return "/search/histogram", "*", hi - DAY, hi, 0
    return "/search", Q[kind], None, None, 20


def params(topic: str, path: str, q: str, start: int | None, end: int | None, limit: int) -> Any:
    p = {"topic": topic, "q": q, **({} if start is None else {"start": start, "end": end})}
    return {**p, "interval": "1h"} if path.endswith("histogram") else {**p, "limit": limit}


def conn(port: int) -> http.client.HTTPConnection:
    # http.client costs a third of httpx's client CPU per request: on two cores the clients
    # compete with the server.
    return http.client.HTTPConnection("127.0.0.1", port, timeout=600)


def get(c: http.client.HTTPConnection, path: str, params: dict[str, Any]) -> tuple[int, bytes]:
    """One GET on a kept-alive connection; a failed connection reconnects on the next one."""
    try:
        c.request("GET", f"{path}?{urlencode(params)}")
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as exc:
        c.close()
        return 0, repr(exc).encode()


def run_clients(
    port: int, topic: str, kinds: list[str], clients: int, secs: float, span: Span, stop: Any = None
) -> tuple[dict[str, list[float]], list[str]]:
    """`clients` threads, each sending one request at a time (kinds in turn) for `secs` or
    until `stop` is set: latencies by kind, and the errors."""
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    errors: list[str] = []
    deadline = time.monotonic() + secs

    def client(n: int) -> None:
        rng, c, i = random.Random(n), conn(port), n
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            kind = kinds[i % len(kinds)]
            i += 1
            path, *rest = make_query(kind, rng, *span)
            t = time.perf_counter()
            status, body = get(c, path, req := params(topic, path, *rest))
            if status == 200:
                lat[kind].append(time.perf_counter() - t)
            else:
                errors.append(f"GET {path} {req} -> {status} {body[:300]!r}")
        c.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors


def hammer(port: int, topic: str, clients: int, span: Span, stop: Any, out: Any) -> None:
    """The search load of the live phase, in its own process (spawned)."""
    out.put("ready")
    lat, errors = run_clients(port, topic, list(KINDS), clients, 3600, span, stop)
    out.put((sum(len(v) for v in lat.values()), len(errors), errors[:3]))


def put(p: confluent_kafka.Producer, topic: str, value: bytes, part: int, **kw: Any) -> None:
    while True:
        try:
            return p.produce(topic, value, partition=part, **kw)
        except BufferError:
            p.poll(0.01)


def produce(bootstrap: str, port: int, topic: str, n: int, parts: int) -> tuple[int, int]:
    """N records stamped evenly over the 2 days before now: returns that span [lo, hi)."""
    p = confluent_kafka.Producer({**ib.PRODUCER, "bootstrap.servers": bootstrap})
    p.list_topics(topic, timeout=10)
    hi = ib.now_ms()
    lo = hi - SPAN
    t0 = time.monotonic()
    for i in range(n):
        ts = lo + i * SPAN // n
        put(p, topic, log_line(i, ts), i % parts, timestamp=ts)
        if not i % ib.CHUNK:
            p.poll(0)
    if p.flush(600):
        print("# produce: records left undelivered", file=sys.stderr)
    emit("produce_throughput", n / (time.monotonic() - t0), "msg/s")
    m = ib.scrape(port).items()
    reqs = sum(v for k, v in m if k.startswith('chronik_kafka_requests_total{api="Produce"'))
    # A hit's record is read back by decoding the whole batch that holds it.
    emit("records_per_produce_request", n / max(reqs, 1), "records")
    return lo, hi


def bench_queries(port: int, topic: str, span: Span, args: argparse.Namespace) -> None:
    c = conn(port)
    t = time.perf_counter()
    status, body = get(c, "/search", {"topic": topic, "q": "*", "limit": 1})
    emit("search_first_query_cold", (time.perf_counter() - t) * 1000, "ms")
    for kind in KINDS:
        path, q, start, end, limit = make_query(kind, random.Random(0), *span)
        status, body = get(c, path, params(topic, path, q, start, end, limit))
        res = json.loads(body) if status == 200 else {"error": body[:300]}
        extra = f"segments_searched={res.get('segments_searched')}"
        if "buckets" in res:
            extra = f"buckets={len(res['buckets'])}"
        print(f"# {kind}: {path} q={q} -> {status} total={res.get('total')} {extra}", flush=True)
    c.close()
    for kind in KINDS:
        for n in dict.fromkeys((1, args.clients)):
            lat, errors = run_clients(port, topic, [kind], n, args.seconds, span)
            got = lat[kind]
            emit(f"search_{kind}_c{n}_p50", pct(got, 50) * 1000, "ms")
            emit(f"search_{kind}_c{n}_p99", pct(got, 99) * 1000, "ms")
            emit(f"search_{kind}_c{n}_rate", len(got) / args.seconds, "req/s")
            if errors:
                print(f"# {kind} x{n}: {len(errors)} errors; first: {errors[0]}", file=sys.stderr)


def caught_up(data: Path, topic: str, ends: dict[int, int]) -> bool:
    done = ib.committed(data, topic)
    return all(done.get(q, -1) >= e for q, e in ends.items())


def open_bases(data: Path, topic: str) -> dict[int, int]:
    return dict(ib.query(data, "SELECT partition, open_base FROM checkpoints WHERE topic=?", topic))


def seal_open(srv: ServerProcess, topic: str, seg: int) -> None:
    """Top each open segment up until it seals: the live windows then start with an empty one
    (a seal inside a window stalls indexing for seconds; README)."""
    p = confluent_kafka.Producer({**ib.PRODUCER, "bootstrap.servers": srv.bootstrap})
    before, added = open_bases(srv.data_dir, topic), 0
    for part, base in before.items():
        n = max(1, seg + 1 - (watermarks(srv.bootstrap, topic, part)[1] - base))
        for i in range(n):
            put(p, topic, log_line(i, ib.now_ms()), part)
        added += n
    p.flush(60)
    ends = {q: watermarks(srv.bootstrap, topic, q)[1] for q in before}

    def sealed() -> bool:
        now = open_bases(srv.data_dir, topic)
        return all(now[q] > b for q, b in before.items()) and caught_up(srv.data_dir, topic, ends)

    ib.wait_until(sealed, 300, "the open segments to seal")
    print(f"# topped up the open segments by {added} records until they sealed", flush=True)


def fill_open(srv: ServerProcess, topic: str, seg: int, leave: int) -> None:
    """Fill each open segment up to `leave` records short of a seal (and wait until it is
    indexed): the next live window then seals one mid-way."""
    p = confluent_kafka.Producer({**ib.PRODUCER, "bootstrap.servers": srv.bootstrap})
    ends = {}
    for part, base in open_bases(srv.data_dir, topic).items():
        have = watermarks(srv.bootstrap, topic, part)[1] - base
        for i in range(max(seg - leave - have, 0)):
            put(p, topic, log_line(i, ib.now_ms()), part)
    p.flush(60)
    for part in open_bases(srv.data_dir, topic):
        ends[part] = watermarks(srv.bootstrap, topic, part)[1]
    ib.wait_until(lambda: caught_up(srv.data_dir, topic, ends), 300, "indexing the fill")
    print(f"# filled the open segments to {leave} records short of a seal", flush=True)


def bench_floor(data: Path, topic: str, span: Span, seconds: float) -> None:
    sql = (
        "SELECT object_key, min_timestamp, max_timestamp FROM segments WHERE topic=? "
        "AND state IN ('local', 'uploaded') ORDER BY partition, base_offset"
    )
    indexes = []
    for key, mn, mx in ib.query(data, sql, topic):
        if (data / "search" / key / "meta.json").exists():
            ix = tantivy.Index.open(str(data / "search" / key))
            indexes.append((ix, ix.searcher(), mn, mx))
    if not indexes:
        print("# floor: no extracted sealed segment index", file=sys.stderr)
        return
    one, sealed = indexes[len(indexes) // 2], len(indexes)
    for part, base in open_bases(data, topic).items():
        d = open_index_dir(data / "index" / f"{topic}-{part}", base)
        if (d / "meta.json").exists():  # never pruned by time, as in the server
            ix = tantivy.Index.open(str(d))
            indexes.append((ix, ix.searcher(), -(2**63), 2**63 - 1))
    docs = sum(x[1].num_docs for x in indexes[sealed:])
    print(f"# floor: {sealed} sealed segments, one of {one[1].num_docs} documents; open: {docs}")

    def run(kind: str, targets: list[Any], rng: random.Random, lo: int, hi: int) -> float:
        _path, q, start, end, limit = make_query(kind, rng, lo, hi)
        t = time.perf_counter()
        for ix, searcher, mn, mx in targets:
            if start is not None and (mx < start or mn >= end):
                continue  # the server plans only segments that overlap the range
            qq = base_query(ix, rewrite_query(q), start, end, None)
            if kind == "histogram_1d":
                searcher.aggregate(qq, HIST_AGG)
            else:
                searcher.search(qq, limit, order_by_field="timestamp", order=tantivy.Order.Desc)
        return time.perf_counter() - t

    cases = (("1seg", [one], one[2], one[3] + 1), ("all_sequential", indexes, *span))
    for kind in KINDS:
        for name, targets, lo, hi in cases:
            rng, lat = random.Random(0), []
            deadline = time.monotonic() + min(seconds, 5)
            while time.monotonic() < deadline and len(lat) < 5000:
                lat.append(run(kind, targets, rng, lo, hi))
            emit(f"floor_{name}_{kind}_p50", pct(lat, 50) * 1000, "ms")
            emit(f"floor_{name}_{kind}_p99", pct(lat, 99) * 1000, "ms")


def cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process and of its children (indexer and search workers)."""
    proc = psutil.Process(pid)
    kids = sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))
    return sum(proc.cpu_times()[:2]), kids


def bench_live(
    srv: ServerProcess,
    topic: str,
    span: Span,
    clients: int,
    args: argparse.Namespace,
    sfx: str = "",
) -> None:
    """R msg/s for --seconds: freshness and produce-ack latency, with `clients` searching."""
    sfx = sfx or (f"_with_{clients}_searching" if clients else "")
    p = confluent_kafka.Producer(
        {**ib.PRODUCER, "bootstrap.servers": srv.bootstrap, "linger.ms": 1}
    )
    # warm up: metadata and the producer id (the first acks wait ~0.5 s for it)
    p.produce(topic, log_line(0, ib.now_ms()), partition=0)
    p.flush(30)
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = None
    if clients:
        proc = ctx.Process(target=hammer, args=(srv.http_port, topic, clients, span, stop, out))
        proc.start()
        out.get(timeout=60)
        time.sleep(1)
    acks: list[float] = []
    sent_at: dict[str, float] = {}  # probe token -> send time
    found: dict[str, float] = {}
    probe_errors: list[str] = []
    done = threading.Event()

    def acked(sent: float) -> Any:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                acks.append(time.perf_counter() - sent)

        return on_delivery

    def poll_acks() -> None:
        while not done.is_set():
            p.poll(0.05)

    def probe() -> None:
        c = conn(srv.http_port)
        while not done.is_set():
            waiting = [t for t in list(sent_at) if t not in found][:50]
            if not waiting:
                time.sleep(0.005)
                continue
            # a live tail: only records since the window opened (planning skips the rest)
            q = {"topic": topic, "q": " OR ".join(waiting), "limit": 100, "start": since}
            status, body = get(c, "/search", q)
            now = time.perf_counter()
            time.sleep(0.02)  # at most ~50 polls/s: the prober is not the search load
            if status != 200:
                probe_errors.append(f"GET /search {q} -> {status} {body[:300]!r}")
                continue
            for h in json.loads(body)["hits"]:
                tok = (h.get("value_json") or {}).get("msg", "").rpartition(" ")[2]
                if tok in sent_at and tok not in found:
                    found[tok] = now

    since = ib.now_ms() - 1000
    threads = [threading.Thread(target=f, daemon=True) for f in (poll_acks, probe)]
    for t in threads:
        t.start()
    burst = max(10, round(args.rate / 100))
    bursts = round(args.rate * args.seconds / burst)
    start, cpu0, bases = time.perf_counter(), cpu(srv.proc.pid), open_bases(srv.data_dir, topic)
    for k in range(bursts):
        delay = start + k * 0.01 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ts = ib.now_ms()
        msgs = [
            {"value": log_line(k * burst + j, ts), "partition": (k * burst + j) % args.partitions}
            for j in range(burst)
        ]
        sent = time.perf_counter()
        for j in range(0, burst, 10):
            msgs[j]["callback"] = acked(sent)
        if k % 10 == 0:  # the prober looks for it from now on
            token = f"probe{uuid.uuid4().hex[:12]}"
            msgs[-1]["value"] = log_line(k, ts, b"probe " + token.encode())
            sent_at[token] = sent
        if p.produce_batch(topic, msgs) != len(msgs):
            print("# live: produce_batch refused records", file=sys.stderr)
        p.poll(0)
    elapsed, cpu1 = time.perf_counter() - start, cpu(srv.proc.pid)
    p.flush(30)
    ib.wait_until(lambda: len(found) == len(sent_at), 10, "every probe to be found")
    done.set()
    stop.set()
    for t in threads:
        t.join(70)
    fresh = [found[t] - sent_at[t] for t in found]
    emit(f"live{sfx}_produce_rate", bursts * burst / elapsed, "msg/s")
    emit(f"freshness{sfx}_p50", pct(fresh, 50), "s")
    emit(f"freshness{sfx}_p99", pct(fresh, 99), "s")
    print(f"freshness{sfx}_probes_found {len(found)} of {len(sent_at)}")
    emit(f"produce_ack{sfx}_p50", pct(acks, 50) * 1000, "ms")
    emit(f"produce_ack{sfx}_p99", pct(acks, 99) * 1000, "ms")
    moved = sum(b != bases.get(q) for q, b in open_bases(srv.data_dir, topic).items())
    print(f"live{sfx}_seals {moved} segments sealed in the window")
    emit(f"live{sfx}_server_cpu", (cpu1[0] - cpu0[0]) / elapsed, "cores")
    emit(f"live{sfx}_worker_cpu", (cpu1[1] - cpu0[1]) / elapsed, "cores")
    if probe_errors:
        print(f"# prober: {len(probe_errors)} errors; first: {probe_errors[0]}", file=sys.stderr)
    if proc is not None:
        requests, nerr, errors = out.get(timeout=180)
        proc.join(30)
        emit(f"live{sfx}_search_rate", requests / elapsed, "req/s")
        if nerr:
            print(f"# search load: {nerr} errors; first: {errors}", file=sys.stderr)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000_000, help="records to index")
    ap.add_argument("--clients", type=int, default=8, help="concurrent search clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    ap.add_argument("--partitions", type=int, default=1, help="partitions of the topic")
    ap.add_argument("--rate", type=float, default=10_000.0, help="live phase send rate (msg/s)")
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--keep", action="store_true", help="keep the data dir and server log")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chronik-sbench-"))
    seg = max(args.records // (10 * args.partitions), 1000)
    size = len(log_line(12345, ib.now_ms()))
    print(
        f"# {args.records} JSON records of ~{size} B, {args.partitions} partition(s), "
        f"--segment-max-records {seg}, fsync={args.fsync}, {os.cpu_count()} CPUs, "
        f"load average {load()}",
        flush=True,
    )
    srv = ServerProcess(tmp / "data", args.fsync, ["--segment-max-records", str(seg)])
    sampler = RssSampler(srv.proc.pid)
    sampler.start()
    try:
        data, topic, parts = srv.data_dir, f"logs-{uuid.uuid4().hex[:8]}", args.partitions
        create_topic(srv.bootstrap, topic, parts)
        t0 = time.monotonic()
        span = produce(srv.bootstrap, srv.http_port, topic, args.records, parts)
        ends = {q: watermarks(srv.bootstrap, topic, q)[1] for q in range(parts)}
        if sum(ends.values()) != args.records:
            print(f"# stored {sum(ends.values())} of {args.records} records", file=sys.stderr)
        done = ib.wait_until(lambda: caught_up(data, topic, ends), 3600, "indexing")
        if done is not None:
            emit("indexed_after_produce_start", done - t0, "s")
        bench_queries(srv.http_port, topic, span, args)
        bench_floor(data, topic, span, args.seconds)
        seal_open(srv, topic, seg)
        bench_live(srv, topic, span, 0, args)
        bench_live(srv, topic, span, args.clients, args)
        fill_open(srv, topic, seg, round(args.rate * args.seconds / 2))
        bench_live(srv, topic, span, 0, args, "_with_a_seal")
        sampler.stop()
        emit("server_rss_peak", sampler.peak_main / 1e6, "MB")
        emit("server_tree_rss_peak", sampler.peak_tree / 1e6, "MB")
    finally:
        if sampler.is_alive():
            sampler.stop()
        srv.stop()
        lines = srv.log_path.read_text(errors="replace").splitlines()
        for line in lines[:40]:
            print(f"# server.log: {line}", file=sys.stderr)
        print(f"# load average {load()}")
        if args.keep:
            print(f"# data and log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
