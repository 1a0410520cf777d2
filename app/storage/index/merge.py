"""Background merge of a partition's small adjacent sealed segments into one.

Segments sealed by age on a quiet partition are small; many of them make every search open
many indexes and every object-store listing long. A run of adjacent small segments (each under
half the seal limits, together within them) is merged into one segment when a partition has
`MIN_SMALL_RUN` of them in a row, so the count of small segments per partition stays bounded.

Merging does not re-index: the batch sections are concatenated (still the exact stored bytes)
and the Tantivy indexes are combined by listing every source's segments in one `meta.json`,
which is how a Tantivy index with several segments looks anyway; the documents of aborted
transactions whose marker only the merged range reaches are then deleted (aborts.py). The
registry swaps the sources for the result in one transaction; the sources' objects are deleted
only after the result is uploaded (see `Registry.deletable`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from app.storage.index.aborts import delete_in_merge
from app.storage.segments import Registry, SegmentRow, extract_tantivy, write_segment

log = logging.getLogger("app.storage.index")

MIN_SMALL_RUN = 4


def plan_merge(
    rows: list[SegmentRow], max_records: int, max_bytes: int, is_local: Any
) -> list[SegmentRow] | None:
    """The first run of adjacent small local segments worth merging, or None. `rows` are a
    partition's live segments in offset order; `is_local(row)` says whether its file is in
    the local segment cache (only those can be merged without downloading)."""

    def small(r: SegmentRow) -> bool:
        return 2 * r.records < max_records and 2 * r.size < max_bytes and is_local(r)

    if sum(1 for r in rows if small(r)) < MIN_SMALL_RUN:
        return None
    run: list[SegmentRow] = []
    for row in rows:
        fits = (
            run
            and run[-1].next_offset == row.base_offset
            and sum(r.records for r in run) + row.records <= max_records
            and sum(r.size for r in run) + row.size <= max_bytes
        )
        if small(row) and fits:
            run.append(row)
            continue
        if len(run) >= 2:
            return run
        run = [row] if small(row) else []
    return run if len(run) >= 2 else None


def _combine_meta(dirs: list[Path]) -> dict[str, Any]:
    metas = [json.loads((d / "meta.json").read_text()) for d in dirs]
    # Segments indexed before the schema gained a field (fields are only ever appended, see
    # docs.py) read fine under the newer schema, which the others need.
    out = dict(max(metas, key=lambda m: len(m["schema"])))
    out["segments"] = [s for m in metas for s in m["segments"]]
    out["opstamp"] = max(m["opstamp"] for m in metas)
    return out


def merge_segments(
    data_dir: Path, rows: list[SegmentRow], key: str, work_dir: Path
) -> dict[str, Any]:
    """Write the merge of `rows` (local files under data_dir/segments) to segments/`key`;
    returns its manifest."""
    shutil.rmtree(work_dir, ignore_errors=True)
    index_dir = work_dir / "tantivy"
    index_dir.mkdir(parents=True)
    batches = work_dir / "batches.bin"
    size = 0
    docs = 0
    parts = []
    try:
        with open(batches, "wb") as out:
            for n, row in enumerate(rows):
                src = data_dir / "segments" / row.object_key
                sec = row.manifest["sections"]["batches"]
                with open(src, "rb") as f:
                    f.seek(sec["offset"])
                    remaining = sec["size"]
                    while remaining:
                        chunk = f.read(min(remaining, 4 * 1024 * 1024))
                        if not chunk:
                            raise OSError(f"{src} is truncated")
                        out.write(chunk)
                        remaining -= len(chunk)
                size += sec["size"]
                docs += row.manifest.get("docs", 0)
                part = work_dir / f"part{n}"
                extract_tantivy(src, row.manifest, part)
                parts.append(part)
        for part in parts:
            for file in part.iterdir():
                if file.name != "meta.json":
                    file.rename(index_dir / file.name)
        (index_dir / "meta.json").write_text(json.dumps(_combine_meta(parts)))
        delete_in_merge(index_dir, data_dir / "logs" / f"{rows[0].topic}-{rows[0].partition}", rows)
        return write_segment(
            data_dir / "segments" / key,
            topic=rows[0].topic,
            partition=rows[0].partition,
            batches_path=batches,
            batches_size=size,
            index_dir=index_dir,
            min_timestamp=min(r.min_timestamp for r in rows),
            max_timestamp=max(r.max_timestamp for r in rows),
            docs=docs,
            # The run's range, not its batches': a cleaned segment may have lost its first
            # or last records, or hold none, and the log must stay covered from its start.
            base_offset=rows[0].base_offset,
            last_offset=rows[-1].last_offset,
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def merge_partition(
    registry: Registry,
    data_dir: Path,
    topic: str,
    partition: int,
    max_records: int,
    max_bytes: int,
    object_key: Any,
) -> bool:
    """Merge one run of small segments of the partition if there is one; True if merged."""
    rows = registry.segments(topic, partition)
    run = plan_merge(
        rows,
        max_records,
        max_bytes,
        lambda r: (data_dir / "segments" / r.object_key).exists(),
    )
    if run is None:
        return False
    key = object_key(topic, partition, run[0].base_offset, run[-1].last_offset)
    work = data_dir / "merge" / f"{topic}-{partition}"
    try:
        manifest = merge_segments(data_dir, run, key, work)
    except FileNotFoundError:
        # A source left the cache (evicted or deleted by retention) meanwhile.
        return False
    row = SegmentRow.sealed(key, manifest)
    if not registry.replace([r.id for r in run], row):
        (data_dir / "segments" / key).unlink(missing_ok=True)
        return False
    log.info(
        "%s-%d: merged %d segments into offsets %d-%d",
        topic,
        partition,
        len(run),
        row.base_offset,
        row.last_offset,
    )
    return True
