"""security.sqlite: SCRAM credentials, ACLs and HTTP token digests, durable when a call
returns. Credentials are read from SQLite on every lookup so a user the CLI sets from another
process counts at once."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sqlite import open_durable
from .acl import AclBinding, Operation, PatternType, Permission, ResourceType
from .scram import ScramCredential

FILE_NAME = "security.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scram_credentials (
    user TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (user, mechanism)
);
CREATE TABLE IF NOT EXISTS acls (
    resource_type INTEGER NOT NULL,
    resource_name TEXT NOT NULL,
    pattern_type INTEGER NOT NULL,
    principal TEXT NOT NULL,
    host TEXT NOT NULL,
    operation INTEGER NOT NULL,
    permission INTEGER NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation,
                 permission)
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL,
    user TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens (user);
"""

_ACL_COLUMNS = "resource_type, resource_name, pattern_type, principal, host, operation, permission"
_ACL_MATCH = " AND ".join(f"{c} = ?" for c in _ACL_COLUMNS.split(", "))


@dataclass(frozen=True)
class TokenInfo:
    """An HTTP API token as its owner may see it; the secret itself is never stored."""

    id: str
    user: str
    created_ms: int
    expires_ms: int
    description: str


def _acl_row(b: AclBinding) -> tuple[int, str, int, str, str, int, int]:
    return (
        int(b.resource_type),
        b.resource_name,
        int(b.pattern_type),
        b.principal,
        b.host,
        int(b.operation),
        int(b.permission),
    )


def _make_private(path: Path) -> None:
    """Salted keys and token digests let whoever reads them guess passwords offline, so only
    the service's user may read the file. SQLite gives the -wal and -shm it creates the mode of
    the database file; ones left by an older version are tightened too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                p.chmod(mode & 0o700)


class SecurityStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        _make_private(path)
        self._db = open_durable(path, _SCHEMA)
        # The CLI may write while the service runs: wait for its lock instead of failing.
        self._db.execute("PRAGMA busy_timeout = 10000")
        self._lock = threading.Lock()

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """Runs `sql` once per row in one transaction; the rows it changed."""
        return sum(self._steps([(sql, row) for row in rows]))

    def _steps(self, steps: list[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Runs the statements in one transaction; the rows each changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = [self._db.execute(sql, row).rowcount for sql, row in steps]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return changed

    # SCRAM credentials

    def credential(self, user: str, mechanism: str) -> ScramCredential | None:
        rows = self._query(
            "SELECT salt, iterations, stored_key, server_key FROM scram_credentials"
            " WHERE user = ? AND mechanism = ?",
            (user, mechanism),
        )
        if not rows:
            return None
        salt, iterations, stored_key, server_key = rows[0]
        return ScramCredential(mechanism, salt, iterations, stored_key, server_key)

    def credentials(self, user: str | None = None) -> dict[str, list[ScramCredential]]:
        sql = (
            "SELECT user, mechanism, salt, iterations, stored_key, server_key"
            " FROM scram_credentials"
        )
        rows = (
            self._query(sql + " WHERE user = ?", (user,)) if user is not None else self._query(sql)
        )
        out: dict[str, list[ScramCredential]] = {}
        for name, mechanism, salt, iterations, stored_key, server_key in sorted(rows):
            out.setdefault(name, []).append(
                ScramCredential(mechanism, salt, iterations, stored_key, server_key)
            )
        return out

    def set_credential(self, user: str, cred: ScramCredential) -> None:
        self._write(
            "INSERT OR REPLACE INTO scram_credentials VALUES (?, ?, ?, ?, ?, ?)",
            [(user, cred.mechanism, cred.salt, cred.iterations, cred.stored_key, cred.server_key)],
        )

    def delete_credential(self, user: str, mechanism: str) -> bool:
        """A user's last credential takes the user's tokens with it, in the same transaction:
        someone given the name later must not inherit them."""
        deleted, _ = self._steps(
            [
                (
                    "DELETE FROM scram_credentials WHERE user = ? AND mechanism = ?",
                    (user, mechanism),
                ),
                (
                    "DELETE FROM tokens WHERE user = ?"
                    " AND NOT EXISTS (SELECT 1 FROM scram_credentials WHERE user = ?)",
                    (user, user),
                ),
            ]
        )
        return bool(deleted)

    def has_users(self) -> bool:
        return bool(self._query("SELECT 1 FROM scram_credentials LIMIT 1"))

    # ACLs

    def acls(self) -> list[AclBinding]:
        return [
            AclBinding(
                ResourceType(rt),
                name,
                PatternType(pt),
                principal,
                host,
                Operation(op),
                Permission(p),
            )
            for rt, name, pt, principal, host, op, p in self._query(
                f"SELECT {_ACL_COLUMNS} FROM acls ORDER BY rowid"
            )
        ]

    def add_acls(self, bindings: list[AclBinding]) -> None:
        self._write(
            f"INSERT OR IGNORE INTO acls ({_ACL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [_acl_row(b) for b in bindings],
        )

    def delete_acls(self, bindings: list[AclBinding]) -> None:
        self._write(f"DELETE FROM acls WHERE {_ACL_MATCH}", [_acl_row(b) for b in bindings])

    # HTTP API tokens (their sha256 digest only)

    def add_token(
        self,
        token_id: str,
        digest: bytes,
        user: str,
        created_ms: int,
        expires_ms: int,
        description: str,
    ) -> None:
        self._write(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?)",
            [(token_id, digest, user, created_ms, expires_ms, description)],
        )

    def token(self, token_id: str) -> tuple[TokenInfo, bytes] | None:
        """The token and its digest."""
        rows = self._query(
            "SELECT id, user, created_ms, expires_ms, description, digest FROM tokens WHERE id = ?",
            (token_id,),
        )
        if not rows:
            return None
        *info, digest = rows[0]
        return TokenInfo(*info), digest

    def delete_token(self, token_id: str) -> bool:
        return bool(self._write("DELETE FROM tokens WHERE id = ?", [(token_id,)]))

    def delete_expired_tokens(self, now_ms: int) -> int:
        return self._write("DELETE FROM tokens WHERE expires_ms <= ?", [(now_ms,)])

    def tokens_of(self, user: str) -> list[TokenInfo]:
        rows = self._query(
            "SELECT id, user, created_ms, expires_ms, description FROM tokens"
            " WHERE user = ? ORDER BY created_ms, id",
            (user,),
        )
        return [TokenInfo(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
