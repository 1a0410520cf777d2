"""DescribeUserScramCredentials and AlterUserScramCredentials v0, as KRaft's ScramImage and
ScramControlManager answer them: the clients' way to manage SCRAM users.

They need DESCRIBE / ALTER on the cluster; with no authorizer that check passes, so users
can be managed before ACLs are switched on. Salted passwords arrive from the client
(it derives them); only the stored and server keys are kept.
"""

from __future__ import annotations

import logging
from typing import Any

from ...security import audit, scram
from ...security.acl import Operation
from .. import authz
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    DUPLICATE_RESOURCE,
    NONE,
    RESOURCE_NOT_FOUND,
    UNACCEPTABLE_CREDENTIAL,
    UNEXPECTED_MESSAGE,
    UNKNOWN_SERVER_ERROR,
    UNSUPPORTED_SASL_MECHANISM,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

log = logging.getLogger(__name__)

DESCRIBE_USER_SCRAM_CREDENTIALS = 50
ALTER_USER_SCRAM_CREDENTIALS = 51

# Kafka's ScramMechanism type codes.
MECHANISM_CODES = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
MECHANISM_NAMES = {v: k for k, v in MECHANISM_CODES.items()}

NOT_AUTHORIZED = "Cluster authorization failed."
TWICE = "A user credential cannot be altered twice in the same request"


def _describe_one(mod: Any, user: str, creds: list[Any] | None, duplicated: bool) -> Any:
    code, message, infos = NONE, None, ()
    if duplicated:
        code = DUPLICATE_RESOURCE
        message = (
            f"Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
        )
    elif not creds:
        code = RESOURCE_NOT_FOUND
        message = f"Attempt to describe a user credential that does not exist: {user}"
    else:
        infos = tuple(
            build(
                mod.CredentialInfo,
                mechanism=MECHANISM_CODES[c.mechanism],
                iterations=c.iterations,
            )
            for c in sorted(creds, key=lambda c: MECHANISM_CODES.get(c.mechanism, 0))
            if c.mechanism in MECHANISM_CODES
        )
    return build(
        mod.DescribeUserScramCredentialsResult,
        user=user,
        error_code=err(code),
        error_message=message,
        credential_infos=infos,
    )


def _describe_refused(resp: type, mod: Any, users: Any) -> Any:
    """CLUSTER_AUTHORIZATION_FAILED. Kafka sets it at the top and on each result (with no
    user name); librdkafka (2.x) frees a string it does not own when the top-level code is
    set and crashes, so when users are named only their results carry it, each named, as
    every client maps them. Listing all users has nothing else to carry it."""
    results = tuple(
        build(
            mod.DescribeUserScramCredentialsResult,
            user=u.name,
            error_code=err(CLUSTER_AUTHORIZATION_FAILED),
            error_message=NOT_AUTHORIZED,
            credential_infos=(),
        )
        for u in users or ()
    )
    code, message = (NONE, None) if results else (CLUSTER_AUTHORIZATION_FAILED, NOT_AUTHORIZED)
    return build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        error_message=message,
        results=results,
    )


