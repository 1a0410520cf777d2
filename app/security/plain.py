"""SASL/PLAIN (RFC 4616) as Kafka's PlainSaslServer: "authzid NUL user NUL password"."""

from __future__ import annotations

from collections.abc import Callable

from .errors import AuthenticationFailed

INVALID = "Authentication failed: Invalid username or password"


def authenticate_plain(token: bytes, verify: Callable[[str, bytes], bool]) -> str:
    """The authenticated user name; AuthenticationFailed with Kafka's message otherwise."""
    parts = token.split(b"\0")
    if len(parts) != 3:
        raise AuthenticationFailed(
            f"Invalid SASL/PLAIN response: expected 3 tokens, got {len(parts)}"
        )
    authzid_raw, user_raw, password = parts
    try:
        user = user_raw.decode("utf-8")
        authzid = authzid_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationFailed(INVALID) from None
    if not user:
        raise AuthenticationFailed("Authentication failed: username not specified")
    if not password:
        raise AuthenticationFailed("Authentication failed: password not specified")
    if not verify(user, password):
        raise AuthenticationFailed(INVALID)
    if authzid and authzid != user:
        raise AuthenticationFailed(
            "Authentication failed: Client requested an authorization id that is different "
            "from username"
        )
    return user
