"""Kafka principals as strings "Type:name", the form ACLs and super.users name them in."""

from __future__ import annotations

ANONYMOUS = "User:ANONYMOUS"
USER_WILDCARD = "User:*"


def user_principal(name: str) -> str:
    return f"User:{name}"
