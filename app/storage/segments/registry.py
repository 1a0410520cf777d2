"""The segment registry (SQLite in the data dir): sealed search segments with their offset and
time ranges, each partition's indexer checkpoint and each compacted partition's cleaner
checkpoint. Indexer workers and the service open it from different processes; SQLite's WAL
mode lets them share it.

A segment is `local` (sealed, only in the local segment cache), then `uploaded` (in the object
store: its offsets may leave the WAL), then `deleting` (removed from the log by retention or
topic deletion, or replaced by a merge or a cleaner run; the object is still to be deleted)."""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL, UPLOADED, DELETING = "local", "uploaded", "deleting"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    min_timestamp INTEGER NOT NULL,
    max_timestamp INTEGER NOT NULL,
    records INTEGER NOT NULL,
    size INTEGER NOT NULL,
    object_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    manifest TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_by_offset ON segments (topic, partition, last_offset);
CREATE INDEX IF NOT EXISTS segments_by_time ON segments (topic, partition, max_timestamp);
CREATE INDEX IF NOT EXISTS segments_by_state ON segments (state);
CREATE TABLE IF NOT EXISTS checkpoints (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    open_base INTEGER NOT NULL,
    indexed_offset INTEGER NOT NULL,
    open_state TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS cleaner (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    cleaned_end INTEGER NOT NULL,
    last_run_ms INTEGER NOT NULL,
    dirty_ratio REAL NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

_COLUMNS = (
    "id, topic, partition, base_offset, last_offset, min_timestamp, max_timestamp, records, "
    "size, object_key, state, manifest, created_ms"
)


@dataclass
class SegmentRow:
    id: int
    topic: str
    partition: int
    base_offset: int
    last_offset: int
    min_timestamp: int
    max_timestamp: int
    records: int
    size: int
    object_key: str
    state: str
    manifest: dict[str, Any]
    created_ms: int

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def largest_timestamp(self) -> int:
        """What retention.ms measures from. Segments sealed before records without a timestamp
        got a span have -1 here: they count from their registration instead."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.created_ms

    @classmethod
    def sealed(cls, object_key: str, manifest: dict[str, Any]) -> SegmentRow:
        """A new local segment's row, from the manifest `write_segment` returned."""
        return cls(
            id=0,
            topic=manifest["topic"],
            partition=manifest["partition"],
            base_offset=manifest["base_offset"],
            last_offset=manifest["last_offset"],
            min_timestamp=manifest["min_timestamp"],
            max_timestamp=manifest["max_timestamp"],
            records=manifest["records"],
            size=manifest["size"],
            object_key=object_key,
            state=LOCAL,
            manifest=manifest,
            created_ms=int(time.time() * 1000),
        )


@dataclass
class Checkpoint:
    """Where a partition's indexing stands: the open segment starts at `open_base` and holds
    every record below `indexed_offset`; `open_state` is the worker's own bookkeeping of that
    open segment (batch file length, counts, timestamps)."""

    topic: str
    partition: int
    open_base: int
    indexed_offset: int
    open_state: dict[str, Any] = field(default_factory=dict)
    updated_ms: int = 0


@dataclass
class CleanerState:
    """A compacted partition's cleaner checkpoint: offsets below `cleaned_end` were cleaned
    by the run at `last_run_ms`, which found `dirty_ratio` of its range dirty."""

    topic: str
    partition: int
    cleaned_end: int
    last_run_ms: int
    dirty_ratio: float


def _row(r: tuple[Any, ...]) -> SegmentRow:
    return SegmentRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], _manifest(r[11]), r[12]
    )


@functools.lru_cache(maxsize=4096)
def _manifest(text: str) -> dict[str, Any]:
    """A row's manifest, parsed once: it never changes after the insert, and parsing the
    ~8 KB of a 1M-record segment's for every planned segment was half of a search's
    event-loop time. Callers only read it."""
    result: dict[str, Any] = json.loads(text)
    return result


