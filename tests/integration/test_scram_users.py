"""SCRAM users managed through confluent-kafka's AdminClient (AlterUserScramCredentials,
DescribeUserScramCredentials, issue 16), with KRaft's answers: then logging in as them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka.errors
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AdminClient,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from .aclcluster import (
    ALLOW,
    KP_EVERY_ACL,
    LITERAL,
    TIMEOUT,
    Cluster,
    error_code,
    secure_cluster,
)

CLUSTER_AUTHORIZATION_FAILED = 31
SECURITY_DISABLED = 54
RESOURCE_NOT_FOUND = 91
DUPLICATE_RESOURCE = 92
UNACCEPTABLE_CREDENTIAL = 93
SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with secure_cluster(tmp_path_factory.mktemp("scram"), ("bob",)) as c:
        yield c


def _name() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


def _upsert(
    user: str, password: str, mechanism: ScramMechanism = SHA256, iterations: int = 4096
) -> UserScramCredentialUpsertion:
    info = ScramCredentialInfo(mechanism, iterations)
    return UserScramCredentialUpsertion(user, info, password.encode())


def _alter(client: AdminClient, alterations: list[Any]) -> dict[str, int | None]:
    futures = client.alter_user_scram_credentials(alterations, request_timeout=TIMEOUT)
    return {user: error_code(f) for user, f in futures.items()}


def _logs_in(cluster: Cluster, user: str, password: str, mechanism: str) -> bool:
    """Whether a client gets metadata as `user`; a refused login is reported through the
    error callback at once (a client left retrying would trip the failure limiter)."""
    failed: list[KafkaError] = []
    conf = cluster.conf("admin", mechanism)
    conf.update(
        {
            "sasl.username": user,
            "sasl.password": password,
            "reconnect.backoff.ms": 10_000,
            "reconnect.backoff.max.ms": 10_000,
            "error_cb": failed.append,
        }
    )
    client = AdminClient(conf)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                client.list_topics(timeout=0.5)
                return True
            except KafkaException:
                client.poll(0)
            if any(e.code() == KafkaError._AUTHENTICATION for e in failed):
                return False
        raise AssertionError(f"no answer to {user}'s login: {failed}")
    finally:
        del client


def test_upsert_describe_login_delete(cluster: Cluster) -> None:
    user = _name()
    assert _alter(cluster.admin, [_upsert(user, "pw-256")]) == {user: None}
    described = cluster.admin.describe_user_scram_credentials([user], request_timeout=TIMEOUT)
    infos = described[user].result().scram_credential_infos
    assert [(i.mechanism, i.iterations) for i in infos] == [(SHA256, 4096)]
    assert _logs_in(cluster, user, "pw-256", "SCRAM-SHA-256")
    assert not _logs_in(cluster, user, "wrong", "SCRAM-SHA-256")
    assert not _logs_in(cluster, user, "pw-256", "SCRAM-SHA-512"), "no 512 credential yet"

    # A second mechanism, then the first one replaced: each request changes a user once.
    assert _alter(cluster.admin, [_upsert(user, "pw-512", SHA512, 8192)]) == {user: None}
    assert _alter(cluster.admin, [_upsert(user, "new-256")]) == {user: None}
    infos = (
        cluster.admin.describe_user_scram_credentials([user], request_timeout=TIMEOUT)[user]
        .result()
        .scram_credential_infos
    )
    assert sorted((i.mechanism.value, i.iterations) for i in infos) == [
        (SHA256.value, 4096),
        (SHA512.value, 8192),
    ]
    assert _logs_in(cluster, user, "pw-512", "SCRAM-SHA-512")
    assert _logs_in(cluster, user, "new-256", "SCRAM-SHA-256")
    assert not _logs_in(cluster, user, "pw-256", "SCRAM-SHA-256")

    assert _alter(cluster.admin, [UserScramCredentialDeletion(user, SHA512)]) == {user: None}
    assert not _logs_in(cluster, user, "pw-512", "SCRAM-SHA-512")
    assert _logs_in(cluster, user, "new-256", "SCRAM-SHA-256")
    # Listing every user includes this one.
    every = cluster.admin.describe_user_scram_credentials(request_timeout=TIMEOUT).result()
    assert user in every and "admin" in every


def test_refusals(cluster: Cluster) -> None:
    user, other, ghost = _name(), _name(), _name()
    assert _alter(cluster.admin, [_upsert(user, "pw")]) == {user: None}
    assert _alter(cluster.admin, [_upsert(user, "pw5", SHA512)]) == {user: None}
    got = _alter(
        cluster.admin,
        [
            _upsert(other, "pw", iterations=1000),
            # The same user twice in one request (two mechanisms, as the client insists on
            # distinct pairs): neither change is made.
            _upsert(user, "a"),
            UserScramCredentialDeletion(user, SHA512),
            UserScramCredentialDeletion(ghost, SHA512),
        ],
    )
    assert got == {
        other: UNACCEPTABLE_CREDENTIAL,
        user: DUPLICATE_RESOURCE,
        ghost: RESOURCE_NOT_FOUND,
    }
    assert _alter(cluster.admin, [_upsert(other, "pw", iterations=20000)]) == {
        other: UNACCEPTABLE_CREDENTIAL
    }
    assert _logs_in(cluster, user, "pw", "SCRAM-SHA-256"), "the refused request changed nothing"
    assert _logs_in(cluster, user, "pw5", "SCRAM-SHA-512")
    assert not _logs_in(cluster, other, "pw", "SCRAM-SHA-256")
    described = cluster.admin.describe_user_scram_credentials([ghost], request_timeout=TIMEOUT)
    assert error_code(described[ghost]) == RESOURCE_NOT_FOUND

    # Without ALTER / DESCRIBE on the cluster, bob can do neither.
    bob = cluster.client("bob")
    assert _alter(bob, [_upsert(user, "stolen")]) == {user: CLUSTER_AUTHORIZATION_FAILED}
    assert not _logs_in(cluster, user, "stolen", "SCRAM-SHA-256")
    asked = bob.describe_user_scram_credentials([user], request_timeout=TIMEOUT)
    assert error_code(asked[user]) == CLUSTER_AUTHORIZATION_FAILED


def test_users_managed_without_an_authorizer(tmp_path: Path) -> None:
    """authorizer none: anyone logged in manages users (no cluster ACL to check), and the
    ACL APIs answer SECURITY_DISABLED."""
    with secure_cluster(tmp_path, ("bob",), ("--authorizer", "none")) as c:
        bob = c.client("bob")
        user = _name()
        assert _alter(bob, [_upsert(user, "pw", SHA512, 4096)]) == {user: None}
        assert _logs_in(c, user, "pw", "SCRAM-SHA-512")
        acl = AclBinding(ResourceType.TOPIC, "t", LITERAL, "User:x", "*", AclOperation.READ, ALLOW)
        assert error_code(bob.create_acls([acl], request_timeout=TIMEOUT)[acl]) == SECURITY_DISABLED
        with pytest.raises(kafka.errors.SecurityDisabledError):
            c.kp_admin("bob").describe_acls(KP_EVERY_ACL)
