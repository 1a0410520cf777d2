from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY

from app.storage.tier.objectstore import (
    FileObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    open_object_store,
)

BAD_KEYS = ["", "/abs", "a/../b", "..", "a//b", "a/", "./a"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def requests(op: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "chronik_objectstore_requests_total", {"op": op, "outcome": outcome}
    )
    return value or 0.0


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(var, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


async def exercise(store: ObjectStore, tmp_path: Path) -> None:
    """The behaviours every backend shares."""
    tmp_path.mkdir(exist_ok=True)
    await store.start()
    try:
        await store.put("a/b/one", b"0123456789")
        await store.put("a/two", b"")
        await store.put("c", b"x")
        assert await store.get("a/b/one") == b"0123456789"
        assert await store.get("a/two") == b""
        await store.put("c", b"replaced")
        assert await store.get("c") == b"replaced"

        assert await store.get_range("a/b/one", 2, 3) == b"234"
        assert await store.get_range("a/b/one", 7, 10) == b"789"  # short at the end
        assert await store.get_range("a/b/one", 10, 5) == b""
        assert await store.get_range("a/b/one", 3, 0) == b""

        src = tmp_path / "src.bin"
        src.write_bytes(b"file contents")
        await store.put_file("a/b/file", src)
        dest = tmp_path / "down" / "file.bin"
        await store.get_file("a/b/file", dest)
        assert dest.read_bytes() == b"file contents"
        assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]  # no tmp left behind

        assert await store.list() == ["a/b/file", "a/b/one", "a/two", "c"]
        assert await store.list("a/") == ["a/b/file", "a/b/one", "a/two"]
        assert await store.list("a/b/o") == ["a/b/one"]
        assert await store.list("zzz/") == []

        await store.delete("a/b/one")
        await store.delete("a/b/one")  # missing: not an error
        assert await store.list("a/") == ["a/b/file", "a/two"]

        before = requests("get", "not_found")
        for missing in (
            store.get("a/b/one"),
            store.get_range("a/b/one", 0, 1),
            store.get_range("nope", 0, 0),
            store.get_file("nope", tmp_path / "nope"),
        ):
            with pytest.raises(ObjectNotFound):
                await missing
        assert requests("get", "not_found") == before + 2  # one attempt each: not retried
        assert not (tmp_path / "nope").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

        for key in BAD_KEYS:
            with pytest.raises(ValueError):
                await store.put(key, b"x")
            with pytest.raises(ValueError):
                await store.get(key)
        with pytest.raises(ValueError):
            await store.list("../x")
        with pytest.raises(ValueError):
            await store.get_range("c", -1, 1)
    finally:
        await store.close()


async def test_file_store(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = FileObjectStore(root)
    assert store.url == root.as_uri()
    await exercise(store, tmp_path / "work")
    assert sorted(p.name for p in root.rglob("*")) == ["a", "b", "c", "file", "two"]
    # A crashed writer's temporary file is not an object.
    (root / "a" / ".two.123.0.tmp").write_bytes(b"partial")
    assert await FileObjectStore(root).list("a/") == ["a/b/file", "a/two"]


async def test_open_object_store(tmp_path: Path) -> None:
    default = open_object_store(None, tmp_path)
    assert isinstance(default, FileObjectStore) and default.root == tmp_path / "objects"
    assert isinstance(open_object_store("", tmp_path), FileObjectStore)
    explicit = open_object_store(f"file://{tmp_path}/x", tmp_path)
    assert isinstance(explicit, FileObjectStore) and explicit.root == tmp_path / "x"
    endpoint = "http://localhost:9000"
    s3 = open_object_store("s3://bucket/some/prefix/", tmp_path, endpoint)
    assert isinstance(s3, S3ObjectStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "some/prefix", endpoint)
    assert s3.url == "s3://bucket/some/prefix"
    bare = open_object_store("s3://bucket", tmp_path)
    assert isinstance(bare, S3ObjectStore) and bare.prefix == "" and bare.url == "s3://bucket"
    for bad in ("http://x/y", "file://relative/path", "s3:///no-bucket", "/plain/path"):
        with pytest.raises(ValueError, match="object store URL"):
            open_object_store(bad, tmp_path)


async def test_s3_store(s3_endpoint: str, tmp_path: Path) -> None:
    store = open_object_store("s3://chronik-test/some/prefix", tmp_path, s3_endpoint)
    await exercise(store, tmp_path)
    # Keys are relative to the prefix, and other prefixes in the bucket are not listed.
    other = open_object_store("s3://chronik-test/other", tmp_path, s3_endpoint)
    await other.start()
    try:
        await other.put("c", b"elsewhere")
        assert await other.list() == ["c"]
    finally:
        await other.close()
    store = open_object_store("s3://chronik-test/some/prefix", tmp_path, s3_endpoint)
    await store.start()
    try:
        assert await store.get("c") == b"replaced"
        assert await store.list() == ["a/b/file", "a/two", "c"]
    finally:
        await store.close()


async def test_s3_multipart_file(s3_endpoint: str, tmp_path: Path) -> None:
    data = os.urandom(20 << 20)
    src = tmp_path / "segment.bin"
    src.write_bytes(data)
    store = S3ObjectStore("chronik-test", "some/prefix", s3_endpoint)
    await store.start()
    try:
        await store.put_file("segments/big.seg", src)
        head = await store._client.head_object(
            Bucket="chronik-test", Key="some/prefix/segments/big.seg"
        )
        assert head["ContentLength"] == len(data)
        assert head["ETag"].strip('"').endswith("-3")  # three 8 MiB parts: multipart upload
        start, length = (8 << 20) - 12345, 1 << 20  # straddles the end of the first part
        got = await store.get_range("segments/big.seg", start, length)
        assert got == data[start : start + length]
        dest = tmp_path / "cache" / "big.seg"
        await store.get_file("segments/big.seg", dest)
        assert dest.read_bytes() == data
        await store.delete("segments/big.seg")
    finally:
        await store.close()


async def test_s3_unreachable_then_recovers(s3_endpoint: str, tmp_path: Path) -> None:
    port = free_port()
    store = S3ObjectStore("chronik-late", "p", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    await store.start()  # must not raise: the service starts while S3 is down
    errors_before = requests("put", "error")
    with pytest.raises(ObjectStoreError) as info:
        await store.put("k", b"v")
    assert not isinstance(info.value, ObjectNotFound)
    assert "put" in str(info.value) and "'k'" in str(info.value)
    assert time.monotonic() - t0 < 5
    assert requests("put", "error") == errors_before + 3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        await store.put("k", b"v")  # the bucket is created on this first use
        assert await store.get("k") == b"v"
        assert await store.list() == ["k"]
    finally:
        await store.close()
        server.stop()
    with pytest.raises(ObjectStoreError, match="closed"):
        await store.get("k")
