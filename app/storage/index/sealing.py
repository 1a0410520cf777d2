"""Packaging a frozen open segment into a segment file, off the indexing thread.

A seal freezes the open segment (its Tantivy commit and batch file) and the worker starts a
new open segment at once; packaging 1M records (~250 MB, written with periodic syncs) took
~1.3 s, and the partition's records were not searchable for that long when it was done in
line. Until the packaged segment is published, the checkpoint's `open_state["sealing"]`
names the frozen range, and search plans its index directory beside the new open one."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from app.storage.segments import tantivy_commit, write_segment

SEALING = "sealing"  # the key of the frozen segment in the checkpoint's open_state


def object_key(topic: str, partition: int, base: int, last: int) -> str:
    # The random part keeps a re-created topic's segments apart from a deleted one's.
    return f"{topic}/{partition}/{base:020d}-{last:020d}-{secrets.token_hex(4)}.seg"


def frozen_batches(open_dir: Path, base: int) -> Path:
    """Where a frozen segment's batch file waits to be packaged."""
    return open_dir / f"sealing-{base}.bin"


def package(
    data_dir: Path,
    topic: str,
    partition: int,
    frozen: dict[str, Any],
    batches: Path,
    index_dir: Path,
) -> tuple[str, dict[str, Any]]:
    """Write the frozen segment's file and its search directory; returns (key, manifest).
    `frozen`: base, next, batches_len, docs, min_ts, max_ts."""
    key = object_key(topic, partition, frozen["base"], frozen["next"] - 1)
    min_ts, max_ts = frozen.get("min_ts", 0), frozen.get("max_ts", 0)
    if min_ts < 0:
        # Some record had no timestamp; its document has the time it was indexed, before
        # now, and the span must cover it (search plans by span, retention goes by its max).
        max_ts = max(max_ts, time.time_ns() // 1_000_000)
    manifest = write_segment(
        data_dir / "segments" / key,
        topic=topic,
        partition=partition,
        batches_path=batches,
        batches_size=frozen["batches_len"],
        index_dir=index_dir,
        min_timestamp=min_ts,
        max_timestamp=max_ts,
        docs=frozen.get("docs", 0),
    )
    # The sealed segment's first search needs its Tantivy files as a directory: these are
    # they, so link them there instead of extracting a copy later.
    with contextlib.suppress(OSError):
        link_index(index_dir, data_dir / "search" / key)
    return key, manifest


def link_index(src: Path, dest: Path) -> None:
    """Hard links to the files of the index's commit only: a merge the dropped writer had
    in flight may still be writing its own beside them."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta, files = tantivy_commit(src)
    for f in files:
        os.link(f, tmp / f.name)
    (tmp / "meta.json").write_bytes(meta)
    try:
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
