"""Helpers for the layered-storage tests: produce a mixed corpus, read the real registry and
the real Tantivy indexes of a server's data dir, wait for indexing and uploads, and compare
what a CRC-checking consumer reads with what was produced."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import tantivy
from prometheus_client.parser import text_string_to_metric_families

from app.storage.index.partition_indexer import open_index_dir
from app.storage.segments.format import extract_tantivy
from tests.integration.clients import (
    Msg,
    consume_confluent,
    produce_confluent,
    produce_kafka_python,
    with_offsets,
)
from tests.integration.conftest import Server

# Small limits so a few hundred thousand records make many segments and WAL files.
LAYERED_ARGS = (
    "--segment-max-records",
    "20000",
    "--segment-bytes",
    str(1 << 20),
    "--wal-retain-ms",
    "0",
    "--tiering-interval-ms",
    "200",
    "--index-commit-ms",
    "200",
    "--retention-check-ms",
    "500",
    # A small memory tail, so old offsets are not still served from memory.
    "--memtail-bytes",
    str(1 << 20),
)

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
LEVELS = ("debug", "info", "warn", "error")


def corpus(n: int, seed: int = 0, base_ts: int | None = None) -> list[Msg]:
    """JSON log lines, plain text and binary (not UTF-8) values, with keys and headers."""
    rnd = random.Random(seed)
    if base_ts is None:
        base_ts = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        kind = i % 4
        value: bytes
        if kind in (0, 1):
            value = json.dumps(
                {
                    "level": LEVELS[i % 4],
                    "service": f"svc{i % 7}",
                    "status": 200 + i % 400,
                    "msg": f"request {i} took {rnd.randrange(1, 900)} ms",
                }
            ).encode()
        elif kind == 2:
            value = f"plain line {i} disk usage {rnd.randrange(100)} percent".encode()
        else:
            value = b"\xff\xfe" + rnd.randbytes(rnd.randrange(4, 40))
        headers = (("trace", f"t{i % 100}".encode()),) if i % 3 == 0 else ()
        out.append(Msg(f"key-{i % 1000}".encode(), value, headers, base_ts + i))
    return out


def produce_mixed(
    srv: Server, topic: str, msgs: Sequence[Msg], partitions: int = 1
) -> dict[int, list[Msg]]:
    """Produce in chunks with every codec (confluent) and xerial-framed snappy (kafka-python),
    round-robin over partitions; returns each partition's messages with their offsets."""
    chunks = 2 * len(CODECS)
    size = -(-len(msgs) // chunks)
    by_partition: dict[int, list[Msg]] = {p: [] for p in range(partitions)}
    for c in range(chunks):
        part = msgs[c * size : (c + 1) * size]
        if not part:
            continue
        p = c % partitions
        codec = CODECS[c % len(CODECS)]
        if c == chunks - 1:
            offsets = produce_kafka_python(srv.bootstrap, topic, part, "snappy", partition=p)
        else:
            offsets = produce_confluent(srv.bootstrap, topic, part, codec, partition=p)
        by_partition[p] += with_offsets(part, offsets)
    return by_partition


def registry(srv: Server) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{srv.data_dir / 'registry.sqlite'}?mode=ro", uri=True)


def segments(srv: Server, topic: str, states: Sequence[str] = ("local", "uploaded")) -> list[Any]:
    marks = ",".join("?" * len(states))
    with registry(srv) as db:
        return db.execute(
            "SELECT partition, base_offset, last_offset, records, state, object_key, manifest "
            f"FROM segments WHERE topic=? AND state IN ({marks}) ORDER BY partition, base_offset",
            (topic, *states),
        ).fetchall()


def checkpoints(srv: Server, topic: str) -> dict[int, int]:
    with registry(srv) as db:
        rows = db.execute(
            "SELECT partition, indexed_offset FROM checkpoints WHERE topic=?", (topic,)
        ).fetchall()
    return {p: off for p, off in rows}


def open_bases(srv: Server, topic: str) -> dict[int, int]:
    """Each partition's open segment base."""
    with registry(srv) as db:
        rows = db.execute(
            "SELECT partition, open_base FROM checkpoints WHERE topic=?", (topic,)
        ).fetchall()
    return {p: base for p, base in rows}


def published_end(srv: Server, topic: str, partition: int) -> int:
    """The end of the run of uploaded segments from the partition's first live segment."""
    end = -1
    for p, base, last, _n, state, _k, _m in segments(srv, topic):
        if p != partition:
            continue
        if state != "uploaded" or (end >= 0 and base > end):
            break
        end = last + 1
    return end


def wal_bases(srv: Server, topic: str, partition: int) -> list[int]:
    d = srv.data_dir / "logs" / f"{topic}-{partition}"
    return sorted(int(p.stem) for p in d.glob("*.log"))


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def all_indexed(srv: Server, topic: str, ends: dict[int, int]) -> bool:
    cps = checkpoints(srv, topic)
    return all(cps.get(p, -1) >= end for p, end in ends.items())


def all_uploaded(srv: Server, topic: str) -> bool:
    rows = segments(srv, topic)
    return bool(rows) and all(r[4] == "uploaded" for r in rows)


def wal_trimmed(srv: Server, topic: str, ends: dict[int, int]) -> bool:
    """No WAL file that is wholly inside the uploaded segments is left (the active file, or
    one still partly unpublished, stays)."""
    for p in ends:
        bases = wal_bases(srv, topic, p)
        end = published_end(srv, topic, p)
        if any(nxt <= end for nxt in bases[1:]):
            return False
    return True


def wait_tiered(srv: Server, topic: str, ends: dict[int, int], timeout: float = 90) -> None:
    wait_until(lambda: all_indexed(srv, topic, ends), timeout, "the indexer to catch up")
    wait_until(lambda: all_uploaded(srv, topic), timeout, "every segment to be uploaded")
    wait_until(lambda: wal_trimmed(srv, topic, ends), timeout, "published WAL to be deleted")


def doc_offsets(srv: Server, topic: str, partition: int) -> list[int]:
    """The offsets of every search document of the partition (sealed segments from the local
    segment files, plus the open segment), duplicates kept. Run on a stopped server."""
    found: list[int] = []
    work = Path(tempfile.mkdtemp())
    try:
        dirs = []
        for n, row in enumerate(segments(srv, topic)):
            if row[0] != partition:
                continue
            dest = work / f"s{n}"
            extract_tantivy(srv.data_dir / "segments" / row[5], json.loads(row[6]), dest)
            dirs.append(dest)
        cp = open_bases(srv, topic).get(partition)
        if cp is not None:
            open_dir = open_index_dir(srv.data_dir / "index" / f"{topic}-{partition}", cp)
            if (open_dir / "meta.json").exists():
                dirs.append(open_dir)
        for d in dirs:
            index = tantivy.Index.open(str(d))
            index.reload()
            searcher = index.searcher()
            if searcher.num_docs == 0:
                continue
            hits = searcher.search(tantivy.Query.all_query(), searcher.num_docs).hits
            found += [searcher.doc(addr)["offset"][0] for _s, addr in hits]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sorted(found)


def metrics(srv: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(srv.http + "/metrics", timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fetch_bytes(srv: Server, layer: str) -> float:
    return metrics(srv).get(("chronik_fetch_bytes_total", (("layer", layer),)), 0.0)


def assert_consumed_exactly(srv: Server, topic: str, produced: dict[int, list[Msg]]) -> None:
    """A CRC-checking confluent consumer reads every record of every partition from offset 0,
    byte for byte what was produced."""
    for p, msgs in produced.items():
        got = consume_confluent(srv.bootstrap, topic, len(msgs), partition=p, timeout=120)
        assert len(got) == len(msgs), f"partition {p}: {len(got)} of {len(msgs)} records"
        want = sorted(msgs, key=lambda m: m.offset)
        for w, g in zip(want, got, strict=True):
            assert (g.offset, g.key, g.value, g.headers, g.timestamp) == (
                w.offset,
                w.key,
                w.value,
                w.headers,
                w.timestamp,
            ), f"partition {p} offset {w.offset} differs"
