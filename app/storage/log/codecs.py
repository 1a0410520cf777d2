"""Decompression of record batch payloads, for the paths that must read records, and
compression the way the Java client writes it, for the log cleaner's rewritten batches.

The produce and fetch paths never call this: batches travel verbatim.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4

# Java and kafka-python frame snappy data the way snappy-java does ("xerial").
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16
# snappy-java's SnappyOutputStream: magic, version 1, minimum compatible version 1, then
# blocks of at most 32 KiB uncompressed, each a big-endian length and a raw snappy block.
_XERIAL_PREAMBLE = _XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01"
_XERIAL_BLOCK = 32 * 1024
_BE_I32 = struct.Struct(">i")


# The most a batch's payload may inflate to. The produce path stores batches unread, so this
# binds the readers (indexer, search, cleaner, per-record produce checks): without it a few
# KB of gzip or zstd inflate to gigabytes. 64x Kafka's default max.message.bytes and
# librdkafka's batch.size; each reader holds one inflated batch at a time.
MAX_INFLATED_BYTES = 64 * 1024 * 1024
_NAMES = {GZIP: "gzip", SNAPPY: "snappy", LZ4: "lz4", ZSTD: "zstd"}
# Streams are inflated this much at a time, so that passing the limit is seen in time.
_CHUNK = 1024 * 1024
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_BLOCK_MAX = 128 * 1024


class DecompressError(Exception):
    pass


def _too_large(codec: int, limit: int) -> DecompressError:
    return DecompressError(
        f"codec {codec} ({_NAMES[codec]}): the batch inflates past {limit} bytes"
    )


def _bounded(codec: int, chunks: Iterator[bytes], limit: int) -> bytes:
    """The chunks joined, refusing as soon as they pass `limit`: a bomb costs at most the
    limit in memory, not the limit and the copy a join makes."""
    parts: list[bytes] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise _too_large(codec, limit)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _gzip_chunks(data: bytes) -> Iterator[bytes]:
    d = zlib.decompressobj(47)  # gzip or zlib header, auto-detected
    pending = data
    while not d.eof:
        chunk = d.decompress(pending, _CHUNK)
        pending = d.unconsumed_tail
        if not chunk and not pending and not d.eof:
            raise DecompressError(f"codec {GZIP}: incomplete or truncated stream")
        yield chunk


def _gzip(data: bytes, limit: int) -> bytes:
    return _bounded(GZIP, _gzip_chunks(data), limit)


def _snappy(data: bytes, limit: int) -> bytes:
    import cramjam

    if data[:8] != _XERIAL_MAGIC:
        # A raw block starts with its length: refuse before allocating it.
        if int(cramjam.snappy.decompress_raw_len(data)) > limit:
            raise _too_large(SNAPPY, limit)
        return bytes(cramjam.snappy.decompress_raw(data))
    out = bytearray()
    pos = _XERIAL_HEADER
    while pos < len(data):
        if pos + 4 > len(data):
            raise DecompressError("truncated xerial snappy block header")
        (n,) = _BE_I32.unpack_from(data, pos)
        pos += 4
        if n < 0 or pos + n > len(data):
            raise DecompressError("truncated xerial snappy block")
        block = data[pos : pos + n]
        if len(out) + int(cramjam.snappy.decompress_raw_len(block)) > limit:
            raise _too_large(SNAPPY, limit)
        out += bytes(cramjam.snappy.decompress_raw(block))
        pos += n
    return bytes(out)


def _lz4_chunks(data: bytes) -> Iterator[bytes]:
    import lz4.frame

    d = lz4.frame.LZ4FrameDecompressor()
    pending = data
    while not d.eof:
        chunk = bytes(d.decompress(pending, max_length=_CHUNK))
        pending = b""
        if not chunk and d.needs_input and not d.eof:
            raise DecompressError(f"codec {LZ4}: frame incomplete")
        yield chunk


def _lz4(data: bytes, limit: int) -> bytes:
    import lz4.frame

    if int(lz4.frame.get_frame_info(data)["content_size"]) > limit:
        raise _too_large(LZ4, limit)
    return _bounded(LZ4, _lz4_chunks(data), limit)


def _zstd_bound(data: bytes) -> int:
    """The most the first zstd frame can inflate to, from its block headers (RFC 8878: a raw
    or RLE block states its size, a compressed one regenerates at most 128 KiB), without
    inflating anything. DecompressError if the frame is cut short."""
    if len(data) < 5 or data[:4] != _ZSTD_MAGIC:
        raise DecompressError(f"codec {ZSTD}: not a zstd frame")
    fhd = data[4]
    single_segment = fhd & 0x20
    fcs_size = (0, 2, 4, 8)[fhd >> 6] or (1 if single_segment else 0)
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_size
    bound = 0
    while True:
        if pos + 3 > len(data):
            raise DecompressError(f"codec {ZSTD}: frame incomplete")
        header = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        kind, size = (header >> 1) & 3, header >> 3
        pos += 3 + (1 if kind == 1 else size)
        bound += _ZSTD_BLOCK_MAX if kind == 2 else size
        if header & 1:
            break
    if pos + (4 if fhd & 4 else 0) > len(data):
        raise DecompressError(f"codec {ZSTD}: frame incomplete")
    return bound


def _zstd(data: bytes, limit: int) -> bytes:
    import zstandard

    # librdkafka omits the content size from its frames, so the one-shot decompress()
    # refuses them (and where a frame states one, it allocates that much, true or not); a
    # streaming object handles both, but inflates all it is given: the block headers bound
    # what it will make first. Objects are not thread-safe, hence one per call.
    if _zstd_bound(data) <= limit:
        d = zstandard.ZstdDecompressor().decompressobj()
        out = bytes(d.decompress(data))
        if not d.eof:
            raise DecompressError(f"codec {ZSTD}: frame incomplete")
        return out
    chunks = zstandard.ZstdDecompressor().read_to_iter(data, write_size=_CHUNK)
    return _bounded(ZSTD, chunks, limit)


def decompress(codec: int, data: bytes, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """The payload inflated; DecompressError if it is corrupt, truncated or would inflate
    past `limit` bytes (found out having inflated at most that much)."""
    if codec == NONE:
        return data
    try:
        if codec == GZIP:
            return _gzip(data, limit)
        if codec == SNAPPY:
            return _snappy(data, limit)
        if codec == LZ4:
            return _lz4(data, limit)
        if codec == ZSTD:
            return _zstd(data, limit)
    except DecompressError:
        raise
    except Exception as exc:
        raise DecompressError(f"codec {codec}: {exc}") from exc
    raise DecompressError(f"unknown compression codec {codec}")


def _snappy_xerial(data: bytes) -> bytes:
    import cramjam

    parts = [_XERIAL_PREAMBLE]
    for pos in range(0, len(data), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(data[pos : pos + _XERIAL_BLOCK]))
        parts += (_BE_I32.pack(len(block)), block)
    return b"".join(parts)


def _lz4_frame(data: bytes) -> bytes:
    import lz4.frame

    # Kafka's Lz4BlockOutputStream at its default level 9 (which means LZ4's fast compressor):
    # 64 KiB independent blocks, no block or content checksum, no content size.
    return bytes(
        lz4.frame.compress(
            data,
            compression_level=0,
            block_size=lz4.frame.BLOCKSIZE_MAX64KB,
            block_linked=False,
            content_checksum=False,
            store_size=False,
        )
    )


def _zstd_frame(data: bytes) -> bytes:
    import zstandard

    # Level 3, Kafka's default; zstd-jni's stream writes no content size and no checksum.
    return bytes(zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data))


def compress(codec: int, data: bytes) -> bytes:
    """`data` compressed as the Java client writes `codec` at its default level, in one call
    per batch (snappy: one per 32 KiB block, as snappy-java frames it)."""
    if codec == NONE:
        return data
    if codec == GZIP:
        # Java's Deflater.DEFAULT_COMPRESSION in a gzip wrapper.
        return zlib.compress(data, zlib.Z_DEFAULT_COMPRESSION, 31)
    if codec == SNAPPY:
        return _snappy_xerial(data)
    if codec == LZ4:
        return _lz4_frame(data)
    if codec == ZSTD:
        return _zstd_frame(data)
    raise DecompressError(f"unknown compression codec {codec}")
