"""A tiny Kafka protocol client that frames requests by hand.

It exists so that tests can send exactly the bytes they want (duplicate
batches, broken CRCs, magic 1 message sets, garbage, oversized length
prefixes) and look at exactly what comes back. Request and response bodies
are encoded and decoded with kio; headers, framing and record batches are
written here.
"""

from __future__ import annotations

import datetime
import io
import socket
import struct
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import crc32c
from kio.index import load_payload_module
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

API_VERSIONS = 18
RESPONSE_HEADER_V0_APIS = {API_VERSIONS}


def ms(value: int) -> datetime.timedelta:
    """kio encodes i32 durations from timedeltas."""
    return datetime.timedelta(milliseconds=value)


def _entity(api_key: int, version: int, kind: EntityType) -> type:
    module = load_payload_module(api_key, version, kind)
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__type__", None) is kind:
            return value
    raise LookupError(f"no {kind.name} entity for api {api_key} v{version}")


def request_class(api_key: int, version: int) -> type:
    return _entity(api_key, version, EntityType.request)


def response_class(api_key: int, version: int) -> type:
    return _entity(api_key, version, EntityType.response)


def schema(api_key: int, version: int, kind: str = "request") -> Any:
    """The kio module of one API version (for nested entity classes)."""
    return load_payload_module(api_key, version, EntityType[kind])


# --------------------------------------------------------------------------- varints


def write_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def write_varint(value: int) -> bytes:
    """Zigzag-encoded signed varint (record fields)."""
    return write_uvarint((value << 1) ^ (value >> 63))


def read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    raw, pos = read_uvarint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


# --------------------------------------------------------------------------- framing


def encode_request_header(
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None = "rawkafka",
    flexible: bool = False,
) -> bytes:
    """Request header v1 (v2 when the body is flexible: adds an empty tag buffer)."""
    out = struct.pack(">hhi", api_key, api_version, correlation_id)
    if client_id is None:
        out += struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        out += struct.pack(">h", len(raw)) + raw
    if flexible:
        out += b"\x00"
    return out


def encode_body(body: Any) -> bytes:
    buf = io.BytesIO()
    entity_writer(type(body))(buf, body)
    return buf.getvalue()


def encode_request(body: Any, correlation_id: int, client_id: str | None = "rawkafka") -> bytes:
    """A whole request frame: 4-byte size, header, body."""
    payload = encode_request_header(
        int(body.__api_key__),
        int(body.__version__),
        correlation_id,
        client_id,
        bool(body.__flexible__),
    ) + encode_body(body)
    return struct.pack(">i", len(payload)) + payload


def decode_response(api_key: int, version: int, frame: bytes) -> tuple[int, Any]:
    """(correlation id, body) from a response frame without its size prefix."""
    cls = response_class(api_key, version)
    (correlation_id,) = struct.unpack_from(">i", frame, 0)
    pos = 4
    if cls.__flexible__ and api_key not in RESPONSE_HEADER_V0_APIS:
        count, pos = read_uvarint(frame, pos)
        for _ in range(count):
            _, pos = read_uvarint(frame, pos)
            length, pos = read_uvarint(frame, pos)
            pos += length
    body, size = entity_reader(cls)(frame, pos)
    if pos + size != len(frame):
        raise ValueError(
            f"api {api_key} v{version}: response has {len(frame) - pos - size} trailing bytes"
        )
    return correlation_id, body


def decode_response_as(cls: type, frame: bytes, header_tags: bool = False) -> tuple[int, Any]:
    """Decode a response frame with an explicitly chosen body class."""
    (correlation_id,) = struct.unpack_from(">i", frame, 0)
    pos = 4
    if header_tags:
        count, pos = read_uvarint(frame, pos)
        for _ in range(count):
            _, pos = read_uvarint(frame, pos)
            length, pos = read_uvarint(frame, pos)
            pos += length
    body, size = entity_reader(cls)(frame, pos)
    if pos + size != len(frame):
        raise ValueError(f"{cls.__name__}: response has {len(frame) - pos - size} trailing bytes")
    return correlation_id, body


class ConnectionClosed(Exception):
    pass


