"""Fetch: long polling, empty waits, out-of-range offsets, verbatim batches."""

from __future__ import annotations

import threading
import time

import confluent_kafka

from .clients import confluent_consumer, make_messages, produce_confluent
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, parse_batches

OFFSET_OUT_OF_RANGE = 1


def _topic(server: Server) -> str:
    topic = unique_topic("fetch")
    with RawKafka(server.bootstrap) as raw:
        raw.metadata([topic], auto_create=True)
        (t,) = raw.metadata([topic]).topics
        assert t.error_code == 0
    return topic


def test_long_poll_returns_soon_after_produce(server: Server) -> None:
    topic = _topic(server)
    acked_at: list[float] = []

    def produce_later() -> None:
        time.sleep(0.6)
        with RawKafka(server.bootstrap) as prod:
            err, base = prod.produce(topic, 0, build_batch([Rec(b"k", b"wake up")]))
            acked_at.append(time.monotonic())
            assert (err, base) == (0, 0)

    with RawKafka(server.bootstrap) as raw:
        t = threading.Thread(target=produce_later)
        start = time.monotonic()
        t.start()
        p = raw.fetch(topic, 0, 0, max_wait_ms=5000, min_bytes=1, timeout=15)
        answered = time.monotonic()
        t.join()
    assert acked_at, "produce in the background failed"
    assert p.error_code == 0
    assert answered - start < 4.0, f"fetch waited {answered - start:.2f}s: it ran to max_wait"
    assert answered - acked_at[0] < 1.0, (
        f"fetch answered {answered - acked_at[0]:.2f}s after the produce was acknowledged"
    )
    (batch,) = parse_batches(bytes(p.records))
    assert [(r[0], r[2], r[3]) for r in batch.records] == [(0, b"k", b"wake up")]
    assert int(p.high_watermark) == 1


def test_long_poll_confluent_latency(server: Server) -> None:
    """A consumer waiting with a long fetch.wait.max.ms gets a message well before it."""
    topic = _topic(server)
    c = confluent_consumer(server.bootstrap, **{"fetch.wait.max.ms": 5000})
    try:
        c.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        c.consume(num_messages=1, timeout=1.5)  # let the first (long-polling) fetch start
        msgs = make_messages(1, seed=5)
        sent = time.monotonic()
        produce_confluent(server.bootstrap, topic, msgs, "none")
        got = None
        while got is None and time.monotonic() - sent < 10:
            for m in c.consume(num_messages=1, timeout=0.2):
                assert m.error() is None, m.error()
                got = m
        received = time.monotonic()
    finally:
        c.close()
    assert got is not None
    assert got.value() == msgs[0].value
    assert received - sent < 1.5, f"message arrived {received - sent:.2f}s after it was sent"


def test_empty_fetch_waits_max_wait(server: Server) -> None:
    topic = _topic(server)
    with RawKafka(server.bootstrap) as raw:
        t0 = time.monotonic()
        p = raw.fetch(topic, 0, 0, max_wait_ms=700, min_bytes=1)
        waited = time.monotonic() - t0
    assert p.error_code == 0
    assert not p.records
    assert int(p.high_watermark) == 0
    assert 0.6 <= waited < 2.5, f"empty fetch returned after {waited:.2f}s, max_wait was 0.7s"


def test_fetch_min_bytes_zero_returns_immediately(server: Server) -> None:
    topic = _topic(server)
    with RawKafka(server.bootstrap) as raw:
        t0 = time.monotonic()
        p = raw.fetch(topic, 0, 0, max_wait_ms=5000, min_bytes=0)
        waited = time.monotonic() - t0
    assert p.error_code == 0
    assert waited < 1.0


def test_fetch_out_of_range(server: Server) -> None:
    topic = _topic(server)
    with RawKafka(server.bootstrap) as raw:
        assert raw.produce(topic, 0, build_batch([Rec(None, b"a"), Rec(None, b"b")])) == (0, 0)
        p = raw.fetch(topic, 0, 5, max_wait_ms=0)
        assert p.error_code == OFFSET_OUT_OF_RANGE
        assert not p.records
        # exactly at the end is not out of range: just nothing yet
        p = raw.fetch(topic, 0, 2, max_wait_ms=0)
        assert p.error_code == 0
        assert not p.records
        assert int(p.high_watermark) == 2


def test_fetch_returns_produced_bytes_verbatim(server: Server) -> None:
    """Apart from the base offset (and leader epoch), fetched batches equal the produced ones."""
    topic = _topic(server)
    ts = 1_700_000_000_000
    batches = [
        build_batch(
            [Rec(b"k%d" % i, b"v" * i, [("h", None), ("h", b"")], i) for i in range(n)],
            first_timestamp=ts,
        )
        for n in (1, 5, 3)
    ]
    with RawKafka(server.bootstrap) as raw:
        bases = [raw.produce(topic, 0, b) for b in batches]
        assert bases == [(0, 0), (0, 1), (0, 6)]
        p = raw.fetch(topic, 0, 0, max_wait_ms=0)
    data = bytes(p.records)
    pos = 0
    for (_, base), sent in zip(bases, batches, strict=True):
        got = data[pos : pos + len(sent)]
        assert int.from_bytes(got[0:8], "big") == base
        assert got[16:] == sent[16:], "batch bytes changed after the leader epoch field"
        assert got[8:12] == sent[8:12]
        pos += len(sent)
    assert pos == len(data)
    parsed = parse_batches(data)
    assert all(b.crc_ok for b in parsed)
    assert [r[0] for b in parsed for r in b.records] == list(range(9))
