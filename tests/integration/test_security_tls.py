"""TLS on the Kafka listener: mTLS with the principal taken from the client certificate's CN
(seen by the ACL authorizer), a client without a certificate refused when one is required
and served when it is only requested, and certificates reloaded on SIGHUP for new handshakes
on both listeners while an open connection keeps working with its own."""

from __future__ import annotations

import signal
import ssl
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import httpx
import pytest

from .certs import CertAuthority, peer_serial, serial_of
from .conftest import unique_topic
from .secservers import (
    SecureServer,
    client_errors,
    client_tls,
    consume_values,
    produce_values,
    raw,
    started,
    tls_args,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority) -> Iterator[SecureServer]:
    """SSL with client certificates required; ACLs on, alice a super user, no ACL at all."""
    srv = SecureServer(
        tmp_path_factory.mktemp("mtls"),
        [
            "--kafka-security-protocol",
            "SSL",
            *tls_args(ca.server("mtls-server"), ca, "required"),
            "--http-tls",
            "false",
            "--authorizer",
            "acl",
            "--super-users",
            "User:alice",
        ],
    )
    with started(srv):
        yield srv


def ssl_conf(srv: SecureServer, ca: CertAuthority, cn: str | None) -> dict[str, Any]:
    conf = {
        "bootstrap.servers": srv.bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": str(ca.ca_file),
    }
    if cn is not None:
        cert = ca.client(cn)
        conf |= {"ssl.certificate.location": str(cert.cert), "ssl.key.location": str(cert.key)}
    return conf


def test_mtls_principal_is_the_certificate_cn(mtls: SecureServer, ca: CertAuthority) -> None:
    topic = unique_topic("mtls")
    sent = [b"one", b"two", b"three"]
    produce_values(ssl_conf(mtls, ca, "alice"), topic, sent)
    assert consume_values(ssl_conf(mtls, ca, "alice"), topic, 3, unique_topic("g")) == sent
    # bob's certificate is as valid, but User:bob is no super user and has no ACL.
    failures: list[str] = []
    p = confluent_kafka.Producer(ssl_conf(mtls, ca, "bob"))
    p.produce(topic, b"bob", on_delivery=lambda e, m: failures.append(e.name() if e else "ok"))
    p.flush(20)
    assert failures == ["TOPIC_AUTHORIZATION_FAILED"]
    # The audit log names the certificate's principal (Metadata's DESCRIBE is checked first).
    mtls.wait_log(
        f"denied: principal=User:bob address=127.0.0.1 operation=DESCRIBE resource=TOPIC:{topic}"
    )


def test_mtls_without_a_client_certificate_is_refused(
    mtls: SecureServer, ca: CertAuthority
) -> None:
    # TLS 1.3: the client finishes its side of the handshake before the server checks its
    # (missing) certificate, so it sees the connection closed on its first request.
    expected = "SSL connection closed by peer"
    errors = client_errors(ssl_conf(mtls, ca, None), expected)
    assert expected in errors, errors
    # The broker keeps serving certified clients.
    produce_values(ssl_conf(mtls, ca, "alice"), unique_topic("after"), [b"v"])


def test_requested_client_auth_and_sighup_reload(
    tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority
) -> None:
    first = ca.server("reload-server")
    srv = SecureServer(
        tmp_path_factory.mktemp("reload"),
        ["--kafka-security-protocol", "SSL", *tls_args(first, ca, "requested")],
        ca_file=ca.ca_file,
    )
    with started(srv):
        # "requested": with or without a certificate.
        produce_values(ssl_conf(srv, ca, None), unique_topic("anon"), [b"v"])
        produce_values(ssl_conf(srv, ca, "carol"), unique_topic("carol"), [b"v"])

        old = raw(srv.bootstrap, tls=client_tls(ca))
        old_serial = peer_serial(old.sock.getpeercert(True))
        assert old_serial == serial_of(first.cert.read_bytes())
        assert old.api_versions(3).error_code == 0

        second = ca.server("reload-server")  # new files in the same place
        new_serial = serial_of(second.cert.read_bytes())
        assert new_serial != old_serial
        srv.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        srv.wait_log("SIGHUP: TLS certificates reloaded")

        with raw(srv.bootstrap, tls=client_tls(ca)) as new:
            assert peer_serial(new.sock.getpeercert(True)) == new_serial
            assert new.api_versions(3).error_code == 0
        http_pem = ssl.get_server_certificate(("127.0.0.1", srv.http_port))
        assert serial_of(http_pem.encode()) == new_serial
        assert httpx.get(srv.http + "/healthz", verify=str(ca.ca_file)).status_code == 200
        # The connection made before the reload is still open and still has its certificate.
        assert old.api_versions(3).error_code == 0
        assert peer_serial(old.sock.getpeercert(True)) == old_serial
        old.close()

        # A certificate that does not match its key is refused; the last good one stays.
        second.key.write_bytes(ca.client("x").key.read_bytes())
        srv.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        srv.wait_log("SIGHUP: TLS certificates not reloaded")
        with raw(srv.bootstrap, tls=client_tls(ca)) as again:
            assert peer_serial(again.sock.getpeercert(True)) == new_serial
