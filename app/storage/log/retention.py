"""Which of a partition's oldest WAL segments may go, by each rule that deletes them.
Pure decisions over the segment list, oldest first: the PartitionLog deletes what they
count and moves its log start."""

from __future__ import annotations

import os
from collections.abc import Sequence

from app.storage.log.topicconfig import LogConfig
from app.storage.log.wal import WalSegment


def past_retention_ms(segs: Sequence[WalSegment], cfg: LogConfig, now_ms: int) -> int:
    """Oldest segments whose newest record is older than retention.ms. A segment without
    timestamps counts from its file's last write, so such records never look old."""
    if cfg.retention_ms < 0:
        return 0
    count = 0
    while (
        count < len(segs)
        and segs[count].size > 0
        and now_ms - segs[count].largest_timestamp() > cfg.retention_ms
    ):
        count += 1
    return count


def past_retention_bytes(segs: Sequence[WalSegment], cfg: LogConfig, size: int) -> int:
    """Oldest segments to delete so the partition fits retention.bytes, never the active one."""
    if cfg.retention_bytes < 0:
        return 0
    excess = size - cfg.retention_bytes
    count = 0
    while count < len(segs) - 1 and excess - segs[count].size >= 0:
        excess -= segs[count].size
        count += 1
    return count


def below(segs: Sequence[WalSegment], offset: int) -> int:
    """Oldest segments whose every offset is below `offset`."""
    count = 0
    while count < len(segs) and segs[count].next_offset <= offset:
        count += 1
    return count


def uploaded_and_idle(
    segs: Sequence[WalSegment], offset: int, older_than_ms: int, now_s: float
) -> int:
    """Oldest sealed segments entirely below `offset` (what the object store holds) and last
    written over `older_than_ms` ago."""
    count = 0
    while count < len(segs) - 1 and segs[count].next_offset <= offset:
        try:
            mtime = os.stat(segs[count].path).st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if (now_s - mtime) * 1000 < older_than_ms:
            break
        count += 1
    return count
