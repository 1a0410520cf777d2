"""filter_batch: the log cleaner's rewrite of one RecordBatch v2, checked against Kafka's
rules (MemoryRecords.buildRetainedRecordsInto, MemoryRecordsBuilder) and read back by two
decoders that share no code with app.storage: tests/unit/batchgen.py and kafka-python's
DefaultRecordBatch."""

from __future__ import annotations

import struct

import crc32c
import pytest
from kafka.record.default_records import DefaultRecordBatch

from app.storage.log import empty_batch, filter_batch, iter_records, validate_batches
from tests.unit import batchgen
from tests.unit.batchgen import Record, decode_batches, encode_record, make_batch

BASE = 1000
N = 40
LEADER_EPOCH = 7
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
HORIZON = 1_800_000_000_000  # a delete horizon far from every record's timestamp
PRODUCERS = {
    "plain": {},
    "idempotent": {"producer_id": 4242, "producer_epoch": 3, "base_sequence": 100},
    "transactional": {
        "producer_id": 4243,
        "producer_epoch": 1,
        "base_sequence": 0,
        "transactional": True,
    },
}


def _records(n: int = N) -> list[Record]:
    """Keys, null keys, tombstones, headers (one with a null value), big values, and
    timestamps that are not in offset order (so re-based deltas go negative)."""
    out = []
    for i in range(n):
        key = None if i % 7 == 3 else f"key-{i % 5}".encode()
        value = None if i % 6 == 5 else (b"v%d-" % i) * (1 + i % 4)
        if i == 10:
            value = b"x" * 20_000  # a length past one-byte and two-byte varints
        headers = [("h", b"1"), ("n\u00e9", None)] if i % 3 == 0 else []
        ts = 1_700_000_000_000 + (i * 37 % 11) * 1000 - (500_000 if i == 20 else 0)
        out.append(Record(value, key=key, timestamp=ts, headers=headers))
    return out


def _batch(codec: str, log_append: bool, producer: str, n: int = N) -> bytes:
    return make_batch(
        _records(n),
        base_offset=BASE,
        compression=codec,
        log_append_time=log_append,
        partition_leader_epoch=LEADER_EPOCH,
        **PRODUCERS[producer],  # type: ignore[arg-type]
    )


def _expected(original: bytes, keep_offsets: set[int]) -> tuple[int, int, list[tuple]]:
    """(baseTimestamp, maxTimestamp, records) Kafka writes for the kept records."""
    (batch,) = decode_batches(original)
    kept = [r for r in batch.records if r.offset in keep_offsets]
    if batch.attributes & 8:  # LogAppendTime: every record reads as maxTimestamp
        base_ts = max_ts = batch.max_timestamp
    else:
        base_ts = kept[0].timestamp
        max_ts = max(r.timestamp for r in kept)
    return base_ts, max_ts, [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in kept]


def _check(original: bytes, out: bytes, keep_offsets: set[int]) -> None:
    base_ts, max_ts, records = _expected(original, keep_offsets)
    (orig,) = decode_batches(original)
    validate_batches(out)  # length and CRC-32C, as the produce path checks them

    (got,) = decode_batches(out)
    assert got.crc_ok and got.size == len(out)
    assert got.base_offset == BASE  # never the first kept record's offset (v2)
    assert got.last_offset_delta == N - 1  # the original batch's last offset, kept
    assert got.base_timestamp == base_ts
    assert got.max_timestamp == max_ts
    assert got.attributes == orig.attributes
    assert got.partition_leader_epoch == LEADER_EPOCH
    assert (got.producer_id, got.producer_epoch, got.base_sequence) == (
        orig.producer_id,
        orig.producer_epoch,
        orig.base_sequence,
    )
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got.records] == records

    kb = DefaultRecordBatch(out)
    assert kb.validate_crc()
    assert kb.base_offset == BASE and kb.last_offset_delta == N - 1
    assert kb.compression_type == orig.attributes & 7
    assert kb.is_transactional == bool(orig.attributes & 0x10)
    assert kb.timestamp_type == (1 if orig.attributes & 8 else 0)
    assert (kb.producer_id, kb.producer_epoch, kb.base_sequence) == (
        orig.producer_id,
        orig.producer_epoch,
        orig.base_sequence,
    )
    assert kb.records_count == len(records)
    assert [
        (r.offset, r.timestamp, r.key, r.value, [(k, v) for k, v in r.headers]) for r in kb
    ] == records

    mine = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in iter_records(out)]
    assert mine == records


