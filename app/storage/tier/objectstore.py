"""Object store for sealed search segments and cold fetch reads: a local directory or an
S3-compatible bucket behind one async interface. Requests are retried here rather than in
botocore, so every attempt is timed and counted in one place and the total wait is bounded."""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
import itertools
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, TypeVar
from urllib.parse import unquote, urlparse

from app.storage.errors import StorageError
from app.storage.fileutil import TrickleSync, atomic_write, fsync_dir
from app.storage.metrics import OBJECTSTORE_REQUESTS, OBJECTSTORE_SECONDS

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

ATTEMPTS = 3
BACKOFF_S = (0.05, 0.2)
_CHUNK = 8 << 20
_tmp_counter = itertools.count()


class ObjectStoreError(StorageError):
    """An object store request that still failed after all retries."""


class ObjectNotFound(ObjectStoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} not found")
        self.key = key


def _check_key(key: str, prefix: bool) -> None:
    parts = key.split("/")
    bad = ("..",) if prefix else ("", ".", "..")
    if key.startswith("/") or (not key and not prefix) or any(p in bad for p in parts):
        what = "prefix" if prefix else "key"
        raise ValueError(f"invalid object {what} {key!r}: must be a relative '/'-separated path")


def _tmp_path(dest: Path) -> Path:
    # The pattern of fileutil.atomic_write, so remove_stale_tmp and list() skip both.
    return dest.with_name(f".{dest.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")


def _fsync_replace(tmp: Path, dest: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def _copy_atomic(src: BinaryIO, dest: Path, sync_dir: bool) -> None:
    tmp = _tmp_path(dest)
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, TrickleSync(out), 1 << 20)
        _fsync_replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(dest.parent)


