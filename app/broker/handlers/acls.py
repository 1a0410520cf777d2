"""DescribeAcls, CreateAcls and DeleteAcls v1-v3, as Kafka's AclApis answers them.

Describing needs DESCRIBE on the cluster, changing needs ALTER; with no authorizer
configured the answer is SECURITY_DISABLED, as Kafka's when authorizer.class.name is unset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from ...security import audit
from ...security.acl import (
    AclBinding,
    AclFilter,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    binding_error,
    filter_error,
)
from .. import authz
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import (
    CLUSTER_AUTHORIZATION_FAILED,
    INVALID_REQUEST,
    NONE,
    SECURITY_DISABLED,
    UNEXPECTED_MESSAGE,
    UNKNOWN_SERVER_ERROR,
)
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

log = logging.getLogger(__name__)

DESCRIBE_ACLS = 29
CREATE_ACLS = 30
DELETE_ACLS = 31

NOT_AUTHORIZED = "Cluster authorization failed."


def describe_text(b: AclBinding) -> str:
    """An ACL as the audit log and error messages name it."""
    return (
        f"{Permission(b.permission).name} {b.principal} {Operation(b.operation).name} on "
        f"{ResourceType(b.resource_type).name}:{PatternType(b.pattern_type).name}:"
        f"{b.resource_name} from host {b.host}"
    )


def _binding(c: Any) -> AclBinding:
    return AclBinding(
        resource_type=_enum(ResourceType, c.resource_type),
        resource_name=c.resource_name,
        pattern_type=_enum(PatternType, getattr(c, "resource_pattern_type", PatternType.LITERAL)),
        principal=c.principal,
        host=c.host,
        operation=_enum(Operation, c.operation),
        permission=_enum(Permission, c.permission_type),
    )


def _filter(f: Any) -> AclFilter:
    return AclFilter(
        resource_type=_enum(ResourceType, f.resource_type_filter),
        resource_name=f.resource_name_filter,
        pattern_type=_enum(PatternType, f.pattern_type_filter),
        principal=f.principal_filter,
        host=f.host_filter,
        operation=_enum(Operation, f.operation),
        permission=_enum(Permission, f.permission_type),
    )


def _enum(kind: Any, code: Any) -> Any:
    # A code Kafka does not know reads as UNKNOWN (the enums' _missing_), which validation refuses.
    return kind(int(code))


def _disabled(ctx: BrokerContext) -> bool:
    return not authz.enabled(ctx)


async def describe_acls(ctx: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    code, message, resources = NONE, None, ()
    if not authz.cluster_allowed(ctx, req, Operation.DESCRIBE):
        code, message = CLUSTER_AUTHORIZATION_FAILED, NOT_AUTHORIZED
    elif _disabled(ctx):
        code, message = SECURITY_DISABLED, "No Authorizer is configured on the broker"
    else:
        f = _filter(req.body)
        message = filter_error(f)
        if message is not None:
            code = INVALID_REQUEST
        else:
            resources = _resources(mod, ctx.security.authorizer.describe(f))
    out = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        error_message=message,
        resources=resources,
    )
    return respond(req, out)


def _resources(mod: Any, bindings: Iterable[AclBinding]) -> tuple[Any, ...]:
    """Bindings grouped by resource pattern, as DescribeAclsResponse.aclsResources."""
    grouped: dict[tuple[int, str, int], list[AclBinding]] = {}
    for b in bindings:
        key = (int(b.resource_type), b.resource_name, int(b.pattern_type))
        grouped.setdefault(key, []).append(b)
    return tuple(
        build(
            mod.DescribeAclsResource,
            resource_type=rtype,
            resource_name=name,
            pattern_type=ptype,
            acls=tuple(
                build(
                    mod.AclDescription,
                    principal=b.principal,
                    host=b.host,
                    operation=int(b.operation),
                    permission_type=int(b.permission),
                )
                for b in group
            ),
        )
        for (rtype, name, ptype), group in grouped.items()
    )


def _refusal(ctx: BrokerContext, req: Request) -> tuple[int, str] | None:
    """Why a change of ACLs is refused as a whole, if it is."""
    if not authz.cluster_allowed(ctx, req, Operation.ALTER):
        return CLUSTER_AUTHORIZATION_FAILED, NOT_AUTHORIZED
    if _disabled(ctx):
        return SECURITY_DISABLED, "No Authorizer is configured."
    return None


async def create_acls(ctx: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    creations = req.body.creations
    refused = _refusal(ctx, req)
    outcome: list[tuple[int, str | None]]
    if refused is not None:
        outcome = [refused] * len(creations)
    else:
        bindings = [_binding(c) for c in creations]
        outcome = [(NONE, None)] * len(bindings)
        valid: list[AclBinding] = []
        for i, b in enumerate(bindings):
            problem = binding_error(b)
            if problem is not None:
                outcome[i] = (INVALID_REQUEST, problem)
            else:
                valid.append(b)
        if valid:
            try:
                ctx.security.authorizer.create(valid)
            except Exception:
                log.exception("creating ACLs failed")
                outcome = [
                    o if o[0] else (UNKNOWN_SERVER_ERROR, UNEXPECTED_MESSAGE) for o in outcome
                ]
            else:
                for b in valid:
                    audit.changed(*authz.who(req), "ACL created", describe_text(b))
    results = tuple(
        build(mod.AclCreationResult, error_code=err(code), error_message=message)
        for code, message in outcome
    )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, results=results))


def _matching(mod: Any, b: AclBinding) -> Any:
    return build(
        mod.DeleteAclsMatchingAcl,
        error_code=err(NONE),
        error_message=None,
        resource_type=int(b.resource_type),
        resource_name=b.resource_name,
        pattern_type=int(b.pattern_type),
        principal=b.principal,
        host=b.host,
        operation=int(b.operation),
        permission_type=int(b.permission),
    )


def _filter_result(mod: Any, code: int, message: str | None, removed: Iterable[Any] = ()) -> Any:
    return build(
        mod.DeleteAclsFilterResult,
        error_code=err(code),
        error_message=message,
        matching_acls=tuple(removed),
    )


async def delete_acls(ctx: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    filters = req.body.filters
    refused = _refusal(ctx, req)
    if refused is not None:
        results = tuple(_filter_result(mod, *refused) for _ in filters)
        return respond(req, build(resp, throttle_time=NO_THROTTLE, filter_results=results))
    parsed = [_filter(f) for f in filters]
    problems = [filter_error(f) for f in parsed]
    valid = [f for f, p in zip(parsed, problems, strict=True) if p is None]
    removed_per_filter: list[list[AclBinding]] = []
    failed = False
    if valid:
        try:
            removed_per_filter = ctx.security.authorizer.delete(valid)
        except Exception:
            log.exception("deleting ACLs failed")
            failed = True
    removed = iter(removed_per_filter)
    out = []
    for problem in problems:
        if problem is not None:
            out.append(_filter_result(mod, INVALID_REQUEST, problem))
        elif failed:
            out.append(_filter_result(mod, UNKNOWN_SERVER_ERROR, UNEXPECTED_MESSAGE))
        else:
            gone = next(removed)
            for b in gone:
                audit.changed(*authz.who(req), "ACL deleted", describe_text(b))
            out.append(_filter_result(mod, NONE, None, (_matching(mod, b) for b in gone)))
    return respond(req, build(resp, throttle_time=NO_THROTTLE, filter_results=tuple(out)))


APIS = [
    ApiSpec(DESCRIBE_ACLS, 1, 3, describe_acls),
    ApiSpec(CREATE_ACLS, 1, 3, create_acls),
    ApiSpec(DELETE_ACLS, 1, 3, delete_acls),
]
