"""The Kafka listener with TLS and SASL, driven by real clients: confluent-kafka and kcat over
SASL_SSL with SCRAM-SHA-512, kafka-python and aiokafka over SASL_PLAINTEXT with PLAIN and
SCRAM-SHA-256, bad credentials and wrong protocols as clear client errors while other clients
keep working, and HTTP over TLS. Users are made with the CLI before the server starts."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError as KafkaPythonError

from .certs import CertAuthority
from .conftest import unique_topic
from .secservers import (
    PASSWORD,
    SecureServer,
    add_user,
    client_errors,
    consume_values,
    produce_values,
    python_auth,
    sasl_args,
    started,
    tls_args,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sasl_ssl(tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority) -> Iterator[SecureServer]:
    """SASL_SSL with both SCRAM mechanisms; HTTP over TLS with the same certificate."""
    srv = SecureServer(
        tmp_path_factory.mktemp("sasl-ssl"),
        [*sasl_args("SASL_SSL"), *tls_args(ca.server())],
        ca_file=ca.ca_file,
    )
    add_user(srv.data_dir, "alice")
    with started(srv):
        yield srv


@pytest.fixture(scope="module")
def sasl_plaintext(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    srv = SecureServer(
        tmp_path_factory.mktemp("sasl-plain"),
        sasl_args(mechanisms="PLAIN,SCRAM-SHA-256"),
    )
    add_user(srv.data_dir, "bob", mechanisms=("SCRAM-SHA-256",))
    with started(srv):
        yield srv


def scram512(
    srv: SecureServer, ca: CertAuthority, user: str = "alice", password: str = PASSWORD
) -> dict[str, Any]:
    return {
        "bootstrap.servers": srv.bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(ca.ca_file),
    }


def values(n: int) -> list[bytes]:
    return [f"v{i}-{uuid.uuid4().hex[:6]}".encode() for i in range(n)]


def test_confluent_scram_sha_512_over_sasl_ssl(sasl_ssl: SecureServer, ca: CertAuthority) -> None:
    topic = unique_topic("ssl")
    sent = values(50)
    produce_values(scram512(sasl_ssl, ca), topic, sent)
    got = consume_values(scram512(sasl_ssl, ca), topic, len(sent), group=unique_topic("g"))
    assert got == sent


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_scram_sha_512_over_sasl_ssl(sasl_ssl: SecureServer, ca: CertAuthority) -> None:
    topic = unique_topic("kcat")
    common = ["kcat", "-b", sasl_ssl.bootstrap, "-t", topic, "-q"]
    for key, value in scram512(sasl_ssl, ca).items():
        if key != "bootstrap.servers":
            common += ["-X", f"{key.replace('sasl.mechanism', 'sasl.mechanisms')}={value}"]
    lines = [f"line-{i}" for i in range(20)]
    subprocess.run(
        [*common, "-P"], input="\n".join(lines) + "\n", text=True, check=True, timeout=30
    )
    out = subprocess.run(
        [*common, "-C", "-o", "beginning", "-e", "-f", "%s\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.split() == lines


def test_bad_credentials_and_protocols_are_clear_client_errors(
    sasl_ssl: SecureServer, ca: CertAuthority
) -> None:
    topic = unique_topic("others")
    good = scram512(sasl_ssl, ca)
    # A client connected before the failures keeps producing through them.
    keeper = confluent_kafka.Producer(good)
    keeper.produce(topic, b"before")
    assert keeper.flush(20) == 0

    invalid = "Authentication failed during authentication due to invalid credentials"
    cases = {
        "wrong password": (scram512(sasl_ssl, ca, password="wrong"), invalid),
        "unknown user": (scram512(sasl_ssl, ca, user="mallory"), invalid),
        "mechanism not enabled": (
            {**good, "sasl.mechanism": "PLAIN"},
            "Unsupported SASL mechanism: broker's supported mechanisms: "
            "SCRAM-SHA-256,SCRAM-SHA-512",
        ),
        "plaintext client on the TLS port": (
            {
                "bootstrap.servers": sasl_ssl.bootstrap,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "alice",
                "sasl.password": PASSWORD,
            },
            "Disconnected",
        ),
        "TLS without trusting the CA": (
            {k: v for k, v in good.items() if k != "ssl.ca.location"},
            "SSL handshake failed",
        ),
    }
    for name, (conf, expected) in cases.items():
        error = client_errors(conf, expected)
        assert expected in error, f"{name}: {error}"
        keeper.produce(topic, name.encode())
        assert keeper.flush(20) == 0, name
    produce_values(good, topic, [b"after"])
    got = consume_values(good, topic, len(cases) + 2, group=unique_topic("g"))
    assert got == [b"before", *(n.encode() for n in cases), b"after"]
    # Every failure was audited with the address, never with the password.
    log = sasl_ssl.stderr_text(200_000)
    assert "authentication failed: mechanism=SCRAM-SHA-512 user=mallory address=127.0.0.1" in log
    assert PASSWORD not in log and "wrong" not in log.split("reason=")[-1]
    keeper.flush(1)


def test_kafka_python_wrong_password_is_a_clear_error(
    sasl_plaintext: SecureServer, caplog: pytest.LogCaptureFixture
) -> None:
    # kafka-python logs the broker's message and raises a bootstrap timeout.
    with pytest.raises(KafkaPythonError):
        KafkaProducer(
            bootstrap_servers=sasl_plaintext.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username="bob",
            sasl_plain_password="not it",
            bootstrap_timeout_ms=2000,
        )
    assert (
        "SaslAuthenticationFailedError: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-256" in caplog.text
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_kafka_python_produce_consume_group(sasl_plaintext: SecureServer, mechanism: str) -> None:
    auth = python_auth(sasl_plaintext, mechanism)
    topic, group = unique_topic("kp"), unique_topic("g")
    sent = values(20)
    p = KafkaProducer(acks="all", **auth)
    try:
        for f in [p.send(topic, v) for v in sent]:
            f.get(timeout=20)
    finally:
        p.close(timeout=10)
    c = KafkaConsumer(
        topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **auth
    )
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        c.commit()
        committed = c.committed(next(iter(c.assignment())))
    finally:
        c.close()
    assert got == sent
    assert committed == len(sent)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_aiokafka_produce_consume_group(sasl_plaintext: SecureServer, mechanism: str) -> None:
    auth = python_auth(sasl_plaintext, mechanism)
    topic, group = unique_topic("aio"), unique_topic("g")
    sent = values(20)

    async def run() -> tuple[list[bytes], int | None]:
        p = AIOKafkaProducer(acks="all", **auth)
        await p.start()
        try:
            for v in sent:
                await p.send_and_wait(topic, v)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(
            topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False, **auth
        )
        await c.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < len(sent) and time.monotonic() < deadline:
                for records in (await c.getmany(timeout_ms=500)).values():
                    got.extend(r.value for r in records)
            await c.commit()
            committed = await c.committed(next(iter(c.assignment())))
        finally:
            await c.stop()
        return got, committed

    got, committed = asyncio.run(run())
    assert got == sent
    assert committed == len(sent)


def test_http_over_tls(sasl_ssl: SecureServer, ca: CertAuthority) -> None:
    r = httpx.get(f"https://127.0.0.1:{sasl_ssl.http_port}/healthz", verify=str(ca.ca_file))
    assert r.status_code == 200
    r = httpx.get(f"https://localhost:{sasl_ssl.http_port}/topics", verify=str(ca.ca_file))
    assert r.status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{sasl_ssl.http_port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):  # not trusted without the CA
        httpx.get(f"https://127.0.0.1:{sasl_ssl.http_port}/healthz", timeout=5)


def test_no_users_warns_at_start_and_says_how_to_create_one(tmp_path: Path) -> None:
    srv = SecureServer(tmp_path, ["--kafka-security-protocol", "SASL_PLAINTEXT"])
    with started(srv):
        log = srv.wait_log("python -m app users set NAME")
        assert "WARNING" in log.split("python -m app users set NAME")[0].splitlines()[-1]
        error = client_errors(
            {
                "bootstrap.servers": srv.bootstrap,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "admin",
                "sasl.password": "admin",
            },
            "python -m app users set",
        )
        assert "python -m app users set" in error, error
        # The CLI's user is seen by the running server at once.
        add_user(srv.data_dir, "carol", mechanisms=("SCRAM-SHA-256",))
        produce_values(
            {
                "bootstrap.servers": srv.bootstrap,
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "carol",
                "sasl.password": PASSWORD,
            },
            unique_topic("first"),
            [b"v"],
        )
