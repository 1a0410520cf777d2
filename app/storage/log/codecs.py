"""Decompression of record batch payloads, for the paths that must read records, and
compression the way the Java client writes it, for the log cleaner's rewritten batches.

The produce and fetch paths never call this: batches travel verbatim.
"""

from __future__ import annotations

import struct
import zlib

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4

# Java and kafka-python frame snappy data the way snappy-java does ("xerial").
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16
# snappy-java's SnappyOutputStream: magic, version 1, minimum compatible version 1, then
# blocks of at most 32 KiB uncompressed, each a big-endian length and a raw snappy block.
_XERIAL_PREAMBLE = _XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01"
_XERIAL_BLOCK = 32 * 1024
_BE_I32 = struct.Struct(">i")


class DecompressError(Exception):
    pass


def _snappy(data: bytes) -> bytes:
    import cramjam

    if data[:8] == _XERIAL_MAGIC:
        out = bytearray()
        pos = _XERIAL_HEADER
        while pos < len(data):
            if pos + 4 > len(data):
                raise DecompressError("truncated xerial snappy block header")
            (n,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if n < 0 or pos + n > len(data):
                raise DecompressError("truncated xerial snappy block")
            out += bytes(cramjam.snappy.decompress_raw(data[pos : pos + n]))
            pos += n
        return bytes(out)
    return bytes(cramjam.snappy.decompress_raw(data))


def _lz4(data: bytes) -> bytes:
    import lz4.frame

    return bytes(lz4.frame.decompress(data))


def _zstd(data: bytes) -> bytes:
    import zstandard

    # librdkafka omits the content size from its frames, so the one-shot
    # decompress() refuses them; a streaming object handles both. Objects are
    # not thread-safe, hence one per call.
    return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))


def decompress(codec: int, data: bytes) -> bytes:
    try:
        if codec == NONE:
            return data
        if codec == GZIP:
            return zlib.decompress(data, 47)  # gzip or zlib header, auto-detected
        if codec == SNAPPY:
            return _snappy(data)
        if codec == LZ4:
            return _lz4(data)
        if codec == ZSTD:
            return _zstd(data)
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
