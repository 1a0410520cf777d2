"""The indexed Authorizer against a plain scan of every ACL written from Kafka's own rules
(StandardAuthorizerData.findResult and Authorizer.authorizeByResourceType), on random ACL
sets over names that are prefixes of one another, so an index shortcut that skips or
double-counts an ACL disagrees with the scan."""

from __future__ import annotations

import random

from app.security.acl import AclBinding, Authorizer, Operation, PatternType, Permission
from app.security.acl import ResourceType as R

Op = Operation
LIT, PRE = PatternType.LITERAL, PatternType.PREFIXED
ALLOW, DENY = Permission.ALLOW, Permission.DENY
SUPER = "User:s"
NAMES = ["*", "a", "ab", "abc", "b", "hardcode", "h", "ha"]
OPS = [Op.ALL, Op.READ, Op.WRITE, Op.CREATE, Op.DELETE, Op.ALTER, Op.DESCRIBE]
OPS += [Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS]
IMPLIES = {
    Op.DESCRIBE: {Op.DESCRIBE, Op.READ, Op.WRITE, Op.DELETE, Op.ALTER},
    Op.DESCRIBE_CONFIGS: {Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS},
}


def _entry_applies(a: AclBinding, principal: str, host: str) -> bool:
    return a.principal in (principal, "User:*") and a.host in (host, "*")


def scan(
    acls: list[AclBinding], everyone: bool, who: tuple[str, str], op: Op, rt: R, name: str
) -> bool:
    principal, host = who
    if principal == SUPER:
        return True
    found = allowed = False
    for a in acls:
        literal_hit = a.pattern_type == LIT and a.resource_name in (name, "*")
        if a.resource_type != rt or not (
            literal_hit or (a.pattern_type == PRE and name.startswith(a.resource_name))
        ):
            continue
        found = True
        if not _entry_applies(a, principal, host):
            continue
        if a.operation != Op.ALL:
            ops = IMPLIES.get(op, {op}) if a.permission == ALLOW else {op}
            if a.operation not in ops:
                continue
        if a.permission == DENY:
            return False
        allowed = True
    return allowed or (everyone and not found)


def scan_any(acls: list[AclBinding], everyone: bool, who: tuple[str, str], op: Op, rt: R) -> bool:
    if scan(acls, everyone, who, op, rt, "hardcode"):
        return True
    deny: dict[PatternType, set[str]] = {LIT: set(), PRE: set()}
    allow: dict[PatternType, set[str]] = {LIT: set(), PRE: set()}
    wildcard = False
    for a in acls:
        if a.resource_type != rt or not _entry_applies(a, *who) or a.operation not in (op, Op.ALL):
            continue
        if a.pattern_type == LIT and a.resource_name == "*":
            if a.permission == DENY:
                return False
            wildcard = True
            continue
        (deny if a.permission == DENY else allow)[a.pattern_type].add(a.resource_name)
    if wildcard:
        return True
    return any(
        not (ptype == LIT and n in deny[LIT])
        and not any(n[:i] in deny[PRE] for i in range(1, len(n) + 1))
        for ptype, names in allow.items()
        for n in names
    )


def test_indexed_authorizer_agrees_with_a_scan_of_kafkas_rules() -> None:
    rnd = random.Random(16)
    for _ in range(5000):
        acls = [
            AclBinding(
                rnd.choice([R.TOPIC, R.GROUP]),
                rnd.choice(NAMES),
                rnd.choice([LIT, PRE]),
                rnd.choice(["User:a", "User:b", "User:*"]),
                rnd.choice(["*", "h1", "h2"]),
                rnd.choice(OPS),
                rnd.choice([ALLOW, DENY]),
            )
            for _ in range(rnd.randint(0, 6))
        ]
        everyone = rnd.random() < 0.5
        az = Authorizer(
            None, enabled=True, super_users=frozenset({SUPER}), allow_everyone_if_no_acl=everyone
        )
        az.create(acls)
        acls = list(dict.fromkeys(acls))
        who = (rnd.choice(["User:a", "User:b", SUPER, "User:c"]), rnd.choice(["h1", "h2"]))
        op, rt, name = rnd.choice(OPS[1:]), rnd.choice([R.TOPIC, R.GROUP]), rnd.choice(NAMES)
        case = (acls, everyone, who, op, rt, name)
        assert az.authorize(*who, op, rt, name, audit=False) == scan(
            acls, everyone, who, op, rt, name
        ), case
        assert az.authorize_any(*who, op, rt) == scan_any(acls, everyone, who, op, rt), case