class RawKafka:
    """One blocking TCP connection speaking hand-framed Kafka."""

    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self._next_correlation_id = 1

    def __enter__(self) -> RawKafka:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def next_correlation_id(self) -> int:
        cid = self._next_correlation_id
        self._next_correlation_id += 1
        return cid

    # raw bytes ------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionClosed("peer closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv_frame(self, timeout: float | None = None) -> bytes:
        """One response frame without its size prefix. Raises ConnectionClosed on EOF."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            (size,) = struct.unpack(">i", self._recv_exact(4))
            return self._recv_exact(size)
        except ConnectionResetError as exc:
            raise ConnectionClosed(str(exc)) from exc
        finally:
            self.sock.settimeout(self.timeout)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True when the peer closes (EOF or reset) within timeout, discarding any data."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.sock.settimeout(left)
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(self.timeout)

    # requests -------------------------------------------------------------

    def send(self, body: Any, correlation_id: int | None = None) -> int:
        cid = self.next_correlation_id() if correlation_id is None else correlation_id
        self.send_bytes(encode_request(body, cid))
        return cid

    def request(self, body: Any, timeout: float | None = None) -> Any:
        """Send one request and return its decoded response body."""
        cid = self.send(body)
        frame = self.recv_frame(timeout)
        got_cid, resp = decode_response(int(body.__api_key__), int(body.__version__), frame)
        if got_cid != cid:
            raise AssertionError(f"correlation id {got_cid} != {cid}")
        return resp

    # convenience ------------------------------------------------------------

    def api_versions(self, version: int = 3) -> Any:
        cls = request_class(API_VERSIONS, version)
        if version >= 3:
            return self.request(cls(client_software_name="rawkafka", client_software_version="1"))
        return self.request(cls())

    def init_producer_id(self, version: int = 1) -> tuple[int, int]:
        cls = request_class(22, version)
        resp = self.request(cls(transactional_id=None, transaction_timeout=ms(60_000)))
        if resp.error_code != 0:
            raise AssertionError(f"InitProducerId failed: error {int(resp.error_code)}")
        return int(resp.producer_id), int(resp.producer_epoch)

    def metadata(self, topics: Sequence[str] | None, version: int = 9, auto_create: bool = False):
        mod = schema(3, version)
        return self.request(
            mod.MetadataRequest(
                topics=None
                if topics is None
                else tuple(mod.MetadataRequestTopic(name=t) for t in topics),
                allow_auto_topic_creation=auto_create,
                include_cluster_authorized_operations=False,
                include_topic_authorized_operations=False,
            )
        )

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        """CreateTopics v7 of one topic on this broker, which must succeed."""
        mod = schema(19, 7)
        resp = self.request(
            mod.CreateTopicsRequest(
                topics=(
                    mod.CreatableTopic(
                        name=topic,
                        num_partitions=partitions,
                        replication_factor=1,
                        assignments=(),
                        configs=(),
                    ),
                ),
                timeout=ms(10_000),
                validate_only=False,
            )
        )
        (t,) = resp.topics
        if (t.name, t.error_code) != (topic, 0):
            raise AssertionError(
                f"CreateTopics {topic}: error {int(t.error_code)} {t.error_message}"
            )

    def produce_request(
        self, topic: str, partition: int, records: bytes, acks: int = -1, version: int = 9
    ) -> Any:
        mod = schema(0, version)
        return mod.ProduceRequest(
            transactional_id=None,
            acks=acks,
            timeout=ms(30_000),
            topic_data=(
                mod.TopicProduceData(
                    name=topic,
                    partition_data=(mod.PartitionProduceData(index=partition, records=records),),
                ),
            ),
        )

    def produce(
        self, topic: str, partition: int, records: bytes, acks: int = -1, version: int = 9
    ) -> tuple[int, int]:
        """(error code, base offset) of a single-partition produce."""
        resp = self.request(self.produce_request(topic, partition, records, acks, version))
        (t,) = resp.responses
        (p,) = t.partition_responses
        return int(p.error_code), int(p.base_offset)

    def list_offset(self, topic: str, partition: int, timestamp: int, version: int = 7) -> Any:
        mod = schema(2, version)
        resp = self.request(
            mod.ListOffsetsRequest(
                replica_id=-1,
                isolation_level=0,
                topics=(
                    mod.ListOffsetsTopic(
                        name=topic,
                        partitions=(
                            mod.ListOffsetsPartition(
                                partition_index=partition, timestamp=timestamp
                            ),
                        ),
                    ),
                ),
            )
        )
        (t,) = resp.topics
        (p,) = t.partitions
        return p

    def fetch_request(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_wait_ms: int = 0,
        min_bytes: int = 1,
        max_bytes: int = 1 << 20,
        version: int = 12,
    ) -> Any:
        mod = schema(1, version)
        return mod.FetchRequest(
            max_wait=ms(max_wait_ms),
            min_bytes=min_bytes,
            max_bytes=max_bytes,
            topics=(
                mod.FetchTopic(
                    topic=topic,
                    partitions=(
                        mod.FetchPartition(
                            partition=partition,
                            fetch_offset=offset,
                            partition_max_bytes=max_bytes,
                        ),
                    ),
                ),
            ),
            forgotten_topics_data=(),
        )

    def fetch(
        self, topic: str, partition: int, offset: int, timeout: float | None = None, **kw: Any
    ) -> Any:
        """The single partition entry of a Fetch response."""
        resp = self.request(self.fetch_request(topic, partition, offset, **kw), timeout)
        if resp.error_code != 0:
            raise AssertionError(f"Fetch failed: top-level error {int(resp.error_code)}")
        (t,) = resp.responses
        (p,) = t.partitions
        return p


# --------------------------------------------------------------------------- record batches


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0


def encode_record(offset_delta: int, rec: Rec) -> bytes:
    body = bytearray(b"\x00")  # attributes
    body += write_varint(rec.timestamp_delta)
    body += write_varint(offset_delta)
    for part in (rec.key, rec.value):
        if part is None:
            body += write_varint(-1)
        else:
            body += write_varint(len(part)) + part
    body += write_varint(len(rec.headers))
    for hk, hv in rec.headers:
        raw = hk.encode()
        body += write_varint(len(raw)) + raw
        if hv is None:
            body += write_varint(-1)
        else:
            body += write_varint(len(hv)) + hv
    return write_varint(len(body)) + bytes(body)


BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")


def build_batch(
    records: Iterable[Rec],
    *,
    first_timestamp: int | None = None,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes:
    """An uncompressed RecordBatch v2 with a correct CRC-32C."""
    recs = list(records)
    if first_timestamp is None:
        first_timestamp = int(time.time() * 1000)
    payload = b"".join(encode_record(i, r) for i, r in enumerate(recs))
    max_ts = first_timestamp + max((r.timestamp_delta for r in recs), default=0)
    # fields after the CRC: attributes .. record count
    tail = struct.pack(
        ">hiqqqhii",
        attributes,
        len(recs) - 1,
        first_timestamp,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        len(recs),
    )
    crc_covered = tail + payload
    crc = crc32c.crc32c(crc_covered)
    batch_length = 4 + 1 + 4 + len(crc_covered)  # leader epoch + magic + crc + rest
    return (
        struct.pack(">qiibI", base_offset, batch_length, partition_leader_epoch, 2, crc)
        + crc_covered
    )


def corrupt_crc(batch: bytes) -> bytes:
    """The same batch with one payload byte flipped, so the stored CRC no longer matches."""
    data = bytearray(batch)
    data[-1] ^= 0xFF
    return bytes(data)


def legacy_message_set_v1(key: bytes | None, value: bytes | None, timestamp: int) -> bytes:
    """A magic 1 message set holding one message (CRC-32 over magic..value)."""
    body = struct.pack(">bbq", 1, 0, timestamp)
    for part in (key, value):
        if part is None:
            body += struct.pack(">i", -1)
        else:
            body += struct.pack(">i", len(part)) + part
    crc = zlib.crc32(body) & 0xFFFFFFFF
    message = struct.pack(">I", crc) + body
    return struct.pack(">qi", 0, len(message)) + message


@dataclass
class Batch:
    base_offset: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]
    crc_ok: bool


def parse_batches(data: bytes) -> list[Batch]:
    """Parse uncompressed RecordBatch v2 data (e.g. from a Fetch response).

    Each record is (offset, timestamp, key, value, headers). A trailing
    partial batch is ignored, as clients do.
    """
    out = []
    pos = 0
    mv = memoryview(data)
    while pos + 12 <= len(data):
        (batch_length,) = struct.unpack_from(">i", data, pos + 8)
        end = pos + 12 + batch_length
        if end > len(data):
            break
        (
            base_offset,
            _len,
            _epoch,
            magic,
            crc,
            attributes,
            last_offset_delta,
            first_ts,
            max_ts,
            pid,
            pepoch,
            base_seq,
            count,
        ) = BATCH_HEADER.unpack_from(data, pos)
        if magic != 2:
            raise ValueError(f"magic {magic} batch at byte {pos}")
        if attributes & 0x07:
            raise ValueError("compressed batch: parse_batches reads uncompressed batches only")
        crc_ok = crc32c.crc32c(mv[pos + 21 : end]) == crc
        rpos = pos + BATCH_HEADER.size
        records = []
        for _ in range(count):
            length, rpos = read_varint(data, rpos)
            rend = rpos + length
            rpos += 1  # attributes
            ts_delta, rpos = read_varint(data, rpos)
            off_delta, rpos = read_varint(data, rpos)
            parts: list[bytes | None] = []
            for _part in range(2):
                n, rpos = read_varint(data, rpos)
                if n < 0:
                    parts.append(None)
                else:
                    parts.append(bytes(data[rpos : rpos + n]))
                    rpos += n
            hcount, rpos = read_varint(data, rpos)
            headers: list[tuple[str, bytes | None]] = []
            for _h in range(hcount):
                n, rpos = read_varint(data, rpos)
                hk = bytes(data[rpos : rpos + n]).decode()
                rpos += n
                n, rpos = read_varint(data, rpos)
                if n < 0:
                    headers.append((hk, None))
                else:
                    headers.append((hk, bytes(data[rpos : rpos + n])))
                    rpos += n
            if rpos != rend:
                raise ValueError(f"record at offset delta {off_delta} has a bad length")
            records.append(
                (base_offset + off_delta, first_ts + ts_delta, parts[0], parts[1], headers)
            )
        out.append(
            Batch(
                base_offset,
                magic,
                crc,
                attributes,
                last_offset_delta,
                first_ts,
                max_ts,
                pid,
                pepoch,
                base_seq,
                records,
                crc_ok,
            )
        )
        pos = end
    return out
