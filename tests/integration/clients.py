"""Produce and consume with the three real Python clients, in one shape.

Every consumer assigns its partition explicitly (no group APIs) and checks
CRCs. Messages are compared as `Msg` values: key, value, headers (an ordered
tuple, so duplicate keys and null values survive), timestamp and offset.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import confluent_kafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# Kafka's timestamp types as kafka-python and aiokafka report them (confluent has its own).
CREATE_TIME = 0
LOG_APPEND_TIME = 1
_CONFLUENT_TIMESTAMP_TYPES = {
    CREATE_TIME: confluent_kafka.TIMESTAMP_CREATE_TIME,
    LOG_APPEND_TIME: confluent_kafka.TIMESTAMP_LOG_APPEND_TIME,
}
CLIENTS = ("confluent", "kafka-python", "aiokafka")
# kafka-python refuses null header values ("must be (str, bytes) tuples").
NULL_HEADER_VALUES = {"confluent": True, "kafka-python": False, "aiokafka": True}

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class Msg:
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int
    offset: int = -1


def make_messages(
    n: int, *, base_ts: int | None = None, null_header_values: bool = True, seed: int = 0
) -> list[Msg]:
    """Messages that exercise every corner a record can have.

    Null and empty keys and values, duplicate header keys, null and empty
    header values, binary and non-ASCII data, large and tiny values,
    non-monotonic timestamps. A key and a value are never both null.
    """
    rnd = random.Random(seed)
    if base_ts is None:
        base_ts = int(time.time() * 1000) - 3_600_000
    out = []
    for i in range(n):
        k = i % 10
        key: bytes | None = None if k == 0 else b"" if k == 1 else f"key-{i}".encode()
        value: bytes | None
        if k == 2:
            value = None
        elif k == 3:
            value = b""
        elif i % 7 == 0:
            value = (f"value {i} " * 200).encode() + rnd.randbytes(1000)
        else:
            value = f"value-{i}-".encode() + rnd.randbytes(rnd.randrange(0, 64))
        h = i % 5
        headers: Headers
        if h == 0:
            headers = ()
        elif h == 1:
            headers = (("dup", b"first"), ("dup", b"second"), ("dup", b"first"))
        elif h == 2:
            headers = (("nullable", None if null_header_values else b""), ("x", b"1"))
        elif h == 3:
            headers = (("empty", b""), ("bin", bytes(range(256))), ("empty", b"again"))
        else:
            headers = (("ключ-ü", "значение".encode()),)
        # mostly increasing, with some records older than their predecessors
        ts = base_ts + i * 3 if i % 13 != 5 else base_ts - 5000 + i
        out.append(Msg(key, value, headers, ts))
    return out


def with_offsets(msgs: Sequence[Msg], offsets: Sequence[int]) -> list[Msg]:
    return [replace(m, offset=o) for m, o in zip(msgs, offsets, strict=True)]


def _codec(codec: str) -> str | None:
    return None if codec == "none" else codec


# --------------------------------------------------------------------------- producers


def produce_confluent(
    bootstrap: str,
    topic: str,
    msgs: Sequence[Msg],
    codec: str = "none",
    partition: int = 0,
    **conf: Any,
) -> list[int]:
    """Produce in order; return each message's offset from its delivery report."""
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "acks": "all",
            "linger.ms": 5,
            "max.in.flight.requests.per.connection": 1,
            **conf,
        }
    )
    offsets: list[int | None] = [None] * len(msgs)
    errors: list[str] = []

    def report(i: int):
        def cb(err: Any, m: Any) -> None:
            if err is not None:
                errors.append(f"message {i}: {err}")
            else:
                offsets[i] = m.offset()

        return cb

    for i, m in enumerate(msgs):
        while True:
            try:
                p.produce(
                    topic,
                    value=m.value,
                    key=m.key,
                    partition=partition,
                    timestamp=m.timestamp,
                    headers=list(m.headers),
                    on_delivery=report(i),
                )
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    assert left == 0, f"{left} messages not delivered within 60s"
    assert not errors, errors[:5]
    assert None not in offsets
    return [o for o in offsets if o is not None]


def produce_kafka_python(
    bootstrap: str,
    topic: str,
    msgs: Sequence[Msg],
    codec: str = "none",
    partition: int = 0,
    **conf: Any,
) -> list[int]:
    p = KafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=_codec(codec),
        acks="all",
        linger_ms=5,
        max_in_flight_requests_per_connection=1,
        **conf,
    )
    try:
        futures = [
            p.send(
                topic,
                value=m.value,
                key=m.key,
                headers=list(m.headers),
                partition=partition,
                timestamp_ms=m.timestamp,
            )
            for m in msgs
        ]
        p.flush(60)
        return [f.get(timeout=60).offset for f in futures]
    finally:
        p.close(timeout=10)


