"""The cleaner's CPU job (app/storage/clean/job.py) on real sealed segments.

Builds a partition with the real log and indexer: `--keys` records with distinct keys, then
`--updates` records rewriting random ones of them (JSON values of ~100 bytes, batches of
500, a segment sealed every `--segment-records`), so every segment has superseded records
and is rewritten and re-indexed: the expensive case. Then, each in a fresh spawned process
as the cleaner's pool runs it:

1. the offset map alone over the whole range (`--keys` entries): its peak RSS delta;
2. the whole run (`run_clean`): wall time, MB/s of log (batch bytes) read, records/s, and
   the run's peak RSS delta (mmapped source pages that were touched count in RSS too).

Prints one `metric value unit` line per figure.

    python bench/cleaner_job.py                    # 1,000,000 keys + 500,000 updates
    python bench/cleaner_job.py --keys 100000 --updates 50000   # quick run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.config import IndexConfig  # noqa: E402
from app.storage.clean import CleanJob, SourceSegment, run_clean  # noqa: E402
from app.storage.clean.job import build_offset_map  # noqa: E402
from app.storage.clean.offsetmap import AbortedRanges  # noqa: E402
from app.storage.index import WorkerConfig  # noqa: E402
from app.storage.index.partition_indexer import PartitionIndexer  # noqa: E402
from app.storage.log import PartitionLog, validate_batches  # noqa: E402
from app.storage.log.fsync import FsyncScheduler  # noqa: E402
from app.storage.log.memtail import MemTailBudget  # noqa: E402
from app.storage.log.records import zigzag_varint as _zz  # noqa: E402
from app.storage.segments import Registry  # noqa: E402

BATCH = 500


def make_batch(records: list[tuple[bytes, bytes]], ts: int) -> bytes:
    """An uncompressed RecordBatch v2 (offset 0: the log assigns it)."""
    import struct

    import crc32c

    body = bytearray()
    for i, (k, v) in enumerate(records):
        rec = b"\x00" + _zz(0) + _zz(i) + _zz(len(k)) + k + _zz(len(v)) + v + _zz(0)
        body += _zz(len(rec)) + rec
    header = struct.pack(
        ">qiibIhiqqqhii",
        0,
        49 + len(body),
        -1,
        2,
        0,
        0,
        len(records) - 1,
        ts,
        ts,
        -1,
        -1,
        -1,
        len(records),
    )
    out = bytearray(header) + body
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def build(data_dir: Path, keys: int, updates: int, per_segment: int) -> list[SourceSegment]:
    plog = PartitionLog(
        data_dir / "logs" / "t-0",
        "t",
        0,
        {"segment.bytes": str(1 << 30)},
        FsyncScheduler("never"),
        MemTailBudget(64 << 20),
    )
    registry = Registry(data_dir / "registry.sqlite")
    cfg = WorkerConfig(data_dir, IndexConfig(segment_max_records=10**9, segment_max_bytes=1 << 40))
    pi = PartitionIndexer(cfg, registry, "t", 0, 0)
    rng = random.Random(7)
    order = list(range(keys)) + [rng.randrange(keys) for _ in range(updates)]
    levels = ("info", "warn", "error", "debug")
    now = int(time.time() * 1000)
    for start in range(0, len(order), BATCH):
        recs = []
        for i, k in enumerate(order[start : start + BATCH], start):
            value = json.dumps(
                {"user": f"user-{k}", "level": levels[i % 4], "seq": i, "msg": f"event {i} ok"}
            ).encode()
            recs.append((f"key-{k:08d}".encode(), value))
        data = make_batch(recs, now)
        plog.append(data, validate_batches(data), now)
        if (start + BATCH) % per_segment == 0 or start + BATCH >= len(order):
            pi.hw, pi.log_start = plog.high_watermark, plog.log_start_offset
            while pi.cp.indexed_offset < pi.hw:
                pi.step(time.monotonic())
            pi.commit()
            pi.seal(wait=True)
    pi.close()
    plog.close()
    rows = registry.segments("t", 0)
    registry.close()
    return [
        SourceSegment(
            r.object_key,
            data_dir / "segments" / r.object_key,
            r.base_offset,
            r.last_offset,
            r.max_timestamp,
        )
        for r in rows
    ]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> None:
    """Start VmHWM (peak RSS) from the current RSS, so the import's peak does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _child(job: CleanJob, what: str, out: Any) -> None:
    _reset_peak()
    before, anon_before = _status_kb("VmRSS"), _status_kb("RssAnon")
    started = time.perf_counter()
    if what == "map":
        omap, count, end = build_offset_map(job, AbortedRanges(job.aborted))
        # Anonymous memory while the map is alive: the map without the source pages that
        # the mmap brought into RSS.
        res: dict[str, Any] = {"entries": len(omap), "sources": count, "end": end}
        res["anon_delta_kb"] = _status_kb("RssAnon") - anon_before
    else:
        r = run_clean(job)
        res = {
            "bytes_read": r.bytes_read,
            "bytes_written": r.bytes_written,
            "kept": r.records_kept,
            "removed": r.records_removed,
            "rewritten": sum(1 for s in r.segments if s.path is not None),
        }
    res["seconds"] = time.perf_counter() - started
    res["peak_rss_delta_kb"] = _status_kb("VmHWM") - before
    out.put(res)


def in_process(job: CleanJob, what: str) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(job, what, q))
    p.start()
    res: dict[str, Any] = q.get()
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--updates", type=int, default=500_000)
    ap.add_argument("--segment-records", type=int, default=300_000)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cleaner-bench-"))
    try:
        t0 = time.perf_counter()
        sources = build(data_dir, args.keys, args.updates, args.segment_records)
        print(f"setup_seconds {time.perf_counter() - t0:.1f} s", flush=True)
        job = CleanJob(
            topic="t",
            partition=0,
            sources=tuple(sources),
            dirty_from=0,
            now_ms=int(time.time() * 1000),
            delete_retention_ms=86_400_000,
            aborted=(),
            map_entries=args.keys + 1,
            out_dir=data_dir / "segments",
        )
        m = in_process(job, "map")
        print(f"segments {len(sources)} count")
        print(f"map_entries {m['entries']} keys")
        print(f"map_seconds {m['seconds']:.2f} s")
        print(f"map_peak_rss_delta {m['peak_rss_delta_kb'] / 1024:.1f} MB")
        print(f"map_anon_rss_delta {m['anon_delta_kb'] / 1024:.1f} MB")
        print(f"map_bytes_per_key {m['anon_delta_kb'] * 1024 / max(m['entries'], 1):.0f} B")
        r = in_process(job, "clean")
        mb = r["bytes_read"] / 1e6
        print(f"clean_seconds {r['seconds']:.2f} s")
        print(f"clean_log_read {mb:.1f} MB")
        print(f"clean_throughput {mb / r['seconds']:.2f} MB/s")
        print(f"clean_records_per_s {(r['kept'] + r['removed']) / r['seconds']:.0f} records/s")
        print(f"clean_records_kept {r['kept']} records")
        print(f"clean_records_removed {r['removed']} records")
        print(f"clean_segments_rewritten {r['rewritten']} count")
        print(f"clean_log_written {r['bytes_written'] / 1e6:.1f} MB")
        print(f"clean_peak_rss_delta {r['peak_rss_delta_kb'] / 1024:.1f} MB")
    finally:
        if args.keep:
            print(f"data_dir {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
