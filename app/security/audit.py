"""The audit log (logger chronik.audit, INFO): failed authentications, authorization denials
and changes to ACLs, credentials and tokens. It names principals, addresses, operations and
resources, never a password, token, salt or key."""

from __future__ import annotations

import logging

log = logging.getLogger("chronik.audit")


def auth_failed(mechanism: str, user: str | None, address: str, reason: str) -> None:
    log.info(
        "authentication failed: mechanism=%s user=%s address=%s reason=%s",
        mechanism,
        user if user is not None else "-",
        address,
        reason,
    )


def denied(principal: str, address: str, operation: str, resource_type: str, resource: str) -> None:
    log.info(
        "denied: principal=%s address=%s operation=%s resource=%s:%s",
        principal,
        address,
        operation,
        resource_type,
        resource,
    )


def changed(principal: str, address: str, action: str, detail: str) -> None:
    log.info("changed: principal=%s address=%s action=%s %s", principal, address, action, detail)