@pytest.mark.parametrize("producer", list(PRODUCERS))
@pytest.mark.parametrize("log_append", [False, True], ids=["create", "logappend"])
@pytest.mark.parametrize("codec", CODECS)
def test_filter_keeps_exactly_the_kept_records(codec: str, log_append: bool, producer: str):
    original = _batch(codec, log_append, producer)
    cases = {
        "odd": {BASE + i for i in range(N) if i % 2},
        "first removed": {BASE + i for i in range(1, N)},
        "last removed": {BASE + i for i in range(N - 1)},
        "one in the middle": {BASE + 20},
        "first and last only": {BASE, BASE + N - 1},
    }
    for name, keep_offsets in cases.items():
        seen: list[int] = []

        def keep(offset: int, rec, keep_offsets=keep_offsets, seen=seen) -> bool:
            assert rec.offset == offset
            seen.append(offset)
            return offset in keep_offsets

        out = filter_batch(memoryview(original), keep)
        assert seen == list(range(BASE, BASE + N)), name
        assert out is not None and len(out) < len(original), name
        _check(original, out, keep_offsets)


@pytest.mark.parametrize("codec", CODECS)
def test_all_kept_is_the_original_and_none_kept_drops_it(codec: str):
    original = _batch(codec, False, "idempotent")
    assert filter_batch(original, lambda o, r: True) == original
    assert filter_batch(memoryview(original), lambda o, r: True) == original
    assert filter_batch(original, lambda o, r: False) is None
    assert filter_batch(make_batch([], base_offset=5), lambda o, r: True) is None


@pytest.mark.parametrize("horizon", [None, HORIZON], ids=["no-horizon", "horizon"])
def test_uncompressed_output_is_byte_for_byte_kafkas(horizon: int | None):
    """Every byte of the rewrite, assembled here from Kafka's rules with batchgen's own
    record encoder: offset deltas from the original base, timestamp deltas from the first
    kept record (from the delete horizon when one is set: kept tombstones, flag 0x40),
    record attributes 0, original lastOffsetDelta and producer fields."""
    original = _batch("none", False, "transactional")
    keep_offsets = {BASE + i for i in range(N) if i % 3 != 1 and i != 0}
    out = filter_batch(original, lambda o, r: o in keep_offsets, horizon)
    assert out is not None
    (orig,) = decode_batches(original)
    kept = [r for r in orig.records if r.offset in keep_offsets]
    assert any(r.value is None for r in kept)
    base_ts = kept[0].timestamp if horizon is None else horizon
    payload = b"".join(
        encode_record(
            r.offset - BASE,
            r.timestamp - base_ts,
            Record(r.value, key=r.key, headers=r.headers),
        )
        for r in kept
    )
    header = bytearray(
        struct.pack(
            ">qiibIhiqqqhii",
            BASE,
            61 + len(payload) - 12,
            LEADER_EPOCH,
            2,
            0,
            0x10 if horizon is None else 0x50,
            N - 1,
            base_ts,
            max(r.timestamp for r in kept),
            4243,
            1,
            0,
            len(kept),
        )
    )
    struct.pack_into(">I", header, 17, crc32c.crc32c(bytes(header[21:]) + payload))
    assert out == bytes(header) + payload


def test_compressed_with_the_java_clients_framing():
    keep = lambda o, r: o % 2 == 0  # noqa: E731
    frames = {c: filter_batch(_batch(c, False, "plain"), keep) for c in CODECS}
    payload = {c: f[61:] for c, f in frames.items() if f is not None}
    assert payload["gzip"][:2] == b"\x1f\x8b"
    # snappy-java's stream header: magic, version 1, compatible version 1
    assert payload["snappy"][:16] == b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"
    # Kafka's Lz4BlockOutputStream: FLG 0x60 (v01, independent blocks), BD 0x40 (64 KiB)
    assert payload["lz4"][:7] == b"\x04\x22\x4d\x18\x60\x40\x82"
    assert payload["zstd"][:4] == b"\x28\xb5\x2f\xfd"
    assert payload["zstd"][4] & 0xC4 == 0  # zstd-jni's stream: no content size, no checksum


