"""Security review finding on the Kafka listener (issue 16): SCRAM guesses started together
on many connections must be limited as those made one after another. session.py checks the
failure limit at the first SCRAM message only and counts a failure at the last, so every
exchange started before the first failure is checked (here 20 with a limit of 5)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kafka.net.sasl.scram import SaslMechanismScram

from .secservers import (
    SASL_AUTHENTICATE,
    SecureServer,
    add_user,
    authenticate,
    handshake,
    raw,
    read_response,
    request_class,
    sasl_args,
    send_request,
    started,
)

PER_MINUTE = 5
CONNECTIONS = 20


def test_scram_guesses_started_together_are_limited(tmp_path: Path) -> None:
    srv = SecureServer(
        tmp_path, sasl_args(mechanisms="SCRAM-SHA-256", failures_per_minute=PER_MINUTE)
    )
    add_user(srv.data_dir, "bob", "right", mechanisms=("SCRAM-SHA-256",))
    with started(srv):
        clients = [raw(srv.bootstrap) for _ in range(CONNECTIONS)]
        exchanges = []
        for c in clients:  # every exchange gets as far as the server-first message
            s = SaslMechanismScram(
                sasl_plain_username="bob",
                sasl_plain_password="wrong",
                sasl_mechanism="SCRAM-SHA-256",
            )
            assert handshake(c, "SCRAM-SHA-256").error_code == 0
            first = authenticate(c, s.auth_bytes())
            assert first.error_code == 0, first
            s.receive(first.auth_bytes)
            exchanges.append(s)
        for c, s in zip(clients, exchanges, strict=True):
            send_request(c, request_class(SASL_AUTHENTICATE, 2)(auth_bytes=s.auth_bytes()))
        messages: Counter[str] = Counter()
        for c in clients:
            r = read_response(c, SASL_AUTHENTICATE, 2)
            messages[
                "checked" if "invalid credentials" in (r.error_message or "") else "refused"
            ] += 1
            c.close()
        assert messages["checked"] <= PER_MINUTE, messages
