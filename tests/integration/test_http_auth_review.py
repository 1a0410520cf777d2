"""Findings of the security review of HTTP authentication (issue 16), on a real server with
CHRONIK_HTTP_AUTH=required: guesses sent at once are limited as those sent one after
another, a credential replaced with the same salt stops the old password at once, and the
open paths are exact."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.security import scram
from app.security.store import FILE_NAME, SecurityStore

from .conftest import Server, running_server
from .secservers import add_user

PER_MINUTE = 5


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("httpreview")
    add_user(base / "data", "alice", "old password", mechanisms=("SCRAM-SHA-256",))
    args = (
        "--http-auth",
        "required",
        "--http-open-paths",
        "/readyz,/healthz,/metrics",
        "--sasl-failures-per-minute",
        str(PER_MINUTE),
        "--index-workers",
        "0",
    )
    with running_server(base, args) as s:
        yield s


def test_a_credential_replaced_with_the_same_salt_stops_the_old_password(srv: Server) -> None:
    url = srv.http + "/topics"
    assert httpx.get(url, auth=("alice", "old password"), timeout=20).status_code == 200
    store = SecurityStore(srv.data_dir / FILE_NAME)
    try:
        old = store.credential("alice", "SCRAM-SHA-256")
        assert old is not None
        # What an AdminClient's AlterUserScramCredentials may send: its own salt, here the old.
        new = scram.derive("SCRAM-SHA-256", b"new password", salt=old.salt)
        store.set_credential("alice", new)
    finally:
        store.close()
    assert httpx.get(url, auth=("alice", "old password"), timeout=20).status_code == 401
    assert httpx.get(url, auth=("alice", "new password"), timeout=20).status_code == 200


def test_open_paths_are_exact(srv: Server) -> None:
    with httpx.Client(base_url=srv.http, timeout=20) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", params={"x": "1"}).status_code == 200
        for path in ("/HEALTHZ", "/metrics/../topics", "/healthz/../topics", "/topics"):
            r = c.get(path)
            assert r.status_code in (401, 404), (path, r.status_code)
            assert r.status_code == 404 or "WWW-Authenticate" in r.headers
        r = c.get("/healthz/")  # at most a redirect to the open path, never its content
        assert r.status_code in (307, 401, 404), r.status_code


def test_security_sqlite_is_private(srv: Server) -> None:
    for p in (srv.data_dir / FILE_NAME, Path(f"{srv.data_dir / FILE_NAME}-wal")):
        assert p.stat().st_mode & 0o077 == 0, (p, oct(p.stat().st_mode))


def test_guesses_sent_at_once_are_limited_as_one_after_another(srv: Server) -> None:
    """Last: the address stays blocked for a minute after this."""

    async def burst() -> Counter[int]:
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=srv.http, timeout=30, limits=limits) as c:
            rs = await asyncio.gather(
                *(c.get("/topics", auth=("alice", f"guess {i}")) for i in range(60))
            )
        return Counter(r.status_code for r in rs)

    statuses = asyncio.run(burst())
    # Each 401 is a password the server checked; the others were refused unchecked.
    assert statuses[401] <= PER_MINUTE and statuses[429] >= 60 - PER_MINUTE, statuses
    r = httpx.get(srv.http + "/topics", auth=("alice", "new password"), timeout=20)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
