"""ACLs through confluent-kafka's AdminClient, enforced on real producers and consumers
(issue 16): literal and prefixed patterns, allow and deny, super users, a change takes
effect on the next request, and ACLs and credentials survive a restart.

One server for the module (SASL_PLAINTEXT, SCRAM, the ACL authorizer, User:admin super
user); each test names its own resources. The restart test comes last.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import confluent_kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from .aclcluster import (
    DENY,
    EVERY_ACL,
    KP_EVERY_ACL,
    PREFIXED,
    TIMEOUT,
    Cluster,
    error_code,
    filter_of,
    secure_cluster,
    until,
)

INVALID_REQUEST = 42
CLUSTER_AUTHORIZATION_FAILED = 31
Op = AclOperation
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with secure_cluster(tmp_path_factory.mktemp("acls"), ("alice", "bob", "carol")) as c:
        yield c


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _named(cluster: Cluster, name: str) -> set[AclBinding]:
    """Every ACL on resources named `name`, as DescribeAcls returns them."""
    f = AclBindingFilter(
        ResourceType.ANY,
        name,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    return set(cluster.admin.describe_acls(f, request_timeout=TIMEOUT).result())


def _read_all(cluster: Cluster, user: str, topic: str, n: int, group: str) -> list[bytes]:
    c = cluster.consumer(user, group)
    got: list[bytes] = []
    try:
        c.subscribe([topic])

        def probe() -> bool | None:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got.append(m.value())
            return True if len(got) >= n else None

        until(f"{n} records of {topic} as {user}", probe)
    finally:
        c.close()
    return got


def _read_error(cluster: Cluster, user: str, topic: str, group: str) -> KafkaError:
    """The error a consumer subscribed to `topic` reports; a record fails the test."""
    c = cluster.consumer(user, group)
    try:
        c.subscribe([topic])

        def probe() -> KafkaError | None:
            m = c.poll(0.5)
            if m is None:
                return None
            assert m.error() is not None, f"{user} read {m.value()!r} of {topic}"
            return m.error()

        return until(f"{user}'s error on {topic}", probe)
    finally:
        c.close()


def test_create_describe_delete_literal_and_prefixed(cluster: Cluster) -> None:
    u = _uid()
    literal = cluster.binding("alice", TOPIC, f"lit-{u}", Op.READ)
    prefixed = cluster.binding("bob", TOPIC, f"pre-{u}-", Op.WRITE, DENY, PREFIXED)
    group = cluster.binding("alice", GROUP, f"grp-{u}", Op.ALL)
    cluster.create_acls([literal, prefixed, group])
    # Creating an ACL that exists already is no error and keeps one copy.
    cluster.create_acls([literal])
    every = set(cluster.admin.describe_acls(EVERY_ACL, request_timeout=TIMEOUT).result())
    assert {literal, prefixed, group} <= every
    assert _named(cluster, f"lit-{u}") == {literal}
    # MATCH: the ACLs that apply to a resource, the prefixed one included.
    match = AclBindingFilter(
        TOPIC,
        f"pre-{u}-orders",
        ResourcePatternType.MATCH,
        None,
        None,
        Op.ANY,
        AclPermissionType.ANY,
    )
    assert cluster.admin.describe_acls(match, request_timeout=TIMEOUT).result() == [prefixed]
    by_principal = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        "User:alice",
        None,
        Op.ALL,
        AclPermissionType.ANY,
    )
    assert cluster.admin.describe_acls(by_principal, request_timeout=TIMEOUT).result() == [group]

    assert cluster.delete_acls([literal, prefixed]) == [literal, prefixed]
    assert _named(cluster, f"lit-{u}") == set()
    assert _named(cluster, f"pre-{u}-") == set()
    assert _named(cluster, f"grp-{u}") == {group}
    # A filter matching nothing deletes nothing, without error.
    assert cluster.delete_acls([literal]) == []


def test_invalid_bindings_and_unauthorized_changes(cluster: Cluster) -> None:
    u = _uid()
    bad = AclBinding(
        ResourceType.BROKER,
        f"x-{u}",
        ResourcePatternType.LITERAL,
        "User:alice",
        "*",
        Op.ALTER,
        AclPermissionType.ALLOW,
    )
    good = cluster.binding("alice", TOPIC, f"ok-{u}", Op.READ)
    futures = cluster.admin.create_acls([bad, good], request_timeout=TIMEOUT)
    assert error_code(futures[bad]) == INVALID_REQUEST
    assert error_code(futures[good]) is None, "a bad binding fails alone"
    assert _named(cluster, f"x-{u}") == set()

    # Changing and reading ACLs needs ALTER / DESCRIBE on the cluster.
    bob = cluster.client("bob")
    mine = cluster.binding("bob", TOPIC, f"bob-{u}", Op.ALL)
    assert error_code(bob.create_acls([mine], request_timeout=TIMEOUT)[mine]) == (
        CLUSTER_AUTHORIZATION_FAILED
    )
    bob_kp = cluster.kp_admin("bob")
    with pytest.raises(kafka.errors.ClusterAuthorizationFailedError):
        bob_kp.describe_acls(KP_EVERY_ACL)
    flt = filter_of(good)
    assert error_code(bob.delete_acls([flt], request_timeout=TIMEOUT)[flt]) == (
        CLUSTER_AUTHORIZATION_FAILED
    )
    assert _named(cluster, f"ok-{u}") == {good}, "bob's delete removed nothing"
    cluster.create_acls([cluster.binding("bob", ResourceType.BROKER, "kafka-cluster", Op.ALTER)])
    assert error_code(bob.create_acls([mine], request_timeout=TIMEOUT)[mine]) is None
    # ALTER implies DESCRIBE, so bob reads them now too.
    acls, _ = bob_kp.describe_acls(KP_EVERY_ACL)
    assert f"bob-{u}" in {a.resource_pattern.resource_name for a in acls}
    bob_kp.close()
    cluster.delete_acls([cluster.binding("bob", ResourceType.BROKER, "kafka-cluster", Op.ALTER)])


def test_issue_scenario(cluster: Cluster) -> None:
    """A may produce to orders-* and read group g; B may not read orders-1."""
    cluster.create_topic("orders-1")
    other = cluster.topic("payments-")
    cluster.create_acls(
        [
            cluster.binding("alice", TOPIC, "orders-", Op.WRITE, pattern=PREFIXED),
            cluster.binding("alice", TOPIC, "orders-", Op.READ, pattern=PREFIXED),
            cluster.binding("alice", GROUP, "g", Op.READ),
            cluster.binding("bob", GROUP, "g", Op.READ),
        ]
    )
    assert cluster.produce("alice", "orders-1", 5) == [None] * 5
    (refused,) = {e.code() for e in cluster.produce("alice", other, 2) if e is not None}
    assert refused == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _read_all(cluster, "alice", "orders-1", 5, "g") == [f"v{i}".encode() for i in range(5)]

    err = _read_error(cluster, "bob", "orders-1", "g")
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert "orders-1" not in cluster.client("bob").list_topics(timeout=TIMEOUT).topics
    assert "orders-1" in cluster.client("alice").list_topics(timeout=TIMEOUT).topics
    # The super user needs no ACL at all.
    assert len(_read_all(cluster, "admin", "orders-1", 5, f"adm-{_uid()}")) == 5
    assert "orders-1" in cluster.admin.list_topics(timeout=TIMEOUT).topics


def test_deny_overrides_allow(cluster: Cluster) -> None:
    u = _uid()
    allowed_topic = cluster.topic(f"dn-{u}-")
    denied_topic = cluster.topic(f"dn-{u}-")
    for t in (allowed_topic, denied_topic):
        assert cluster.produce("admin", t, 3) == [None] * 3
    group = f"dg-{u}"
    cluster.create_acls(
        [
            cluster.binding("carol", TOPIC, f"dn-{u}-", Op.READ, pattern=PREFIXED),
            cluster.binding("carol", GROUP, group, Op.READ),
            cluster.binding("carol", TOPIC, denied_topic, Op.READ, DENY),
        ]
    )
    assert len(_read_all(cluster, "carol", allowed_topic, 3, group)) == 3
    # The allowed READ still implies DESCRIBE: the topic is listed, its records are not read.
    assert denied_topic in cluster.client("carol").list_topics(timeout=TIMEOUT).topics
    err = _read_error(cluster, "carol", denied_topic, group)
    assert err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_removing_an_acl_takes_effect_at_once(cluster: Cluster) -> None:
    topic = cluster.topic("rm-")
    acl = cluster.binding("alice", TOPIC, topic, Op.WRITE)
    cluster.create_acls([acl])
    p = confluent_kafka.Producer(cluster.conf("alice", **{"linger.ms": 0}))
    errors: list[KafkaError | None] = []
    p.produce(topic, b"before", partition=0, on_delivery=lambda e, _m: errors.append(e))
    assert p.flush(TIMEOUT) == 0 and errors == [None]
    assert cluster.delete_acls([acl]) == [acl]
    # Same producer, same connection: its next request is refused.
    p.produce(topic, b"after", partition=0, on_delivery=lambda e, _m: errors.append(e))
    assert p.flush(TIMEOUT) == 0
    assert errors[1] is not None and errors[1].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # librdkafka now refuses the topic itself until its metadata refresh: a new producer.
    cluster.create_acls([acl])
    assert cluster.produce("alice", topic, 1) == [None]


def test_acls_and_credentials_survive_a_restart(cluster: Cluster) -> None:
    u = _uid()
    topic = cluster.topic(f"keep-{u}-")
    acl = cluster.binding("dave", TOPIC, f"keep-{u}-", Op.WRITE, pattern=PREFIXED)
    cluster.create_acls([acl])
    cluster.passwords["dave"] = f"pw-{u}"
    up = UserScramCredentialUpsertion(
        "dave",
        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
        cluster.passwords["dave"].encode(),
    )
    for f in cluster.admin.alter_user_scram_credentials([up], request_timeout=TIMEOUT).values():
        f.result()
    assert cluster.produce("dave", topic, 1) == [None]
    cluster.srv.restart()
    assert acl in cluster.admin.describe_acls(EVERY_ACL, request_timeout=TIMEOUT).result()
    assert cluster.produce("dave", topic, 1) == [None], "dave logs in and may still write"
    other = cluster.topic("elsewhere-")
    (refused,) = {e.code() for e in cluster.produce("dave", other, 1) if e is not None}
    assert refused == KafkaError.TOPIC_AUTHORIZATION_FAILED
