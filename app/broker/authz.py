"""What a handler asks the authorizer, in the shapes of Kafka's AuthHelper: one resource,
the cluster, a set of names, and the authorized-operations bit field."""

from __future__ import annotations

from collections.abc import Iterable

from ..security.acl import CLUSTER_NAME, Operation, ResourceType
from .context import BrokerContext
from .protocol.codec import Request

_O = Operation
# Kafka's AclEntry.supportedOperations: what an authorized-operations field can report.
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[Operation, ...]] = {
    ResourceType.TOPIC: (
        _O.READ,
        _O.WRITE,
        _O.CREATE,
        _O.DESCRIBE,
        _O.DELETE,
        _O.ALTER,
        _O.DESCRIBE_CONFIGS,
        _O.ALTER_CONFIGS,
    ),
    ResourceType.GROUP: (_O.READ, _O.DESCRIBE, _O.DELETE, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS),
    ResourceType.CLUSTER: (
        _O.CREATE,
        _O.CLUSTER_ACTION,
        _O.DESCRIBE_CONFIGS,
        _O.ALTER_CONFIGS,
        _O.IDEMPOTENT_WRITE,
        _O.ALTER,
        _O.DESCRIBE,
    ),
    ResourceType.TRANSACTIONAL_ID: (_O.DESCRIBE, _O.WRITE),
}


def who(req: Request) -> tuple[str, str]:
    """The principal and client address (ip) of a request, as the audit log names them."""
    return req.principal, req.client_address


def enabled(ctx: BrokerContext) -> bool:
    return ctx.security.authorizer.enabled


def allowed(
    ctx: BrokerContext,
    req: Request,
    op: Operation,
    rtype: ResourceType,
    name: str,
    *,
    audit: bool = True,
) -> bool:
    return ctx.security.authorizer.authorize(
        req.principal, req.client_address, op, rtype, name, audit=audit
    )


def cluster_allowed(ctx: BrokerContext, req: Request, op: Operation, *, audit: bool = True) -> bool:
    return allowed(ctx, req, op, ResourceType.CLUSTER, CLUSTER_NAME, audit=audit)


def allowed_names(
    ctx: BrokerContext,
    req: Request,
    op: Operation,
    rtype: ResourceType,
    names: Iterable[str],
    *,
    audit: bool = True,
) -> set[str]:
    """The names the principal may `op`, each asked once (Kafka's filterByAuthorized), so a
    request naming a topic for each of its partitions is one check, and one audit line."""
    return {n for n in dict.fromkeys(names) if allowed(ctx, req, op, rtype, n, audit=audit)}


def authorized_operations(ctx: BrokerContext, req: Request, rtype: ResourceType, name: str) -> int:
    """Kafka's authorizedOperations: bit `op` set for each supported operation allowed.
    Asking is not acting, so nothing of it is audited."""
    ops = SUPPORTED_OPERATIONS[rtype]
    return sum(1 << int(op) for op in ops if allowed(ctx, req, op, rtype, name, audit=False))


def allowed_any(ctx: BrokerContext, req: Request, op: Operation, rtype: ResourceType) -> bool:
    """May the principal `op` some resource of `rtype` (Kafka's authorizeByResourceType, for
    KIP-679's "IDEMPOTENT_WRITE on the cluster or WRITE on any topic")? Not audited."""
    return ctx.security.authorizer.authorize_any(req.principal, req.client_address, op, rtype)
