"""Idempotent produce: exactly once, in order; duplicates, gaps and fencing by hand."""

from __future__ import annotations

import time

from .clients import consume_confluent, make_messages, produce_confluent, watermarks
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, ms, parse_batches, request_class

OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47
LATEST = -1


def _create_by_metadata(raw: RawKafka, topic: str) -> None:
    """Auto-create a topic the way producers do: Metadata with allow_auto_topic_creation."""
    deadline = time.monotonic() + 10
    while True:
        resp = raw.metadata([topic], auto_create=True)
        (t,) = resp.topics
        if t.error_code == 0 and len(t.partitions) >= 1:
            return
        assert time.monotonic() < deadline, f"topic {topic} not created: error {t.error_code}"
        time.sleep(0.1)


def _records(prefix: str, n: int) -> list[Rec]:
    return [Rec(f"{prefix}-k{i}".encode(), f"{prefix}-v{i}".encode(), [], i) for i in range(n)]


def test_idempotent_producer_exactly_once_in_order(server: Server) -> None:
    topic = unique_topic("idem")
    n = 3000
    msgs = make_messages(n, seed=42)
    offsets = produce_confluent(
        server.bootstrap,
        topic,
        msgs,
        "none",
        **{"enable.idempotence": True, "acks": "all", "max.in.flight.requests.per.connection": 5},
    )
    assert offsets == list(range(n))
    got = consume_confluent(server.bootstrap, topic, n)
    assert [m.offset for m in got] == list(range(n))
    assert [(m.key, m.value, m.headers, m.timestamp) for m in got] == [
        (m.key, m.value, m.headers, m.timestamp) for m in msgs
    ]
    assert watermarks(server.bootstrap, topic) == (0, n)

    # The stored batches are the producer's: one producer id, sequences that
    # follow the offsets exactly (the producer started at sequence 0).
    with RawKafka(server.bootstrap) as raw:
        batches = []
        offset = 0
        while offset < n:
            p = raw.fetch(topic, 0, offset, max_bytes=4 << 20)
            assert p.error_code == 0
            got_batches = parse_batches(bytes(p.records or b""))
            assert got_batches, f"empty fetch at offset {offset}"
            batches.extend(got_batches)
            offset = got_batches[-1].base_offset + got_batches[-1].last_offset_delta + 1
    assert all(b.crc_ok for b in batches)
    assert len({b.producer_id for b in batches}) == 1
    assert batches[0].producer_id >= 0
    assert all(b.producer_epoch == batches[0].producer_epoch for b in batches)
    assert [b.base_sequence for b in batches] == [b.base_offset for b in batches]


def test_duplicate_batch_is_stored_once(server: Server) -> None:
    topic = unique_topic("dup")
    with RawKafka(server.bootstrap) as raw:
        _create_by_metadata(raw, topic)
        pid, epoch = raw.init_producer_id()
        assert pid >= 0
        assert epoch >= 0
        batch = build_batch(
            _records("a", 3), producer_id=pid, producer_epoch=epoch, base_sequence=0
        )

        err1, base1 = raw.produce(topic, 0, batch)
        assert (err1, base1) == (0, 0)
        assert raw.list_offset(topic, 0, LATEST).offset == 3

        # The very same bytes again, as a producer retrying after a lost response.
        err2, base2 = raw.produce(topic, 0, batch)
        assert (err2, base2) == (0, base1)
        assert raw.list_offset(topic, 0, LATEST).offset == 3

        # On another connection too.
        with RawKafka(server.bootstrap) as raw2:
            assert raw2.produce(topic, 0, batch) == (0, base1)
        assert raw.list_offset(topic, 0, LATEST).offset == 3

        # The next sequence is accepted and lands right after.
        nxt = build_batch(_records("b", 2), producer_id=pid, producer_epoch=epoch, base_sequence=3)
        assert raw.produce(topic, 0, nxt) == (0, 3)
        assert raw.list_offset(topic, 0, LATEST).offset == 5

        p = raw.fetch(topic, 0, 0)
        records = [r for b in parse_batches(bytes(p.records)) for r in b.records]
        assert [(r[0], r[2], r[3]) for r in records] == [
            (0, b"a-k0", b"a-v0"),
            (1, b"a-k1", b"a-v1"),
            (2, b"a-k2", b"a-v2"),
            (3, b"b-k0", b"b-v0"),
            (4, b"b-k1", b"b-v1"),
        ]


def test_sequence_gap_is_out_of_order(server: Server) -> None:
    topic = unique_topic("gap")
    with RawKafka(server.bootstrap) as raw:
        _create_by_metadata(raw, topic)
        pid, epoch = raw.init_producer_id()
        first = build_batch(
            _records("a", 2), producer_id=pid, producer_epoch=epoch, base_sequence=0
        )
        assert raw.produce(topic, 0, first) == (0, 0)
        # expected next sequence is 2; 5 leaves a gap
        gap = build_batch(_records("g", 2), producer_id=pid, producer_epoch=epoch, base_sequence=5)
        err, _ = raw.produce(topic, 0, gap)
        assert err == OUT_OF_ORDER_SEQUENCE_NUMBER
        assert raw.list_offset(topic, 0, LATEST).offset == 2
        # the producer can still continue at the right sequence
        ok = build_batch(_records("c", 1), producer_id=pid, producer_epoch=epoch, base_sequence=2)
        assert raw.produce(topic, 0, ok) == (0, 2)
        assert raw.list_offset(topic, 0, LATEST).offset == 3


def test_reinit_without_transactional_id_gets_a_new_producer_id(server: Server) -> None:
    topic = unique_topic("epoch")
    with RawKafka(server.bootstrap) as raw:
        _create_by_metadata(raw, topic)
        pid, epoch = raw.init_producer_id()
        b0 = build_batch(_records("a", 2), producer_id=pid, producer_epoch=epoch, base_sequence=0)
        assert raw.produce(topic, 0, b0) == (0, 0)

        # KIP-360's reset of an idempotent producer: Kafka hands out a new id at epoch 0
        # whatever id it names, so no client can bump (and fence) another's epoch.
        bump = request_class(22, 3)(
            transactional_id=None,
            transaction_timeout=ms(60_000),
            producer_id=pid,
            producer_epoch=epoch,
        )
        resp = raw.request(bump)
        assert resp.error_code == 0
        new_pid = int(resp.producer_id)
        assert new_pid != pid and int(resp.producer_epoch) == 0
        b1 = build_batch(_records("b", 2), producer_id=new_pid, producer_epoch=0, base_sequence=0)
        assert raw.produce(topic, 0, b1) == (0, 2)
        # The named producer was not fenced.
        more = build_batch(_records("c", 1), producer_id=pid, producer_epoch=epoch, base_sequence=2)
        assert raw.produce(topic, 0, more) == (0, 4)
        assert raw.list_offset(topic, 0, LATEST).offset == 5
