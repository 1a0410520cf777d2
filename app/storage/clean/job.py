"""One cleaning run of a partition, the CPU work, in the cleaner's pool process: file work
only (no registry, no network, no event loop).

As Kafka's LogCleaner: an offset map (key -> offset of its last record) is built over the
dirty part of the range, then every segment of the range is rewritten keeping a keyed record
iff its offset is at least the map's for its key. Besides:
- records of aborted transactions are dropped (whole batches);
- records without a key are dropped, as Kafka's `shouldRetainRecord` does (they cannot be
  produced to a compacted topic; older ones predate the policy);
- tombstones (null value) follow KIP-534's delete horizon, not their own timestamps (which
  a producer such as MirrorMaker may have stamped long ago): the first run that keeps a
  batch holding a tombstone writes it with the horizon now + `delete.retention.ms`; a
  tombstone, once the latest of its key, is dropped by a run at or after its batch's
  horizon. So a consumer has at least `delete.retention.ms` from that first run to see it;
- a COMMIT marker no data record of whose transaction is kept is given a horizon likewise,
  and dropped by a run at or after it (Kafka's containsMarkerForEmptyTxn); an ABORT marker
  is kept: the partition's aborted-transaction index still lists the transaction, and a
  read_committed consumer given that entry without ever meeting the marker would take the
  producer's later transactions for aborted too (Kafka drops the index entry with the
  marker; ours is only cut at the log start).
When the map fills, the run ends after the last segment it mapped whole (so the next run
maps from there); if not even the first dirty segment fits, inside it, where it filled, and
records from there on are kept (Kafka's `pastLatestOffset`).

A rewritten segment keeps its source's offset range and replaces it 1:1; its batches are
filtered by `filter_batch` (offsets, producer fields, codec and CRC as Kafka writes them) and
its records indexed again as the indexer does. A source from which nothing is removed and
in which no horizon is set is left as it is."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.storage.clean.offsetmap import AbortedRanges, OffsetMap, key_digest
from app.storage.clean.rebuild import CleanedWriter
from app.storage.clean.source import SourceFile
from app.storage.errors import CorruptBatch
from app.storage.index import object_key
from app.storage.log import (
    COMMIT,
    AbortedTxn,
    BatchHeader,
    DecompressError,
    Record,
    RecordError,
    control_type,
    delete_horizon,
    filter_batch,
    iter_records,
)

log = logging.getLogger("app.storage.clean")


@dataclass(frozen=True)
class SourceSegment:
    key: str  # registry object_key
    path: Path  # local .seg file (segment cache)
    base_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(frozen=True)
class CleanJob:
    topic: str
    partition: int
    sources: tuple[SourceSegment, ...]  # the range, in offset order, from the first segment
    dirty_from: int  # cleaner checkpoint: offsets below were cleaned before
    now_ms: int
    delete_retention_ms: int
    aborted: tuple[AbortedTxn, ...]  # overlapping the range
    map_entries: int  # offset map capacity
    out_dir: Path  # the segment cache: results at out_dir/<new object key>


@dataclass(frozen=True)
class CleanedSegment:
    source_key: str
    # None: unchanged (every record kept), keep the source row. Else out_dir/<object key>:
    # path.relative_to(job.out_dir) is the new segment's object key.
    path: Path | None
    manifest: dict[str, Any] | None  # write_segment's manifest, base/last = the source's


@dataclass(frozen=True)
class CleanResult:
    segments: tuple[CleanedSegment, ...]  # one per cleaned source, in order (a prefix)
    cleaned_end: int  # offsets below are clean now
    bytes_read: int  # batch sections of the cleaned sources
    bytes_written: int  # batch sections of the rewritten segments
    records_kept: int  # in the cleaned sources, control records included
    records_removed: int


def run_clean(job: CleanJob) -> CleanResult:
    aborted = AbortedRanges(job.aborted)
    omap, count, cleaned_end = build_offset_map(job, aborted)
    run = _Run(job, omap, aborted)
    work = job.out_dir.parent / "clean" / f"{job.topic}-{job.partition}"
    written: list[Path] = []
    try:
        segments = []
        for src in job.sources[:count]:
            seg = run.clean_source(src, work / "segment")
            if seg.path is not None:
                written.append(seg.path)
            segments.append(seg)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CleanResult(
        segments=tuple(segments),
        cleaned_end=cleaned_end,
        bytes_read=run.bytes_read,
        bytes_written=run.bytes_written,
        records_kept=run.kept,
        records_removed=run.removed,
    )


def build_offset_map(job: CleanJob, aborted: AbortedRanges) -> tuple[OffsetMap, int, int]:
    """The offset map of the dirty part, how many sources the run cleans, and its end."""
    omap = OffsetMap(job.map_entries)
    sources = job.sources
    mapped_whole = False
    for i, src in enumerate(sources):
        if src.last_offset < job.dirty_from:
            continue
        full_at = _map_source(omap, src, job.dirty_from, aborted)
        if full_at is None:
            mapped_whole = True
            continue
        if mapped_whole:
            # Entries of this partly mapped source stay: each names a later record of its
            # key, so dropping the earlier ones for it is still right.
            omap.end = sources[i - 1].last_offset + 1
            return omap, i, omap.end
        omap.end = full_at
        return omap, i + 1, full_at
    end = sources[-1].last_offset + 1 if sources else job.dirty_from
    omap.end = end
    return omap, len(sources), max(end, job.dirty_from)


def _map_source(
    omap: OffsetMap, src: SourceSegment, dirty_from: int, aborted: AbortedRanges
) -> int | None:
    """Map the source's keyed records from `dirty_from`; the offset of the record that did
    not fit, or None when all did. Aborted transactions and markers are not mapped: an
    aborted record must not shadow the committed one before it."""
    with SourceFile(src.path) as f:
        for _pos, h, data in f.batches(dirty_from):
            if h.is_control or _aborted(h, aborted):
                continue
            try:
                for rec in iter_records(data):
                    if rec.key is None or rec.offset < dirty_from:
                        continue
                    if not omap.put(key_digest(rec.key), rec.offset):
                        return rec.offset
            except (RecordError, DecompressError) as exc:
                # Kept whole by the rewrite; what it holds cannot shadow anything.
                log.warning("%s: batch at offset %d not mapped: %s", src.key, h.base_offset, exc)
    return None


def _aborted(h: BatchHeader, aborted: AbortedRanges) -> bool:
    return h.is_transactional and aborted.covers(h.producer_id, h.base_offset)


class _Run:
    """The rewrite of the range's sources in offset order, with what it carries from one to
    the next: which producers' open transactions have a kept data record."""

    def __init__(self, job: CleanJob, omap: OffsetMap, aborted: AbortedRanges) -> None:
        self.job = job
        self.omap = omap
        self.aborted = aborted
        self.txn_kept: dict[int, bool] = {}
        self.new_horizon = job.now_ms + job.delete_retention_ms  # KIP-534's deleteHorizonMs
        self.bytes_read = self.bytes_written = 0
        self.kept = self.removed = 0

    def clean_source(self, src: SourceSegment, work: Path) -> CleanedSegment:
        job = self.job
        out: CleanedWriter | None = None
        with SourceFile(src.path) as f:
            self.bytes_read += f.size
            try:
                for pos, h, data in f.batches():
                    new, records = self._filter(src, h, data)
                    if new is not data and out is None:
                        # The first removal: the batches before it are copied as they are.
                        out = CleanedWriter(work, job.partition, src.max_timestamp)
                        for _h, before in f.section(0, pos):
                            out.add(before)
                    if out is not None and new is not None:
                        out.add(new, records)
                if out is None:
                    return CleanedSegment(src.key, None, None)
                path = job.out_dir / object_key(
                    job.topic, job.partition, src.base_offset, src.last_offset
                )
                manifest = out.finish(
                    path, job.topic, job.partition, src.base_offset, src.last_offset
                )
                self.bytes_written += out.size
                return CleanedSegment(src.key, path, manifest)
            finally:
                if out is not None:
                    out.close()

    def _filter(
        self, src: SourceSegment, h: BatchHeader, data: bytes
    ) -> tuple[bytes | None, list[Record] | None]:
        """The batch as kept (`data` itself when whole, None when dropped) and its kept
        records when they were decoded."""
        n = h.records_count
        if h.is_control:
            kept_marker = self._keep_marker(h, data)
            if kept_marker is None:
                self.removed += n
            else:
                self.kept += n
            return kept_marker, None
        if _aborted(h, self.aborted):
            self.removed += n
            return None, None
        kept: list[Record] = []
        dropped = 0

        horizon = delete_horizon(h)

        def keep(offset: int, rec: Record) -> bool:
            nonlocal dropped
            if self._keep_record(horizon, offset, rec):
                kept.append(rec)
                return True
            dropped += 1
            return False

        try:
            new = filter_batch(data, keep, self.new_horizon)
        except (RecordError, DecompressError) as exc:
            log.warning("%s: batch at offset %d kept whole: %s", src.key, h.base_offset, exc)
            kept, dropped, new = [], 0, data
        if h.is_transactional and n > dropped:
            self.txn_kept[h.producer_id] = True
        elif h.is_transactional:
            self.txn_kept.setdefault(h.producer_id, False)
        self.kept += n - dropped
        self.removed += dropped
        if dropped == 0 and (horizon is not None or not any(r.value is None for r in kept)):
            return data, kept or None  # nothing removed, no horizon to set: as it was
        return new, kept

    def _keep_record(self, horizon: int | None, offset: int, rec: Record) -> bool:
        """Kafka's shouldRetainRecord: past the map, or the latest of its key and not a
        tombstone whose batch's delete horizon has passed."""
        if offset >= self.omap.end:
            return True
        if rec.key is None or offset < self.omap.latest(rec.key):
            return False
        return rec.value is not None or horizon is None or self.job.now_ms < horizon

    def _keep_marker(self, h: BatchHeader, data: bytes) -> bytes | None:
        """The control batch as kept (given a horizon if it may go once it passes), or None."""
        had_kept = self.txn_kept.pop(h.producer_id, False)
        try:
            kind = control_type(data)
        except CorruptBatch as exc:
            log.warning("control batch at offset %d kept: %s", h.base_offset, exc)
            return data
        if kind != COMMIT or had_kept:
            return data  # ABORT (see the module docstring), a type we do not know, or needed
        horizon = delete_horizon(h)
        if horizon is not None:
            return data if self.job.now_ms < horizon else None
        try:
            return filter_batch(data, lambda _o, _r: True, self.new_horizon)
        except (RecordError, DecompressError) as exc:
            log.warning("control batch at offset %d kept as it is: %s", h.base_offset, exc)
            return data
