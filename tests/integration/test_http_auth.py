"""HTTP authentication and authorization with the Kafka identities (issue 16), on a real
server: SASL/SCRAM on Kafka, the ACL authorizer, CHRONIK_HTTP_AUTH=required. Users are made
with the CLI before start, ACLs with confluent-kafka's AdminClient as the super user; the HTTP
side sees them at once (one authorizer for both listeners).

No credentials -> 401 with the challenge on every operation but the open paths; Basic with
the SCRAM password; bearer tokens created, used, listed, revoked and expired; B's search of
orders-1 is 403 naming it while A's works, a multi-topic search is refused (never narrowed),
listings are filtered, a deny wins at once; the audit log names failures without secrets;
schemathesis with credentials finds no 5xx; failed logins are limited per address (last)."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import pytest
import requests
import schemathesis
from confluent_kafka.admin import AclOperation, ResourceType
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .aclcluster import DENY, PREFIXED, Cluster, secure_cluster
from .conftest import REPO, running_server
from .layered import wait_until

SPEC = REPO / "openapi" / "openapi.json"
CHALLENGE = 'Basic realm="chronik", Bearer realm="chronik"'
OPEN = ("/readyz", "/healthz")
HTTP_ARGS = ("--http-auth", "required", "--http-open-paths", ",".join(OPEN))
RECORDS = 30
TOPICS = ("orders-1", "orders-2", "logs")


@pytest.fixture(scope="module")
def cl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("httpauth")
    extra = (*HTTP_ARGS, "--index-commit-ms", "200")
    with secure_cluster(base, ("alice", "bob"), extra) as c:
        for t in TOPICS:
            c.create_topic(t)
        _produce(c)
        # Alice reads orders-* (a prefixed ACL; READ implies DESCRIBE), Bob reads logs.
        c.create_acls(
            [
                c.binding(
                    "alice", ResourceType.TOPIC, "orders-", AclOperation.READ, pattern=PREFIXED
                ),
                c.binding("bob", ResourceType.TOPIC, "logs", AclOperation.READ),
            ]
        )
        for t in TOPICS:
            wait_until(lambda t=t: _total(c, "admin", t) == RECORDS, 30, f"{t} indexed")
        yield c


def _produce(c: Cluster) -> None:
    p = confluent_kafka.Producer({**c.conf("admin"), "linger.ms": 5})
    for t in TOPICS:
        for i in range(RECORDS):
            p.produce(t, json.dumps({"n": i, "level": "error" if i % 3 else "info"}))
    assert p.flush(20) == 0


def _auth(c: Cluster, user: str | None) -> dict[str, Any]:
    return {} if user is None else {"auth": (user, c.passwords[user])}


def _get(c: Cluster, path: str, user: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(c.srv.http + path, params=params, timeout=20, **_auth(c, user))


def _bearer(c: Cluster, token: str, path: str = "/topics", **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(c.srv.http + path, params=params, headers=headers, timeout=20)


def _total(c: Cluster, user: str, topic: str) -> int | None:
    r = _get(c, "/search", user, topic=topic)
    return r.json()["total"] if r.status_code == 200 else None


def _unauthorized(r: httpx.Response) -> str:
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == CHALLENGE
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    return detail


def _forbidden(r: httpx.Response) -> str:
    assert r.status_code == 403, r.text
    return str(r.json()["detail"])


def _operations() -> list[tuple[str, str]]:
    spec = json.loads(SPEC.read_text())
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


def test_every_operation_but_the_open_paths_needs_credentials(cl: Cluster) -> None:
    ops = _operations()
    assert len(ops) == 16
    for method, path in ops:
        url = cl.srv.http + path.replace("{topic}", "logs").replace("{token_id}", "x")
        url = url.replace("{group}", "g")
        r = httpx.request(method, url, params={"topic": "logs"}, json={}, timeout=20)
        if path in OPEN:
            assert r.status_code == 200, (path, r.text)
        else:
            assert "authentication required" in _unauthorized(r), path
    for bad in ("Digest abc", "Basic !!!", "Basic " + "dXNlcg==", "Bearer", "Bearer chr_x_y"):
        r = httpx.get(cl.srv.http + "/topics", headers={"Authorization": bad}, timeout=20)
        _unauthorized(r)


def test_basic_checks_the_scram_password(cl: Cluster) -> None:
    assert _get(cl, "/topics", "alice").status_code == 200
    wrong = httpx.get(cl.srv.http + "/topics", auth=("alice", "not-her-password"), timeout=20)
    assert "invalid user name or password" in _unauthorized(wrong)
    _unauthorized(httpx.get(cl.srv.http + "/topics", auth=("mallory", "x"), timeout=20))
    # Checked again after a failure (a cached success is keyed by the password too).
    assert _get(cl, "/topics", "alice").status_code == 200
    log = cl.srv.stderr_text(200_000)
    assert "authentication failed: mechanism=HTTP-BASIC user=alice address=127.0.0.1" in log
    assert "not-her-password" not in log
    assert not any(pw in log for pw in cl.passwords.values())


def test_a_token_is_created_used_listed_and_revoked(cl: Cluster) -> None:
    basic = _auth(cl, "alice")
    r = httpx.post(cl.srv.http + "/tokens", json={"description": "dashboards"}, **basic)
    assert r.status_code == 201, r.text
    created = r.json()
    secret, token_id = created["token"], created["id"]
    assert secret.startswith(f"chr_{token_id}_") and created["user"] == "alice"
    assert created["expires_ms"] - created["created_ms"] == 30 * 86400 * 1000
    # The token is Alice: her ACLs, nothing more.
    assert _bearer(cl, secret, "/search", topic="orders-1").json()["total"] == RECORDS
    assert "logs" in _forbidden(_bearer(cl, secret, "/search", topic="logs"))
    listed = httpx.get(cl.srv.http + "/tokens", **basic)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()] == [token_id]
    assert secret not in listed.text and "token" not in listed.json()[0]
    # A token cannot manage tokens (Kafka's delegation tokens cannot either).
    headers = {"Authorization": f"Bearer {secret}"}
    for method, path in (
        ("POST", "/tokens"),
        ("GET", "/tokens"),
        ("DELETE", f"/tokens/{token_id}"),
    ):
        r = httpx.request(method, cl.srv.http + path, headers=headers, json={}, timeout=20)
        assert "cannot manage tokens" in _forbidden(r)
    assert httpx.get(cl.srv.http + "/tokens", **_auth(cl, "bob")).json() == []
    # Bob cannot revoke it: not his.
    assert httpx.delete(cl.srv.http + f"/tokens/{token_id}", **_auth(cl, "bob")).status_code == 404
    assert _bearer(cl, secret).status_code == 200
    assert httpx.delete(cl.srv.http + f"/tokens/{token_id}", **basic).status_code == 204
    assert "invalid, expired or revoked" in _unauthorized(_bearer(cl, secret))
    assert httpx.delete(cl.srv.http + f"/tokens/{token_id}", **basic).status_code == 404
    log = cl.srv.stderr_text(200_000)
    assert f"action=token created id={token_id} user=alice" in log
    assert f"action=token revoked id={token_id} user=alice" in log
    assert secret not in log and secret.rpartition("_")[2] not in log


def test_an_expired_token_is_401_and_the_lifetime_is_bounded(cl: Cluster) -> None:
    basic = _auth(cl, "bob")
    r = httpx.post(cl.srv.http + "/tokens", json={"ttl_seconds": 1}, **basic)
    assert r.status_code == 201, r.text
    secret = r.json()["token"]
    assert _bearer(cl, secret).status_code == 200
    time.sleep(1.2)
    _unauthorized(_bearer(cl, secret))
    too_long = httpx.post(cl.srv.http + "/tokens", json={"ttl_seconds": 90 * 86400 + 1}, **basic)
    assert too_long.status_code == 422, too_long.text
    (error,) = too_long.json()["detail"]
    assert (
        error["loc"] == ["body", "ttl_seconds"] and "CHRONIK_HTTP_TOKEN_MAX_TTL_S" in error["msg"]
    )


def test_open_paths_and_cluster_endpoints(cl: Cluster) -> None:
    for path in OPEN:
        assert _get(cl, path).status_code == 200
    for path in ("/metrics", "/indexer"):
        _unauthorized(_get(cl, path))
        assert "DESCRIBE the cluster" in _forbidden(_get(cl, path, "bob"))
        assert _get(cl, path, "admin").status_code == 200


def test_topic_acls_apply_to_search_topics_and_segments(cl: Cluster) -> None:
    assert _total(cl, "alice", "orders-1") == RECORDS
    msg = _forbidden(_get(cl, "/search", "bob", topic="orders-1"))
    assert "User:bob" in msg and "'orders-1'" in msg and "READ" in msg
    # Several topics: refused naming the first forbidden one, never silently narrowed.
    assert "'orders-1'" in _forbidden(_get(cl, "/search", "bob", topic="logs,orders-1"))
    assert "'orders-2'" in _forbidden(_get(cl, "/search", "bob", topic="logs,orders-2,orders-1"))
    assert _total(cl, "bob", "logs") == RECORDS
    assert _total(cl, "bob", "logs,logs") == RECORDS  # a topic named twice counts once
    assert "'orders-1'" in _forbidden(_get(cl, "/search/histogram", "bob", topic="orders-1"))
    terms = _get(cl, "/search/terms", "bob", topic="orders-1", field="value.level")
    assert "'orders-1'" in _forbidden(terms)
    # Refused before it is looked up: a name one may not read does not tell if it exists.
    _forbidden(_get(cl, "/search", "bob", topic="orders-nope"))
    assert _get(cl, "/search", "alice", topic="orders-nope").status_code == 404

    def names(user: str) -> list[str]:
        return [t["name"] for t in _get(cl, "/topics", user).json()]

    assert names("bob") == ["logs"]
    assert names("alice") == ["orders-1", "orders-2"]
    assert names("admin") == sorted(TOPICS)
    assert "DESCRIBE topic 'orders-1'" in _forbidden(_get(cl, "/topics/orders-1", "bob"))
    assert _get(cl, "/topics/orders-1", "alice").json()["name"] == "orders-1"
    seen = {s["topic"] for s in _get(cl, "/segments", "bob").json()["segments"]}
    assert seen == {"logs"}
    assert "orders-1" in _forbidden(_get(cl, "/segments", "bob", topic="orders-1"))
    log = cl.srv.stderr_text(200_000)
    assert (
        "denied: principal=User:bob address=127.0.0.1 operation=READ resource=TOPIC:orders-1" in log
    )


def test_a_deny_takes_effect_on_the_next_request_and_its_removal_too(cl: Cluster) -> None:
    deny = cl.binding("alice", ResourceType.TOPIC, "orders-2", AclOperation.READ, DENY)
    cl.create_acls([deny])
    try:
        assert "'orders-2'" in _forbidden(_get(cl, "/search", "alice", topic="orders-2"))
        assert _total(cl, "alice", "orders-1") == RECORDS
        # A deny names one operation: DESCRIBE, implied by the prefixed READ allow, stays.
        assert [t["name"] for t in _get(cl, "/topics", "alice").json()] == ["orders-1", "orders-2"]
    finally:
        assert cl.delete_acls([deny])
    assert _total(cl, "alice", "orders-2") == RECORDS


# --------------------------------------------------------------------------- schemathesis

SCHEMA = schemathesis.openapi.from_path(SPEC)
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
EXAMPLES = 10
REALISTIC = {"q": ["", "value.level:error", "value.n:[1 TO 9]"], "field": ["key", "value.level"]}


def _fuzz(
    cl: Cluster, op: Any, mode: GenerationMode, session: requests.Session, calls: Counter[int]
) -> None:
    basic = "Basic " + base64.b64encode(f"admin:{cl.passwords['admin']}".encode()).decode()
    positive = mode == GenerationMode.POSITIVE

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode), data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        # Schemathesis makes up credentials of its own: the admin's replace them.
        if case.headers is None:
            case.headers = {}
        case.headers["Authorization"] = basic
        # Positive cases name a real topic, so they get past the lookup to the work.
        if positive:
            for params in (case.query, case.path_parameters):
                if isinstance(params, dict) and "topic" in params:
                    params["topic"] = "orders-1"
            if isinstance(case.query, dict):
                for name in REALISTIC.keys() & case.query.keys():
                    case.query[name] = data.draw(st.sampled_from(REALISTIC[name]))
        response = case.call_and_validate(
            base_url=cl.srv.http, session=session, checks=CHECKS, timeout=30
        )
        calls[response.status_code] += 1

    run()


@pytest.mark.parametrize("label", sorted(op.ok().label for op in SCHEMA.get_all_operations()))
def test_schemathesis_with_credentials_finds_no_server_error(cl: Cluster, label: str) -> None:
    op = SCHEMA.find_operation_by_label(label)
    assert op is not None
    calls: Counter[int] = Counter()
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if op.query else [])
    with requests.Session() as session:
        for mode in modes:
            _fuzz(cl, op, mode, session, calls)
    assert 401 not in calls, calls  # the credentials were sent and taken
    if label.startswith("DELETE") or "{group}" in label:
        assert calls[404] > 0, calls  # made-up token ids and group names
    else:
        assert any(200 <= s < 300 for s in calls), calls


def test_failed_logins_are_limited_per_address(cl: Cluster) -> None:
    """Last: the address stays blocked for a minute after this."""
    for _ in range(40):
        r = httpx.get(cl.srv.http + "/topics", auth=("alice", "guess"), timeout=20)
        if r.status_code == 429:
            break
        _unauthorized(r)
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert "too many failed authentications" in r.json()["detail"]
    # Blocked means blocked: the right password too, until the failures age out.
    assert _get(cl, "/topics", "alice").status_code == 429


def test_http_auth_none_serves_anonymous_under_the_acls(tmp_path: Path) -> None:
    """CHRONIK_HTTP_AUTH=none: every request is User:ANONYMOUS, and the ACLs still apply."""
    with secure_cluster(tmp_path, ()) as c:
        for t in ("public", "private"):
            c.create_topic(t)
        c.create_acls([c.binding("ANONYMOUS", ResourceType.TOPIC, "public", AclOperation.READ)])
        r = httpx.get(c.srv.http + "/search", params={"topic": "public"}, timeout=20)
        assert r.status_code == 200 and r.json()["total"] == 0, r.text
        r = httpx.get(c.srv.http + "/search", params={"topic": "private"}, timeout=20)
        assert "User:ANONYMOUS" in _forbidden(r) and "'private'" in r.json()["detail"]
        names = [t["name"] for t in httpx.get(c.srv.http + "/topics", timeout=20).json()]
        assert names == ["public"]
        # Credentials are not asked for, and tokens need a user.
        r = httpx.post(c.srv.http + "/tokens", json={}, timeout=20)
        assert "belong to users" in _forbidden(r)


def test_without_users_the_401_says_how_to_create_one(tmp_path: Path) -> None:
    """An open /metrics skips the cluster check too; /indexer, not open, does not."""
    args = ("--http-auth", "required", "--http-open-paths", "/readyz,/metrics")
    with running_server(tmp_path, args) as srv:
        r = httpx.get(srv.http + "/topics", timeout=20)
        assert "python -m app users set NAME" in _unauthorized(r)
        assert httpx.get(srv.http + "/metrics", timeout=20).status_code == 200
        _unauthorized(httpx.get(srv.http + "/indexer", timeout=20))
