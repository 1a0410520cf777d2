"""Transactional offset commits from real clients: send_offsets_to_transaction
(confluent-kafka, aiokafka, kafka-python), then commit (the group's committed offset moves)
or abort (it does not), seen through Consumer.committed and
AdminClient.list_consumer_group_offsets; and a transaction cut off by a SIGKILL of the
broker is aborted, offsets included."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import confluent_kafka
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kafka.structs import OffsetAndMetadata

from .conftest import Server, unique_topic
from .groupmembers import confluent_group_conf
from .grouputil import committed_offsets, create_topic
from .rawkafka import RawKafka
from .test_txn_offsets_raw import UNSTABLE_OFFSET_COMMIT, _fetch

pytestmark = pytest.mark.timeout(120)

OFFSET_INVALID = -1001  # confluent's "no committed offset"


def _group() -> str:
    return f"txc-{uuid.uuid4().hex[:10]}"


def _producer(bootstrap: str, **conf: object) -> confluent_kafka.Producer:
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"txc-{uuid.uuid4().hex[:10]}",
            "linger.ms": 5,
            **conf,
        }
    )
    p.init_transactions(30)
    return p


def _admin_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    )
    (future,) = admin.list_consumer_group_offsets([request]).values()
    result = future.result(timeout=20)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def _committed(
    bootstrap: str, group: str, topic: str, isolation: str, timeout: float = 10
) -> dict[int, int]:
    c = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": isolation}
    )
    try:
        tps = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=timeout)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def _joined_consumer(bootstrap: str, group: str, topic: str) -> confluent_kafka.Consumer:
    """A member of the group with its assignment, so its group metadata names a member
    and a generation (TxnOffsetCommit v3 checks them)."""
    c = confluent_kafka.Consumer(confluent_group_conf(bootstrap, group))
    c.subscribe([topic])
    deadline = time.monotonic() + 30
    while len(c.assignment()) < 2:
        assert time.monotonic() < deadline, f"no assignment: {c.assignment()}"
        c.poll(0.2)
    return c


def test_send_offsets_commit_and_abort(server: Server) -> None:
    topic, out = unique_topic("txc-in"), unique_topic("txc-out")
    create_topic(server.bootstrap, topic, 2)
    create_topic(server.bootstrap, out, 1)
    group = _group()
    consumer = _joined_consumer(server.bootstrap, group, topic)
    producer = _producer(server.bootstrap)
    try:
        producer.begin_transaction()
        producer.produce(out, value=b"result-1")
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 7)],
            consumer.consumer_group_metadata(),
            30,
        )
        # Open: the offsets are the transaction's, not yet the group's.
        with RawKafka(server.bootstrap) as raw:
            assert _fetch(raw, group, topic, [0, 1], require_stable=True) == {
                0: (-1, UNSTABLE_OFFSET_COMMIT),
                1: (-1, UNSTABLE_OFFSET_COMMIT),
            }
        assert _committed(server.bootstrap, group, topic, "read_uncommitted") == {
            0: OFFSET_INVALID,
            1: OFFSET_INVALID,
        }
        # librdkafka's read_committed OffsetFetch asks for stable offsets and retries.
        with pytest.raises(confluent_kafka.KafkaException, match="Timed out"):
            _committed(server.bootstrap, group, topic, "read_committed", timeout=2)
        producer.commit_transaction(30)
        got = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert {tp.partition: tp.offset for tp in got} == {0: 5, 1: 7}
        assert _admin_offsets(server.bootstrap, group, topic) == {0: 5, 1: 7}

        producer.begin_transaction()
        producer.produce(out, value=b"result-2")
        producer.send_offsets_to_transaction(
            [TopicPartition(topic, 0, 9)], consumer.consumer_group_metadata(), 30
        )
        producer.abort_transaction(30)
        got = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert {tp.partition: tp.offset for tp in got} == {0: 5, 1: 7}
        assert _admin_offsets(server.bootstrap, group, topic) == {0: 5, 1: 7}
        with RawKafka(server.bootstrap) as raw:
            assert _fetch(raw, group, topic, [0], require_stable=True) == {0: (5, 0)}
    finally:
        consumer.close()
        producer.flush(10)


def test_offsets_of_a_transaction_cut_by_sigkill_are_aborted(
    fresh_server: Callable[..., Server],
) -> None:
    """The broker dies with the transaction open; once its timeout passes the restarted
    coordinator aborts it, and the staged offsets never become the group's."""
    srv = fresh_server()
    topic = unique_topic("txc-kill")
    create_topic(srv.bootstrap, topic, 2)
    group = _group()
    consumer = confluent_kafka.Consumer(confluent_group_conf(srv.bootstrap, group))
    metadata = consumer.consumer_group_metadata()
    consumer.close()
    producer = _producer(srv.bootstrap, **{"transaction.timeout.ms": 8000})
    producer.begin_transaction()
    producer.send_offsets_to_transaction([TopicPartition(topic, 0, 4)], metadata, 30)
    srv.kill()
    srv.start()
    with RawKafka(srv.bootstrap) as raw:
        assert _fetch(raw, group, topic, [0], require_stable=True) == {
            0: (-1, UNSTABLE_OFFSET_COMMIT)
        }
        deadline = time.monotonic() + 30
        while _fetch(raw, group, topic, [0], require_stable=True)[0] != (-1, 0):
            assert time.monotonic() < deadline, "the timed-out transaction kept its offsets"
            time.sleep(0.2)
    assert committed_offsets(srv.bootstrap, group, topic, [0]) == {0: OFFSET_INVALID}


def test_aiokafka_send_offsets_commit_and_abort(server: Server) -> None:
    """aiokafka sends TxnOffsetCommit v0 with a bare group id."""
    topic = unique_topic("txc-aio")
    create_topic(server.bootstrap, topic, 2)
    group = _group()

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=server.bootstrap, transactional_id=f"aio-{group}"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_offsets_to_transaction({AioTopicPartition(topic, 1): 6}, group)
            with pytest.raises(RuntimeError, match="abort"):
                async with producer.transaction():
                    await producer.send_offsets_to_transaction(
                        {AioTopicPartition(topic, 1): 60}, group
                    )
                    raise RuntimeError("abort")
        finally:
            await producer.stop()

    asyncio.run(run())
    assert _committed(server.bootstrap, group, topic, "read_committed") == {
        0: OFFSET_INVALID,
        1: 6,
    }


def test_kafka_python_send_offsets_commit_and_abort(server: Server) -> None:
    topic = unique_topic("txc-kp")
    create_topic(server.bootstrap, topic, 2)
    group = _group()
    producer = KafkaProducer(bootstrap_servers=server.bootstrap, transactional_id=f"kp-{group}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            {KpTopicPartition(topic, 0): OffsetAndMetadata(8, "", -1)}, group
        )
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            {KpTopicPartition(topic, 0): OffsetAndMetadata(80, "", -1)}, group
        )
        producer.abort_transaction()
    finally:
        producer.close(timeout=10)
    assert _committed(server.bootstrap, group, topic, "read_committed") == {
        0: 8,
        1: OFFSET_INVALID,
    }
