"""SASL on the Kafka listener byte by byte, as Kafka's SaslServerAuthenticator does it:
ApiVersions before authentication, KIP-152 and the legacy v0 framing (bare tokens),
ILLEGAL_SASL_STATE, UNSUPPORTED_SASL_MECHANISM, delayed failures with a message, KIP-368
re-authentication on an open connection (with a request in flight) and session expiry,
and the per-address limit on failed attempts. Then confluent-kafka re-authenticating while
it produces."""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterator

import confluent_kafka
import pytest
from kafka.net.sasl.scram import SaslMechanismScram

from .conftest import unique_topic
from .rawkafka import ConnectionClosed, request_class
from .secservers import (
    ILLEGAL_SASL_STATE,
    NONE,
    PASSWORD,
    SASL_AUTHENTICATE,
    SASL_AUTHENTICATION_FAILED,
    SASL_HANDSHAKE,
    UNSUPPORTED_SASL_MECHANISM,
    SecureServer,
    add_user,
    authenticate,
    handshake,
    metadata,
    plain_token,
    raw,
    read_response,
    sasl_args,
    scram_login,
    send_request,
    started,
)

pytestmark = pytest.mark.timeout(120)
LIST_GROUPS = 16
REAUTH_MS = 1500


@pytest.fixture(scope="module")
def sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    srv = SecureServer(
        tmp_path_factory.mktemp("sasl"),
        sasl_args(mechanisms="PLAIN,SCRAM-SHA-256"),
    )
    add_user(srv.data_dir, "bob", mechanisms=("SCRAM-SHA-256",))
    # A PLAIN token for "a"/"pw" is 5 bytes: shorter than any Kafka request header.
    add_user(srv.data_dir, "a", "pw", mechanisms=("SCRAM-SHA-256",))
    with started(srv):
        yield srv


@pytest.fixture(scope="module")
def expiring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    """Sessions expire after REAUTH_MS; three failures a minute per address."""
    srv = SecureServer(
        tmp_path_factory.mktemp("reauth"),
        [
            *sasl_args(mechanisms="SCRAM-SHA-256,PLAIN", failures_per_minute=3),
            "--connections-max-reauth-ms",
            str(REAUTH_MS),
        ],
    )
    add_user(srv.data_dir, "bob", mechanisms=("SCRAM-SHA-256",))
    with started(srv):
        yield srv


