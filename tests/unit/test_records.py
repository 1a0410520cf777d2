"""Record decoding across codecs, with batches built by kafka-python's own encoder."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from app.storage.log.codecs import DecompressError, decompress
from app.storage.log.records import batch_span, first_at_or_after, iter_records, records_at

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def build(codec: int, records: list[tuple[int, bytes | None, bytes | None, list]]) -> bytes:
    b = DefaultRecordBatchBuilder(2, codec, False, -1, -1, -1, 1 << 20)
    for i, (ts, key, value, headers) in enumerate(records):
        b.append(i, ts, key, value, headers)
    return bytes(b.build())


SAMPLE = [
    (1_000, b"k0", b"v0" * 50, [("h", b"1"), ("h", None)]),
    (1_005, None, b"", []),
    (1_003, b"", None, [("empty", b"")]),
    (2_000, b"k3", "ünï".encode(), []),
]


@pytest.mark.parametrize("codec", CODECS)
def test_iter_records_every_codec(codec: str) -> None:
    batch = build(CODECS[codec], SAMPLE)
    got = list(iter_records(batch))
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in got] == [
        (i, ts, k, v, h) for i, (ts, k, v, h) in enumerate(SAMPLE)
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_records_at_decodes_only_the_asked_offsets(codec: str) -> None:
    rows = [
        (1_000 + i, b"k%d" % i, b"v" * (i % 300), [("n", b"%d" % i)] * (i % 3)) for i in range(700)
    ]
    batch = bytearray(build(CODECS[codec], rows))
    batch[0:8] = (5_000).to_bytes(8, "big")  # stored batches carry their base offset
    every = {r.offset: r for r in iter_records(batch)}
    assert batch_span(batch) == (5_000, 5_699)
    asked = [5_699, 5_000, 5_350, 5_351, 4_999, 5_700]
    got = records_at(batch, asked)
    assert got == {o: every[o] for o in (5_000, 5_350, 5_351, 5_699)}
    assert records_at(batch, []) == {}


def test_records_at_with_offset_deltas_that_skip() -> None:
    b = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 20)
    for delta in (0, 2, 3, 7):
        b.append(delta, 1_000 + delta, None, b"v%d" % delta, [])
    batch = bytes(b.build())
    got = records_at(batch, [2, 3, 7])
    assert {o: r.value for o, r in got.items()} == {2: b"v2", 3: b"v3", 7: b"v7"}


@pytest.mark.parametrize("codec", CODECS)
def test_first_at_or_after(codec: str) -> None:
    batch = build(CODECS[codec], SAMPLE)
    assert first_at_or_after(batch, 0) == (0, 1_000)
    assert first_at_or_after(batch, 1_001) == (1, 1_005)
    assert first_at_or_after(batch, 1_006) == (3, 2_000)
    assert first_at_or_after(batch, 2_001) is None


def test_zstd_frame_without_content_size() -> None:
    import zstandard

    raw = b"payload" * 1000
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    assert decompress(4, cctx.compress(raw)) == raw


def test_garbage_payload_is_a_clear_error() -> None:
    with pytest.raises(DecompressError):
        decompress(3, b"not lz4 at all")
    with pytest.raises(DecompressError):
        decompress(7, b"")
