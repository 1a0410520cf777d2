"""Committed offsets and consumer-group state, in SQLite in the data dir.

Commits are durable when acknowledged (WAL journal, synchronous=FULL), like
Kafka's acks=all writes to __consumer_offsets. Lookups are indexed queries.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT,
    commit_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS offsets_by_topic ON offsets (topic);
CREATE TABLE IF NOT EXISTS groups (
    group_id TEXT PRIMARY KEY,
    state TEXT NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_ms: int


class GroupStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def commit_offsets(
        self,
        group_id: str,
        offsets: Iterable[tuple[str, int, int, int, str | None]],
    ) -> None:
        """Store (topic, partition, offset, leader epoch, metadata) rows in one transaction."""
        now = int(time.time() * 1000)
        rows = [(group_id, t, p, o, e, m, now) for t, p, o, e, m in offsets]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )

    def fetch_offsets(
        self, group_id: str, topic: str | None = None
    ) -> dict[tuple[str, int], CommittedOffset]:
        if topic is None:
            cur = self._db.execute(
                "SELECT topic, partition, committed_offset, leader_epoch, metadata, commit_ms "
                "FROM offsets WHERE group_id = ?",
                (group_id,),
            )
        else:
            cur = self._db.execute(
                "SELECT topic, partition, committed_offset, leader_epoch, metadata, commit_ms "
                "FROM offsets WHERE group_id = ? AND topic = ?",
                (group_id, topic),
            )
        return {(t, p): CommittedOffset(o, e, m, ms) for t, p, o, e, m, ms in cur}

    def delete_offsets(self, group_id: str, partitions: Iterable[tuple[str, int]] | None) -> None:
        """Delete the group's offsets for these partitions (all of them when None)."""
        with self._db:
            self._db.execute("BEGIN")
            if partitions is None:
                self._db.execute("DELETE FROM offsets WHERE group_id = ?", (group_id,))
            else:
                self._db.executemany(
                    "DELETE FROM offsets WHERE group_id = ? AND topic = ? AND partition = ?",
                    [(group_id, t, p) for t, p in partitions],
                )

    def delete_topic(self, topic: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM offsets WHERE topic = ?", (topic,))

    def groups_with_offsets(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT group_id FROM offsets")]

    def save_group(self, group_id: str, state: dict[str, Any] | None) -> None:
        """Persist a group's membership and assignments (None deletes it)."""
        with self._db:
            self._db.execute("BEGIN")
            if state is None:
                self._db.execute("DELETE FROM groups WHERE group_id = ?", (group_id,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO groups VALUES (?, ?)", (group_id, json.dumps(state))
                )

    def load_groups(self) -> dict[str, dict[str, Any]]:
        return {g: json.loads(s) for g, s in self._db.execute("SELECT group_id, state FROM groups")}
