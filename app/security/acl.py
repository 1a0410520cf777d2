"""ACLs with Kafka's authorizer semantics (StandardAuthorizer, AclBindingFilter).

The authorizer answers from an in-memory index by resource type, rebuilt on every change made
through it, so a check never touches SQLite and is O(ACLs on the resource) not O(all ACLs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from . import audit as audit_log
from .principal import USER_WILDCARD

CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"


class _KafkaEnum(IntEnum):
    """A code Kafka does not know reads as UNKNOWN, as Kafka's fromCode does."""

    @classmethod
    def _missing_(cls, value: object) -> _KafkaEnum:
        return cls(0)


class ResourceType(_KafkaEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_KafkaEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class Operation(_KafkaEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class Permission(_KafkaEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


# Operations whose ALLOW also allows DESCRIBE / DESCRIBE_CONFIGS (never so for DENY).
IMPLIES = {
    Operation.DESCRIBE: frozenset(
        {Operation.DESCRIBE, Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER}
    ),
    Operation.DESCRIBE_CONFIGS: frozenset({Operation.DESCRIBE_CONFIGS, Operation.ALTER_CONFIGS}),
}


@dataclass(frozen=True)
class AclBinding:
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission: Permission


@dataclass(frozen=True)
class AclFilter:
    """None for a name, principal or host matches any; ANY for an enum matches any."""

    resource_type: ResourceType
    resource_name: str | None
    pattern_type: PatternType
    principal: str | None
    host: str | None
    operation: Operation
    permission: Permission

    def matches(self, b: AclBinding) -> bool:
        return self._pattern_matches(b) and self._entry_matches(b)

    def _pattern_matches(self, b: AclBinding) -> bool:
        # ResourcePatternFilter.matches: MATCH selects the literal, wildcard and prefixed
        # bindings that would apply to the named resource.
        if self.resource_type != ResourceType.ANY and self.resource_type != b.resource_type:
            return False
        if self.pattern_type not in (PatternType.ANY, PatternType.MATCH, b.pattern_type):
            return False
        if self.resource_name is None:
            return True
        if self.pattern_type in (PatternType.ANY, b.pattern_type):
            return self.resource_name == b.resource_name
        if b.pattern_type == PatternType.LITERAL:
            return b.resource_name in (self.resource_name, WILDCARD)
        return self.resource_name.startswith(b.resource_name)

    def _entry_matches(self, b: AclBinding) -> bool:
        return (
            (self.principal is None or self.principal == b.principal)
            and (self.host is None or self.host == b.host)
            and self.operation in (Operation.ANY, b.operation)
            and self.permission in (Permission.ANY, b.permission)
        )


ANY_FILTER = AclFilter(
    ResourceType.ANY, None, PatternType.ANY, None, None, Operation.ANY, Permission.ANY
)


def binding_error(b: AclBinding) -> str | None:
    """Why Kafka refuses to create `b` (AclApis then AclControlManager.validateNewAcl), or None."""
    if b.resource_type == ResourceType.CLUSTER and b.resource_name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    if not b.resource_name:
        return "Invalid empty resource name"
    if b.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        return f"Invalid resourceType {b.resource_type.name}"
    if b.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        return f"Invalid patternType {b.pattern_type.name}"
    if b.operation in (Operation.UNKNOWN, Operation.ANY):
        return f"Invalid operation {b.operation.name}"
    if b.permission not in (Permission.DENY, Permission.ALLOW):
        return f"Invalid permissionType {b.permission.name}"
    kind, sep, _ = b.principal.partition(":")
    if not sep or not kind:
        return (
            "Invalid principal: expected a string in format principalType:principalName "
            f"but got {b.principal!r}"
        )
    return None


def filter_error(f: AclFilter) -> str | None:
    """Why Kafka refuses filter `f` (AclControlManager.validateFilter), or None."""
    if f.resource_type == ResourceType.UNKNOWN or f.pattern_type == PatternType.UNKNOWN:
        return "Unknown patternFilter."
    if f.operation == Operation.UNKNOWN or f.permission == Permission.UNKNOWN:
        return "Unknown entryFilter."
    return None


class _TypeIndex:
    """The ACLs of one resource type: literal by name, prefixed by prefix, and the lengths
    of the prefixes present so a lookup tries only those."""

    def __init__(self, bindings: Iterable[AclBinding]) -> None:
        literal: dict[str, list[AclBinding]] = {}
        prefixed: dict[str, list[AclBinding]] = {}
        for b in bindings:
            into = literal if b.pattern_type == PatternType.LITERAL else prefixed
            into.setdefault(b.resource_name, []).append(b)
        self.literal = {k: tuple(v) for k, v in literal.items()}
        self.prefixed = {k: tuple(v) for k, v in prefixed.items()}
        self.prefix_lengths = sorted({len(k) for k in prefixed})
        self.all = tuple(b for group in (literal, prefixed) for v in group.values() for b in v)

    def applying(self, name: str) -> Iterable[AclBinding]:
        """Every ACL whose pattern covers resource `name`."""
        yield from self.literal.get(name, ())
        if name != WILDCARD:
            yield from self.literal.get(WILDCARD, ())
        for n in self.prefix_lengths:
            if n > len(name):
                break
            yield from self.prefixed.get(name[:n], ())


def _result(b: AclBinding, principal: str, host: str, op: Operation) -> bool | None:
    """StandardAuthorizerData.findResult: True allow, False deny, None not applicable."""
    if b.principal != principal and b.principal != USER_WILDCARD:
        return None
    if b.host != WILDCARD and b.host != host:
        return None
    if b.operation != Operation.ALL:
        if b.permission == Permission.ALLOW:
            if b.operation not in IMPLIES.get(op, (op,)):
                return None
        elif b.operation != op:
            return None
    return b.permission == Permission.ALLOW


class AclStore(Protocol):
    """Where ACLs persist (SecurityStore); the authorizer keeps its own index of them."""

    def acls(self) -> list[AclBinding]: ...

    def add_acls(self, bindings: list[AclBinding]) -> None: ...

    def delete_acls(self, bindings: list[AclBinding]) -> None: ...


class Authorizer:
    def __init__(
        self,
        store: AclStore | None,
        *,
        enabled: bool,
        super_users: frozenset[str] = frozenset(),
        allow_everyone_if_no_acl: bool = False,
    ) -> None:
        self.enabled = enabled
        self.super_users = super_users
        self.allow_everyone_if_no_acl = allow_everyone_if_no_acl
        self._store = store
        self._acls: dict[AclBinding, None] = {}  # insertion-ordered set
        if store is not None:
            self._acls = dict.fromkeys(store.acls())
        self._index: dict[ResourceType, _TypeIndex] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        by_type: dict[ResourceType, list[AclBinding]] = {}
        for b in self._acls:
            by_type.setdefault(b.resource_type, []).append(b)
        # One assignment: a check running on another thread sees the old or the new index.
        self._index = {t: _TypeIndex(bs) for t, bs in by_type.items()}

    def authorize(
        self,
        principal: str,
        host: str,
        op: Operation,
        rtype: ResourceType,
        name: str,
        *,
        audit: bool = True,
    ) -> bool:
        if not self.enabled or principal in self.super_users:
            return True
        allowed = self._decide(principal, host, op, rtype, name)
        if not allowed and audit:
            audit_log.denied(principal, host, op.name, rtype.name, name)
        return allowed

    def _decide(
        self, principal: str, host: str, op: Operation, rtype: ResourceType, name: str
    ) -> bool:
        index = self._index.get(rtype)
        if index is None:
            return self.allow_everyone_if_no_acl
        any_acl = allowed = False
        for b in index.applying(name):
            any_acl = True
            result = _result(b, principal, host, op)
            if result is False:
                return False
            allowed = allowed or result is True
        return allowed or (not any_acl and self.allow_everyone_if_no_acl)

    def authorize_any(self, principal: str, host: str, op: Operation, rtype: ResourceType) -> bool:
        """Authorizer.authorizeByResourceType: may `principal` do `op` on some resource of
        `rtype` (an allow not dominated by a deny)?"""
        if self.authorize(principal, host, op, rtype, "hardcode", audit=False):
            return True
        index = self._index.get(rtype)
        if index is None:
            return False
        deny: dict[PatternType, set[str]] = {
            PatternType.LITERAL: set(),
            PatternType.PREFIXED: set(),
        }
        allow: dict[PatternType, set[str]] = {
            PatternType.LITERAL: set(),
            PatternType.PREFIXED: set(),
        }
        wildcard_allow = False
        for b in index.all:
            if b.host not in (host, WILDCARD) or b.principal not in (principal, USER_WILDCARD):
                continue
            if b.operation not in (op, Operation.ALL):
                continue
            if b.pattern_type == PatternType.LITERAL and b.resource_name == WILDCARD:
                if b.permission == Permission.DENY:
                    return False
                wildcard_allow = True
                continue
            (deny if b.permission == Permission.DENY else allow)[b.pattern_type].add(
                b.resource_name
            )
        if wildcard_allow:
            return True
        for ptype, names in allow.items():
            for n in names:
                if ptype == PatternType.LITERAL and n in deny[PatternType.LITERAL]:
                    continue
                if not any(n[:i] in deny[PatternType.PREFIXED] for i in range(1, len(n) + 1)):
                    return True
        return False

    def create(self, bindings: list[AclBinding]) -> None:
        """Adds valid bindings (see binding_error); one already present is kept once."""
        for b in bindings:
            err = binding_error(b)
            if err is not None:
                raise ValueError(err)
        new = [b for b in dict.fromkeys(bindings) if b not in self._acls]
        if not new:
            return
        if self._store is not None:
            self._store.add_acls(new)
        # Copy on write: describe() on another thread never sees the dict change under it.
        self._acls = {**self._acls, **dict.fromkeys(new)}
        self._rebuild()

    def delete(self, filters: list[AclFilter]) -> list[list[AclBinding]]:
        """Per filter, the bindings it matched; as in Kafka every filter sees the ACLs as they
        were before this call, so one binding can be reported by several filters."""
        for f in filters:
            err = filter_error(f)
            if err is not None:
                raise ValueError(err)
        matched = [[b for b in self._acls if f.matches(b)] for f in filters]
        gone = list(dict.fromkeys(b for group in matched for b in group))
        if gone:
            if self._store is not None:
                self._store.delete_acls(gone)
            dropped = set(gone)
            self._acls = {b: None for b in self._acls if b not in dropped}
            self._rebuild()
        return matched

    def describe(self, f: AclFilter) -> list[AclBinding]:
        return [b for b in self._acls if f.matches(b)]
