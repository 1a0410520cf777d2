"""Protocol details that clients rely on, checked with hand-made requests."""

from __future__ import annotations

import time

import pytest

from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, ms, parse_batches, schema

UNKNOWN_TOPIC_OR_PARTITION = 3
LATEST = -1


def _topic(raw: RawKafka, partitions: int = 1) -> str:
    topic = unique_topic("proto")
    raw.create_topic(topic, partitions)
    return topic


def test_fetch_returns_whole_first_batch_beyond_max_bytes(server: Server) -> None:
    """KIP-74: a batch bigger than max_bytes still comes back whole, or clients get stuck."""
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        big = build_batch([Rec(b"k%d" % i, b"v" * 1000) for i in range(10)])
        assert raw.produce(topic, 0, big) == (0, 0)
        assert raw.produce(topic, 0, build_batch([Rec(b"next", b"x")])) == (0, 10)
        p = raw.fetch(topic, 0, 0, max_wait_ms=0, max_bytes=100)
        assert p.error_code == 0
        batches = parse_batches(bytes(p.records))
        assert len(batches) >= 1
        assert batches[0].crc_ok
        assert [r[0] for r in batches[0].records] == list(range(10))
        # fetching from the middle of a batch returns that batch (clients skip the head)
        p = raw.fetch(topic, 0, 4, max_wait_ms=0, max_bytes=100)
        (first, *_) = parse_batches(bytes(p.records))
        assert first.base_offset == 0
        assert first.crc_ok


def test_acks_0_gets_no_response(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        raw.send(raw.produce_request(topic, 0, build_batch([Rec(b"a", b"0")]), acks=0))
        raw.send(raw.produce_request(topic, 0, build_batch([Rec(b"b", b"0")]), acks=0))
        # the next response on the connection belongs to the next acks!=0 request
        p = raw.list_offset(topic, 0, LATEST)
        deadline = time.monotonic() + 5
        while p.offset != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            p = raw.list_offset(topic, 0, LATEST)
        assert p.offset == 2
        assert raw.produce(topic, 0, build_batch([Rec(b"c", b"1")]), acks=1) == (0, 2)


def test_produce_many_partitions_and_topics_in_one_request(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        t1 = _topic(raw, partitions=2)
        t2 = _topic(raw, partitions=1)
        mod = schema(0, 9)

        def pdata(index: int, tag: bytes):
            return mod.PartitionProduceData(index=index, records=build_batch([Rec(tag, tag)]))

        resp = raw.request(
            mod.ProduceRequest(
                transactional_id=None,
                acks=-1,
                timeout=ms(10_000),
                topic_data=(
                    mod.TopicProduceData(name=t1, partition_data=(pdata(0, b"a"), pdata(1, b"b"))),
                    mod.TopicProduceData(name=t2, partition_data=(pdata(0, b"c"), pdata(7, b"d"))),
                ),
            )
        )
        got = {
            (t.name, int(p.index)): (int(p.error_code), int(p.base_offset))
            for t in resp.responses
            for p in t.partition_responses
        }
        assert got[(t1, 0)] == (0, 0)
        assert got[(t1, 1)] == (0, 0)
        assert got[(t2, 0)] == (0, 0)
        assert got[(t2, 7)][0] == UNKNOWN_TOPIC_OR_PARTITION
        assert len(got) == 4
        for t, part, tag in ((t1, 0, b"a"), (t1, 1, b"b"), (t2, 0, b"c")):
            p = raw.fetch(t, part, 0, max_wait_ms=0)
            (b,) = parse_batches(bytes(p.records))
            assert [(r[2], r[3]) for r in b.records] == [(tag, tag)]


@pytest.mark.parametrize("version", [3, 5, 7, 8, 9])
def test_produce_versions(server: Server, version: int) -> None:
    """Older Produce versions (non-flexible headers) work the same."""
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        assert raw.produce(topic, 0, build_batch([Rec(b"k", b"v")]), version=version) == (0, 0)
        assert raw.produce(topic, 0, build_batch([Rec(b"k", b"w")]), version=version) == (0, 1)


@pytest.mark.parametrize("version", [4, 7, 11, 12])
def test_fetch_versions(server: Server, version: int) -> None:
    with RawKafka(server.bootstrap) as raw:
        topic = _topic(raw)
        assert raw.produce(topic, 0, build_batch([Rec(b"k", b"v"), Rec(None, b"w")])) == (0, 0)
        mod = schema(1, version)
        fields = {
            "max_wait": ms(0),
            "min_bytes": 1,
            "max_bytes": 1 << 20,
            "isolation_level": 0,
            "topics": (
                mod.FetchTopic(
                    topic=topic,
                    partitions=(
                        mod.FetchPartition(
                            partition=0, fetch_offset=0, partition_max_bytes=1 << 20
                        ),
                    ),
                ),
            ),
        }
        if version >= 7:
            fields["forgotten_topics_data"] = ()
        resp = raw.request(mod.FetchRequest(**fields))
        (t,) = resp.responses
        (p,) = t.partitions
        assert p.error_code == 0
        assert int(p.high_watermark) == 2
        (b,) = parse_batches(bytes(p.records))
        assert [(r[0], r[2], r[3]) for r in b.records] == [(0, b"k", b"v"), (1, None, b"w")]


def test_metadata_all_topics(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        t1 = _topic(raw, partitions=2)
        t2 = _topic(raw, partitions=3)
        resp = raw.metadata(None)
        topics = {t.name: t for t in resp.topics}
        assert len(topics) == len(resp.topics)
        assert sorted(int(p.partition_index) for p in topics[t1].partitions) == [0, 1]
        assert sorted(int(p.partition_index) for p in topics[t2].partitions) == [0, 1, 2]
        (broker,) = resp.brokers
        assert (broker.host, int(broker.port)) == ("127.0.0.1", server.kafka_port)
        assert int(resp.controller_id) == int(broker.node_id)
