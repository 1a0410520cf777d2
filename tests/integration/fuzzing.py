"""Tools of the protocol fuzz test (test_protocol_fuzz.py): probes over raw sockets, valid
requests of any API from kio's types, byte mutations, record batches that are decompression
bombs, and two watchers of the server under test (its memory, and a real client that keeps
producing and consuming through it all)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import socket
import struct
import threading
import time
import types
import typing
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import crc32c
import psutil
from hypothesis import strategies as st
from kio.static.primitive import Records

from .clients import confluent_consumer
from .rawkafka import (
    RawKafka,
    Rec,
    build_batch,
    encode_body,
    encode_request,
    encode_request_header,
    request_class,
    write_uvarint,
)

PROBE_TIMEOUT = 6.0
SENTINEL_CID = 0x5E5E5E5E
# ApiVersions v0 sent after the probe's bytes on the same connection: responses go out in
# request order, so its answer means every frame before it was answered (or needed none).
SENTINEL = encode_request(request_class(18, 0)(), SENTINEL_CID)
_SENTINEL_ID = struct.pack(">i", SENTINEL_CID)
MiB = 1 << 20
GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4

# APIs whose valid requests may wait by design (a long poll, a rebalance), so a probe that
# decodes as one of them may go unanswered for a while.
WAITING_APIS = {1, 11, 14}


# --------------------------------------------------------------------------- probes


def probe(
    bootstrap: str,
    data: bytes,
    *,
    sentinel: bool = True,
    shut_wr: bool = False,
    timeout: float = PROBE_TIMEOUT,
) -> str:
    """Send `data` on a new connection (then the sentinel, unless told not to; then a FIN
    if `shut_wr`) and read until the sentinel is answered ("answered"), the server closes
    ("closed") or `timeout` passes ("hang")."""
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        try:
            sock.sendall(data + (SENTINEL if sentinel else b""))
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            return "closed"
        return _await_answer(sock, time.monotonic() + timeout, sentinel)
    finally:
        sock.close()


def probe_many(bootstrap: str, datas: list[bytes], timeout: float = PROBE_TIMEOUT) -> list[str]:
    """As probe, with every connection open at the same time."""
    host, port = bootstrap.rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=timeout) for _ in datas]
    try:
        sent = []
        for sock, data in zip(socks, datas, strict=True):
            try:
                sock.sendall(data + SENTINEL)
                sent.append(True)
            except OSError:
                sent.append(False)
        deadline = time.monotonic() + timeout
        return [
            _await_answer(sock, deadline, True) if ok else "closed"
            for sock, ok in zip(socks, sent, strict=True)
        ]
    finally:
        for sock in socks:
            sock.close()


def _await_answer(sock: socket.socket, deadline: float, sentinel: bool) -> str:
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "hang"
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            return "hang"
        except OSError:
            return "closed"
        if not chunk:
            return "closed"
        buf += chunk
        while len(buf) >= 8:
            (size,) = struct.unpack_from(">i", buf)
            if len(buf) < 4 + size:
                break
            if sentinel and buf[4:8] == _SENTINEL_ID:
                return "answered"
            del buf[: 4 + size]


def frame(api_key: int, version: int, body_bytes: bytes, flexible: bool, cid: int = 7) -> bytes:
    payload = encode_request_header(api_key, version, cid, "fuzz", flexible) + body_bytes
    return struct.pack(">i", len(payload)) + payload


def body_frame(body: Any, cid: int = 7) -> bytes:
    return encode_request(body, cid, "fuzz")


# RawKafka's request builders, without a connection.
_BODIES = RawKafka.__new__(RawKafka)


def produce_frame(topic: str, records: bytes, cid: int = 7) -> bytes:
    return body_frame(_BODIES.produce_request(topic, 0, records), cid)


def fetch_frame(topic: str, max_bytes: int, cid: int = 7) -> bytes:
    return body_frame(_BODIES.fetch_request(topic, 0, 0, max_bytes=max_bytes), cid)


# --------------------------------------------------------------------------- requests


def _small_batches() -> st.SearchStrategy[bytes]:
    recs = st.lists(
        st.builds(Rec, st.none() | st.binary(max_size=16), st.none() | st.binary(max_size=64)),
        min_size=1,
        max_size=4,
    )
    return recs.map(lambda rs: build_batch(rs))


st.register_type_strategy(Records, st.one_of(_small_batches(), st.binary(max_size=80)).map(Records))


def _ms(value: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=value)


def _tame(body: Any) -> Any:
    """Keep random valid requests from doing expensive things on purpose: topics created
    only in validate-only mode with one partition, fetch long polls of at most 200 ms."""
    key = int(body.__api_key__)
    if key in (19, 37):
        fields = {f.name for f in dataclasses.fields(body)}
        if "validate_only" not in fields:
            return dataclasses.replace(body, topics=())
        topics = tuple(
            dataclasses.replace(t, num_partitions=1, assignments=())
            if hasattr(t, "num_partitions")
            else dataclasses.replace(t, count=1, assignments=None)
            for t in body.topics
        )
        return dataclasses.replace(body, topics=topics, validate_only=True)
    if key == 1:
        return dataclasses.replace(body, max_wait=_ms(min(body.max_wait // _ms(1), 200)))
    return body


def _encodable(body: Any) -> bytes | None:
    try:
        return body_frame(body)
    except Exception:
        # from_type makes values kio cannot encode (a timedelta past i32 milliseconds)
        return None


def requests(pairs: list[tuple[int, int]]) -> st.SearchStrategy[bytes]:
    """Whole, valid request frames of the given (api key, version) pairs."""
    bodies = st.sampled_from(pairs).flatmap(lambda p: st.from_type(request_class(*p)))
    return bodies.map(_tame).map(_encodable).filter(lambda f: f is not None)  # type: ignore[return-value]


def request_bodies(pairs: list[tuple[int, int]]) -> st.SearchStrategy[Any]:
    bodies = st.sampled_from(pairs).flatmap(lambda p: st.from_type(request_class(*p)))
    return bodies.map(_tame).filter(lambda b: _encodable(b) is not None)


# --------------------------------------------------------------------------- mutations

_INTS = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x7FFFFFFF, -(2**31), 2**16]
_VARINTS = [b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x08", b"\xff\xff\xff\x7f"]
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 8)),
    st.tuples(st.just("int32"), st.integers(0, 1 << 16), st.sampled_from(_INTS)),
    # a compact count or length past anything a frame holds
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.sampled_from(_VARINTS)),
)


def mutate(whole: bytes, muts: list[tuple[str, int, Any]], fix_length: bool = True) -> bytes:
    """`whole` (a frame with its size prefix) with the mutations applied to what follows the
    prefix; the prefix then states the new size, unless `fix_length` is false."""
    b = bytearray(whole[4:])
    for op, pos, arg in muts:
        if not b:
            break
        p = pos % len(b)
        if op == "flip":
            b[p] ^= 1 << arg
        elif op == "set":
            b[p] = arg
        elif op == "insert":
            b[p:p] = arg
        elif op == "delete":
            del b[p : p + arg]
        else:
            b[p : p + 4] = struct.pack(">i", arg)
    size = len(b) if fix_length else struct.unpack_from(">i", whole)[0]
    return struct.pack(">i", size) + bytes(b)


def filled(cls: type) -> Any:
    """A request (or nested entity) with every field set, every array holding one element,
    every nullable field present: every array of the schema has a place in its encoding."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _fill(hints[f.name]) for f in dataclasses.fields(cls)})


