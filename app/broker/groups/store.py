"""Committed offsets and consumer-group state, in SQLite in the data dir.

Commits are durable when acknowledged (WAL journal, synchronous=FULL), like
Kafka's acks=all writes to __consumer_offsets. Lookups are indexed queries.

Transactional offset commits (TxnOffsetCommit) wait in `txn_offsets`, one row per
(group, producer id, partition), until the transaction ends: its commit copies them into
`offsets` and deletes them in one SQLite transaction, its abort deletes them.
`txn_producers` keeps the highest producer epoch a transaction outcome was written with,
so that a fenced producer cannot stage offsets into its successor's transaction (Kafka's
__consumer_offsets partition refuses the old epoch after the marker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...sqlite import open_durable

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
CREATE TABLE IF NOT EXISTS txn_offsets (
    group_id TEXT NOT NULL,
    producer_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    producer_epoch INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT,
    commit_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, producer_id, topic, partition)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS txn_offsets_by_topic ON txn_offsets (topic);
CREATE TABLE IF NOT EXISTS txn_producers (
    group_id TEXT NOT NULL,
    producer_id INTEGER NOT NULL,
    producer_epoch INTEGER NOT NULL,
    PRIMARY KEY (group_id, producer_id)
) WITHOUT ROWID;
"""

# A pending offset becomes the committed one unless a plain commit of that partition came
# after it was staged (Kafka keeps whichever record is later in __consumer_offsets).
_APPLY_PENDING = """
INSERT OR REPLACE INTO offsets
SELECT p.group_id, p.topic, p.partition, p.committed_offset, p.leader_epoch, p.metadata,
       p.commit_ms
FROM txn_offsets p
WHERE p.group_id = ? AND p.producer_id = ? AND NOT EXISTS (
    SELECT 1 FROM offsets o
    WHERE o.group_id = p.group_id AND o.topic = p.topic AND o.partition = p.partition
      AND o.commit_ms > p.commit_ms
)
"""


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_ms: int


class GroupStore:
    def __init__(self, path: Path) -> None:
        self._db = open_durable(path, _SCHEMA)

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

    def delete_offsets(
        self,
        group_id: str,
        partitions: Iterable[tuple[str, int]] | None,
        *,
        pending: bool = True,
    ) -> None:
        """Delete the group's offsets for these partitions (all of them when None), and
        its pending transactional ones too unless `pending` is False (retention)."""
        tables = ("offsets", "txn_offsets") if pending else ("offsets",)
        with self._db:
            self._db.execute("BEGIN")
            for table in tables:
                if partitions is None:
                    self._db.execute(f"DELETE FROM {table} WHERE group_id = ?", (group_id,))
                else:
                    self._db.executemany(
                        f"DELETE FROM {table} WHERE group_id = ? AND topic = ? AND partition = ?",
                        [(group_id, t, p) for t, p in partitions],
                    )
            if pending and partitions is None:
                self._db.execute("DELETE FROM txn_producers WHERE group_id = ?", (group_id,))

    def delete_topic(self, topic: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM offsets WHERE topic = ?", (topic,))
            self._db.execute("DELETE FROM txn_offsets WHERE topic = ?", (topic,))

    # -- transactional offsets ---------------------------------------------------------

    def stage_txn_offsets(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: Iterable[tuple[str, int, int, int, str | None]],
    ) -> None:
        """Store pending (topic, partition, offset, leader epoch, metadata) rows in one
        transaction; a partition staged again in the same transaction is replaced."""
        now = int(time.time() * 1000)
        rows = [
            (group_id, producer_id, t, p, producer_epoch, o, e, m, now) for t, p, o, e, m in offsets
        ]
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO txn_offsets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )

    def complete_txn_offsets(
        self, group_id: str, producer_id: int, commit: bool, producer_epoch: int | None = None
    ) -> int:
        """Commit or abort the producer's pending offsets in the group, in one transaction;
        the number of pending rows there were (0 when already completed)."""
        with self._db:
            self._db.execute("BEGIN")
            if commit:
                self._db.execute(_APPLY_PENDING, (group_id, producer_id))
            done = self._db.execute(
                "DELETE FROM txn_offsets WHERE group_id = ? AND producer_id = ?",
                (group_id, producer_id),
            ).rowcount
            if producer_epoch is not None:
                self._db.execute(
                    "INSERT INTO txn_producers VALUES (?, ?, ?) "
                    "ON CONFLICT (group_id, producer_id) DO UPDATE "
                    "SET producer_epoch = max(producer_epoch, excluded.producer_epoch)",
                    (group_id, producer_id, producer_epoch),
                )
        return int(done)

    def txn_producer_epoch(self, group_id: str, producer_id: int) -> int:
        """The highest epoch the producer staged or ended a transaction with here (-1: none)."""
        (epoch,) = self._db.execute(
            "SELECT max(coalesce((SELECT max(producer_epoch) FROM txn_offsets "
            "WHERE group_id = ?1 AND producer_id = ?2), -1), coalesce((SELECT producer_epoch "
            "FROM txn_producers WHERE group_id = ?1 AND producer_id = ?2), -1))",
            (group_id, producer_id),
        ).fetchone()
        return int(epoch)

    def pending_txn_partitions(self, group_id: str) -> set[tuple[str, int]]:
        cur = self._db.execute(
            "SELECT DISTINCT topic, partition FROM txn_offsets WHERE group_id = ?", (group_id,)
        )
        return {(t, p) for t, p in cur}

    def has_pending_txn_offsets(self, group_id: str, topic: str, partition: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM txn_offsets WHERE group_id = ? AND topic = ? AND partition = ? LIMIT 1",
            (group_id, topic, partition),
        ).fetchone()
        return row is not None

    def groups_with_pending_txn_offsets(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT group_id FROM txn_offsets")]

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
