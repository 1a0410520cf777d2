"""The opener of the service's own SQLite stores (groups.sqlite, transactions.sqlite,
security.sqlite): durable when a call returns, so what they hold may be acknowledged."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """WAL journal and synchronous=FULL: a committed transaction survives a power loss.
    Autocommit mode (isolation_level None); callers BEGIN where they need one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db