def _fill(t: Any) -> Any:
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return _fill(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return (_fill(args[0]),)
    if dataclasses.is_dataclass(t):
        return filled(t)  # type: ignore[arg-type]
    if issubclass(t, bool):
        return False
    if issubclass(t, datetime.timedelta):
        return _ms(100)
    if issubclass(t, int):
        return 1
    if issubclass(t, Records):
        return build_batch([Rec(b"k", b"v")])
    if issubclass(t, bytes):
        return b"fuzz"
    if issubclass(t, str):
        return "fuzz"
    if t is uuid.UUID:
        return uuid.UUID(int=1)
    raise TypeError(f"no filler for {t!r}")


def array_paths(body: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths to every non-empty array of a request body, nested ones through their first
    element."""
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        if isinstance(value, tuple) and value:
            yield (*path, f.name)
            if dataclasses.is_dataclass(value[0]):
                yield from array_paths(value[0], (*path, f.name, "0"))


def _with_array(body: Any, path: tuple[str, ...], keep: int) -> Any:
    name, rest = path[0], path[1:]
    value = getattr(body, name)
    if not rest:
        return dataclasses.replace(body, **{name: value[:keep]})
    first = _with_array(value[0], rest[1:], keep)
    return dataclasses.replace(body, **{name: (first,)})


def huge_count_frame(body: Any, path: tuple[str, ...], count: int = 2**31 - 1) -> bytes:
    """The request with the array at `path` holding one element but counting `count`. The
    count's place is where the encodings with one and with no element first differ."""
    one = encode_body(_with_array(body, path, 1))
    zero = encode_body(_with_array(body, path, 0))
    at = next(i for i, (x, y) in enumerate(zip(one, zero, strict=False)) if x != y)
    flexible = bool(body.__flexible__)
    if flexible:
        patched = one[:at] + write_uvarint(count + 1) + one[at + 1 :]
    else:
        at -= 3
        patched = one[:at] + struct.pack(">i", count) + one[at + 4 :]
    return frame(int(body.__api_key__), int(body.__version__), patched, flexible)


# --------------------------------------------------------------------------- bombs


def batch(codec: int, payload: bytes, count: int = 1) -> bytes:
    """A RecordBatch v2 with a valid CRC-32C around an already compressed payload."""
    now = int(time.time() * 1000)
    tail = struct.pack(">hiqqqhii", codec, count - 1, now, now, -1, -1, -1, count) + payload
    crc = crc32c.crc32c(tail)
    return struct.pack(">qiib", 0, len(tail) + 9, -1, 2) + struct.pack(">I", crc) + tail


def gzip_zeros(n_mib: int) -> bytes:
    """A valid gzip stream of n MiB of zeros in a fraction of a second: after a full flush
    the compressor's output for the same input repeats byte for byte."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    head = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    crc = 0
    for _ in range(n_mib):
        crc = zlib.crc32(chunk, crc)
    trailer = struct.pack("<II", crc, (n_mib * MiB) & 0xFFFFFFFF)
    return head + block * (n_mib - 1) + tail[:-8] + trailer


def zstd_zeros(n_mib: int) -> bytes:
    import zstandard

    c = zstandard.ZstdCompressor(level=1).compressobj()
    block = bytes(MiB)
    return b"".join(c.compress(block) for _ in range(n_mib)) + c.flush()


def lz4_zeros(n_mib: int) -> bytes:
    import lz4.frame

    c = lz4.frame.LZ4FrameCompressor(block_size=lz4.frame.BLOCKSIZE_MAX4MB)
    block = bytes(MiB)
    return c.begin() + b"".join(c.compress(block) for _ in range(n_mib)) + c.flush()


def snappy_zeros(n_blocks: int) -> bytes:
    """snappy-java framing of n blocks of 64 KiB of zeros (about 3 KB each)."""
    import cramjam

    raw = bytes(cramjam.snappy.compress_raw(bytes(64 * 1024)))
    head = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    return head + (struct.pack(">i", len(raw)) + raw) * n_blocks


def tiny_records(n: int) -> bytes:
    """n keyless, valueless records: 7 bytes each, millions from a few KB compressed."""
    return b"".join(bytes([12, 0, 0, (i % 64) << 1, 1, 1, 0]) for i in range(n))


# --------------------------------------------------------------------------- watchers


class RssWatch(threading.Thread):
    """Samples the RSS of the server process and of its process tree."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.stop_event = threading.Event()
        self.base_main, self.base_tree = self.sample()
        self.peak_main, self.peak_tree = self.base_main, self.base_tree

    def sample(self) -> tuple[int, int]:
        main = self.proc.memory_info().rss
        tree = main
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                tree += child.memory_info().rss
        return main, tree

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                main, tree = self.sample()
            except psutil.Error:
                return
            self.peak_main = max(self.peak_main, main)
            self.peak_tree = max(self.peak_tree, tree)


class ControlClient:
    """A confluent-kafka producer (acks=all) and consumer on their own connections, producing
    a record every 20 ms and reading them back, for as long as the fuzzing lasts."""

    def __init__(self, bootstrap: str) -> None:
        self.topic = f"control-{uuid.uuid4().hex[:10]}"
        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 0,
                "message.timeout.ms": 30000,
            }
        )
        self.consumer = confluent_consumer(bootstrap, **{"fetch.wait.max.ms": 100})
        self.sent = 0
        self.acked = 0
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.received: set[bytes] = set()
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._produce, daemon=True),
            threading.Thread(target=self._consume, daemon=True),
        ]

    def start(self) -> ControlClient:
        # the topic exists before the consumer assigns it
        self.producer.produce(self.topic, b"first", on_delivery=self._delivered(time.monotonic()))
        self.sent += 1
        self.producer.flush(30)
        self.consumer.assign([confluent_kafka.TopicPartition(self.topic, 0, 0)])
        for t in self.threads:
            t.start()
        return self

    def _delivered(self, sent_at: float) -> Any:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
                return
            self.acked += 1
            self.latencies.append(time.monotonic() - sent_at)

        return done

    def _produce(self) -> None:
        while not self.stop_event.wait(0.02):
            self.producer.produce(
                self.topic, b"%d" % self.sent, on_delivery=self._delivered(time.monotonic())
            )
            self.sent += 1
            self.producer.poll(0)
        self.producer.flush(30)

    def _consume(self) -> None:
        while not self.stop_event.is_set() or len(self.received) < self.acked:
            for m in self.consumer.consume(num_messages=500, timeout=0.2):
                if m.error() is not None:
                    self.errors.append(f"consumer: {m.error()}")
                else:
                    self.received.add(m.value())
            if self.stop_event.is_set() and time.monotonic() > self._stop_deadline:
                return

    def stop(self) -> None:
        self._stop_deadline = time.monotonic() + 20
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        self.consumer.close()

    _stop_deadline = float("inf")
