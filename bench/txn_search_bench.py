"""Read-committed search: what the `producer_id` field costs in the index, and what leaving
out aborted transactions costs a query.

1. Index size: N JSON log lines (index_bench.log_record) through DocBuilder into one Tantivy
   index, three ways: the schema before `producer_id` (no field), today's schema with
   non-transactional records (no value), and every record transactional (a producer id per
   `--txn-records` records, 50 producers in turn). Bytes of the committed segments' files over N.
2. Query cost in the open segment: on the transactional index, execute.search_segment /
   count_segment / aggregate_segment (the search process's code, in this process) with 0, 1,
   10, 100 and 1,000 aborted transactions excluded (spread evenly over the index; when there
   are fewer transactions than that, ranges that match none), and with one open transaction;
   p50/p99 of `--repeat` runs each of: a term (`value.level:error`) with its 20 newest hits,
   `q=*` counted, a 1-minute histogram over everything.
3. The same aborted transactions in a sealed segment: a copy of the index has their documents
   deleted as a seal deletes them (index/aborts.py: one delete query, one commit; its time
   is reported), then the same queries with the exclusions the engine gives a sealed segment
   (none for transactions whose marker it holds), and with one aborted transaction that
   straddles the seal (its marker past the segment) left to exclude.

    python bench/txn_search_bench.py                  # 1,000,000 records
    python bench/txn_search_bench.py --records 200000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tantivy

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import index_bench as ib
from broker_bench import emit, pct

from app.storage.index.aborts import delete_query
from app.storage.index.docs import DocBuilder, build_schema
from app.storage.log import AbortedTxn, Record
from app.storage.search.execute import (
    AggTask,
    Exclusion,
    SegmentTask,
    aggregate_segment,
    count_segment,
    search_segment,
)
from tests.unit.test_search_isolation import legacy_schema

TS0 = 1_790_000_000_000
PRODUCERS = 50


def build(path: Path, schema: tantivy.Schema, n: int, txn_records: int | None) -> int:
    """The index of n records; returns its bytes. txn_records: records per transaction
    (None: none is transactional)."""
    index = tantivy.Index(schema, path=str(path))
    writer = index.writer(heap_size=128 * 1024 * 1024, num_threads=1)
    builder = DocBuilder(0)
    for i in range(n):
        ts = TS0 + i * 50
        rec = Record(i, ts, b"user-%d" % (i % 37), ib.log_record(i, ts), [])
        pid = None if txn_records is None else 1000 + (i // txn_records) % PRODUCERS
        writer.add_json(builder.doc(rec, pid))
    writer.commit()
    writer.wait_merging_threads()
    meta = json.loads((path / "meta.json").read_text())
    live = {s["segment_id"].replace("-", "") for s in meta["segments"]}
    return sum(f.stat().st_size for f in path.iterdir() if f.name.split(".")[0] in live)


def aborted(n: int, txn_records: int, k: int) -> tuple[Exclusion, ...]:
    """k aborted transactions spread evenly over the index's transactions (beyond the
    index's end once there are more than it holds)."""
    txns = n // txn_records
    real = min(k, txns)
    out: list[Exclusion] = []
    for j in range(k):
        t = j * txns // real if j < real else txns + j
        out.append((1000 + t % PRODUCERS, t * txn_records, (t + 1) * txn_records - 1))
    return tuple(out)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return pct(samples, 50), pct(samples, 99)


AGG = {"h": {"histogram": {"field": "timestamp", "interval": 60_000, "min_doc_count": 1}}}


def queries(index_dir: str, name: str, ex: tuple[Exclusion, ...], repeat: int) -> None:
    term = SegmentTask(index_dir, 0, "value.level:error", exclude=ex, limit=20)
    count = SegmentTask(index_dir, 0, "*", exclude=ex, limit=1)
    hist = AggTask(index_dir, "*", AGG, exclude=ex)
    matched = search_segment(term).total
    for what, fn in (
        ("term20", lambda t=term: search_segment(t)),
        ("count_all", lambda t=count: count_segment(t)),
        ("histogram", lambda t=hist: aggregate_segment(t)),
    ):
        p50, p99 = timed(fn, repeat)
        emit(f"search_{what}_{name}_p50", round(p50, 2), "ms")
        emit(f"search_{what}_{name}_p99", round(p99, 2), "ms")
    emit(f"search_term_{name}_matches", matched, "docs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--txn-records", type=int, default=100, help="records per transaction")
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    n = args.records
    tmp = Path(tempfile.mkdtemp(prefix="txnsearch-"))
    try:
        dirs = {k: tmp / k for k in ("legacy", "plain", "txn")}
        for d in dirs.values():
            d.mkdir()
        sizes = {
            "legacy": build(dirs["legacy"], legacy_schema(), n, None),
            "plain": build(dirs["plain"], build_schema(), n, None),
            "txn": build(dirs["txn"], build_schema(), n, args.txn_records),
        }
        emit("index_bytes_per_record_before", round(sizes["legacy"] / n, 2), "B")
        emit("index_bytes_per_record_non_transactional", round(sizes["plain"] / n, 2), "B")
        emit("index_bytes_per_record_transactional", round(sizes["txn"] / n, 2), "B")

        index_dir = str(dirs["txn"])
        cases: dict[str, tuple[Exclusion, ...]] = {
            f"aborted_{k}": aborted(n, args.txn_records, k) for k in (0, 1, 10, 100, 1000)
        }
        last_txn = n // args.txn_records - 1
        cases["open_1"] = ((1000 + last_txn % PRODUCERS, last_txn * args.txn_records, None),)
        for name, ex in cases.items():
            queries(index_dir, name, ex, args.repeat)

        # Sealed: the documents deleted at seal, nothing (or one straddler) left to exclude.
        straddler = (1000 + last_txn % PRODUCERS, last_txn * args.txn_records, n + 5)
        for k in (0, 1, 10, 100, 1000):
            sealed = tmp / f"sealed-{k}"
            shutil.copytree(dirs["txn"], sealed)
            txns = [AbortedTxn(*e) for e in aborted(n, args.txn_records, k)]
            t0 = time.perf_counter()
            if txns:
                writer = tantivy.Index.open(str(sealed)).writer(128 * 1024 * 1024, 1)
                writer.delete_documents_by_query(delete_query(txns))
                writer.commit()
                del writer
            emit(f"seal_delete_aborted_{k}", round((time.perf_counter() - t0) * 1000, 1), "ms")
            queries(str(sealed), f"sealed_aborted_{k}", (), args.repeat)
            if k == 1000:
                queries(str(sealed), f"sealed_aborted_{k}_straddler_1", (straddler,), args.repeat)
            shutil.rmtree(sealed)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
