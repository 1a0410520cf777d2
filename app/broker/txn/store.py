"""Transaction state in SQLite in the data dir (`transactions.sqlite`), one row per
transactional.id, replaced on every transition.

Like groups.sqlite: WAL journal, synchronous=FULL, so a transition is on disk before the
coordinator acts on it or answers. Rows are small and written one at a time on the event
loop, which also makes a transition atomic with respect to produce checks.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...sqlite import open_durable
from .model import STATE_NAMES, TxnMetadata

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    transactional_id TEXT PRIMARY KEY,
    producer_id INTEGER NOT NULL,
    last_producer_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    last_epoch INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    partitions TEXT NOT NULL,
    groups TEXT NOT NULL,
    txn_start_ms INTEGER NOT NULL,
    last_update_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""


class TransactionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_durable(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, meta: TxnMetadata) -> None:
        partitions = json.dumps(sorted([t, p] for t, p in meta.partitions))
        groups = json.dumps(sorted(meta.groups))
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    meta.transactional_id,
                    meta.producer_id,
                    meta.last_producer_id,
                    meta.epoch,
                    meta.last_epoch,
                    meta.timeout_ms,
                    meta.state.value,
                    partitions,
                    groups,
                    meta.txn_start_ms,
                    meta.last_update_ms,
                ),
            )

    def delete(self, transactional_id: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM transactions WHERE transactional_id = ?", (transactional_id,)
            )

    def load(self) -> dict[str, TxnMetadata]:
        out: dict[str, TxnMetadata] = {}
        for row in self._db.execute("SELECT * FROM transactions"):
            (tid, pid, last_pid, epoch, last_epoch, timeout, state, parts, groups, start, upd) = row
            out[tid] = TxnMetadata(
                transactional_id=tid,
                producer_id=pid,
                last_producer_id=last_pid,
                epoch=epoch,
                last_epoch=last_epoch,
                timeout_ms=timeout,
                state=STATE_NAMES[state],
                partitions=frozenset((t, int(p)) for t, p in json.loads(parts)),
                groups=frozenset(json.loads(groups)),
                txn_start_ms=start,
                last_update_ms=upd,
            )
        return out
