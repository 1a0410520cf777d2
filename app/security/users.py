"""SCRAM users: checking a password against the stored salted keys (SASL/PLAIN, HTTP Basic)
and setting one from a password (the CLI)."""

from __future__ import annotations

from . import scram
from .store import SecurityStore

# Derived once: a mechanism the user has no credential for costs the same PBKDF2 as one it
# has, so the time a check takes does not tell which names exist (or with what mechanisms).
_DUMMIES = {
    m: scram.derive(m, b"\0", salt=b"\0" * scram.SALT_BYTES) for m in sorted(scram.MECHANISMS)
}


def user_error(name: str) -> str | None:
    """Why `name` cannot be a user (Kafka's own rule plus no control characters), or None."""
    if not name:
        return "Username must not be empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "Username must not contain control characters"
    return None


def verify_user_password(store: SecurityStore, user: str, password: bytes) -> bool:
    """True when `password` matches any SCRAM credential stored for `user`. Every mechanism
    is checked, stored or not, and none is skipped after a match."""
    stored = {c.mechanism: c for c in store.credentials(user).get(user, [])}
    ok = False
    for mechanism, dummy in _DUMMIES.items():
        cred = stored.get(mechanism)
        matched = scram.verify_password(cred or dummy, password)
        ok = ok or (cred is not None and matched)
    return ok


def set_password(
    store: SecurityStore,
    user: str,
    mechanism: str,
    password: bytes,
    iterations: int = scram.MIN_ITERATIONS,
) -> scram.ScramCredential:
    """Stores a fresh salted credential; ValueError with Kafka's message when refused."""
    err = user_error(user) or scram.credential_error(mechanism, iterations)
    if err is None and not password:
        err = "Password must not be empty"
    if err is not None:
        raise ValueError(err)
    cred = scram.derive(mechanism, password, iterations=iterations)
    store.set_credential(user, cred)
    return cred
