"""The console's shell over HTTP: served at / and /console/ without credentials (it holds no
data), kept out of the OpenAPI spec, and GET /whoami telling the page who the caller is,
whether auth is on and where Kafka clients connect (for the hits' kcat commands)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .aclcluster import secure_cluster
from .conftest import Server

pytestmark = pytest.mark.timeout(60)


def test_the_shell_and_its_modules_are_served_and_whoami_is_anonymous(server: Server) -> None:
    page = httpx.get(server.http + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="whoami"' in page.text and "/console/js/main.js" in page.text
    for path in ("/console/js/main.js", "/console/js/search.js", "/console/console.css"):
        r = httpx.get(server.http + path, timeout=10)
        assert r.status_code == 200, path
    assert "javascript" in httpx.get(server.http + "/console/js/api.js").headers["content-type"]
    assert httpx.get(server.http + "/console/js/nope.js", timeout=10).status_code == 404
    assert httpx.get(server.http + "/console/../app.py", timeout=10).status_code == 404
    me = httpx.get(server.http + "/whoami", timeout=10).json()
    assert me == {
        "principal": "User:ANONYMOUS",
        "user": None,
        "auth": "none",
        "authenticated": False,
        "kafka_bootstrap": server.bootstrap,
    }
    spec = httpx.get(server.http + "/openapi.json", timeout=10).json()
    assert "/whoami" in spec["paths"]
    assert "/" not in spec["paths"] and not any(p.startswith("/console") for p in spec["paths"])


def test_with_auth_the_shell_is_open_and_whoami_names_the_user(tmp_path: Path) -> None:
    extra = ("--http-auth", "required", "--http-open-paths", "/readyz,/healthz")
    with secure_cluster(tmp_path, ("alice",), extra) as cl:
        http = cl.srv.http
        assert httpx.get(http + "/", timeout=10).status_code == 200
        assert httpx.get(http + "/console/js/main.js", timeout=10).status_code == 200
        denied = httpx.get(http + "/whoami", timeout=10)
        assert denied.status_code == 401 and "Basic" in denied.headers["www-authenticate"]
        # The shell being open opens nothing else.
        assert httpx.get(http + "/topics", timeout=10).status_code == 401
        me = httpx.get(http + "/whoami", auth=("alice", cl.passwords["alice"]), timeout=10)
        assert me.json() == {
            "principal": "User:alice",
            "user": "alice",
            "auth": "required",
            "authenticated": True,
            "kafka_bootstrap": cl.srv.bootstrap,
        }