def test_large_batch_offset_deltas_and_snappy_blocks():
    """Offset deltas past the precomputed varints and a payload over several 32 KiB
    snappy blocks."""
    n = 20_000
    recs = [Record(b"%d" % i, key=b"k%d" % (i % 100), timestamp=1000 + i) for i in range(n)]
    for codec in CODECS:
        original = make_batch(recs, base_offset=BASE, compression=codec)
        out = filter_batch(original, lambda o, r: o >= BASE + n - 100 or o == BASE + 3)
        assert out is not None
        (got,) = decode_batches(out)
        assert got.crc_ok and got.last_offset_delta == n - 1
        assert got.base_timestamp == 1003 and got.max_timestamp == 1000 + n - 1
        assert [r.offset for r in got.records] == [BASE + 3, *range(BASE + n - 100, BASE + n)]
        assert [r.value for r in DefaultRecordBatch(out)] == [r.value for r in got.records]


def test_a_batch_with_a_delete_horizon_keeps_it():
    """KIP-534: baseTimestamp of a batch flagged 0x40 is its delete horizon; Kafka keeps
    batch.deleteHorizonMs() when it rewrites (a new horizon is only set on a batch without
    one), with record deltas relative to it."""
    recs = [Record(b"a", key=b"1", timestamp=5000), Record(None, key=b"2", timestamp=6000)]
    raw = bytearray(make_batch(recs, base_offset=BASE))
    struct.pack_into(">h", raw, 21, 0x40)
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))
    assert filter_batch(bytes(raw), lambda o, r: True, HORIZON) == bytes(raw)
    for horizon in (None, HORIZON):
        out = filter_batch(bytes(raw), lambda o, r: o == BASE + 1, horizon)
        assert out is not None
        (got,) = decode_batches(out)
        assert got.crc_ok and got.attributes == 0x40
        assert got.base_timestamp == 5000  # the horizon, not the kept record's timestamp
        assert [(r.offset, r.timestamp, r.value) for r in got.records] == [(BASE + 1, 6000, None)]


@pytest.mark.parametrize("producer", ["plain", "transactional"])
@pytest.mark.parametrize("log_append", [False, True], ids=["create", "logappend"])
@pytest.mark.parametrize("codec", CODECS)
def test_a_kept_tombstone_sets_the_delete_horizon_and_timestamps_stay(
    codec: str, log_append: bool, producer: str
):
    """KIP-534 (MemoryRecords.filterTo's needToSetDeleteHorizon, MemoryRecordsBuilder with
    deleteHorizonMs): a batch without a horizon that keeps a tombstone is written with flag
    0x40 and baseTimestamp = the horizon, also when every record is kept; the record deltas
    are re-based on it so every record reads the timestamp it had (batchgen, kafka-python
    and app.storage agree); maxTimestamp and everything else as before. A later rewrite
    keeps that horizon."""
    original = _batch(codec, log_append, producer)
    (orig,) = decode_batches(original)
    every = {BASE + i for i in range(N)}
    odd = {BASE + i for i in range(N) if i % 2}  # holds the tombstones at i = 5, 11, ...
    for keep_offsets in (every, odd):
        out = filter_batch(original, lambda o, r, k=keep_offsets: o in k, HORIZON)
        assert out is not None and out != original
        validate_batches(out)
        _, max_ts, records = _expected(original, keep_offsets)
        (got,) = decode_batches(out)
        assert got.crc_ok and got.attributes == orig.attributes | 0x40
        assert got.base_timestamp == HORIZON and got.max_timestamp == max_ts
        assert (got.base_offset, got.last_offset_delta) == (BASE, N - 1)
        assert (got.producer_id, got.producer_epoch, got.base_sequence) == (
            orig.producer_id,
            orig.producer_epoch,
            orig.base_sequence,
        )
        assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got.records] == (
            records
        )
        kb = DefaultRecordBatch(out)
        assert kb.validate_crc() and kb.first_timestamp == HORIZON
        assert [
            (r.offset, r.timestamp, r.key, r.value, [(k, v) for k, v in r.headers]) for r in kb
        ] == records
        mine = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in iter_records(out)]
        assert mine == records

        fewer = keep_offsets - {BASE + 5}
        again = filter_batch(out, lambda o, r, k=fewer: o in k, HORIZON + 1)
        assert again is not None
        (later,) = decode_batches(again)
        assert later.base_timestamp == HORIZON and later.attributes == got.attributes
        assert [(r.offset, r.timestamp) for r in later.records] == [
            (r[0], r[1]) for r in records if r[0] in fewer
        ]
        assert filter_batch(out, lambda o, r: True, HORIZON + 1) == out


