from __future__ import annotations

import struct
from collections.abc import Callable

import crc32c
import pytest

from app.storage.errors import CorruptBatch, StorageError, UnsupportedMagic
from app.storage.log.batch import (
    HEADER_SIZE,
    LOG_APPEND_TIME,
    increment_sequence,
    parse_header,
    set_base_offset,
    set_log_append_time,
    validate_batches,
)
from tests.unit.batchgen import Record, decode_batches, make_batch


def test_header_fields_and_properties() -> None:
    data = make_batch(
        [Record(b"a", timestamp=100), Record(b"b", timestamp=300), Record(b"c", timestamp=200)],
        producer_id=7,
        producer_epoch=2,
        base_sequence=10,
        transactional=True,
    )
    h = parse_header(data)
    assert h.size == len(data)
    assert h.magic == 2
    assert h.last_offset_delta == 2
    assert h.last_offset == 2
    assert h.records_count == 3
    assert (h.base_timestamp, h.max_timestamp) == (100, 300)
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 2, 10)
    assert h.last_sequence == 12
    assert h.is_transactional and not h.is_control
    assert h.timestamp_type == 0
    assert h.is_idempotent


def test_sequence_wraps_like_kafka() -> None:
    assert increment_sequence(2**31 - 1, 1) == 0
    assert increment_sequence(2**31 - 2, 3) == 1
    assert increment_sequence(5, 0) == 5
    data = make_batch([b"x", b"y", b"z"], producer_id=1, producer_epoch=0, base_sequence=2**31 - 2)
    assert parse_header(data).last_sequence == 0


def test_validate_splits_several_batches() -> None:
    a = make_batch([b"1", b"2"])
    b = make_batch([b"3"])
    got = validate_batches(a + b)
    assert [(s, e) for s, e, _ in got] == [(0, len(a)), (len(a), len(a) + len(b))]
    assert [h.records_count for *_, h in got] == [2, 1]


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: d + b"\x00" * 5, id="trailing-garbage-short"),
        pytest.param(lambda d: d + d[:40], id="trailing-partial-batch"),
        pytest.param(lambda d: d[:30], id="truncated-header"),
        pytest.param(lambda d: d[:-3] + b"zzz", id="bad-crc"),
        pytest.param(lambda d: d[:8] + struct.pack(">i", 10) + d[12:], id="length-too-small"),
        pytest.param(lambda d: b"", id="empty"),
    ],
)
def test_validate_rejects_corruption(mutate: Callable[[bytes], bytes]) -> None:
    data = make_batch([b"hello", b"world"])
    with pytest.raises(CorruptBatch):
        validate_batches(mutate(data))


def test_validate_rejects_old_magic_before_crc() -> None:
    data = make_batch([b"v"], magic=1)
    with pytest.raises(UnsupportedMagic) as err:
        validate_batches(data)
    assert err.value.magic == 1
    assert isinstance(err.value, StorageError)
    # A legacy v0 message: offset, size, crc, magic 0, attributes, key, value.
    legacy = struct.pack(">qiIbbii", 0, 14, 0, 0, 0, -1, 0)
    with pytest.raises(UnsupportedMagic):
        validate_batches(legacy)


def test_validate_rejects_negative_counts() -> None:
    data = bytearray(make_batch([b"x"]))
    struct.pack_into(">i", data, 57, -1)
    # Keep the CRC right so the count check itself is what fails.
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[21:])))
    with pytest.raises(CorruptBatch, match="records_count"):
        validate_batches(bytes(data))


def test_base_offset_rewrite_keeps_crc_valid() -> None:
    buf = bytearray(make_batch([b"a", b"b"]))
    before = bytes(buf)
    set_base_offset(buf, 0, 123456789)
    assert parse_header(buf).base_offset == 123456789
    assert buf[8:] == before[8:]
    assert decode_batches(buf)[0].crc_ok


def test_log_append_time_rewrite() -> None:
    buf = bytearray(make_batch([Record(b"a", timestamp=5), Record(b"b", timestamp=9)]))
    original = bytes(buf)
    set_log_append_time(buf, 0, len(buf), 777_000)
    h = parse_header(buf)
    assert h.timestamp_type == LOG_APPEND_TIME
    assert h.max_timestamp == 777_000
    assert h.base_timestamp == 5
    decoded = decode_batches(buf)[0]
    assert decoded.crc_ok
    assert [r.timestamp for r in decoded.records] == [777_000, 777_000]
    # Records themselves are untouched.
    assert buf[HEADER_SIZE:] == original[HEADER_SIZE:]
    validate_batches(bytes(buf))