async def describe(ctx: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    users = req.body.users
    if not authz.cluster_allowed(ctx, req, Operation.DESCRIBE):
        return respond(req, _describe_refused(resp, mod, users))
    store = ctx.security.store
    if not users:
        # None or empty: every user that has a credential.
        results = tuple(
            _describe_one(mod, user, creds, False)
            for user, creds in sorted(store.credentials().items())
        )
    else:
        names = [u.name for u in users]
        results = tuple(
            _describe_one(mod, name, store.credentials(name).get(name), names.count(name) > 1)
            for name in dict.fromkeys(names)
        )
    out = build(
        resp, throttle_time=NO_THROTTLE, error_code=err(NONE), error_message=None, results=results
    )
    return respond(req, out)


def _check_name_and_mechanism(name: str, mechanism: int) -> tuple[int, str] | None:
    if not name:
        return UNACCEPTABLE_CREDENTIAL, "Username must not be empty"
    if mechanism not in MECHANISM_NAMES:
        return UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"
    return None


def _check_upsertion(u: Any) -> tuple[int, str] | None:
    problem = _check_name_and_mechanism(u.name, int(u.mechanism))
    if problem is not None:
        return problem
    message = scram.credential_error(MECHANISM_NAMES[int(u.mechanism)], int(u.iterations))
    return None if message is None else (UNACCEPTABLE_CREDENTIAL, message)


def _plan(
    ctx: BrokerContext, body: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, tuple[int, str]]]:
    """ScramControlManager.alterCredentials: at most one change per user in a request (a
    second one makes the user DUPLICATE_RESOURCE), each validated; deletions first."""
    deletions: dict[str, Any] = {}
    upsertions: dict[str, Any] = {}
    errors: dict[str, tuple[int, str]] = {}
    for d in body.deletions:
        if d.name in errors:
            continue
        if deletions.pop(d.name, None) is not None:
            errors[d.name] = (DUPLICATE_RESOURCE, TWICE)
            continue
        problem = _check_name_and_mechanism(d.name, int(d.mechanism))
        if problem is None:
            mechanism = MECHANISM_NAMES[int(d.mechanism)]
            if ctx.security.store.credential(d.name, mechanism) is None:
                problem = (
                    RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist",
                )
        if problem is not None:
            errors[d.name] = problem
        else:
            deletions[d.name] = d
    for u in body.upsertions:
        if u.name in errors:
            continue
        if deletions.pop(u.name, None) is not None or upsertions.pop(u.name, None) is not None:
            errors[u.name] = (DUPLICATE_RESOURCE, TWICE)
            continue
        problem = _check_upsertion(u)
        if problem is not None:
            errors[u.name] = problem
        else:
            upsertions[u.name] = u
    return deletions, upsertions, errors


def _apply(ctx: BrokerContext, req: Request, name: str, change: Any, upsert: bool) -> None:
    store = ctx.security.store
    mechanism = MECHANISM_NAMES[int(change.mechanism)]
    if upsert:
        cred = scram.from_salted_password(
            mechanism, change.salted_password, change.salt, int(change.iterations)
        )
        store.set_credential(name, cred)
        action = "user credential set"
    else:
        store.delete_credential(name, mechanism)
        action = "user credential deleted"
    audit.changed(*authz.who(req), action, f"user={name} mechanism={mechanism}")


async def alter(ctx: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    body = req.body
    outcome: list[tuple[str, int, str | None]] = []
    if not authz.cluster_allowed(ctx, req, Operation.ALTER):
        names = sorted({c.name for c in (*body.deletions, *body.upsertions)})
        outcome = [(n, CLUSTER_AUTHORIZATION_FAILED, NOT_AUTHORIZED) for n in names]
    else:
        deletions, upsertions, errors = _plan(ctx, body)
        for changes, upsert in ((deletions, False), (upsertions, True)):
            for name, change in changes.items():
                try:
                    _apply(ctx, req, name, change, upsert)
                except Exception:
                    log.exception("changing the SCRAM credential of a user failed")
                    outcome.append((name, UNKNOWN_SERVER_ERROR, UNEXPECTED_MESSAGE))
                else:
                    outcome.append((name, NONE, None))
        outcome += [(name, code, message) for name, (code, message) in errors.items()]
    results = tuple(
        build(
            mod.AlterUserScramCredentialsResult,
            user=name,
            error_code=err(code),
            error_message=message,
        )
        for name, code, message in outcome
    )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, results=results))


APIS = [
    ApiSpec(DESCRIBE_USER_SCRAM_CREDENTIALS, 0, 0, describe),
    ApiSpec(ALTER_USER_SCRAM_CREDENTIALS, 0, 0, alter),
]
