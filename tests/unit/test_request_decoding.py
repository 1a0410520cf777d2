"""Request bodies the decoder must refuse before a handler sees them: null where the schema
has a non-nullable array (kio reads a -1 / 0 count as None whatever the field says, and
handlers iterating it raised TypeError), and array counts far past the bytes of the frame."""

from __future__ import annotations

import datetime
import resource
import struct
import time

import pytest
from kio.index import load_payload_module
from kio.serial import entity_writer
from kio.static.constants import EntityType

from app.broker.protocol.codec import MalformedRequest, decode_request


def schema(api_key: int, version: int):  # type: ignore[no-untyped-def]
    return load_payload_module(api_key, version, EntityType.request)  # type: ignore[arg-type]


def encode(body: object, flexible: bool) -> bytes:
    """Header v1 (v2 when flexible) and body, without the size prefix."""
    import io

    buf = io.BytesIO()
    entity_writer(type(body))(buf, body)
    api_key, version = int(body.__api_key__), int(body.__version__)  # type: ignore[attr-defined]
    header = struct.pack(">hhih", api_key, version, 1, 4) + b"test" + (b"\x00" if flexible else b"")
    return header + buf.getvalue()


HEADER_V1 = 14  # api key, version, correlation id, client id "test"


def test_null_top_level_array_is_refused_legacy_and_compact() -> None:
    legacy = encode(schema(15, 0).DescribeGroupsRequest(groups=("g",)), False)
    bad = legacy[:HEADER_V1] + struct.pack(">i", -1)
    with pytest.raises(MalformedRequest, match="non-nullable field groups was serialized as null"):
        decode_request(bad)
    compact = encode(
        schema(15, 5).DescribeGroupsRequest(groups=("g",), include_authorized_operations=False),
        True,
    )
    # compact arrays: 0 is null; then the boolean and the tag buffer
    bad = compact[: HEADER_V1 + 1] + b"\x00" + b"\x00\x00"
    with pytest.raises(MalformedRequest, match="non-nullable field groups"):
        decode_request(bad)


def test_null_nested_array_is_refused() -> None:
    mod = schema(8, 2)  # OffsetCommit v2: topics -> partitions
    body = mod.OffsetCommitRequest(
        group_id="g",
        generation_id_or_member_epoch=1,
        member_id="m",
        retention_time=datetime.timedelta(milliseconds=-1),
        topics=(mod.OffsetCommitRequestTopic(name="t", partitions=()),),
    )
    data = encode(body, False)
    assert data.endswith(b"\x00\x01t" + struct.pack(">i", 0))
    bad = data[:-4] + struct.pack(">i", -1)
    with pytest.raises(MalformedRequest, match="non-nullable field partitions"):
        decode_request(bad)
    assert decode_request(data).body == body


def test_nullable_arrays_still_decode_as_null() -> None:
    # Metadata v1+: a null topic list means all topics
    mod = schema(3, 4)
    body = mod.MetadataRequest(topics=None, allow_auto_topic_creation=False)
    assert decode_request(encode(body, False)).body.topics is None


def test_counts_of_2_31_minus_1_are_refused_without_allocating() -> None:
    """kio allocates as it reads elements, never for the count: a count past the bytes left
    costs what the elements really there cost, then MalformedRequest."""
    mod = schema(3, 1)
    legacy = encode(mod.MetadataRequest(topics=(mod.MetadataRequestTopic(name="a"),)), False)
    huge = legacy[:HEADER_V1] + struct.pack(">i", 2**31 - 1) + legacy[HEADER_V1 + 4 :]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for bad in (huge, huge + b"\x00" * 100_000):
        with pytest.raises(MalformedRequest):
            decode_request(bad)
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
