"""Decompression bombs: a record batch may not inflate past a bound, whatever its codec, and
the paths that decode records turn one into a clear error instead of gigabytes in memory."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import crc32c
import pytest

from app.storage.errors import CorruptBatch, InvalidRecords
from app.storage.log.batch import validate_batches
from app.storage.log.codecs import (
    GZIP,
    LZ4,
    MAX_INFLATED_BYTES,
    NONE,
    SNAPPY,
    ZSTD,
    DecompressError,
    compress,
    decompress,
)
from app.storage.log.records import iter_records
from app.storage.log.topicconfig import LogConfig
from app.storage.log.validation import check_records

CODECS = {"gzip": GZIP, "snappy": SNAPPY, "lz4": LZ4, "zstd": ZSTD}
MiB = 1 << 20


def gzip_zeros(n_mib: int) -> bytes:
    """A valid gzip stream of n MiB of zeros, built in milliseconds: after a full flush the
    compressor's output for the same input repeats byte for byte."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(MiB)) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush()
    crc = 0
    chunk = bytes(MiB)
    for _ in range(n_mib):
        crc = zlib.crc32(chunk, crc)
    trailer = struct.pack("<II", crc, (n_mib * MiB) & 0xFFFFFFFF)
    # The stream's own trailer is for 2 MiB; replace it with the one for n MiB.
    return head + block * (n_mib - 1) + tail[:-8] + trailer


def batch(codec: int, payload: bytes, count: int = 1) -> bytes:
    """A RecordBatch v2 with a valid CRC around an already compressed payload."""
    tail = struct.pack(">hiqqqhii", codec, count - 1, 1000, 1000, -1, -1, -1, count) + payload
    crc = crc32c.crc32c(tail)
    return struct.pack(">qiib", 0, len(tail) + 9, -1, 2) + struct.pack(">I", crc) + tail


def keyless(n: int) -> bytes:
    # length 6: attributes 0, ts delta 0, offset delta i (one byte for < 64), key -1, value
    # -1, no headers
    return b"".join(bytes([12, 0, 0, (i % 64) << 1, 1, 1, 0]) for i in range(n))


def test_gzip_helper_is_a_real_gzip_stream() -> None:
    assert zlib.decompress(gzip_zeros(3), 47) == bytes(3 * MiB)


@pytest.mark.parametrize("codec", CODECS)
def test_inflating_past_the_limit_is_refused(codec: str) -> None:
    data = compress(CODECS[codec], bytes(MiB + 1))
    with pytest.raises(DecompressError, match="inflates past 1048576 bytes"):
        decompress(CODECS[codec], data, limit=MiB)
    assert decompress(CODECS[codec], compress(CODECS[codec], bytes(MiB)), limit=MiB) == bytes(MiB)


def test_uncompressed_payloads_are_not_limited() -> None:
    # Their size is already bounded by the request: nothing inflates.
    assert decompress(NONE, b"x" * 100, limit=10) == b"x" * 100


