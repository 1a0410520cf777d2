"""The per-connection SASL state machine on its own (sans-I/O), with a real security store and
a clock the test moves: the corners the client tests do not reach."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.broker.handlers.sasl import (
    SASL_AUTHENTICATE_KEY,
    SASL_AUTHENTICATION_FAILED,
    SASL_HANDSHAKE_KEY,
)
from app.broker.session import SaslSession, State
from app.config import SecurityConfig, Settings
from app.security import Security
from app.security.users import set_password
from tests.integration.rawkafka import decode_response, encode_request, request_class

METADATA = 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_security(tmp_path: Path, failures_per_minute: int = 30) -> Security:
    settings = Settings(
        data_dir=tmp_path,
        security=SecurityConfig(
            kafka_security_protocol="SASL_PLAINTEXT",
            sasl_mechanisms="PLAIN,SCRAM-SHA-256",
            connections_max_reauth_ms=5000,
            sasl_failure_delay_ms=0,
            sasl_failures_per_minute=failures_per_minute,
        ),
    )
    sec = Security.open(settings)
    set_password(sec.store, "bob", "SCRAM-SHA-256", b"pw")
    set_password(sec.store, "eve", "SCRAM-SHA-256", b"pw2")
    return sec


@pytest.fixture
def security(tmp_path: Path) -> Iterator[Security]:
    sec = open_security(tmp_path)
    yield sec
    sec.close()


def frame(body: object, cid: int = 1) -> bytes:
    return encode_request(body, cid)[4:]


def handshake(session: SaslSession, mechanism: str, version: int = 1):  # type: ignore[no-untyped-def]
    step = session.receive(
        frame(request_class(SASL_HANDSHAKE_KEY, version)(mechanism=mechanism)),
        SASL_HANDSHAKE_KEY,
        version,
    )
    assert step.frame is not None
    return step, decode_response(SASL_HANDSHAKE_KEY, version, step.frame[4:])[1]


def authenticate(session: SaslSession, token: bytes, version: int = 1):  # type: ignore[no-untyped-def]
    step = session.receive(
        frame(request_class(SASL_AUTHENTICATE_KEY, version)(auth_bytes=token)),
        SASL_AUTHENTICATE_KEY,
        version,
    )
    if step.check is not None:  # PLAIN's PBKDF2, which the connection runs in a thread
        assert step.then is not None and session.state is State.CHECKING
        step = step.then(step.check())
    assert step.frame is not None
    return step, decode_response(SASL_AUTHENTICATE_KEY, version, step.frame[4:])[1]


def test_plain_login_sets_the_principal_and_the_session_lifetime(security: Security) -> None:
    clock = Clock()
    s = SaslSession(security, "10.0.0.1", clock=clock)
    assert s.needs(METADATA)
    handshake(s, "PLAIN")
    step, resp = authenticate(s, b"\0bob\0pw")
    assert resp.error_code == 0 and not step.close
    assert resp.session_lifetime.total_seconds() == 5
    assert s.principal == "User:bob" and s.authenticated
    assert not s.needs(METADATA)
    clock.now += 5.001
    assert s.needs(METADATA)  # expired: the next request closes the connection
    assert s.receive(b"", METADATA, 9).close


def test_v0_authenticate_carries_the_error_message(security: Security) -> None:
    s = SaslSession(security, "10.0.0.1")
    handshake(s, "PLAIN")
    step, resp = authenticate(s, b"\0bob\0nope", version=0)
    assert step.close
    assert resp.error_code == SASL_AUTHENTICATION_FAILED
    assert resp.error_message == "Authentication failed: Invalid username or password"
    assert s.state is State.FAILED


def test_reauthentication_with_another_mechanism_fails_at_its_first_token(
    security: Security,
) -> None:
    s = SaslSession(security, "10.0.0.1")
    handshake(s, "PLAIN")
    authenticate(s, b"\0bob\0pw")
    _, resp = handshake(s, "SCRAM-SHA-256")
    assert resp.error_code == 0  # Kafka answers the handshake, then refuses the token
    step, resp = authenticate(s, b"n,,n=bob,r=abc")
    assert step.close and resp.error_code == SASL_AUTHENTICATION_FAILED
    assert resp.error_message == (
        "SASL mechanism 'SCRAM-SHA-256' requested by client is not supported for "
        "re-authentication of mechanism 'PLAIN'"
    )


def test_api_versions_is_not_served_during_reauthentication(security: Security) -> None:
    s = SaslSession(security, "10.0.0.1")
    handshake(s, "PLAIN")
    authenticate(s, b"\0bob\0pw")
    handshake(s, "PLAIN")
    step = s.receive(
        frame(
            request_class(METADATA, 9)(
                topics=None,
                allow_auto_topic_creation=False,
                include_cluster_authorized_operations=False,
                include_topic_authorized_operations=False,
            )
        ),
        METADATA,
        9,
    )
    assert step.close and not step.serve


def test_unsupported_versions_and_garbage_close(security: Security) -> None:
    s = SaslSession(security, "10.0.0.1")
    assert s.receive(b"\x00\x11\x00\x05\x00\x00\x00\x01\xff\xff", SASL_HANDSHAKE_KEY, 5).close
    s = SaslSession(security, "10.0.0.1")
    handshake(s, "PLAIN")
    assert s.receive(b"\x00\x24\x00\x01garbage", SASL_AUTHENTICATE_KEY, 1).close


def test_a_frame_during_a_password_check_closes_and_a_lost_check_counts(
    tmp_path: Path,
) -> None:
    security = open_security(tmp_path, failures_per_minute=1)
    try:
        s = SaslSession(security, "10.0.0.9")
        handshake(s, "PLAIN")
        step = s.receive(
            frame(request_class(SASL_AUTHENTICATE_KEY, 1)(auth_bytes=b"\0bob\0pw")),
            SASL_AUTHENTICATE_KEY,
            1,
        )
        assert step.check is not None and step.then is not None
        # A check in progress holds the address's one place...
        assert security.limiter.blocked("10.0.0.9")
        assert s.receive(b"", SASL_AUTHENTICATE_KEY, 1).close  # pipelined while checking
        # ...and the connection going away before it ended counts as a failure.
        assert step.then(None).close
        assert security.limiter.blocked("10.0.0.9")
        assert not security.limiter.blocked("10.0.0.10")
    finally:
        security.close()