def test_no_horizon_without_a_kept_tombstone():
    """A horizon is for tombstones: a batch keeping none is written as without one."""
    original = _batch("lz4", False, "idempotent")
    values = {BASE + i for i in range(N) if i % 6 != 5}
    out = filter_batch(original, lambda o, r: o in values, HORIZON)
    assert out is not None
    _check(original, out, values)  # attributes and baseTimestamp as without a horizon
    recs = [Record(b"a", key=b"1", timestamp=5000), Record(b"b", key=b"2", timestamp=6000)]
    plain = make_batch(recs, base_offset=BASE)
    assert filter_batch(plain, lambda o, r: True, HORIZON) == plain


def test_a_control_batch_given_a_horizon_gets_it():
    """A marker that may go once its horizon passes (Kafka's containsMarkerForEmptyTxn) is
    rewritten with it; its control record and timestamps are unchanged."""
    commit = Record(b"\x00\x00\x00\x00\x00\x05", key=b"\x00\x00\x00\x01", timestamp=7000)
    marker = make_batch(
        [commit],
        base_offset=BASE,
        producer_id=9,
        producer_epoch=2,
        transactional=True,
        control=True,
    )
    assert filter_batch(marker, lambda o, r: True) == marker
    out = filter_batch(marker, lambda o, r: True, HORIZON)
    assert out is not None
    (got,) = decode_batches(out)
    assert got.crc_ok and got.attributes == 0x10 | 0x20 | 0x40
    assert (got.base_timestamp, got.max_timestamp) == (HORIZON, 7000)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in got.records] == [
        (BASE, 7000, commit.key, commit.value)
    ]
    kb = DefaultRecordBatch(out)
    assert kb.validate_crc() and kb.is_control_batch
    assert [(r.offset, r.timestamp) for r in kb] == [(BASE, 7000)]
    assert filter_batch(out, lambda o, r: True, HORIZON + 1) == out


@pytest.mark.parametrize("log_append", [False, True])
def test_empty_batch_is_kafkas_retained_empty_header(log_append: bool):
    original = _batch("zstd", log_append, "transactional")
    (orig,) = decode_batches(original)
    out = empty_batch(original)
    validate_batches(out)
    (got,) = decode_batches(out)
    assert got.crc_ok and got.size == 61 and got.records == []
    assert got.attributes == (0x10 | (8 if log_append else 0))  # no codec: nothing to compress
    assert (got.base_offset, got.last_offset_delta) == (BASE, N - 1)
    assert (got.base_timestamp, got.max_timestamp) == (-1, orig.max_timestamp)
    assert (got.producer_id, got.producer_epoch, got.base_sequence) == (4243, 1, 0)
    kb = DefaultRecordBatch(out)
    assert kb.validate_crc() and list(kb) == []


def test_batchgen_codecs_are_readable_by_kafka_python():
    """The independent encoder itself is right for every codec (else the checks above
    would compare two wrongs)."""
    for codec in CODECS:
        raw = _batch(codec, False, "plain")
        assert [r.value for r in DefaultRecordBatch(raw)] == [r.value for r in _records()]
    assert set(batchgen.CODECS) == set(CODECS)
