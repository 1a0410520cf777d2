"""A server with SASL and the ACL authorizer on, its users, and the clients they log in with.

Users are created with the CLI before the server starts (the way a first user must be);
everything after that goes through real clients: confluent-kafka's AdminClient as the super
user `admin`, producers and consumers as the others.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePatternFilter,
)
from kafka.admin import ResourceType as KpResourceType

from .conftest import REPO, Server, running_server
from .rawkafka import RawKafka, request_class

MECHANISM = "SCRAM-SHA-256"
TIMEOUT = 20.0
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
LITERAL, PREFIXED = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
EVERY_ACL = AclBindingFilter(
    ResourceType.ANY,
    None,
    ResourcePatternType.ANY,
    None,
    None,
    AclOperation.ANY,
    AclPermissionType.ANY,
)

# The same filter for kafka-python's describe_acls.
KP_EVERY_ACL = ACLFilter(
    principal=None,
    host="*",
    operation=ACLOperation.ANY,
    permission_type=ACLPermissionType.ANY,
    resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None, ACLResourcePatternType.ANY),
)


def create_user(data_dir: Path, user: str, password: str, mechanism: str = MECHANISM) -> None:
    """`python -m app users set`, the password on stdin."""
    env = dict(os.environ, CHRONIK_DATA_DIR=str(data_dir))
    subprocess.run(
        [sys.executable, "-m", "app", "users", "set", user, "--mechanism", mechanism],
        input=password.encode(),
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )


class Cluster:
    """The running server, its users' passwords and an AdminClient of the super user."""

    def __init__(self, srv: Server, passwords: dict[str, str]) -> None:
        self.srv = srv
        self.passwords = passwords
        self.admin = AdminClient(self.conf("admin"))

    def conf(self, user: str, mechanism: str = MECHANISM, **extra: Any) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.srv.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": self.passwords[user],
            **extra,
        }

    def client(self, user: str, **extra: Any) -> AdminClient:
        return AdminClient(self.conf(user, **extra))

    def kp_admin(self, user: str) -> KafkaAdminClient:
        """kafka-python's admin client: librdkafka drops DescribeAcls' error code (an
        empty list whatever the broker answered), kafka-python raises it."""
        return KafkaAdminClient(
            bootstrap_servers=self.srv.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=MECHANISM,
            sasl_plain_username=user,
            sasl_plain_password=self.passwords[user],
            request_timeout_ms=int(TIMEOUT * 1000),
        )

    def raw(self, user: str) -> RawKafka:
        """A hand-framed connection logged in with SASL/PLAIN (KIP-152 framing), for the
        exact answers no client library shows."""
        conn = RawKafka(self.srv.bootstrap)
        hs = conn.request(request_class(17, 1)(mechanism="PLAIN"))
        assert hs.error_code == 0, hs
        token = b"\0" + user.encode() + b"\0" + self.passwords[user].encode()
        auth = conn.request(request_class(36, 2)(auth_bytes=token))
        assert auth.error_code == 0, auth
        return conn

    def binding(
        self,
        user: str,
        rtype: ResourceType,
        name: str,
        op: AclOperation,
        permission: AclPermissionType = ALLOW,
        pattern: ResourcePatternType = LITERAL,
    ) -> AclBinding:
        return AclBinding(rtype, name, pattern, f"User:{user}", "*", op, permission)

    def create_acls(self, bindings: Iterable[AclBinding]) -> None:
        for f in self.admin.create_acls(list(bindings), request_timeout=TIMEOUT).values():
            f.result()

    def delete_acls(self, bindings: Iterable[AclBinding]) -> list[AclBinding]:
        filters = [filter_of(b) for b in bindings]
        gone: list[AclBinding] = []
        for f in self.admin.delete_acls(filters, request_timeout=TIMEOUT).values():
            gone += f.result()
        return gone

    def topic(self, prefix: str, partitions: int = 1) -> str:
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        self.create_topic(name, partitions)
        return name

    def create_topic(self, name: str, partitions: int = 1) -> None:
        new = NewTopic(name, num_partitions=partitions, replication_factor=1)
        self.admin.create_topics([new], request_timeout=TIMEOUT)[name].result()

    def produce(self, user: str, topic: str, n: int) -> list[Any]:
        """Send n records; the delivery errors (None for each delivered)."""
        p = confluent_kafka.Producer(
            self.conf(user, **{"linger.ms": 0, "message.timeout.ms": 10_000})
        )
        errors: list[Any] = []
        for i in range(n):
            p.produce(
                topic,
                value=f"v{i}".encode(),
                partition=0,
                on_delivery=lambda e, _m: errors.append(e),
            )
        assert p.flush(TIMEOUT) == 0
        return errors

    def consumer(self, user: str, group: str, **extra: Any) -> confluent_kafka.Consumer:
        return confluent_kafka.Consumer(
            self.conf(
                user,
                **{
                    "group.id": group,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                    **extra,
                },
            )
        )


def filter_of(b: AclBinding) -> AclBindingFilter:
    """The filter matching exactly `b`."""
    return AclBindingFilter(
        b.restype,
        b.name,
        b.resource_pattern_type,
        b.principal,
        b.host,
        b.operation,
        b.permission_type,
    )


@contextlib.contextmanager
def secure_cluster(
    base: Path, users: Iterable[str], extra: Iterable[str] = ()
) -> Iterator[Cluster]:
    """SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256 and -512), the ACL authorizer, User:admin super user;
    `users` (and admin) created with the CLI before start."""
    passwords = {u: secrets.token_urlsafe(16) for u in ("admin", *users)}
    for user, password in passwords.items():
        create_user(base / "data", user, password)
    args = [
        "--kafka-security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanisms",
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "--authorizer",
        "acl",
        "--super-users",
        "User:admin",
        *extra,
    ]
    with running_server(base, args) as srv:
        yield Cluster(srv, passwords)


def error_code(fut: Any) -> int | None:
    """The Kafka error code a future of the AdminClient fails with (None on success)."""
    try:
        fut.result(TIMEOUT)
    except KafkaException as exc:
        return int(exc.args[0].code())
    return None


def until(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got is not None:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