@pytest.mark.parametrize("codec", CODECS)
def test_truncated_or_garbled_streams_are_errors(codec: str) -> None:
    data = compress(CODECS[codec], b"hello world " * 1000)
    for bad in (data[: len(data) // 2], b"\x01\x02\x03garbage" * 10):
        with pytest.raises(DecompressError):
            decompress(CODECS[codec], bad)


def test_snappy_declared_length_past_the_limit_is_refused_before_inflating() -> None:
    # A raw snappy block starts with its uncompressed length as a varint.
    huge = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + b"\x00a"
    with pytest.raises(DecompressError, match="inflates past"):
        decompress(SNAPPY, huge)
    # snappy-java framing: many blocks, each small, together past the limit.
    raw = compress(SNAPPY, bytes(32 * 1024))
    block = raw[16:]  # after the 16-byte preamble: one length-prefixed block
    framed = raw[:16] + block * 40
    assert len(decompress(SNAPPY, framed)) == 40 * 32 * 1024
    with pytest.raises(DecompressError, match="inflates past"):
        decompress(SNAPPY, framed, limit=39 * 32 * 1024)


@pytest.mark.parametrize("codec", ["gzip", "zstd", "lz4"])
def test_a_bomb_is_refused_without_inflating_it(codec: str) -> None:
    """2 GiB of zeros (kilobytes to a few MB compressed) is refused having allocated about the
    limit, not gigabytes."""
    n = 2048
    if codec == "gzip":
        bomb = gzip_zeros(n)
    elif codec == "zstd":
        import zstandard

        c = zstandard.ZstdCompressor(level=1).compressobj()
        bomb = b"".join(c.compress(bytes(MiB)) for _ in range(n)) + c.flush()
    else:
        import lz4.frame

        c = lz4.frame.LZ4FrameCompressor(block_size=lz4.frame.BLOCKSIZE_MAX4MB)
        bomb = c.begin() + b"".join(c.compress(bytes(MiB)) for _ in range(n)) + c.flush()
    tracemalloc.start()
    try:
        with pytest.raises(DecompressError, match="inflates past"):
            decompress(CODECS[codec], bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_INFLATED_BYTES + 32 * MiB, peak


def test_iter_records_of_a_bomb_batch_is_a_decompress_error() -> None:
    with pytest.raises(DecompressError, match="inflates past"):
        list(iter_records(batch(GZIP, gzip_zeros(MAX_INFLATED_BYTES // MiB + 1))))


def compacted() -> LogConfig:
    return LogConfig(compact=True)


def test_check_records_turns_a_bomb_into_corrupt_batch() -> None:
    data = batch(GZIP, gzip_zeros(MAX_INFLATED_BYTES // MiB + 1))
    with pytest.raises(CorruptBatch, match="inflates past"):
        check_records(data, validate_batches(data), compacted(), 0, "t", 0)


def test_check_records_turns_a_garbled_payload_into_corrupt_batch() -> None:
    data = batch(GZIP, b"\x1f\x8b not really gzip")
    with pytest.raises(CorruptBatch, match="codec 1"):
        check_records(data, validate_batches(data), compacted(), 0, "t", 0)


def test_check_records_keeps_a_bounded_list_of_record_errors() -> None:
    """Kafka names every refused record; a batch of 200,000 keyless records on a compacted
    topic names the first thousand and counts them all, instead of holding 200,000 messages
    (a compressed batch of tiny records makes millions from a few KB)."""
    n = 200_000
    data = batch(ZSTD, compress(ZSTD, keyless(n)), count=n)
    with pytest.raises(InvalidRecords) as info:
        check_records(data, validate_batches(data), compacted(), 0, "t", 0)
    assert f"due to {n} record errors in total" in str(info.value)
    errors = info.value.record_errors
    assert len(errors) == 1000
    assert errors[0][0] == 0 and errors[-1][0] == 999
    assert "Compacted topic cannot accept message without key in t-0." in errors[0][1]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("size", [0, 1, 1000, 3 * MiB + 17])
def test_real_payloads_inflate_as_before(codec: str, size: int) -> None:
    """Every codec as the Java client writes it, and zstd and lz4 frames that state their
    content size (which the Java client does not), a few blocks long; bytes after a gzip
    or zstd stream are ignored, as before."""
    raw = b"".join(b"%d record of the batch; " % i for i in range(size // 24 + 1))[:size]
    assert decompress(CODECS[codec], compress(CODECS[codec], raw)) == raw
    if codec == "zstd":
        import zstandard

        sized = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(raw)
        assert decompress(ZSTD, sized) == raw
        assert decompress(ZSTD, sized + b"junk") == raw
    if codec == "lz4":
        import lz4.frame

        assert decompress(LZ4, lz4.frame.compress(raw, store_size=True)) == raw
    if codec == "gzip":
        assert decompress(GZIP, compress(GZIP, raw) + b"junk") == raw
