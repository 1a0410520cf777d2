"""The authorizer and ACL filters against Kafka's semantics (StandardAuthorizerData,
ResourcePatternFilter, AccessControlEntryFilter, Authorizer.authorizeByResourceType)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.security.acl import (
    ANY_FILTER,
    AclBinding,
    AclFilter,
    Authorizer,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    binding_error,
    filter_error,
)
from app.security.store import SecurityStore

T, G, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY
Op = Operation


def acl(
    name: str,
    op: Operation = Op.READ,
    perm: Permission = ALLOW,
    *,
    pt: PatternType = LIT,
    principal: str = "User:alice",
    host: str = "*",
    rtype: ResourceType = T,
) -> AclBinding:
    return AclBinding(rtype, name, pt, principal, host, op, perm)


def authz(*bindings: AclBinding, **kw: object) -> Authorizer:
    a = Authorizer(None, enabled=True, **kw)  # type: ignore[arg-type]
    a.create(list(bindings))
    return a


def test_disabled_allows_everything() -> None:
    a = Authorizer(None, enabled=False)
    a.create([acl("t", perm=DENY)])
    assert a.authorize("User:alice", "1.2.3.4", Op.READ, T, "t")


def test_no_acl_follows_allow_everyone_if_no_acl() -> None:
    assert not authz().authorize("User:alice", "h", Op.READ, T, "t")
    assert authz(allow_everyone_if_no_acl=True).authorize("User:alice", "h", Op.READ, T, "t")
    # An ACL on the resource for someone else means the resource has ACLs: default deny.
    a = authz(acl("t", principal="User:bob"), allow_everyone_if_no_acl=True)
    assert not a.authorize("User:alice", "h", Op.READ, T, "t")
    assert a.authorize("User:alice", "h", Op.READ, T, "other")
    assert a.authorize("User:alice", "h", Op.READ, G, "t")


def test_literal_prefixed_and_wildcard_names() -> None:
    a = authz(acl("orders-", Op.WRITE, pt=PRE), acl("exact"), acl("*", Op.DESCRIBE))
    assert a.authorize("User:alice", "h", Op.WRITE, T, "orders-1")
    assert a.authorize("User:alice", "h", Op.WRITE, T, "orders-")
    assert not a.authorize("User:alice", "h", Op.WRITE, T, "orders")
    assert not a.authorize("User:alice", "h", Op.WRITE, T, "x-orders-1")
    assert a.authorize("User:alice", "h", Op.READ, T, "exact")
    assert not a.authorize("User:alice", "h", Op.READ, T, "exact2")
    assert not a.authorize("User:alice", "h", Op.READ, T, "exac")
    assert a.authorize("User:alice", "h", Op.DESCRIBE, T, "anything")
    assert not a.authorize("User:alice", "h", Op.READ, T, "anything")
    # A literal "*" ACL on a topic named "*" is the same wildcard (applied once).
    assert a.authorize("User:alice", "h", Op.DESCRIBE, T, "*")


def test_a_prefixed_star_is_no_wildcard() -> None:
    a = authz(acl("*", pt=PRE))
    assert a.authorize("User:alice", "h", Op.READ, T, "*x")
    assert not a.authorize("User:alice", "h", Op.READ, T, "x")


def test_principal_and_host_matching() -> None:
    a = authz(acl("t", principal="User:*", host="10.0.0.1"), acl("u", principal="User:bob"))
    assert a.authorize("User:carol", "10.0.0.1", Op.READ, T, "t")
    assert not a.authorize("User:carol", "10.0.0.2", Op.READ, T, "t")
    assert not a.authorize("User:carol", "10.0.0.1", Op.READ, T, "u")
    assert a.authorize("User:bob", "any", Op.READ, T, "u")
    # Only "User:*" is a principal wildcard.
    assert not authz(acl("t", principal="User:b*")).authorize("User:bob", "h", Op.READ, T, "t")


def test_deny_wins_over_allow_wherever_it_is() -> None:
    a = authz(
        acl("orders-", Op.ALL, pt=PRE),
        acl("orders-secret", Op.READ, DENY),
        acl("*", Op.WRITE, DENY, principal="User:*", host="6.6.6.6"),
    )
    assert a.authorize("User:alice", "h", Op.READ, T, "orders-1")
    assert not a.authorize("User:alice", "h", Op.READ, T, "orders-secret")
    assert a.authorize("User:alice", "h", Op.WRITE, T, "orders-secret")
    assert not a.authorize("User:alice", "6.6.6.6", Op.WRITE, T, "orders-1")
    assert a.authorize("User:alice", "6.6.6.6", Op.READ, T, "orders-1")
    # DENY ALL denies every operation.
    b = authz(acl("t", Op.ALL), acl("t", Op.ALL, DENY, host="1.1.1.1"))
    assert b.authorize("User:alice", "h", Op.DELETE, T, "t")
    assert not b.authorize("User:alice", "1.1.1.1", Op.DESCRIBE, T, "t")


@pytest.mark.parametrize("implying", [Op.READ, Op.WRITE, Op.DELETE, Op.ALTER, Op.DESCRIBE])
def test_allow_implies_describe(implying: Operation) -> None:
    a = authz(acl("t", implying))
    assert a.authorize("User:alice", "h", Op.DESCRIBE, T, "t")
    assert a.authorize("User:alice", "h", implying, T, "t")


def test_implication_rules() -> None:
    a = authz(acl("t", Op.ALTER_CONFIGS), acl("u", Op.CREATE))
    assert a.authorize("User:alice", "h", Op.DESCRIBE_CONFIGS, T, "t")
    assert not a.authorize("User:alice", "h", Op.DESCRIBE, T, "t")  # ALTER_CONFIGS: no
    assert not a.authorize("User:alice", "h", Op.DESCRIBE, T, "u")  # CREATE: no
    assert not a.authorize("User:alice", "h", Op.READ, T, "t")
    # A DENY of READ does not deny DESCRIBE (implication is for ALLOW only).
    b = authz(acl("t", Op.DESCRIBE), acl("t", Op.READ, DENY))
    assert b.authorize("User:alice", "h", Op.DESCRIBE, T, "t")
    assert not b.authorize("User:alice", "h", Op.READ, T, "t")


def test_super_users_pass_denies() -> None:
    a = authz(acl("t", Op.ALL, DENY, principal="User:*"), super_users=frozenset({"User:root"}))
    assert a.authorize("User:root", "h", Op.DELETE, T, "t")
    assert a.authorize("User:root", "h", Op.ALTER, C, "kafka-cluster")
    assert not a.authorize("User:alice", "h", Op.READ, T, "t")


def test_authorize_any_by_resource_type() -> None:
    # KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic.
    assert not authz().authorize_any("User:alice", "h", Op.WRITE, T)
    assert authz(allow_everyone_if_no_acl=True).authorize_any("User:alice", "h", Op.WRITE, T)
    assert authz(acl("x", Op.WRITE)).authorize_any("User:alice", "h", Op.WRITE, T)
    assert authz(acl("x", Op.ALL)).authorize_any("User:alice", "h", Op.WRITE, T)
    assert not authz(acl("x", Op.READ)).authorize_any("User:alice", "h", Op.WRITE, T)
    assert not authz(acl("x", Op.WRITE, principal="User:bob")).authorize_any(
        "User:alice", "h", Op.WRITE, T
    )
    # A literal allow denied by the same literal or a dominating prefix does not count.
    assert not authz(acl("x", Op.WRITE), acl("x", Op.WRITE, DENY)).authorize_any(
        "User:alice", "h", Op.WRITE, T
    )
    assert not authz(acl("ab", Op.WRITE), acl("a", Op.WRITE, DENY, pt=PRE)).authorize_any(
        "User:alice", "h", Op.WRITE, T
    )
    assert authz(acl("ab", Op.WRITE), acl("abc", Op.WRITE, DENY, pt=PRE)).authorize_any(
        "User:alice", "h", Op.WRITE, T
    )
    # A wildcard deny denies even a wildcard allow; a wildcard allow beats a literal deny.
    assert not authz(acl("*", Op.WRITE), acl("*", Op.WRITE, DENY)).authorize_any(
        "User:alice", "h", Op.WRITE, T
    )
    assert authz(acl("*", Op.WRITE), acl("x", Op.WRITE, DENY)).authorize_any(
        "User:alice", "h", Op.WRITE, T
    )
    su = authz(acl("*", Op.ALL, DENY, principal="User:*"), super_users=frozenset({"User:root"}))
    assert su.authorize_any("User:root", "h", Op.WRITE, T)


def test_filters_match_as_kafka() -> None:
    lit = acl("orders-1")
    pre = acl("orders-", pt=PRE)
    star = acl("*")
    other = acl("payments", Op.WRITE, DENY, principal="User:bob", host="1.1.1.1", rtype=G)
    a = authz(lit, pre, star, other)

    def f(
        name: str | None, pt: PatternType, rtype: ResourceType = ResourceType.ANY, **kw: object
    ) -> list[AclBinding]:
        args: dict[str, object] = {
            "principal": None,
            "host": None,
            "operation": Op.ANY,
            "permission": Permission.ANY,
        }
        args.update(kw)
        return a.describe(AclFilter(rtype, name, pt, **args))  # type: ignore[arg-type]

    assert f(None, PatternType.ANY) == [lit, pre, star, other]
    assert f("orders-1", PatternType.ANY) == [lit]  # ANY: exact name of any pattern type
    assert f("orders-1", PatternType.MATCH) == [lit, pre, star]  # MATCH: what applies
    assert f("orders-1", PatternType.MATCH, G) == []
    assert f("orders-", PatternType.PREFIXED) == [pre]
    assert f("orders-1", PatternType.PREFIXED) == []
    assert f("*", LIT) == [star]
    assert f(None, PatternType.ANY, principal="User:bob") == [other]
    assert f(None, PatternType.ANY, host="1.1.1.1") == [other]
    assert f(None, PatternType.ANY, operation=Op.WRITE) == [other]
    assert f(None, PatternType.ANY, operation=Op.ALL) == []  # ALL matches only ALL
    assert f(None, PatternType.ANY, permission=DENY) == [other]
    assert a.describe(ANY_FILTER) == [lit, pre, star, other]


def test_delete_reports_per_filter_and_takes_effect() -> None:
    a = authz(acl("t"), acl("t", Op.WRITE), acl("u"))
    assert a.authorize("User:alice", "h", Op.READ, T, "t")
    by_name = AclFilter(T, "t", LIT, None, None, Op.ANY, Permission.ANY)
    reads = AclFilter(T, None, PatternType.ANY, None, None, Op.READ, Permission.ANY)
    removed = a.delete([by_name, reads])
    assert removed == [[acl("t"), acl("t", Op.WRITE)], [acl("t"), acl("u")]]
    assert a.describe(ANY_FILTER) == []
    assert not a.authorize("User:alice", "h", Op.READ, T, "t")
    assert a.delete([by_name]) == [[]]


def test_create_is_idempotent_and_validates() -> None:
    a = authz(acl("t"), acl("t"))
    a.create([acl("t")])
    assert a.describe(ANY_FILTER) == [acl("t")]
    with pytest.raises(ValueError, match="Invalid empty resource name"):
        a.create([acl("")])
    assert a.describe(ANY_FILTER) == [acl("t")]


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        (acl("x", rtype=C), "The only valid name for the CLUSTER resource is kafka-cluster"),
        (acl(""), "Invalid empty resource name"),
        (acl("x", rtype=ResourceType.ANY), "Invalid resourceType ANY"),
        (acl("x", rtype=ResourceType(99)), "Invalid resourceType UNKNOWN"),
        (acl("x", pt=PatternType.MATCH), "Invalid patternType MATCH"),
        (acl("x", pt=PatternType.ANY), "Invalid patternType ANY"),
        (acl("x", Op.ANY), "Invalid operation ANY"),
        (acl("x", Op.UNKNOWN), "Invalid operation UNKNOWN"),
        (acl("x", perm=Permission.ANY), "Invalid permissionType ANY"),
        (acl("x", principal="alice"), "Invalid principal"),
        (acl("x", principal=":alice"), "Invalid principal"),
    ],
)
def test_binding_errors(binding: AclBinding, message: str) -> None:
    err = binding_error(binding)
    assert err is not None and err.startswith(message)


def test_valid_bindings_and_filter_errors() -> None:
    assert binding_error(acl("kafka-cluster", Op.ALTER, rtype=C)) is None
    assert binding_error(acl("g", pt=PRE, rtype=G, principal="User:")) is None
    ok = AclFilter(ResourceType.ANY, None, PatternType.MATCH, None, None, Op.ANY, Permission.ANY)
    assert filter_error(ok) is None
    for bad, message in [
        (
            AclFilter(ResourceType.UNKNOWN, None, LIT, None, None, Op.ANY, ALLOW),
            "Unknown patternFilter.",
        ),
        (
            AclFilter(T, None, PatternType.UNKNOWN, None, None, Op.ANY, ALLOW),
            "Unknown patternFilter.",
        ),
        (AclFilter(T, None, LIT, None, None, Op.UNKNOWN, ALLOW), "Unknown entryFilter."),
        (AclFilter(T, None, LIT, None, None, Op.ANY, Permission.UNKNOWN), "Unknown entryFilter."),
    ]:
        assert filter_error(bad) == message
    with pytest.raises(ValueError):
        authz().delete([AclFilter(T, None, LIT, None, None, Op.UNKNOWN, ALLOW)])


def test_unknown_codes_read_as_unknown() -> None:
    assert ResourceType(42) is ResourceType.UNKNOWN
    assert Operation(-1) is Operation.UNKNOWN
    assert PatternType(4) is PatternType.PREFIXED


def test_denials_are_audited_unless_asked_not_to(caplog: pytest.LogCaptureFixture) -> None:
    a = authz(acl("t"))
    with caplog.at_level(logging.INFO, logger="chronik.audit"):
        assert not a.authorize("User:bob", "10.1.1.1", Op.WRITE, T, "t")
        assert not a.authorize("User:bob", "10.1.1.1", Op.READ, T, "quiet", audit=False)
        assert a.authorize("User:alice", "10.1.1.1", Op.READ, T, "t")
    lines = [r.getMessage() for r in caplog.records if r.name == "chronik.audit"]
    assert lines == ["denied: principal=User:bob address=10.1.1.1 operation=WRITE resource=TOPIC:t"]


def test_acls_are_durable(tmp_path: Path) -> None:
    store = SecurityStore(tmp_path / "security.sqlite")
    a = Authorizer(store, enabled=True)
    a.create([acl("t"), acl("p-", Op.WRITE, pt=PRE)])
    a.delete([AclFilter(T, "t", LIT, None, None, Op.ANY, Permission.ANY)])
    store.close()
    store = SecurityStore(tmp_path / "security.sqlite")
    b = Authorizer(store, enabled=True)
    assert b.describe(ANY_FILTER) == [acl("p-", Op.WRITE, pt=PRE)]
    assert b.authorize("User:alice", "h", Op.WRITE, T, "p-1")
    assert not b.authorize("User:alice", "h", Op.READ, T, "t")
    store.close()


def test_authorize_cost_does_not_grow_with_other_resources() -> None:
    """10,000 ACLs on other topics and groups: a check still looks only at what applies."""
    bindings = [acl(f"topic-{i}") for i in range(5000)]
    bindings += [acl(f"g-{i}", rtype=G) for i in range(5000)]
    a = authz(*bindings, acl("orders-", Op.WRITE, pt=PRE))
    index = a._index[T]
    assert len(list(index.applying("orders-7"))) == 1
    assert len(list(index.applying("topic-42"))) == 1
    assert a.authorize("User:alice", "h", Op.WRITE, T, "orders-7")
