"""Findings of the security review of app.security (issue 16): the file holding the salted
keys is private to the service's user, guesses in progress count against the limit, IPv6
clients are limited per /64, audit fields cannot be forged with spaces, a deleted user's
tokens do not come back with a new user of that name, and an unknown user costs the same
PBKDF2 work as a known one."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from app.security import audit, scram
from app.security.ratelimit import FailureLimiter
from app.security.store import SecurityStore
from app.security.tokens import TokenService
from app.security.users import set_password, verify_user_password


def _others_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o077


def test_security_sqlite_and_its_wal_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files come out world-readable
    try:
        path = tmp_path / "security.sqlite"
        s = SecurityStore(path)
        set_password(s, "alice", "SCRAM-SHA-256", b"pw")
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert p.exists() and _others_bits(p) == 0, (p, oct(p.stat().st_mode))
        s.close()
        # A file left readable by an older version is tightened when opened.
        path.chmod(0o644)
        SecurityStore(path).close()
        assert _others_bits(path) == 0
    finally:
        os.umask(old)


def test_guesses_in_progress_count_against_the_limit() -> None:
    limiter = FailureLimiter(3, clock=lambda: 0.0)
    # Ten guesses arriving together, each verified off the event loop: only three may start.
    started = [limiter.begin("1.2.3.4") for _ in range(10)]
    assert started.count(True) == 3 and limiter.blocked("1.2.3.4")
    for _ in range(3):
        limiter.end("1.2.3.4", ok=False)
    assert limiter.blocked("1.2.3.4") and not limiter.begin("1.2.3.4")
    # A success releases its place without counting as a failure.
    other = FailureLimiter(2, clock=lambda: 0.0)
    for _ in range(5):
        assert other.begin("h")
        other.end("h", ok=True)
    assert not other.blocked("h") and not other._pending


def test_ipv6_clients_are_limited_per_64() -> None:
    limiter = FailureLimiter(3)
    for i in range(3):
        limiter.failed(f"2001:db8:1:2::{i + 1:x}")
    assert limiter.blocked("2001:db8:1:2:ffff::9")  # any address of that /64
    assert not limiter.blocked("2001:db8:1:3::1")
    assert not limiter.blocked("10.0.0.1")
    for _ in range(3):
        limiter.failed("::ffff:10.0.0.1")  # an IPv4 client on a dual-stack socket
    assert limiter.blocked("10.0.0.1") and not limiter.blocked("10.0.0.2")


def test_audit_fields_cannot_be_forged_with_spaces(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="chronik.audit"):
        audit.auth_failed("PLAIN", "x address=6.6.6.6 reason=ok", "1.2.3.4", "wrong password")
        audit.denied("User:a address=6.6.6.6", "1.2.3.4", "READ", "TOPIC", "t")
        audit.auth_failed("PLAIN", "alice", "1.2.3.4", "wrong password")
    forged, denied, plain = (r.getMessage() for r in caplog.records)
    assert 'user="x address=6.6.6.6 reason=ok" address=1.2.3.4 ' in forged
    # Read as fields (quoted values whole), each line names one address: the real one.
    for line in (forged, denied):
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line)
        assert re.findall(r" address=(\S+)", unquoted) == ["1.2.3.4"], line
    assert "user=alice address=1.2.3.4 reason=wrong password" in plain  # plain names unquoted


def test_a_deleted_users_tokens_do_not_come_back_with_a_new_user(tmp_path: Path) -> None:
    s = SecurityStore(tmp_path / "security.sqlite")
    tokens = TokenService(s)
    set_password(s, "bob", "SCRAM-SHA-256", b"old bob")
    set_password(s, "bob", "SCRAM-SHA-512", b"old bob")
    _, secret = tokens.create("bob", 600)
    assert s.delete_credential("bob", "SCRAM-SHA-256")
    assert tokens.verify(secret) == "bob"  # bob still has a credential
    assert s.delete_credential("bob", "SCRAM-SHA-512")
    set_password(s, "bob", "SCRAM-SHA-256", b"another person")
    assert tokens.verify(secret) is None and tokens.list("bob") == []
    s.close()


def test_an_unknown_user_costs_what_a_known_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = SecurityStore(tmp_path / "security.sqlite")
    set_password(s, "both", "SCRAM-SHA-256", b"pw")
    set_password(s, "both", "SCRAM-SHA-512", b"pw")
    set_password(s, "one", "SCRAM-SHA-512", b"pw")
    calls: list[tuple[str, int]] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int, *a: Any) -> bytes:
        calls.append((name, iterations))
        return real(name, password, salt, iterations, *a)

    monkeypatch.setattr(scram.hashlib, "pbkdf2_hmac", counting)
    work = {}
    for user in ("both", "one", "nobody"):
        calls.clear()
        assert not verify_user_password(s, user, b"guess")
        work[user] = sorted(calls)
    assert work["both"] == work["one"] == work["nobody"], work
    s.close()
