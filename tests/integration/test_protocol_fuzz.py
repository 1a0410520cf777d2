"""Protocol fuzzing against one real server: mutated valid requests of every API the broker
advertises, random frames, huge length prefixes, array counts of 2^31-1 in otherwise valid
requests, truncated frames, batches with bad CRCs and decompression bombs, over many
connections; and on a SASL listener, mutated handshakes and tokens before authentication.
After every test the server is alive, wrote no traceback, stayed under its memory bound,
and a confluent-kafka producer and consumer on other connections kept working.
Every probe is answered or its connection closed within a few seconds, never left hanging.

Bounded: each hypothesis test has a fixed number of examples and a wall-clock budget after
which its remaining examples return at once; the whole module takes about 30 s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.broker.protocol.codec import decode_request

from .conftest import Server, running_server, unique_topic
from .fuzzing import (
    GZIP,
    LZ4,
    SNAPPY,
    WAITING_APIS,
    ZSTD,
    ControlClient,
    MiB,
    RssWatch,
    array_paths,
    batch,
    body_frame,
    filled,
    frame,
    gzip_zeros,
    huge_count_frame,
    lz4_zeros,
    mutate,
    mutation,
    probe,
    probe_many,
    produce_frame,
    requests,
    snappy_zeros,
    tiny_records,
    zstd_zeros,
)
from .rawkafka import RawKafka, Rec, build_batch, corrupt_crc, ms, request_class, schema
from .secservers import (
    PASSWORD,
    SecureServer,
    add_user,
    consume_values,
    produce_values,
    sasl_args,
    started,
)

# FUZZ_SCALE=20 runs twenty times the examples (and wall-clock budget): a longer campaign.
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
MAX_REQUEST = 16 * MiB
IDLE_MS = 2500
# The stated bound: the server process may grow this much over its RSS once warmed up, the
# process tree (indexer, search and cleaner workers) twice that.
RSS_GROWTH = 300 * MiB
CORRUPT_MESSAGE = 2

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=SCALE == 1,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its frame
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    flags = ["--max-request-bytes", str(MAX_REQUEST), "--connections-max-idle-ms", str(IDLE_MS)]
    with running_server(tmp_path_factory.mktemp("chronik-fuzz"), flags) as srv:
        yield srv


@pytest.fixture(scope="module")
def advertised(server: Server) -> list[tuple[int, int]]:
    with RawKafka(server.bootstrap) as raw:
        keys = raw.api_versions().api_keys
    return [(int(k.api_key), v) for k in keys for v in range(k.min_version, k.max_version + 1)]


@pytest.fixture(scope="module")
def watch(server: Server) -> Iterator[tuple[RssWatch, ControlClient]]:
    control = ControlClient(server.bootstrap).start()
    time.sleep(1.0)  # warmed up: connections, the control topic, its indexer
    rss = RssWatch(server.pid)
    rss.start()
    yield rss, control
    rss.stop_event.set()
    control.stop()
    print(
        f"RSS MB: server {rss.base_main >> 20} -> peak {rss.peak_main >> 20}, with its workers "
        f"{rss.base_tree >> 20} -> {rss.peak_tree >> 20}; control acks {control.acked}, "
        f"p99 {sorted(control.latencies)[int(len(control.latencies) * 0.99)] * 1000:.1f} ms"
    )
    assert not control.errors, control.errors[:5]
    missing = control.acked - len(control.received)
    assert missing <= 0, f"{missing} acknowledged records never consumed"


@pytest.fixture(autouse=True)
def healthy_after(server: Server, watch: tuple[RssWatch, ControlClient]) -> Iterator[None]:
    rss, control = watch
    log_from = len(server.stderr_text(10**9))
    acked = control.acked
    yield
    assert server.running(), "server died:\n" + server.stderr_text()
    new_log = server.stderr_text(10**9)[log_from:]
    for marker in ("Traceback", "Exception in callback", "exception was never retrieved"):
        assert marker not in new_log, new_log[-6000:]
    assert rss.peak_main - rss.base_main < RSS_GROWTH, (rss.base_main, rss.peak_main)
    assert rss.peak_tree - rss.base_tree < 2 * RSS_GROWTH, (rss.base_tree, rss.peak_tree)
    # the control client's records kept being acknowledged, and promptly
    deadline = time.monotonic() + 10
    while control.acked <= acked + 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert control.acked > acked + 5, "the control producer stopped getting acks"
    assert not control.errors, control.errors[:5]
    assert max(control.latencies[-200:]) < 5.0, max(control.latencies[-200:])


class Budget:
    """Lets a hypothesis test stop doing work once its wall-clock share is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: float | None = None

    def spent(self) -> bool:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        return now - self.started > self.seconds