def test_api_versions_before_authentication_then_anything_else_closes(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        versions = {k.api_key: (k.min_version, k.max_version) for k in c.api_versions(3).api_keys}
        assert versions[SASL_HANDSHAKE] == (0, 1)
        assert versions[SASL_AUTHENTICATE] == (0, 2)
        send_request(c, request_class(LIST_GROUPS, 0)())
        assert c.wait_closed()


def test_other_request_during_authentication_is_illegal_sasl_state(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        assert handshake(c, "SCRAM-SHA-256").error_code == NONE
        resp = c.request(request_class(LIST_GROUPS, 0)())
        assert resp.error_code == ILLEGAL_SASL_STATE
        assert c.wait_closed()


def test_unsupported_mechanism_names_the_enabled_ones(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        resp = handshake(c, "SCRAM-SHA-512")
        assert resp.error_code == UNSUPPORTED_SASL_MECHANISM
        assert tuple(resp.mechanisms) == ("PLAIN", "SCRAM-SHA-256")
        assert c.wait_closed()


def test_kip152_plain_and_scram_then_requests_are_served(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        assert handshake(c, "PLAIN").error_code == NONE
        resp = authenticate(c, plain_token("bob", PASSWORD))
        assert (resp.error_code, resp.error_message) == (NONE, None)
        assert resp.session_lifetime.total_seconds() == 0  # sessions never expire here
        assert metadata(c).brokers
    with raw(sasl.bootstrap) as c:
        assert scram_login(c, "bob", PASSWORD).error_code == NONE
        assert metadata(c).brokers
        # A stray SaslAuthenticate after authentication: KafkaApis' answer, connection kept.
        resp = authenticate(c, b"again")
        assert resp.error_code == ILLEGAL_SASL_STATE
        assert (
            resp.error_message
            == "SaslAuthenticate request received after successful authentication"
        )
        assert metadata(c).brokers


def test_legacy_v0_framing_with_bare_tokens(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        assert handshake(c, "PLAIN", version=0).error_code == NONE
        token = plain_token("a", "pw")
        assert len(token) < 8
        c.send_bytes(struct.pack(">i", len(token)) + token)
        assert c.recv_frame() == b""  # PLAIN's empty server token, length-prefixed
        assert metadata(c).brokers
    with raw(sasl.bootstrap) as c:
        final = scram_login(c, "bob", PASSWORD, v0=True)
        assert final.startswith(b"v=")
        assert metadata(c).brokers
    with raw(sasl.bootstrap) as c:
        # No Kafka response can carry the error in this framing: the connection closes.
        assert handshake(c, "PLAIN", version=0).error_code == NONE
        token = plain_token("bob", "wrong")
        c.send_bytes(struct.pack(">i", len(token)) + token)
        assert c.wait_closed()


def test_failure_is_delayed_with_a_message_and_closes(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        assert handshake(c, "PLAIN").error_code == NONE
        started_at = time.monotonic()
        resp = authenticate(c, plain_token("bob", "wrong"))
        took = time.monotonic() - started_at
        assert resp.error_code == SASL_AUTHENTICATION_FAILED
        assert resp.error_message == "Authentication failed: Invalid username or password"
        assert took >= 0.09  # sasl_failure_delay_ms=100 by default
        assert c.wait_closed()
    log = sasl.wait_log("authentication failed: mechanism=PLAIN user=bob address=127.0.0.1")
    assert "wrong" not in log


def test_reauthentication_on_the_open_connection(sasl: SecureServer) -> None:
    with raw(sasl.bootstrap) as c:
        assert scram_login(c, "bob", PASSWORD).error_code == NONE
        # Re-authentication begins while a request is still unanswered: answers keep order.
        cid = send_request(
            c,
            request_class(3, 9)(
                topics=None,
                allow_auto_topic_creation=False,
                include_cluster_authorized_operations=False,
                include_topic_authorized_operations=False,
            ),
        )
        hs = send_request(c, request_class(SASL_HANDSHAKE, 1)(mechanism="SCRAM-SHA-256"))
        assert cid < hs
        assert read_response(c, 3, 9).brokers
        assert read_response(c, SASL_HANDSHAKE, 1).error_code == NONE
        scram = SaslMechanismScram(
            sasl_plain_username="bob", sasl_plain_password=PASSWORD, sasl_mechanism="SCRAM-SHA-256"
        )
        while not scram.is_done():
            resp = authenticate(c, scram.auth_bytes())
            assert resp.error_code == NONE, resp.error_message
            scram.receive(resp.auth_bytes)
        assert metadata(c).brokers
        # A re-authentication may not change who the connection is.
        resp = scram_login(c, "a", "pw")
        assert resp.error_code == SASL_AUTHENTICATION_FAILED
        assert resp.error_message == (
            "Cannot change principals during re-authentication from User:bob: User:a"
        )
        assert c.wait_closed()


def test_expired_session_closes_on_the_next_request(expiring: SecureServer) -> None:
    with raw(expiring.bootstrap) as c:
        resp = scram_login(c, "bob", PASSWORD)
        assert resp.session_lifetime.total_seconds() * 1000 == REAUTH_MS
        assert metadata(c).brokers
        time.sleep(REAUTH_MS / 1000 + 0.2)
        with pytest.raises(ConnectionClosed):
            metadata(c)


def test_failed_attempts_are_limited_per_address(expiring: SecureServer) -> None:
    def plain(source: str, password: str) -> tuple[int, str | None]:
        with raw(expiring.bootstrap, source=source) as c:
            assert handshake(c, "PLAIN").error_code == NONE
            resp = authenticate(c, plain_token("bob", password))
            return resp.error_code, resp.error_message

    for _ in range(3):
        assert plain("127.0.0.2", "wrong")[0] == SASL_AUTHENTICATION_FAILED
    # The right password is not even looked at from there any more...
    code, message = plain("127.0.0.2", PASSWORD)
    assert code == SASL_AUTHENTICATION_FAILED
    assert message is not None and "Too many failed authentication attempts" in message
    # ...while another address is served.
    assert plain("127.0.0.3", PASSWORD) == (NONE, None)
    assert (
        expiring.metric(
            "chronik_kafka_sasl_authentications_total", mechanism="PLAIN", outcome="failed"
        )
        >= 4
    )


def test_confluent_reauthenticates_while_producing(expiring: SecureServer) -> None:
    def reauths() -> float:
        return expiring.metric(
            "chronik_kafka_sasl_authentications_total",
            mechanism="SCRAM-SHA-256",
            outcome="reauthenticated",
        )

    before = reauths()
    topic = unique_topic("reauth")
    errors: list[str] = []
    delivered: list[int] = []
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": expiring.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "bob",
            "sasl.password": PASSWORD,
            "linger.ms": 5,
            "error_cb": lambda e: errors.append(str(e)),
        }
    )
    deadline = time.monotonic() + 2.5 * REAUTH_MS / 1000
    n = 0
    while time.monotonic() < deadline:
        p.produce(
            topic,
            uuid.uuid4().bytes,
            on_delivery=lambda e, m: (
                delivered.append(m.offset()) if e is None else errors.append(str(e))
            ),
        )
        n += 1
        p.poll(0.05)
    assert p.flush(20) == 0
    assert not errors, errors[:3]
    assert sorted(delivered) == list(range(n))
    # Each of its connections re-authenticated in place at least once.
    assert reauths() - before >= 2
