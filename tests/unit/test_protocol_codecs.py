"""The hand-written Produce/Fetch encoders must agree with kio's decoders."""

from __future__ import annotations

import datetime
import struct
import uuid

import pytest
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from app.broker.protocol.codec import (
    MalformedRequest,
    decode_request,
    encode_response,
    response_type,
)
from app.broker.protocol.fetch_codec import (
    FetchPartitionResult,
    FetchTopicResult,
    encode_fetch_response,
)
from app.broker.protocol.framing import FrameDecoder, FrameTooLarge, InvalidFrame
from app.broker.protocol.produce_codec import PartitionResult, encode_produce_response


def _decode(api_key: int, version: int, frame: bytes, flexible_from: int) -> tuple[int, object]:
    (size,) = struct.unpack_from(">i", frame, 0)
    assert size == len(frame) - 4
    (correlation_id,) = struct.unpack_from(">i", frame, 4)
    pos = 8 + (1 if version >= flexible_from else 0)
    body, used = entity_reader(response_type(api_key, version))(frame, pos)
    assert pos + used == len(frame), "encoder wrote bytes kio does not expect"
    return correlation_id, body


@pytest.mark.parametrize("version", range(3, 12))
def test_produce_response_decodes_with_kio(version: int) -> None:
    topics = [
        (
            "orders",
            [
                PartitionResult(0, 0, 42, -1, 7),
                PartitionResult(1, 45, -1, -1, 0, "sequence gap"),
                PartitionResult(2, 87, -1, -1, 0, "2 bad", [(1, "no key"), (4, "too old")]),
            ],
        ),
        ("ünïcode-topic", [PartitionResult(3, 0, 1 << 40, 1_700_000_000_123, 5)]),
    ]
    frame = encode_produce_response(version, 99, topics)
    corr, body = _decode(0, version, frame, 9)
    assert corr == 99
    got = body.responses  # type: ignore[attr-defined]
    assert [t.name for t in got] == ["orders", "ünïcode-topic"]
    p0, p1, p2 = got[0].partition_responses
    assert (p0.index, int(p0.error_code), p0.base_offset) == (0, 0, 42)
    assert int(p1.error_code) == 45
    p = got[1].partition_responses[0]
    assert p.base_offset == 1 << 40
    assert round(p.log_append_time.timestamp() * 1000) == 1_700_000_000_123
    if version >= 5:
        assert p0.log_start_offset == 7
    if version >= 8:
        assert p1.error_message == "sequence gap"
        assert [(e.batch_index, e.batch_index_error_message) for e in p2.record_errors] == [
            (1, "no key"),
            (4, "too old"),
        ]
        assert p2.error_message == "2 bad"


@pytest.mark.parametrize("version", range(4, 17))
def test_fetch_response_decodes_with_kio(version: int) -> None:
    batch_a = bytes(range(256)) * 3
    batch_b = memoryview(b"\xab" * 100)
    tid = uuid.uuid4()
    topics = [
        FetchTopicResult(
            "events",
            tid,
            [
                FetchPartitionResult(0, 0, 10, 10, 0, [batch_a, batch_b]),
                FetchPartitionResult(1, 1, 5, 5, 2, []),
            ],
        )
    ]
    frame = b"".join(encode_fetch_response(version, 7, topics))
    corr, body = _decode(1, version, frame, 12)
    assert corr == 7
    (topic,) = body.responses  # type: ignore[attr-defined]
    if version >= 13:
        assert topic.topic_id == tid
    else:
        assert topic.topic == "events"
    p0, p1 = topic.partitions
    assert p0.records == batch_a + bytes(batch_b)
    assert p0.high_watermark == 10
    assert int(p1.error_code) == 1
    assert not p1.records
    if version >= 5:
        assert p1.log_start_offset == 2


def test_fetch_response_passes_records_by_reference() -> None:
    batch = memoryview(bytearray(b"x" * 1000))
    parts = encode_fetch_response(
        12, 1, [FetchTopicResult("t", None, [FetchPartitionResult(0, records=[batch])])]
    )
    assert any(p is batch for p in parts)


def test_framing_splits_and_buffers() -> None:
    dec = FrameDecoder(1024)
    f1 = b"a" * 10
    f2 = b"b" * 20
    data = struct.pack(">i", 10) + f1 + struct.pack(">i", 20) + f2
    assert dec.feed(data[:3]) == []
    assert dec.feed(data[3:20]) == [f1]
    assert dec.feed(data[20:]) == [f2]
    assert dec.buffered == 0


def test_framing_rejects_oversized_and_negative() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder(1024).feed(struct.pack(">i", 4096))
    with pytest.raises(InvalidFrame):
        FrameDecoder(1024).feed(struct.pack(">i", -5))


def test_decode_request_skips_unknown_header_tags() -> None:
    # Metadata v12 (flexible): header with client id "x" and one unknown tag.
    header = b"\x00\x03\x00\x0c\x00\x00\x00\x05\x00\x01x" + b"\x01\x05\x02ab"
    body = b"\x00\x01\x00\x00"
    req = decode_request(header + body)
    assert req.header.correlation_id == 5
    assert req.header.client_id == "x"
    assert req.body.topics is None


def test_decode_request_tolerates_trailing_rejects_truncated() -> None:
    header = b"\x00\x03\x00\x0c\x00\x00\x00\x05\x00\x01x\x00"
    # Like Kafka, bytes after the body are ignored (librdkafka sends some).
    assert decode_request(header + b"\x00\x01\x00\x00" + b"junk").body.topics is None
    with pytest.raises(MalformedRequest):
        decode_request(header + b"\x05")


def test_response_header_versions() -> None:
    from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
    from kio.schema.metadata.v12.response import MetadataResponse

    api = ApiVersionsResponse(
        error_code=ErrorCode.none,
        api_keys=(ApiVersion(api_key=18, min_version=0, max_version=4),),
        throttle_time=datetime.timedelta(0),
    )
    frame = encode_response(18, 3, 1, True, api)
    # ApiVersions always answers with header v0: the body starts right after the id.
    assert entity_reader(ApiVersionsResponse)(frame, 8)[0] == api
    meta = MetadataResponse(
        throttle_time=datetime.timedelta(0), brokers=(), cluster_id=None, controller_id=1, topics=()
    )
    frame = encode_response(3, 12, 1, True, meta)
    assert frame[8] == 0  # header v1's empty tag buffer
    assert entity_reader(MetadataResponse)(frame, 9)[0] == meta