class Registry:
    def __init__(self, path: Path, durable: bool = True) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Logs open in worker threads at startup; sqlite3 serializes access itself.
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # The service marks segments uploaded before it deletes their WAL: that must be on
        # disk first. A worker's checkpoints may lag after a power loss: it re-indexes.
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def checkpoint(self, topic: str, partition: int) -> Checkpoint | None:
        r = self._db.execute(
            "SELECT open_base, indexed_offset, open_state, updated_ms FROM checkpoints "
            "WHERE topic=? AND partition=?",
            (topic, partition),
        ).fetchone()
        if r is None:
            return None
        return Checkpoint(topic, partition, r[0], r[1], json.loads(r[2]), r[3])

    def checkpoints(self) -> list[Checkpoint]:
        rows = self._db.execute(
            "SELECT topic, partition, open_base, indexed_offset, open_state, updated_ms "
            "FROM checkpoints"
        ).fetchall()
        return [Checkpoint(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def create_checkpoint(self, cp: Checkpoint) -> None:
        """A partition's first checkpoint (kept if one exists)."""
        cp.updated_ms = int(time.time() * 1000)
        self._db.execute(
            "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
            (
                cp.topic,
                cp.partition,
                cp.open_base,
                cp.indexed_offset,
                json.dumps(cp.open_state),
                cp.updated_ms,
            ),
        )

    def save_checkpoint(self, cp: Checkpoint, db: sqlite3.Connection | None = None) -> bool:
        """Update an existing checkpoint; False if there is none: the topic was deleted (a
        worker must not bring its checkpoint back before it hears of the delete)."""
        cp.updated_ms = int(time.time() * 1000)
        cur = (db or self._db).execute(
            "UPDATE checkpoints SET open_base=?, indexed_offset=?, open_state=?, updated_ms=? "
            "WHERE topic=? AND partition=?",
            (
                cp.open_base,
                cp.indexed_offset,
                json.dumps(cp.open_state),
                cp.updated_ms,
                cp.topic,
                cp.partition,
            ),
        )
        return cur.rowcount == 1

    @staticmethod
    def _insert(db: sqlite3.Connection, seg: SegmentRow) -> None:
        cur = db.execute(
            f"INSERT INTO segments ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seg.topic,
                seg.partition,
                seg.base_offset,
                seg.last_offset,
                seg.min_timestamp,
                seg.max_timestamp,
                seg.records,
                seg.size,
                seg.object_key,
                seg.state,
                json.dumps(seg.manifest),
                seg.created_ms,
            ),
        )
        seg.id = int(cur.lastrowid or 0)

    def publish(self, seg: SegmentRow, cp: Checkpoint) -> bool:
        """Register a sealed segment and move the checkpoint past it, in one transaction;
        False (nothing registered) if the partition's checkpoint is gone (topic deleted)."""
        with self.transaction() as db:
            if not self.save_checkpoint(cp, db):
                return False
            self._insert(db, seg)
        return True

    def segments(
        self,
        topic: str | None = None,
        partition: int | None = None,
        states: Iterable[str] = (LOCAL, UPLOADED),
    ) -> list[SegmentRow]:
        where, args = self._filter(topic, partition, states)
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM segments WHERE {where} ORDER BY topic, partition, base_offset",
            args,
        ).fetchall()
        return [_row(r) for r in rows]

    @staticmethod
    def _filter(
        topic: str | None, partition: int | None, states: Iterable[str]
    ) -> tuple[str, list[Any]]:
        states = list(states)
        clauses = [f"state IN ({','.join('?' * len(states))})"]
        args: list[Any] = list(states)
        if topic is not None:
            clauses.append("topic=?")
            args.append(topic)
        if partition is not None:
            clauses.append("partition=?")
            args.append(partition)
        return " AND ".join(clauses), args

    def find(self, topic: str, partition: int, offset: int) -> SegmentRow | None:
        """The live segment holding `offset`, or the first one after it."""
        r = self._db.execute(
            f"SELECT {_COLUMNS} FROM segments WHERE topic=? AND partition=? AND last_offset>=? "
            "AND state IN (?, ?) ORDER BY last_offset LIMIT 1",
            (topic, partition, offset, LOCAL, UPLOADED),
        ).fetchone()
        return None if r is None else _row(r)

    def in_time_range(
        self, topic: str, partition: int | None, start_ms: int, end_ms: int
    ) -> list[SegmentRow]:
        """Live segments that may hold timestamps in [start_ms, end_ms)."""
        where, args = self._filter(topic, partition, (LOCAL, UPLOADED))
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM segments WHERE {where} AND max_timestamp>=? "
            "AND min_timestamp<? ORDER BY partition, base_offset",
            [*args, start_ms, end_ms],
        ).fetchall()
        return [_row(r) for r in rows]

    def set_state(self, segment_id: int, state: str, expect: str) -> bool:
        """Move a segment from state `expect` to `state`; False if it was not in `expect`
        (a merge or retention got to it first)."""
        cur = self._db.execute(
            "UPDATE segments SET state=? WHERE id=? AND state=?", (state, segment_id, expect)
        )
        return cur.rowcount == 1

    def deletable(self) -> list[SegmentRow]:
        """Segments to delete whose offsets are not waiting on a merged segment's upload:
        until that is in the object store, the merged-away sources are the only remote copy."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM segments AS s WHERE state=? AND NOT EXISTS ("
            "SELECT 1 FROM segments AS m WHERE m.topic=s.topic AND m.partition=s.partition "
            "AND m.state=? AND m.base_offset<=s.last_offset AND m.last_offset>=s.base_offset)",
            (DELETING, LOCAL),
        ).fetchall()
        return [_row(r) for r in rows]

    def mark_deleting_below(self, topic: str, partition: int, offset: int) -> int:
        """Segments wholly below `offset` leave the log; returns how many."""
        cur = self._db.execute(
            "UPDATE segments SET state=? WHERE topic=? AND partition=? AND last_offset<? "
            "AND state IN (?, ?)",
            (DELETING, topic, partition, offset, LOCAL, UPLOADED),
        )
        return cur.rowcount

    def drop_topic(self, topic: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE segments SET state=? WHERE topic=?", (DELETING, topic))
            db.execute("DELETE FROM checkpoints WHERE topic=?", (topic,))
            db.execute("DELETE FROM cleaner WHERE topic=?", (topic,))

    def drop_partition_checkpoint(self, topic: str, partition: int) -> None:
        self._db.execute(
            "DELETE FROM checkpoints WHERE topic=? AND partition=?", (topic, partition)
        )

    def forget(self, segment_id: int) -> None:
        self._db.execute("DELETE FROM segments WHERE id=?", (segment_id,))

    @staticmethod
    def _all_live(db: sqlite3.Connection, ids: Iterable[int]) -> bool:
        wanted = set(ids)
        if not wanted:
            return True
        marks = ",".join("?" * len(wanted))
        live = db.execute(
            f"SELECT COUNT(*) FROM segments WHERE id IN ({marks}) AND state IN (?, ?)",
            (*wanted, LOCAL, UPLOADED),
        ).fetchone()[0]
        return bool(live == len(wanted))

    @staticmethod
    def _mark_deleting(db: sqlite3.Connection, ids: list[int]) -> None:
        marks = ",".join("?" * len(ids))
        db.execute(f"UPDATE segments SET state=? WHERE id IN ({marks})", (DELETING, *ids))

    def replace(self, old_ids: list[int], new: SegmentRow) -> bool:
        """Swap merged segments for the one made of them, atomically; False (and nothing
        changed) if any of them left the log meanwhile."""
        with self.transaction() as db:
            if not self._all_live(db, old_ids):
                return False
            self._mark_deleting(db, old_ids)
            self._insert(db, new)
        return True

    def replace_many(
        self,
        old_ids: list[int],
        new_rows: list[SegmentRow],
        checkpoint: CleanerState,
        read_ids: Sequence[int] = (),
    ) -> bool:
        """A cleaner run's swap: every old row leaves the log (`deleting`), the new rows come
        in, and the partition's cleaner checkpoint is saved, in one transaction. False (and
        nothing changed) if any old row, or any row the run read (`read_ids`), left the live
        states meanwhile (a merge or retention got there first; a topic dropped and made
        again must not inherit the checkpoint), or if the partition has no live row at all
        (its topic was dropped: the checkpoint must not come back)."""
        with self.transaction() as db:
            if not self._all_live(db, [*old_ids, *read_ids]):
                return False
            if old_ids:
                self._mark_deleting(db, old_ids)
            else:
                where, args = self._filter(
                    checkpoint.topic, checkpoint.partition, (LOCAL, UPLOADED)
                )
                if (
                    db.execute(f"SELECT 1 FROM segments WHERE {where} LIMIT 1", args).fetchone()
                    is None
                ):
                    return False
            for row in new_rows:
                self._insert(db, row)
            db.execute(
                "INSERT OR REPLACE INTO cleaner VALUES (?, ?, ?, ?, ?)",
                (
                    checkpoint.topic,
                    checkpoint.partition,
                    checkpoint.cleaned_end,
                    checkpoint.last_run_ms,
                    checkpoint.dirty_ratio,
                ),
            )
        return True

    def cleaner_state(self, topic: str, partition: int) -> CleanerState | None:
        r = self._db.execute(
            "SELECT cleaned_end, last_run_ms, dirty_ratio FROM cleaner "
            "WHERE topic=? AND partition=?",
            (topic, partition),
        ).fetchone()
        return None if r is None else CleanerState(topic, partition, r[0], r[1], r[2])

    def cleaner_states(self) -> list[CleanerState]:
        rows = self._db.execute(
            "SELECT topic, partition, cleaned_end, last_run_ms, dirty_ratio FROM cleaner"
        ).fetchall()
        return [CleanerState(*r) for r in rows]

    def drop_cleaner_state(self, topic: str, partition: int) -> None:
        self._db.execute("DELETE FROM cleaner WHERE topic=? AND partition=?", (topic, partition))

    def totals(self) -> dict[str, tuple[int, int]]:
        """Per topic: (live segment count, bytes)."""
        rows = self._db.execute(
            "SELECT topic, COUNT(*), COALESCE(SUM(size), 0) FROM segments "
            "WHERE state IN (?, ?) GROUP BY topic",
            (LOCAL, UPLOADED),
        ).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}