async def produce_aiokafka_async(
    bootstrap: str,
    topic: str,
    msgs: Sequence[Msg],
    codec: str = "none",
    partition: int = 0,
    **conf: Any,
) -> list[int]:
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=_codec(codec),
        acks="all",
        linger_ms=5,
        **conf,
    )
    await p.start()
    try:
        futures = [
            await p.send(
                topic,
                value=m.value,
                key=m.key,
                headers=list(m.headers),
                partition=partition,
                timestamp_ms=m.timestamp,
            )
            for m in msgs
        ]
        results = await asyncio.wait_for(asyncio.gather(*futures), 60)
        return [r.offset for r in results]
    finally:
        await p.stop()


def produce_aiokafka(*args: Any, **kw: Any) -> list[int]:
    return asyncio.run(produce_aiokafka_async(*args, **kw))


PRODUCERS = {
    "confluent": produce_confluent,
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
}


# --------------------------------------------------------------------------- consumers


def confluent_consumer(bootstrap: str, **conf: Any) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"unused-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "check.crcs": True,
            **conf,
        }
    )


def consume_confluent(
    bootstrap: str,
    topic: str,
    n: int,
    partition: int = 0,
    start: int = 0,
    timeout: float = 30,
    *,
    timestamp_type: int = CREATE_TIME,
) -> list[Msg]:
    c = confluent_consumer(bootstrap)
    out: list[Msg] = []
    try:
        c.assign([confluent_kafka.TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    raise AssertionError(f"confluent consumer error: {m.error()}")
                ts_type, ts = m.timestamp()
                assert ts_type == _CONFLUENT_TIMESTAMP_TYPES[timestamp_type], (
                    f"offset {m.offset()}: timestamp type {ts_type}"
                )
                out.append(Msg(m.key(), m.value(), tuple(m.headers() or ()), ts, m.offset()))
    finally:
        c.close()
    return out


def _record_msg(r: Any, timestamp_type: int) -> Msg:
    """kafka-python and aiokafka ConsumerRecords share this shape."""
    assert r.timestamp_type == timestamp_type, (r.offset, r.timestamp_type)
    return Msg(r.key, r.value, tuple(tuple(h) for h in r.headers), r.timestamp, r.offset)


def consume_kafka_python(
    bootstrap: str,
    topic: str,
    n: int,
    partition: int = 0,
    start: int = 0,
    timeout: float = 30,
    *,
    timestamp_type: int = CREATE_TIME,
) -> list[Msg]:
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
    )
    out: list[Msg] = []
    try:
        tp = KpTopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                out.extend(_record_msg(r, timestamp_type) for r in records)
    finally:
        c.close()
    return out


async def consume_aiokafka_async(
    bootstrap: str,
    topic: str,
    n: int,
    partition: int = 0,
    start: int = 0,
    timeout: float = 30,
    *,
    timestamp_type: int = CREATE_TIME,
) -> list[Msg]:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
    )
    await c.start()
    out: list[Msg] = []
    try:
        tp = AioTopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            batches = await c.getmany(timeout_ms=500)
            for records in batches.values():
                out.extend(_record_msg(r, timestamp_type) for r in records)
    finally:
        await c.stop()
    return out


def consume_aiokafka(*args: Any, **kw: Any) -> list[Msg]:
    return asyncio.run(consume_aiokafka_async(*args, **kw))


CONSUMERS = {
    "confluent": consume_confluent,
    "kafka-python": consume_kafka_python,
    "aiokafka": consume_aiokafka,
}


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(low, high) watermark offsets as the broker reports them (ListOffsets)."""
    c = confluent_consumer(bootstrap)
    try:
        low, high = c.get_watermark_offsets(
            confluent_kafka.TopicPartition(topic, partition), timeout=10
        )
        return int(low), int(high)
    finally:
        c.close()


def diff(expected: Sequence[Msg], got: Sequence[Msg], limit: int = 3) -> str:
    """A readable description of the first differences, for assertion messages."""
    lines = [f"expected {len(expected)} messages, got {len(got)}"]
    for i, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e != g:
            lines.append(f"#{i}: expected {e!r:.300}\n      got      {g!r:.300}")
            if len(lines) > limit:
                break
    return "\n".join(lines)