def waits_by_design(data: bytes) -> bool:
    """A frame that decodes as a request which may legitimately wait (long poll, join)."""
    try:
        req = decode_request(data[4:])
    except Exception:
        return False
    return req.header.api_key in WAITING_APIS


def check_probes(server: Server, frames: list[bytes]) -> None:
    """Every frame on its own connection, all at once: each answered or closed in time."""
    with ThreadPoolExecutor(len(frames)) as pool:
        outcomes = list(pool.map(lambda f: probe(server.bootstrap, f), frames))
    for data, outcome in zip(frames, outcomes, strict=True):
        if outcome == "hang" and not waits_by_design(data):
            raise AssertionError(f"no answer and no close within the probe timeout: {data[:300]!r}")


def test_mutated_requests_of_every_api(server: Server, advertised: list[tuple[int, int]]) -> None:
    budget = Budget(20 * SCALE)

    @settings(FUZZ, max_examples=250 * SCALE)
    @given(
        st.lists(
            st.tuples(requests(advertised), st.lists(mutation, min_size=1, max_size=4)),
            min_size=4,
            max_size=4,
        )
    )
    def run(cases: list[tuple[bytes, list[Any]]]) -> None:
        if budget.spent():
            return
        check_probes(server, [mutate(f, muts) for f, muts in cases])

    run()


def test_valid_random_requests_of_every_api(
    server: Server, advertised: list[tuple[int, int]]
) -> None:
    """Requests that decode, with random values: each gets its response."""
    budget = Budget(10 * SCALE)

    @settings(FUZZ, max_examples=120 * SCALE)
    @given(st.lists(requests(advertised), min_size=4, max_size=4))
    def run(frames: list[bytes]) -> None:
        if budget.spent():
            return
        check_probes(server, frames)

    run()


def test_random_frames(server: Server, advertised: list[tuple[int, int]]) -> None:
    budget = Budget(5 * SCALE)
    headers = st.sampled_from(advertised)

    @settings(FUZZ, max_examples=80 * SCALE)
    @given(
        st.lists(
            st.one_of(
                st.binary(min_size=0, max_size=2048),
                # a real header (non-flexible v1) before random bytes
                st.tuples(headers, st.binary(max_size=512)).map(
                    lambda h: frame(h[0][0], h[0][1], h[1], False)[4:]
                ),
            ),
            min_size=4,
            max_size=4,
        )
    )
    def run(payloads: list[bytes]) -> None:
        if budget.spent():
            return
        check_probes(server, [len(p).to_bytes(4, "big") + p for p in payloads])

    run()


@pytest.mark.parametrize(
    "size", [2**31 - 1, MAX_REQUEST + 1, -1, -(2**31), 0, 3, 7], ids=lambda s: f"size={s}"
)
def test_bad_length_prefixes_close_the_connection(server: Server, size: int) -> None:
    data = size.to_bytes(4, "big", signed=True) + b"\x00\x12\x00\x00" + b"\x00" * 64
    assert probe(server.bootstrap, data) == "closed"


def test_array_counts_of_2_31_minus_1(server: Server, advertised: list[tuple[int, int]]) -> None:
    """Every array of every advertised request version, in turn, counting 2^31-1 elements
    (and 2^34-1 where counts are varints) while the frame holds one: the request is refused
    (the connection closed) without the server allocating for the count. kio reserved 8
    bytes an element up front: 2^34 aborted the whole process."""
    frames = []
    for key, version in advertised:
        body = filled(request_class(key, version))
        for path in array_paths(body):
            frames.append(huge_count_frame(body, path))
            if body.__flexible__:
                frames.append(huge_count_frame(body, path, 2**34 - 1))
    assert len(frames) > 350, len(frames)
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda f: probe(server.bootstrap, f), frames))
    refused = [(o, f[:80]) for o, f in zip(outcomes, frames, strict=True) if o != "closed"]
    assert not refused, refused[:10]


