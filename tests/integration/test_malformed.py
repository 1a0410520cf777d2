"""Malformed input over raw sockets: the broker answers or hangs up, and keeps serving."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

import pytest

from .clients import consume_confluent, make_messages, produce_confluent
from .conftest import Server, running_server, unique_topic
from .rawkafka import (
    ConnectionClosed,
    RawKafka,
    Rec,
    build_batch,
    corrupt_crc,
    decode_response,
    encode_request,
    encode_request_header,
    legacy_message_set_v1,
    request_class,
    schema,
)

MAX_REQUEST = 1 << 20
CORRUPT_MESSAGE = 2
UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
LATEST = -1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's server has a small request size limit."""
    base = tmp_path_factory.mktemp("chronik-malformed")
    with running_server(base, ["--max-request-bytes", str(MAX_REQUEST)]) as srv:
        yield srv


def assert_healthy(server: Server) -> None:
    """The process is up and a real client on a new connection produces and consumes."""
    assert server.running(), "server process died:\n" + server.stderr_text()
    topic = unique_topic("health")
    msgs = make_messages(3, seed=1)
    assert produce_confluent(server.bootstrap, topic, msgs, "none") == [0, 1, 2]
    got = consume_confluent(server.bootstrap, topic, 3, timeout=15)
    assert [(m.key, m.value, m.headers) for m in got] == [(m.key, m.value, m.headers) for m in msgs]


def _topic(raw: RawKafka) -> str:
    topic = unique_topic("mal")
    raw.metadata([topic], auto_create=True)
    (t,) = raw.metadata([topic]).topics
    assert t.error_code == 0
    return topic


def test_truncated_frame_then_close(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        body = raw.produce_request("x", 0, build_batch([Rec(b"k", b"v")]))
        data = encode_request(body, 1)
        raw.send_bytes(data[: len(data) // 2])
    # a frame whose size prefix itself is cut short
    with RawKafka(server.bootstrap) as raw:
        raw.send_bytes(b"\x00\x00")
    assert_healthy(server)


def test_bad_crc_is_corrupt_message_and_connection_survives(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        good = build_batch([Rec(b"k1", b"v1"), Rec(b"k2", b"v2")])
        err, _ = raw.produce(topic, 0, corrupt_crc(good))
        assert err == CORRUPT_MESSAGE
        assert raw.list_offset(topic, 0, LATEST).offset == 0
        # the same connection still serves requests, and the good batch goes in at offset 0
        assert raw.produce(topic, 0, good) == (0, 0)
        assert raw.list_offset(topic, 0, LATEST).offset == 2
    assert_healthy(server)


def test_bad_batch_length_is_corrupt_message(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        good = build_batch([Rec(b"k1", b"v1")])
        bad = bytearray(good)
        struct.pack_into(">i", bad, 8, len(good) - 12 + 50)  # batchLength beyond the data
        err, _ = raw.produce(topic, 0, bytes(bad))
        assert err == CORRUPT_MESSAGE
        assert raw.list_offset(topic, 0, LATEST).offset == 0
        assert raw.produce(topic, 0, good) == (0, 0)
    assert_healthy(server)


def test_magic_1_is_unsupported_for_message_format(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        err, _ = raw.produce(topic, 0, legacy_message_set_v1(b"k", b"v", 1_700_000_000_000))
        assert err == UNSUPPORTED_FOR_MESSAGE_FORMAT
        assert raw.list_offset(topic, 0, LATEST).offset == 0
        assert raw.produce(topic, 0, build_batch([Rec(b"k", b"v")])) == (0, 0)
    assert_healthy(server)


def test_oversized_length_prefix_closes_connection(server: Server) -> None:
    for size in (MAX_REQUEST + 1, 0x7FFFFFFF, -1):
        with RawKafka(server.bootstrap) as raw:
            raw.send_bytes(struct.pack(">i", size) + b"\x00" * 64)
            assert raw.wait_closed(5.0), f"connection not closed after length prefix {size}"
    assert_healthy(server)


def test_request_just_under_limit_is_accepted(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        batch = build_batch([Rec(b"big", os.urandom(MAX_REQUEST - 4096))])
        assert raw.produce(topic, 0, batch) == (0, 0)


def test_garbage_bytes(server: Server) -> None:
    # HTTP on the Kafka port: "GET " read as a length prefix is ~1.2 GB
    with RawKafka(server.bootstrap) as raw:
        raw.send_bytes(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert raw.wait_closed(5.0)
    # a plausible length followed by random junk, several times
    for seed in range(5):
        junk = bytes((seed * 37 + i * 101) % 256 for i in range(200))
        with RawKafka(server.bootstrap) as raw:
            raw.send_bytes(struct.pack(">i", len(junk)) + junk)
            with contextlib.suppress(ConnectionClosed, TimeoutError, OSError):
                raw.recv_frame(timeout=3.0)
    # a valid header for a known API with a junk body
    with RawKafka(server.bootstrap) as raw:
        payload = encode_request_header(0, 9, 77, "junk", flexible=True) + b"\xff" * 40
        raw.send_bytes(struct.pack(">i", len(payload)) + payload)
        try:
            frame = raw.recv_frame(timeout=5.0)
            assert struct.unpack_from(">i", frame)[0] == 77
        except ConnectionClosed:
            pass
    assert_healthy(server)


@pytest.mark.parametrize(("api_key", "version"), [(9999, 0), (-5, 0), (0, 99), (3, 999)])
def test_unknown_api_or_version_is_answered_or_closed(
    server: Server, api_key: int, version: int
) -> None:
    with RawKafka(server.bootstrap) as raw:
        payload = encode_request_header(api_key, version, 4242, "raw") + b"\x00" * 8
        raw.send_bytes(struct.pack(">i", len(payload)) + payload)
        try:
            frame = raw.recv_frame(timeout=5.0)
        except ConnectionClosed:
            frame = None
        except TimeoutError:
            pytest.fail(f"api {api_key} v{version}: neither answered nor closed within 5s")
        if frame is not None:
            assert struct.unpack_from(">i", frame)[0] == 4242
    assert_healthy(server)


def test_pipelined_requests_answered_in_order(server: Server) -> None:
    """Many requests written at once get their responses in request order."""
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        bodies = []
        for i in range(30):
            kind = i % 4
            if kind == 0:
                bodies.append(
                    request_class(18, 3)(client_software_name="r", client_software_version="1")
                )
            elif kind == 1:
                bodies.append(raw.produce_request(topic, 0, build_batch([Rec(b"k", b"%d" % i)])))
            elif kind == 2:
                bodies.append(raw.fetch_request(topic, 0, 0, max_wait_ms=0))
            else:
                mod = schema(3, 9)
                bodies.append(
                    mod.MetadataRequest(
                        topics=(mod.MetadataRequestTopic(name=topic),),
                        allow_auto_topic_creation=False,
                        include_cluster_authorized_operations=False,
                        include_topic_authorized_operations=False,
                    )
                )
        raw.send_bytes(b"".join(encode_request(b, 1000 + i) for i, b in enumerate(bodies)))
        produce_offsets = []
        for i, b in enumerate(bodies):
            cid, resp = decode_response(int(b.__api_key__), int(b.__version__), raw.recv_frame())
            assert cid == 1000 + i
            if int(b.__api_key__) == 0:
                (p,) = resp.responses[0].partition_responses
                assert p.error_code == 0
                produce_offsets.append(int(p.base_offset))
        assert produce_offsets == list(range(len(produce_offsets)))
