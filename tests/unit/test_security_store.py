"""security.sqlite and what is built on it: credentials, users, HTTP tokens (expiry, revoke,
durability across reopen), the failure limiter and Security.open."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from app.security import Security, no_users_message, scram
from app.security.ratelimit import FailureLimiter
from app.security.store import SecurityStore
from app.security.tokens import TokenService
from app.security.users import set_password, user_error, verify_user_password


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SecurityStore]:
    s = SecurityStore(tmp_path / "security.sqlite")
    yield s
    s.close()


def test_credentials_round_trip_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "security.sqlite"
    s = SecurityStore(path)
    assert not s.has_users() and s.credentials() == {}
    c256 = scram.derive("SCRAM-SHA-256", b"pw1", iterations=4096)
    c512 = scram.derive("SCRAM-SHA-512", b"pw2", iterations=8192)
    s.set_credential("alice", c256)
    s.set_credential("alice", c512)
    s.set_credential("bob", c256)
    assert s.has_users()
    assert s.credential("alice", "SCRAM-SHA-512") == c512
    assert s.credential("alice", "SCRAM-SHA-1") is None
    assert s.credentials("alice") == {"alice": [c256, c512]}
    s.close()
    s = SecurityStore(path)
    assert s.credentials() == {"alice": [c256, c512], "bob": [c256]}
    assert s.delete_credential("alice", "SCRAM-SHA-256")
    assert not s.delete_credential("alice", "SCRAM-SHA-256")
    assert s.credentials("alice") == {"alice": [c512]}
    s.close()


def test_a_write_from_another_connection_is_seen_at_once(store: SecurityStore) -> None:
    """The CLI writes from another process; the running service must see it on the next call."""
    other = SecurityStore(store.path)
    other.set_credential("carol", scram.derive("SCRAM-SHA-256", b"pw"))
    assert store.credential("carol", "SCRAM-SHA-256") is not None
    other.close()


def test_only_salted_keys_are_stored(tmp_path: Path) -> None:
    s = SecurityStore(tmp_path / "security.sqlite")
    set_password(s, "alice", "SCRAM-SHA-256", b"correct horse battery staple")
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    s.close()
    assert b"alice" in raw  # the check below reads the bytes that hold the row
    assert b"correct horse" not in raw


def test_users(store: SecurityStore) -> None:
    set_password(store, "alice", "SCRAM-SHA-512", b"pw", iterations=4096)
    assert verify_user_password(store, "alice", b"pw")
    assert not verify_user_password(store, "alice", b"pw2")
    assert not verify_user_password(store, "nobody", b"pw")
    set_password(store, "alice", "SCRAM-SHA-256", b"other")
    assert verify_user_password(store, "alice", b"other")  # any stored mechanism
    assert verify_user_password(store, "alice", b"pw")
    for user, mechanism, password, iterations, message in [
        ("", "SCRAM-SHA-256", b"pw", 4096, "Username must not be empty"),
        ("a\nb", "SCRAM-SHA-256", b"pw", 4096, "control characters"),
        ("a", "PLAIN", b"pw", 4096, "Unknown SCRAM mechanism"),
        ("a", "SCRAM-SHA-256", b"pw", 100, "Too few iterations"),
        ("a", "SCRAM-SHA-256", b"pw", 20000, "Too many iterations"),
        ("a", "SCRAM-SHA-256", b"", 4096, "Password must not be empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            set_password(store, user, mechanism, password, iterations)
    assert user_error("ok name") is None
    assert sorted(store.credentials()) == ["alice"]


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def test_tokens_verify_expire_revoke(store: SecurityStore) -> None:
    set_password(store, "alice", "SCRAM-SHA-256", b"pw")
    set_password(store, "bob", "SCRAM-SHA-256", b"pw")
    clock = Clock()
    tokens = TokenService(store, max_ttl_s=3600, clock_ms=clock)
    info, secret = tokens.create("alice", 60, "ci")
    assert secret.startswith(f"chr_{info.id}_") and len(secret) > 40
    assert (info.user, info.created_ms, info.expires_ms, info.description) == (
        "alice",
        clock.ms,
        clock.ms + 60_000,
        "ci",
    )
    assert tokens.verify(secret) == "alice"
    for forged in [
        secret[:-1] + ("A" if secret[-1] != "A" else "B"),
        "chr_x",
        "nope",
        "",
        f"chr_{info.id}",
        f"chr_{info.id}_",
    ]:
        assert tokens.verify(forged) is None
    assert tokens.list("alice") == [info] and tokens.list("bob") == []
    assert not tokens.revoke(info.id, "bob")  # not bob's
    assert tokens.verify(secret) == "alice"
    clock.ms += 59_999
    assert tokens.verify(secret) == "alice"
    clock.ms += 1
    assert tokens.verify(secret) is None  # expired
    assert tokens.list("alice") == []
    info2, secret2 = tokens.create("alice", 3600)
    assert tokens.revoke(info2.id, "alice")
    assert tokens.verify(secret2) is None
    assert not tokens.revoke(info2.id, "alice")
    info3, secret3 = tokens.create("bob", 10)
    assert tokens.revoke(info3.id, None)  # an admin revoke
    assert tokens.verify(secret3) is None
    with pytest.raises(ValueError, match="between 1 and 3600"):
        tokens.create("alice", 3601)
    with pytest.raises(ValueError, match="between 1 and 3600"):
        tokens.create("alice", 0)
    with pytest.raises(ValueError, match="description"):
        tokens.create("alice", 10, "x" * 257)


def test_expired_tokens_are_purged_and_only_digests_are_stored(store: SecurityStore) -> None:
    set_password(store, "alice", "SCRAM-SHA-256", b"pw")
    clock = Clock()
    tokens = TokenService(store, clock_ms=clock)
    old, _old_secret = tokens.create("alice", 1)
    clock.ms += 2000
    _, secret = tokens.create("alice", 10)
    assert store.token(old.id) is None  # purged when the next one was created
    db = sqlite3.connect(store.path)
    dump = "\n".join(db.iterdump())
    db.close()
    assert secret not in dump and secret.split("_", 2)[2] not in dump


def test_tokens_survive_reopen_and_die_with_their_user(tmp_path: Path) -> None:
    path = tmp_path / "security.sqlite"
    s = SecurityStore(path)
    set_password(s, "alice", "SCRAM-SHA-256", b"pw")
    info, secret = TokenService(s).create("alice", 600, "durable")
    s.close()
    s = SecurityStore(path)
    tokens = TokenService(s)
    assert tokens.verify(secret) == "alice"
    assert tokens.list("alice") == [info]
    assert s.delete_credential("alice", "SCRAM-SHA-256")
    assert tokens.verify(secret) is None
    s.close()


def test_failure_limiter() -> None:
    now = [0.0]
    limiter = FailureLimiter(3, max_addresses=2, clock=lambda: now[0])
    for _ in range(3):
        assert not limiter.blocked("a")
        limiter.failed("a")
    assert limiter.blocked("a") and not limiter.blocked("b")
    now[0] = 59.9
    assert limiter.blocked("a")
    now[0] = 60.0
    assert not limiter.blocked("a")  # the first failures left the window
    limiter.failed("a")
    limiter.failed("b")
    limiter.failed("c")  # over max_addresses: the least recent address ("a") is forgotten
    assert len(limiter._failures) == 2 and "a" not in limiter._failures
    off = FailureLimiter(0)
    for _ in range(100):
        off.failed("a")
    assert not off.blocked("a")


def test_memory_of_the_limiter_is_bounded() -> None:
    limiter = FailureLimiter(5, max_addresses=100)
    for i in range(10_000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
        limiter.failed("x")
    assert len(limiter._failures) <= 100
    assert all(len(v) <= 5 for v in limiter._failures.values())


def test_security_open(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    security = Security.open(settings)
    assert (tmp_path / "security.sqlite").exists()
    assert not security.authorizer.enabled
    assert security.limits is settings.limits and security.settings is settings.security
    security.close()
    sec = dataclasses.replace(
        settings.security,
        authorizer="acl",
        super_users="User:root; User:ops",
        sasl_failures_per_minute=7,
        http_token_max_ttl_s=99,
    )
    security = Security.open(dataclasses.replace(settings, security=sec))
    assert security.authorizer.enabled
    assert security.authorizer.super_users == {"User:root", "User:ops"}
    assert security.limiter.per_minute == 7 and security.tokens.max_ttl_s == 99
    security.close()
    assert "python -m app users set NAME --mechanism SCRAM-SHA-256" in no_users_message()


def test_audit_lines_cannot_be_forged(caplog: pytest.LogCaptureFixture) -> None:
    from app.security import audit

    with caplog.at_level(logging.INFO, logger="chronik.audit"):
        audit.auth_failed("PLAIN", "eve\nINFO chronik.audit: changed", "1.2.3.4", "bad\rproof")
        audit.denied("User:a\x1b[31m", "1.2.3.4", "READ", "TOPIC", "t\n")
        audit.changed("User:ü", "local", "ACL created", "topic ünï")
    lines = [r.getMessage() for r in caplog.records]
    assert all("\n" not in m and "\r" not in m and "\x1b" not in m for m in lines)
    assert 'user="eve\\nINFO chronik.audit: changed"' in lines[0]
    assert "principal=User:ü" in lines[2] and "topic ünï" in lines[2]
