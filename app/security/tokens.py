"""HTTP API bearer tokens "chr_<id>_<secret>": only a sha256 digest is stored, with an
expiry; a token stops working when it expires, is revoked or its user is deleted."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from .store import SecurityStore, TokenInfo

PREFIX = "chr_"
MAX_DESCRIPTION = 256

__all__ = ["TokenInfo", "TokenService"]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class TokenService:
    def __init__(
        self,
        store: SecurityStore,
        *,
        max_ttl_s: int = 90 * 86400,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._store = store
        self.max_ttl_s = max_ttl_s
        self._clock_ms = clock_ms

    def create(self, user: str, ttl_s: int, description: str = "") -> tuple[TokenInfo, str]:
        """A new token of `user` and its secret, shown this once; ValueError on a ttl outside
        1..max_ttl_s or a description over MAX_DESCRIPTION characters."""
        if not 1 <= ttl_s <= self.max_ttl_s:
            raise ValueError(f"ttl must be between 1 and {self.max_ttl_s} seconds")
        if len(description) > MAX_DESCRIPTION:
            raise ValueError(f"description must be at most {MAX_DESCRIPTION} characters")
        now = self._clock_ms()
        self._store.delete_expired_tokens(now)
        token_id = secrets.token_hex(8)
        secret = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        info = TokenInfo(token_id, user, now, now + ttl_s * 1000, description)
        self._store.add_token(
            token_id, _digest(secret), user, info.created_ms, info.expires_ms, description
        )
        return info, secret

    def verify(self, secret: str) -> str | None:
        """The user of a valid, unexpired token whose user still exists; else None."""
        if not secret.startswith(PREFIX):
            return None
        token_id, sep, _ = secret[len(PREFIX) :].partition("_")
        if not sep:
            return None
        found = self._store.token(token_id)
        if found is None:
            return None
        info, digest = found
        if not hmac.compare_digest(_digest(secret), digest):
            return None
        if info.expires_ms <= self._clock_ms() or not self._store.credentials(info.user):
            return None
        return info.user

    def revoke(self, token_id: str, user: str | None) -> bool:
        """Deletes the token when `user` owns it (None: whoever owns it)."""
        found = self._store.token(token_id)
        if found is None or (user is not None and found[0].user != user):
            return False
        return self._store.delete_token(token_id)

    def list(self, user: str) -> list[TokenInfo]:
        now = self._clock_ms()
        return [t for t in self._store.tokens_of(user) if t.expires_ms > now]
