"""Decompression of record batch payloads, for the paths that must read records.

The produce and fetch paths never call this: batches travel verbatim.
"""

from __future__ import annotations

import struct
import zlib

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4

# Java and kafka-python frame snappy data the way snappy-java does ("xerial").
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16


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
