"""Encode and decode real Kafka RecordBatch v2 bytes (varint records, CRC-32C) for tests.
Independent of app.storage, so it also checks the storage layer's own parsing."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import crc32c

_HEADER = struct.Struct(">qiibIhiqqqhii")
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_XERIAL = b"\x82SNAPPY\x00"


def _compress(codec: int, payload: bytes) -> bytes:
    # Snappy via python-snappy (the app uses cramjam), framed as snappy-java does.
    if codec == 1:
        return gzip.compress(payload)
    if codec == 2:
        import snappy

        out = bytearray(_XERIAL + struct.pack(">ii", 1, 1))
        for pos in range(0, len(payload), 32 * 1024):
            block = snappy.compress(payload[pos : pos + 32 * 1024])
            out += struct.pack(">i", len(block)) + block
        return bytes(out)
    if codec == 3:
        import lz4.frame

        return bytes(lz4.frame.compress(payload, block_linked=False, store_size=False))
    if codec == 4:
        import zstandard

        return zstandard.ZstdCompressor().compress(payload)
    return payload


def _decompress(codec: int, payload: bytes) -> bytes:
    if codec == 1:
        return gzip.decompress(payload)
    if codec == 2:
        import snappy

        if payload[:8] != _XERIAL:
            return bytes(snappy.decompress(payload))
        out = bytearray()
        pos = 16
        while pos < len(payload):
            (n,) = struct.unpack_from(">i", payload, pos)
            out += snappy.decompress(payload[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return bytes(out)
    if codec == 3:
        import lz4.frame

        return bytes(lz4.frame.decompress(payload))
    if codec == 4:
        import zstandard

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(payload))
    return payload


def _varint(value: int) -> bytes:
    v = (value << 1) ^ (value >> 63)  # zigzag
    out = bytearray()
    while v & ~0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    return (result >> 1) ^ -(result & 1), pos


def _bytes_field(value: bytes | None) -> bytes:
    return _varint(-1) if value is None else _varint(len(value)) + value


@dataclass
class Record:
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # absolute; None means the batch's base timestamp
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def encode_record(offset_delta: int, timestamp_delta: int, rec: Record) -> bytes:
    body = bytearray(b"\x00")  # attributes
    body += _varint(timestamp_delta) + _varint(offset_delta)
    body += _bytes_field(rec.key) + _bytes_field(rec.value)
    body += _varint(len(rec.headers))
    for hk, hv in rec.headers:
        body += _bytes_field(hk.encode()) + _bytes_field(hv)
    return _varint(len(body)) + bytes(body)


def make_batch(
    records: Sequence[Record | bytes | None],
    *,
    base_offset: int = 0,
    timestamp: int = 1_000_000,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    control: bool = False,
    log_append_time: bool = False,
    partition_leader_epoch: int = -1,
    compression: str = "none",
    magic: int = 2,
) -> bytes:
    """One RecordBatch v2 with a correct CRC. Plain bytes/None become record values."""
    recs = [r if isinstance(r, Record) else Record(r) for r in records]
    stamps = [timestamp if r.timestamp is None else r.timestamp for r in recs]
    base_ts = min(stamps) if stamps else timestamp
    max_ts = max(stamps) if stamps else timestamp
    payload = b"".join(
        encode_record(i, ts - base_ts, r)
        for i, (r, ts) in enumerate(zip(recs, stamps, strict=True))
    )
    codec = CODECS[compression]
    payload = _compress(codec, payload)
    attributes = codec | (8 if log_append_time else 0)
    attributes |= (16 if transactional else 0) | (32 if control else 0)
    size = _HEADER.size + len(payload)
    header = bytearray(
        _HEADER.pack(
            base_offset,
            size - 12,
            partition_leader_epoch,
            magic,
            0,
            attributes,
            max(len(recs) - 1, 0),
            base_ts,
            max_ts,
            producer_id,
            producer_epoch,
            base_sequence,
            len(recs),
        )
    )
    body = bytes(header[21:]) + payload
    struct.pack_into(">I", header, 17, crc32c.crc32c(body))
    return bytes(header) + payload


@dataclass
class DecodedRecord:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class DecodedBatch:
    base_offset: int
    partition_leader_epoch: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    crc_ok: bool
    size: int
    records: list[DecodedRecord]


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = _read_varint(buf, pos)
    if n < 0:
        return None, pos
    return buf[pos : pos + n], pos + n


def decode_batches(data: bytes | bytearray | memoryview) -> list[DecodedBatch]:
    """Decode back-to-back batches (any codec), checking each CRC."""
    buf = bytes(data)
    out = []
    pos = 0
    while pos < len(buf):
        (
            base_offset,
            length,
            leader_epoch,
            _magic,
            crc,
            attributes,
            last_delta,
            base_ts,
            max_ts,
            pid,
            epoch,
            seq,
            count,
        ) = _HEADER.unpack_from(buf, pos)
        end = pos + length + 12
        crc_ok = crc32c.crc32c(buf[pos + 21 : end]) == crc
        payload = _decompress(attributes & 7, buf[pos + _HEADER.size : end])
        records = []
        rp = 0
        for _ in range(count):
            _length, rp = _read_varint(payload, rp)
            rp += 1  # attributes
            ts_delta, rp = _read_varint(payload, rp)
            off_delta, rp = _read_varint(payload, rp)
            key, rp = _read_bytes(payload, rp)
            value, rp = _read_bytes(payload, rp)
            nh, rp = _read_varint(payload, rp)
            headers = []
            for _h in range(nh):
                hk, rp = _read_bytes(payload, rp)
                hv, rp = _read_bytes(payload, rp)
                headers.append(((hk or b"").decode(), hv))
            ts = max_ts if attributes & 8 else base_ts + ts_delta
            records.append(DecodedRecord(base_offset + off_delta, ts, key, value, headers))
        out.append(
            DecodedBatch(
                base_offset,
                leader_epoch,
                attributes,
                last_delta,
                base_ts,
                max_ts,
                pid,
                epoch,
                seq,
                crc_ok,
                end - pos,
                records,
            )
        )
        pos = end
    return out


def joined(chunks: Sequence[bytes | bytearray | memoryview]) -> bytes:
    """What a fetch response would carry: the returned chunks back to back."""
    return b"".join(bytes(c) for c in chunks)