class ObjectStore(abc.ABC):
    """Validation, retries and metrics; subclasses implement one attempt of each op. Files
    fetched by get_file are cache entries, synced but with no directory fsync: a rename lost
    in a crash is only a miss, while renamed unwritten blocks would be a corrupt segment."""

    url: str

    @abc.abstractmethod
    async def start(self) -> None: ...
    @abc.abstractmethod
    async def close(self) -> None: ...

    async def put_file(self, key: str, path: Path) -> None:
        await self._retry("put", key, self._put_file, key, Path(path))

    async def put(self, key: str, data: bytes) -> None:
        await self._retry("put", key, self._put, key, data)

    async def get(self, key: str) -> bytes:
        return await self._retry("get", key, self._get, key)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"invalid range start={start} length={length}")
        return await self._retry("get_range", key, self._get_range, key, start, length)

    async def get_file(self, key: str, path: Path) -> None:
        await self._retry("get", key, self._get_file, key, Path(path))

    async def list(self, prefix: str = "") -> builtins.list[str]:
        return await self._retry("list", prefix, self._list, prefix)

    async def delete(self, key: str) -> None:
        await self._retry("delete", key, self._delete, key)

    def _missing(self, op: str, e: Exception) -> bool:
        """Whether a backend error means the key does not exist."""
        return False

    async def _retry(self, op: str, key: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        _check_key(key, prefix=op == "list")
        for n in range(1, ATTEMPTS + 1):
            t0 = time.perf_counter()
            outcome = "error"
            try:
                result = await fn(*args)
                outcome = "ok"
                return result
            except ObjectNotFound:
                outcome = "not_found"
                raise
            except ValueError:
                raise
            except Exception as e:
                if self._missing(op, e):
                    outcome = "not_found"
                    raise ObjectNotFound(key) from e
                if n == ATTEMPTS:
                    log.warning("object store %s: %s of %r failed: %r", self.url, op, key, e)
                    raise ObjectStoreError(
                        f"object store {op} of {key!r} at {self.url} failed after "
                        f"{ATTEMPTS} attempts: {e!r}"
                    ) from e
                log.debug("object store %s: %s of %r attempt %d: %r", self.url, op, key, n, e)
            finally:
                OBJECTSTORE_SECONDS.labels(op).observe(time.perf_counter() - t0)
                OBJECTSTORE_REQUESTS.labels(op, outcome).inc()
            await asyncio.sleep(BACKOFF_S[min(n, len(BACKOFF_S)) - 1])
        raise AssertionError("unreachable")

    @abc.abstractmethod
    async def _put_file(self, key: str, path: Path) -> None: ...
    @abc.abstractmethod
    async def _put(self, key: str, data: bytes) -> None: ...
    @abc.abstractmethod
    async def _get(self, key: str) -> bytes: ...
    @abc.abstractmethod
    async def _get_range(self, key: str, start: int, length: int) -> bytes: ...
    @abc.abstractmethod
    async def _get_file(self, key: str, path: Path) -> None: ...
    @abc.abstractmethod
    async def _list(self, prefix: str) -> builtins.list[str]: ...
    @abc.abstractmethod
    async def _delete(self, key: str) -> None: ...


def _in_thread(fn: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return run


# A key that names a directory, or passes through a file, is as absent as on S3.
_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class FileObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.absolute().as_uri()

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as e:
            log.warning("object store %s is not usable: %s", self.url, e)

    async def close(self) -> None:
        pass

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except _MISSING as e:
            raise ObjectNotFound(key) from e

    def _make_parent(self, dest: Path) -> None:
        # New directories are fsynced into their parents too, or a crash could lose a synced
        # object together with the directory entry leading to it.
        missing = []
        d = dest.parent
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            d.mkdir(exist_ok=True)
            fsync_dir(d.parent)

    @_in_thread
    def _put(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        self._make_parent(dest)
        atomic_write(dest, data)

    @_in_thread
    def _put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        self._make_parent(dest)
        with open(path, "rb") as src:
            _copy_atomic(src, dest, sync_dir=True)

    @_in_thread
    def _get(self, key: str) -> bytes:
        with self._open(key) as f:
            return f.read()

    @_in_thread
    def _get_range(self, key: str, start: int, length: int) -> bytes:
        # One pread suffices: regular files only return short at end of file.
        with self._open(key) as f:
            return os.pread(f.fileno(), length, start)

    @_in_thread
    def _get_file(self, key: str, path: Path) -> None:
        with self._open(key) as src:
            path.parent.mkdir(parents=True, exist_ok=True)
            _copy_atomic(src, path, sync_dir=False)

    @_in_thread
    def _list(self, prefix: str) -> builtins.list[str]:
        def fail(e: OSError) -> None:
            if not isinstance(e, _MISSING):
                raise e

        head = prefix.rpartition("/")[0]
        keys = []
        for dirpath, _dirs, files in os.walk(self._path(head) if head else self.root, onerror=fail):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                if not (name.startswith(".") and name.endswith(".tmp")) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    @_in_thread
    def _delete(self, key: str) -> None:
        # No directory fsync: an object that reappears after a crash is only garbage to
        # collect again, never a wrong answer.
        with contextlib.suppress(*_MISSING):
            self._path(key).unlink()


def _error_code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class S3ObjectStore(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        env = os.environ
        self.region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"
        self._client_cm: Any = None
        self._client: Any = None
        self._transfer: Any = None
        self._bucket_ready = False
        self._closed = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._ready()
        except Exception as e:
            log.warning("object store %s not available yet, will retry on use: %r", self.url, e)

    async def close(self) -> None:
        self._closed = True
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def _ready(self) -> Any:
        """The client, with the bucket known to exist. Lazy, so the service starts, and later
        heals, while the store is down."""
        if self._closed:
            raise ObjectStoreError(f"object store {self.url} is closed")
        if self._client is None or not self._bucket_ready:
            async with self._lock:
                if self._client is None:
                    self._client = await self._open_client()
                if not self._bucket_ready:
                    await self._ensure_bucket(self._client)
                    self._bucket_ready = True
        return self._client

    async def _open_client(self) -> Any:
        # Imported here so file-only deployments need neither aioboto3 nor botocore.
        import aioboto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        config = Config(
            connect_timeout=2,
            read_timeout=30,
            # total_max_attempts, not max_attempts, which counts retries: 1 would double ours.
            retries={"total_max_attempts": 1, "mode": "standard"},
            # Custom endpoints (MinIO, Ceph) rarely resolve virtual-hosted bucket names, and
            # several reject the checksum trailers newer botocore sends by default.
            s3={"addressing_style": "path"} if self.endpoint_url else None,
            request_checksum_calculation="when_required",
        )
        # aioboto3 buffers up to (concurrency + queue) chunks of a transfer in memory.
        self._transfer = TransferConfig(
            multipart_threshold=_CHUNK,
            multipart_chunksize=_CHUNK,
            max_concurrency=4,
            max_io_queue=2,
        )
        self._client_cm = aioboto3.Session().client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )
        return await self._client_cm.__aenter__()

    async def _ensure_bucket(self, client: Any) -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except Exception as e:
            # 403: no s3:ListBucket on the bucket, which object access does not need.
            if _error_code(e) == "403":
                return
            if _error_code(e) not in ("404", "NoSuchBucket", "NotFound"):
                raise
        extra: dict[str, Any] = {}
        if self.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(Bucket=self.bucket, **extra)
            log.info("created object store bucket %s", self.bucket)
        except Exception as e:
            if _error_code(e) != "BucketAlreadyOwnedByYou":
                raise

    def _missing(self, op: str, e: Exception) -> bool:
        code = _error_code(e)
        if code == "NoSuchBucket":
            self._bucket_ready = False  # deleted under us: recreate it on the next attempt
        # HEAD answers a bare 404 without a body to name the error.
        return op in ("get", "get_range") and code in ("NoSuchKey", "404", "NotFound")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _put_file(self, key: str, path: Path) -> None:
        client = await self._ready()
        await client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)

    async def _put(self, key: str, data: bytes) -> None:
        client = await self._ready()
        await client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    async def _get(self, key: str, range_: str | None = None) -> bytes:
        client = await self._ready()
        extra = {"Range": range_} if range_ else {}
        resp = await client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        async with resp["Body"] as body:
            data: bytes = await body.read()
            return data

    async def _get_range(self, key: str, start: int, length: int) -> bytes:
        # A zero-length range cannot be expressed, so read one byte to still report a missing
        # key the way the file store does.
        try:
            data = await self._get(key, f"bytes={start}-{start + max(length, 1) - 1}")
        except Exception as e:
            if _error_code(e) == "InvalidRange":
                return b""  # start is at or past the end of the object
            raise
        return data[:length]

    async def _get_file(self, key: str, path: Path) -> None:
        client = await self._ready()
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        tmp = _tmp_path(path)
        try:
            await client.download_file(self.bucket, self._key(key), str(tmp), Config=self._transfer)
            await asyncio.to_thread(_fsync_replace, tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def _list(self, prefix: str) -> builtins.list[str]:
        client = await self._ready()
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: builtins.list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        async for page in pages:
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", ()))
        return sorted(keys)

    async def _delete(self, key: str) -> None:
        client = await self._ready()
        await client.delete_object(Bucket=self.bucket, Key=self._key(key))


def open_object_store(
    url: str | None, data_dir: Path, endpoint_url: str | None = None
) -> ObjectStore:
    """The store named by the object store URL setting; no URL keeps objects under data_dir."""
    if not url:
        return FileObjectStore(Path(data_dir) / "objects")
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        return FileObjectStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3ObjectStore(parsed.netloc, unquote(parsed.path).strip("/"), endpoint_url)
    raise ValueError(
        f"unsupported object store URL {url!r}: expected file:///absolute/path or "
        "s3://bucket[/prefix]"
    )
