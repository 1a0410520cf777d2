"""Request bodies the decoder must refuse before a handler sees them: null where the schema
has a non-nullable array (kio reads a -1 / 0 count as None whatever the field says, and
handlers iterating it raised TypeError), and array counts far past the bytes of the frame."""

from __future__ import annotations

import datetime
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kio.index import load_payload_module
from kio.serial import entity_writer
from kio.static.constants import EntityType
from kio.static.primitive import Records

from app.broker.handlers import all_apis
from app.broker.protocol.codec import MalformedRequest, decode_request, request_type
from app.broker.protocol.counts import MAX_ELEMENTS

REPO = Path(__file__).resolve().parents[2]
PAIRS = [(s.key, v) for s in all_apis() for v in range(s.min_version, s.max_version + 1)]
st.register_type_strategy(Records, st.binary(max_size=64).map(Records))


def uvarint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


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
DESCRIBE_GROUPS_V5_HEADER = struct.pack(">hhih", 15, 5, 1, 4) + b"test\x00"


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


def offset_commit_v2():  # type: ignore[no-untyped-def]
    """OffsetCommit v2 of one topic with no partitions: the nested count is its last 4 bytes."""
    mod = schema(8, 2)
    return mod.OffsetCommitRequest(
        group_id="g",
        generation_id_or_member_epoch=1,
        member_id="m",
        retention_time=datetime.timedelta(milliseconds=-1),
        topics=(mod.OffsetCommitRequestTopic(name="t", partitions=()),),
    )


def test_null_nested_array_is_refused() -> None:
    body = offset_commit_v2()
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


def test_counts_past_the_bytes_left_are_refused_as_kafka_does() -> None:
    """Kafka's generated readers refuse a count larger than the bytes left, before
    allocating for it; kio reserves the whole count (8 bytes an element) first."""
    mod = schema(3, 1)
    legacy = encode(mod.MetadataRequest(topics=(mod.MetadataRequestTopic(name="a"),)), False)
    huge = legacy[:HEADER_V1] + struct.pack(">i", 2**31 - 1) + legacy[HEADER_V1 + 4 :]
    with pytest.raises(
        MalformedRequest,
        match="Tried to allocate a collection of size 2147483647, but there are only 3 bytes",
    ):
        decode_request(huge)
    compact = encode(
        schema(15, 5).DescribeGroupsRequest(groups=("g",), include_authorized_operations=False),
        True,
    )
    count = uvarint(2**31)  # 2^31 - 1 elements
    bad = compact[: HEADER_V1 + 1] + count + compact[HEADER_V1 + 2 :]
    with pytest.raises(MalformedRequest, match="collection of size 2147483647"):
        decode_request(bad)


def test_nested_and_primitive_array_counts_are_checked() -> None:
    data = encode(offset_commit_v2(), False)
    with pytest.raises(MalformedRequest, match="collection of size 1000"):
        decode_request(data[:-4] + struct.pack(">i", 1000))
    # DeleteGroups v1: an array of strings
    data = encode(schema(42, 1).DeleteGroupsRequest(groups_names=("a", "b")), False)
    with pytest.raises(MalformedRequest, match="collection of size 99"):
        decode_request(data[:HEADER_V1] + struct.pack(">i", 99) + data[HEADER_V1 + 4 :])


def test_a_count_of_2_34_does_not_abort_the_process() -> None:
    """kio reserved 2^34 x 8 bytes for it: "memory allocation of 137438953464 bytes failed",
    and Rust aborts the whole broker. Run in a child process, which the abort would kill."""
    frame = DESCRIBE_GROUPS_V5_HEADER + uvarint(2**34) + b"\x02g\x00\x00"
    code = f"""
from app.broker.protocol.codec import MalformedRequest, decode_request
try:
    decode_request(bytes.fromhex({frame.hex()!r}))
except MalformedRequest as exc:
    print("refused:", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: api 15 v5: Tried to allocate a collection of size 17179869183" in out.stdout


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_valid_requests_of_every_api_still_decode(data: st.DataObject) -> None:
    """The count scan follows the wire layout exactly: it refuses no valid request."""
    api_key, version = data.draw(st.sampled_from(PAIRS))
    body = data.draw(st.from_type(request_type(api_key, version)))
    try:
        raw = encode(body, bool(body.__flexible__))
    except Exception:
        assume(False)  # from_type makes values kio cannot encode
    assert decode_request(raw).body == body


def test_a_request_of_more_elements_than_the_cap_is_refused() -> None:
    """A frame of N bytes decodes into up to N/2 Python objects (a 15 MiB Metadata request of
    empty names took 2.4 s of the event loop and 430 MB): a request may hold at most
    MAX_ELEMENTS array elements, counted over every array, nested ones included."""
    header = struct.pack(">hhih", 3, 1, 1, 4) + b"test"  # Metadata v1: topics, names
    at_cap = header + struct.pack(">i", MAX_ELEMENTS) + b"\x00\x00" * MAX_ELEMENTS
    req = decode_request(at_cap)
    assert len(req.body.topics) == MAX_ELEMENTS
    assert req.elements == MAX_ELEMENTS
    over = header + struct.pack(">i", MAX_ELEMENTS + 1) + b"\x00\x00" * (MAX_ELEMENTS + 1)
    with pytest.raises(MalformedRequest, match=f"{MAX_ELEMENTS + 1} array elements"):
        decode_request(over)
    # nested: ListOffsets v1, 2 topics of MAX_ELEMENTS / 2 partitions (+ 2 topics: past it)
    partition = struct.pack(">iq", 0, -1)
    topic = b"\x00\x01t" + struct.pack(">i", MAX_ELEMENTS // 2) + partition * (MAX_ELEMENTS // 2)
    nested = struct.pack(">hhih", 2, 1, 1, 4) + b"test" + struct.pack(">ii", -1, 2) + topic * 2
    with pytest.raises(MalformedRequest, match=f"{MAX_ELEMENTS + 2} array elements"):
        decode_request(nested)


def test_elements_are_counted_on_every_request() -> None:
    mod = schema(3, 4)
    body = mod.MetadataRequest(
        topics=tuple(mod.MetadataRequestTopic(name=n) for n in "abc"),
        allow_auto_topic_creation=False,
    )
    assert decode_request(encode(body, False)).elements == 3
    assert decode_request(encode(offset_commit_v2(), False)).elements == 1
