"""The audit log (logger chronik.audit, INFO): failed authentications, authorization denials
and changes to ACLs, credentials and tokens. It names principals, addresses, operations and
resources, never a password, token, salt or key."""

from __future__ import annotations

import logging

log = logging.getLogger("chronik.audit")


def _clean(value: str) -> str:
    """Client-chosen text (user names, topics) with control characters escaped, so a name
    holding a newline cannot forge a line of the audit log."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in value)


def _field(value: str) -> str:
    """A client-chosen value followed by other fields: quoted when it holds a space, '=',
    a quote or a control character, so a user named "x address=6.6.6.6" cannot add an
    address to the line. Inside quotes a backslash is doubled, so an escape is unambiguous."""
    if value and value.isprintable() and not any(c in value for c in ' ="\\'):
        return value
    return '"' + _clean(value.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def auth_failed(mechanism: str, user: str | None, address: str, reason: str) -> None:
    log.info(
        "authentication failed: mechanism=%s user=%s address=%s reason=%s",
        _field(mechanism),
        _field(user) if user is not None else "-",
        address,
        _clean(reason),
    )


def denied(principal: str, address: str, operation: str, resource_type: str, resource: str) -> None:
    log.info(
        "denied: principal=%s address=%s operation=%s resource=%s:%s",
        _field(principal),
        address,
        operation,
        resource_type,
        _clean(resource),
    )


def changed(principal: str, address: str, action: str, detail: str) -> None:
    log.info(
        "changed: principal=%s address=%s action=%s %s",
        _field(principal),
        address,
        action,
        _clean(detail),
    )
