"""A cleaned segment being built: its kept batches in a batch file and a fresh Tantivy index of
their records, made exactly as the indexer makes them (index/partition_indexer.py), then
packaged with the source's offset range."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tantivy

from app.storage.index import DocBuilder, build_schema
from app.storage.log import (
    DecompressError,
    Record,
    RecordError,
    delete_horizon,
    iter_records,
    parse_header,
)
from app.storage.segments import write_segment

log = logging.getLogger("app.storage.clean")

# The indexer's heap and thread count for an open segment (partition_indexer.py): the same
# index shape, and one thread because the pool process shares the cores with the broker.
WRITER_HEAP = 32 * 1024 * 1024
WRITER_THREADS = 1


class CleanedWriter:
    """One source's cleaned copy under `work` (a directory of its own, removed by `close`)."""

    def __init__(self, work: Path, partition: int, no_timestamp: int) -> None:
        """`no_timestamp`: the document time of records without one (-1), the source's max
        timestamp. The indexer gave them the time they were indexed, at or before that (the
        seal stretched the source's span over it); the clean's own time could be days later
        and would move them in time-range searches."""
        shutil.rmtree(work, ignore_errors=True)
        self.no_timestamp = no_timestamp
        self.work = work
        self.index_dir = work / "tantivy"
        self.index_dir.mkdir(parents=True)
        self.batches_path = work / "batches.bin"
        self._batches = open(self.batches_path, "wb")  # noqa: SIM115 (closed by finish/close)
        self.size = 0
        self.index = tantivy.Index(build_schema(), path=str(self.index_dir))
        self.writer: Any = self.index.writer(heap_size=WRITER_HEAP, num_threads=WRITER_THREADS)
        self.builder = DocBuilder(partition)
        self.docs = 0
        self.errors = 0
        self.min_ts: int | None = None
        self.max_ts: int | None = None

    def add(self, batch: bytes, records: Iterable[Record] | None = None) -> None:
        """Append a kept batch; its records are indexed (`records`: those it holds, when the
        caller has them decoded; else decoded here). Control batches are not indexed."""
        h = parse_header(batch)
        self._batches.write(batch)
        self.size += len(batch)
        # A delete horizon in baseTimestamp is no record's time: only maxTimestamp counts then.
        first = h.base_timestamp if delete_horizon(h) is None else -1
        stamps = [t for t in (first, h.max_timestamp) if t >= 0] or [self.no_timestamp]
        lo, hi = min(stamps), max(stamps)
        if not h.is_control:
            pid = h.producer_id if h.is_transactional else None
            writer, builder = self.writer, self.builder
            try:
                for rec in iter_records(batch) if records is None else records:
                    if rec.timestamp < 0:
                        rec = Record(rec.offset, self.no_timestamp, rec.key, rec.value, rec.headers)
                    try:
                        writer.add_json(builder.doc(rec, pid))
                    except ValueError:
                        self.errors += 1
                        writer.add_json(builder.text_doc(rec, pid))
                    self.docs += 1
                    lo = min(lo, rec.timestamp)
                    hi = max(hi, rec.timestamp)
            except (RecordError, DecompressError) as exc:
                # Kept whole and fetchable, as the indexer leaves it: just not searchable.
                self.errors += 1
                log.warning("batch at offset %d not indexed: %s", h.base_offset, exc)
        self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
        self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)

    def finish(self, out: Path, topic: str, partition: int, base: int, last: int) -> dict[str, Any]:
        """Commit the index and package the segment into `out` with offsets [base, last];
        returns its manifest. A segment left empty spans the source's max timestamp."""
        self._batches.flush()
        self._batches.close()
        self.writer.commit()
        # Dropped, not waited for: only the commit is packaged (segments/format.py:
        # tantivy_commit), as sealing does.
        self.writer = None
        self.errors += self.builder.errors
        min_ts = self.no_timestamp if self.min_ts is None else self.min_ts
        max_ts = self.no_timestamp if self.max_ts is None else self.max_ts
        return write_segment(
            out,
            topic=topic,
            partition=partition,
            batches_path=self.batches_path,
            batches_size=self.size,
            index_dir=self.index_dir,
            min_timestamp=min_ts,
            max_timestamp=max_ts,
            docs=self.docs,
            base_offset=base,
            last_offset=last,
        )

    def close(self) -> None:
        self.writer = None
        if not self._batches.closed:
            self._batches.close()
        shutil.rmtree(self.work, ignore_errors=True)
