"""Errors of authentication, whose text the client is shown."""

from __future__ import annotations


class AuthenticationFailed(Exception):
    """str(exc) is safe to send to the client: it never holds a password or key."""