def test_truncated_frames(server: Server, advertised: list[tuple[int, int]]) -> None:
    """A frame cut short: closed when the client half-closes, and when it just stops
    sending, after connections_max_idle_ms."""
    budget = Budget(4 * SCALE)

    @settings(FUZZ, max_examples=30 * SCALE)
    @given(requests(advertised), st.floats(0.0, 0.99))
    def run(whole: bytes, cut: float) -> None:
        if budget.spent():
            return
        short = whole[: 1 + int(cut * (len(whole) - 1))]
        assert probe(server.bootstrap, short, sentinel=False, shut_wr=True) == "closed"

    run()
    whole = produce_frame("t", build_batch([Rec(b"k", b"v")]))
    cuts = [whole[:2], whole[:4], whole[: len(whole) // 2], whole[:-1]]
    started = time.monotonic()
    with ThreadPoolExecutor(len(cuts)) as pool:
        outcomes = list(
            pool.map(
                lambda d: probe(server.bootstrap, d, sentinel=False, timeout=IDLE_MS / 1000 + 3),
                cuts,
            )
        )
    assert outcomes == ["closed"] * len(cuts)
    assert time.monotonic() - started >= IDLE_MS / 1000 - 0.5


def _topic(raw: RawKafka, compacted: bool = False) -> str:
    name = unique_topic("fuzz")
    mod = schema(19, 7)
    # bombs are a few MB: past Kafka's default max.message.bytes
    configs = (mod.CreatableTopicConfig(name="max.message.bytes", value=str(MAX_REQUEST)),)
    if compacted:
        configs += (mod.CreatableTopicConfig(name="cleanup.policy", value="compact"),)
    resp = raw.request(
        mod.CreateTopicsRequest(
            topics=(
                mod.CreatableTopic(
                    name=name,
                    num_partitions=1,
                    replication_factor=1,
                    assignments=(),
                    configs=configs,
                ),
            ),
            timeout=ms(10_000),
            validate_only=False,
        )
    )
    assert resp.topics[0].error_code == 0, resp
    return name


def test_bad_crcs_are_corrupt_message(server: Server) -> None:
    budget = Budget(4 * SCALE)
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)

    @settings(FUZZ, max_examples=40 * SCALE)
    @given(
        st.lists(st.binary(max_size=200), min_size=1, max_size=20),
        st.integers(21, 10**6),
        st.integers(1, 255),
    )
    def run(values: list[bytes], pos: int, xor: int) -> None:
        if budget.spent():
            return
        good = bytearray(build_batch([Rec(None, v) for v in values]))
        bad = bytes(corrupt_crc(bytes(good))) if pos % 3 == 0 else None
        if bad is None:
            # a byte the CRC covers (21..end) changed after the CRC was computed
            good[21 + pos % (len(good) - 21)] ^= xor
            bad = bytes(good)
        # a flip that made the batch transactional is refused first, for the whole request,
        # as KafkaApis does (no transactional id: TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        transactional = bad[22] & 0x10
        with RawKafka(server.bootstrap) as raw:
            assert raw.produce(topic, 0, bad)[0] == (53 if transactional else CORRUPT_MESSAGE)

    run()
    with RawKafka(server.bootstrap) as raw:
        assert raw.list_offset(topic, 0, -1).offset == 0


BOMBS = {
    "gzip-1GiB": lambda: batch(GZIP, gzip_zeros(1024)),
    "zstd-2GiB": lambda: batch(ZSTD, zstd_zeros(2048)),
    "lz4-1GiB": lambda: batch(LZ4, lz4_zeros(1024)),
    "snappy-250MiB": lambda: batch(SNAPPY, snappy_zeros(4_000)),
    # a raw snappy block states its length first: 4 GiB here
    "snappy-raw-4GiB": lambda: batch(SNAPPY, b"\xff\xff\xff\xff\x0f" + b"\x00" * 64),
    # 84 MB of valid 7-byte records: past the limit with nothing but well-formed records
    "zstd-12M-records": lambda: batch(ZSTD, zstd_frame(tiny_records(64) * 187_500), 12_000_000),
}


def zstd_frame(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=1).compress(data)


def test_decompression_bombs(server: Server) -> None:
    """Batches of a few MB that inflate to GBs: stored as sent on an ordinary topic (produce
    reads no records), refused with CORRUPT_MESSAGE on a compacted one (whose keys are
    checked), and never inflated past the limit by the indexer or a timestamp lookup."""
    with RawKafka(server.bootstrap, timeout=30) as raw:
        plain, compacted = _topic(raw), _topic(raw, compacted=True)
        for name, make in BOMBS.items():
            bomb = make()
            assert len(bomb) < MAX_REQUEST, (name, len(bomb))
            assert raw.produce(plain, 0, bomb)[0] == 0, name
            err, _ = raw.produce(compacted, 0, bomb)
            assert err == CORRUPT_MESSAGE, name
            # ListOffsets by time decodes the batch where the index points
            assert raw.list_offset(plain, 0, int(time.time() * 1000) - 60_000).error_code == 0
        after = build_batch([Rec(b"k", b'{"after": "bombs"}')])
        assert raw.produce(plain, 0, after)[0] == 0
    # the indexer gave up on each bomb at the limit and went on to the record after them
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = server.get(f"/search?topic={plain}&q=value.after:bombs").json()
        if found.get("total"):
            break
        time.sleep(0.2)
    assert found.get("total") == 1, found
    assert server.stderr_text(10**7).count("inflates past") >= len(BOMBS)


def test_many_connections_at_once(server: Server) -> None:
    """300 connections open together, each with garbage, a valid request, a frame that is
    too large or one cut short: every one answered or closed."""
    valid = produce_frame("many", build_batch([Rec(None, b"v")]))
    kinds = [b"\x00\x00\x00\x10garbage-garbage!", valid, b"\x7f\xff\xff\xff" + valid[4:]]
    outcomes = probe_many(server.bootstrap, [kinds[i % len(kinds)] for i in range(300)])
    assert outcomes.count("answered") == 100, outcomes
    assert outcomes.count("closed") == 200, outcomes


@pytest.fixture(scope="module")
def sasl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    srv = SecureServer(
        tmp_path_factory.mktemp("chronik-fuzz-sasl"),
        [
            *sasl_args(mechanisms="PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"),
            "--connections-max-idle-ms", str(IDLE_MS),
        ],
    )  # fmt: skip
    add_user(srv.data_dir, "fuzz")
    with started(srv):
        yield srv


def _sasl_templates() -> list[bytes]:
    """Valid frames of the exchange before authentication, each framing and mechanism."""
    first = b"n,,n=fuzz,r=" + b"fyko+d2lbbFgONRv9qkxdawL"
    out = []
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"):
        for version in (0, 1):
            out.append(body_frame(request_class(17, version)(mechanism=mechanism)))
    for version in (0, 1, 2):
        for token in (first, b"\0fuzz\0" + PASSWORD.encode(), b"c=biws,r=x,p=eA=="):
            out.append(body_frame(request_class(36, version)(auth_bytes=token)))
    # the legacy framing: a handshake v0, then the bare length-prefixed token
    handshake = body_frame(request_class(17, 0)(mechanism="SCRAM-SHA-256"))
    out.append(handshake + len(first).to_bytes(4, "big") + first)
    return out


def test_unauthenticated_frames_on_a_sasl_listener(sasl_server: SecureServer) -> None:
    """Mutated handshakes and tokens (both framings, every mechanism, wrong ones too) and
    requests before authentication: each answered or closed, no traceback, and real
    clients still log in with SCRAM-SHA-256 and SCRAM-SHA-512 afterwards."""
    budget = Budget(4 * SCALE)
    log_from = len(sasl_server.stderr_text(10**9))

    @settings(FUZZ, max_examples=60 * SCALE)
    @given(
        st.lists(
            st.tuples(
                st.lists(st.sampled_from(_sasl_templates()), min_size=1, max_size=3),
                st.lists(mutation, max_size=3),
            ),
            min_size=4,
            max_size=4,
        )
    )
    def run(cases: list[tuple[list[bytes], list[Any]]]) -> None:
        if budget.spent():
            return
        frames = [[*f[:-1], mutate(f[-1], muts)] if muts else f for f, muts in cases]
        check_probes(sasl_server, [b"".join(f) for f in frames])

    run()
    # a request other than these before authentication closes the connection
    assert probe(sasl_server.bootstrap, produce_frame("t", build_batch([Rec(None, b"v")]))) == (
        "closed"
    )
    assert sasl_server.running()
    new_log = sasl_server.stderr_text(10**9)[log_from:]
    assert "Traceback" not in new_log, new_log[-6000:]
    topic = unique_topic("sasl-fuzz")
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        conf = {
            "bootstrap.servers": sasl_server.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": "fuzz",
            "sasl.password": PASSWORD,
        }
        produce_values(conf, topic, [mechanism.encode()])
    assert len(consume_values(conf, topic, 2, unique_topic("g"))) == 2
