"""Offsets by time, beginning/end offsets and Metadata, through real clients."""

from __future__ import annotations

import asyncio

import confluent_kafka
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from .clients import Msg, confluent_consumer, produce_confluent
from .conftest import Server, unique_topic
from .rawkafka import RawKafka

UNKNOWN_TOPIC_OR_PARTITION = 3


def _timed_topic(server: Server) -> tuple[str, int, list[int]]:
    """30 uncompressed records in 3 batches of 10, timestamps base + 100*i."""
    topic = unique_topic("times")
    base = 1_700_000_000_000
    timestamps = [base + 100 * i for i in range(30)]
    for chunk in range(3):
        msgs = [
            Msg(f"k{i}".encode(), f"v{i}".encode(), (), timestamps[i])
            for i in range(chunk * 10, chunk * 10 + 10)
        ]
        offsets = produce_confluent(server.bootstrap, topic, msgs, "none", **{"linger.ms": 200})
        assert offsets == list(range(chunk * 10, chunk * 10 + 10))
    return topic, base, timestamps


def _queries(base: int, timestamps: list[int]) -> list[tuple[int, int, int | None]]:
    """(target timestamp, expected offset, expected record timestamp); offset -1 = none."""
    q: list[tuple[int, int, int | None]] = [(base - 10_000, 0, base), (0, 0, base)]
    for i, ts in enumerate(timestamps):
        q.append((ts, i, ts))
        q.append((ts - 50, i, ts))
    q.append((timestamps[-1] + 1, -1, None))
    return q


def test_offsets_for_times_confluent(server: Server) -> None:
    topic, base, timestamps = _timed_topic(server)
    c = confluent_consumer(server.bootstrap)
    try:
        for target, offset, _ts in _queries(base, timestamps):
            (tp,) = c.offsets_for_times(
                [confluent_kafka.TopicPartition(topic, 0, target)], timeout=10
            )
            assert tp.error is None, tp.error
            assert (target, tp.offset) == (target, offset)
    finally:
        c.close()


def test_offsets_for_times_kafka_python(server: Server) -> None:
    topic, base, timestamps = _timed_topic(server)
    c = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=None, check_crcs=True)
    try:
        tp = KpTopicPartition(topic, 0)
        for target, offset, ts in _queries(base, timestamps):
            got = c.offsets_for_times({tp: target})[tp]
            if offset == -1:
                assert got is None, (target, got)
            else:
                assert got is not None, target
                assert (target, got.offset, got.timestamp) == (target, offset, ts)
    finally:
        c.close()


def test_list_offsets_raw_timestamps(server: Server) -> None:
    """ListOffsets v7 by timestamp returns the record's own timestamp; -2/-1 earliest/latest."""
    topic, _base, timestamps = _timed_topic(server)
    with RawKafka(server.bootstrap) as raw:
        p = raw.list_offset(topic, 0, timestamps[15] - 1)
        assert (p.error_code, p.offset, p.timestamp) == (0, 15, timestamps[15])
        p = raw.list_offset(topic, 0, -2)
        assert (p.error_code, p.offset) == (0, 0)
        p = raw.list_offset(topic, 0, -1)
        assert (p.error_code, p.offset) == (0, 30)
        # -3: max timestamp (KIP-734) is the last record here
        p = raw.list_offset(topic, 0, -3, version=7)
        assert (p.error_code, p.offset, p.timestamp) == (0, 29, timestamps[29])


def test_beginning_and_end_offsets(server: Server) -> None:
    topic, _base, _ts = _timed_topic(server)

    c = confluent_consumer(server.bootstrap)
    try:
        tp = confluent_kafka.TopicPartition(topic, 0)
        assert c.get_watermark_offsets(tp, timeout=10) == (0, 30)
    finally:
        c.close()

    kc = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=None)
    try:
        ktp = KpTopicPartition(topic, 0)
        assert kc.beginning_offsets([ktp]) == {ktp: 0}
        assert kc.end_offsets([ktp]) == {ktp: 30}
    finally:
        kc.close()

    async def aio() -> tuple[dict, dict]:
        ac = AIOKafkaConsumer(bootstrap_servers=server.bootstrap, group_id=None)
        await ac.start()
        try:
            atp = AioTopicPartition(topic, 0)
            return await ac.beginning_offsets([atp]), await ac.end_offsets([atp])
        finally:
            await ac.stop()

    begin, end = asyncio.run(aio())
    atp = AioTopicPartition(topic, 0)
    assert (begin, end) == ({atp: 0}, {atp: 30})


def test_end_offset_of_empty_partition(server: Server) -> None:
    topic = unique_topic("empty")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    c = confluent_consumer(server.bootstrap)
    try:
        for p in (0, 1):
            tp = confluent_kafka.TopicPartition(topic, p)
            assert c.get_watermark_offsets(tp, timeout=10) == (0, 0)
    finally:
        c.close()


def test_metadata_confluent(server: Server) -> None:
    topic = unique_topic("meta")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(15)
    md = admin.list_topics(timeout=10)
    assert len(md.brokers) == 1
    (broker,) = md.brokers.values()
    assert (broker.host, broker.port) == ("127.0.0.1", server.kafka_port)
    assert md.controller_id == broker.id
    assert topic in md.topics
    t = md.topics[topic]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    for pid, p in t.partitions.items():
        assert p.id == pid
        assert p.error is None
        assert p.leader == broker.id
        assert p.replicas == [broker.id]
        assert p.isrs == [broker.id]
    # asking for one topic gives just that topic
    one = admin.list_topics(topic=topic, timeout=10)
    assert list(one.topics) == [topic]


def test_metadata_kafka_python(server: Server) -> None:
    topic = unique_topic("meta")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(15)
    c = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=None)
    try:
        assert topic in c.topics()
        assert c.partitions_for_topic(topic) == {0, 1, 2, 3}
    finally:
        c.close()


def test_metadata_unknown_topic_without_auto_create(server: Server) -> None:
    topic = unique_topic("nope")
    with RawKafka(server.bootstrap) as raw:
        resp = raw.metadata([topic], auto_create=False)
        (t,) = resp.topics
        assert t.name == topic
        assert t.error_code == UNKNOWN_TOPIC_OR_PARTITION
        assert t.partitions == ()
        # and it was not created as a side effect
        (t2,) = raw.metadata([topic], auto_create=False).topics
        assert t2.error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert topic not in server.topics()


def test_metadata_auto_create(server: Server) -> None:
    """The default server auto-creates on Metadata with allow_auto_topic_creation."""
    topic = unique_topic("auto")
    with RawKafka(server.bootstrap) as raw:
        raw.metadata([topic], auto_create=True)
        (t,) = raw.metadata([topic], auto_create=False).topics
        assert t.error_code == 0
        assert [int(p.partition_index) for p in t.partitions] == [0]
    assert server.topics()[topic] == {0: (0, 0)}
