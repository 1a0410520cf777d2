"""The security and limits settings: names, defaults, env pickup and validation."""

from __future__ import annotations

import pytest

from app.config import LimitsConfig, SecurityConfig, load_settings


def test_defaults_are_the_contract() -> None:
    s = load_settings([], {})
    sec, lim = s.security, s.limits
    assert (sec.kafka_security_protocol, sec.authorizer, sec.http_auth) == (
        "PLAINTEXT",
        "none",
        "none",
    )
    assert sec.mechanisms == ("SCRAM-SHA-256", "SCRAM-SHA-512")
    assert not sec.sasl_enabled and not sec.tls_enabled and not sec.allow_everyone_if_no_acl
    assert (sec.sasl_failures_per_minute, sec.sasl_failure_delay_ms) == (30, 100)
    assert sec.http_token_max_ttl_s == 90 * 86400 and sec.http_tls
    assert sec.super_user_set == frozenset() and sec.open_paths == frozenset()
    assert (lim.max_connections, lim.max_connections_per_ip) == (10000, 1000)
    assert (lim.connection_max_inflight_bytes, lim.max_inflight_bytes) == (100 << 20, 512 << 20)
    assert lim.connections_max_idle_ms == 600_000 and lim.max_concurrent_searches == 8


def test_env_and_flags() -> None:
    env = {
        "CHRONIK_TLS_CERT_FILE": "/c.pem",
        "CHRONIK_TLS_KEY_FILE": "/k.pem",
        "CHRONIK_TLS_CA_FILE": "/ca.pem",
        "CHRONIK_TLS_CLIENT_AUTH": "required",
        "CHRONIK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CHRONIK_SASL_MECHANISMS": "PLAIN, SCRAM-SHA-512",
        "CHRONIK_AUTHORIZER": "acl",
        "CHRONIK_SUPER_USERS": "User:alice;User:bob,User:carol",
        "CHRONIK_ALLOW_EVERYONE_IF_NO_ACL": "true",
        "CHRONIK_HTTP_OPEN_PATHS": "/metrics,/healthz",
        "CHRONIK_MAX_CONNECTIONS_PER_IP": "7",
        "CHRONIK_HTTP_MAX_PAGE": "50",
    }
    s = load_settings(["--http-auth", "required", "--connections-max-reauth-ms", "60000"], env)
    sec = s.security
    assert sec.tls_enabled and sec.sasl_enabled and sec.tls_client_auth == "required"
    assert sec.mechanisms == ("PLAIN", "SCRAM-SHA-512")
    assert sec.super_user_set == {"User:alice", "User:bob", "User:carol"}
    assert sec.open_paths == {"/metrics", "/healthz"} and sec.allow_everyone_if_no_acl
    assert sec.http_auth == "required" and sec.connections_max_reauth_ms == 60000
    assert s.limits.max_connections_per_ip == 7 and s.limits.http_max_page == 50
    plain = load_settings([], {"CHRONIK_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}).security
    assert plain.sasl_enabled and not plain.tls_enabled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol must be one of"),
        ({"tls_client_auth": "optional"}, "tls_client_auth must be one of"),
        ({"authorizer": "simple"}, "authorizer must be one of"),
        ({"http_auth": "basic"}, "http_auth must be one of"),
        ({"sasl_mechanisms": "PLAIN,GSSAPI"}, "each of sasl_mechanisms must be one of"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "sasl_mechanisms": " , "},
            "needs at least one sasl_mechanisms",
        ),
        ({"kafka_security_protocol": "SSL"}, "SSL needs tls_cert_file and tls_key_file"),
        ({"tls_cert_file": "/c.pem"}, "must be set together"),
        (
            {"tls_cert_file": "/c", "tls_key_file": "/k", "tls_client_auth": "requested"},
            "needs tls_ca_file",
        ),
        ({"super_users": "alice"}, "super_users entries look like User:name"),
        ({"http_open_paths": "metrics"}, "http_open_paths entries are paths"),
        ({"sasl_failure_delay_ms": -1}, "must not be negative"),
        ({"http_token_max_ttl_s": 0}, "http_token_max_ttl_s must be positive"),
    ],
)
def test_security_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecurityConfig(**kwargs)  # type: ignore[arg-type]


def test_limits_validation_and_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="max_connections must be positive"):
        LimitsConfig(max_connections=0)
    with pytest.raises(SystemExit):
        load_settings([], {"CHRONIK_AUTHORIZER": "nope"})
    assert "authorizer must be one of none, acl" in capsys.readouterr().err
