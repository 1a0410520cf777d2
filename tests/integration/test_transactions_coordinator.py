"""The transaction coordinator with confluent-kafka's transactional producer: commit and
abort, fencing by a second producer, the coordinator's timeout, and a broker killed in the
middle of a transaction."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import confluent_kafka
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import AdminClient, NewTopic

from .clients import confluent_consumer
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, schema

DESCRIBE_TRANSACTIONS = 65


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)])
    futures[topic].result(timeout=15)


def _producer(bootstrap: str, txn_id: str, **conf: object) -> confluent_kafka.Producer:
    p = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5, **conf}
    )
    p.init_transactions(15)
    return p


def _read(
    bootstrap: str, topic: str, partitions: int, committed: bool, timeout: float = 20
) -> dict[int, list[bytes]]:
    """Every value of every partition up to its end (the LSO for read_committed)."""
    c = confluent_consumer(
        bootstrap,
        **{
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "enable.partition.eof": True,
        },
    )
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    try:
        c.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, f"only partitions {at_end} reached their end"
            for m in c.consume(num_messages=500, timeout=0.5):
                err = m.error()
                if err is not None and err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                    continue
                assert err is None, err
                out[m.partition()].append(m.value())
    finally:
        c.close()
    return out


def _describe(bootstrap: str, txn_id: str):
    """DescribeTransactions of one id. Only for an id with a transaction: an Empty one has
    start time -1, as Kafka's, which kio refuses to decode."""
    mod = schema(DESCRIBE_TRANSACTIONS, 0)
    with RawKafka(bootstrap) as raw:
        resp = raw.request(mod.DescribeTransactionsRequest(transactional_ids=(txn_id,)))
    (state,) = resp.transaction_states
    return state


def _metric(server: Server, line_prefix: str) -> float:
    text = httpx.get(server.http + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_commit_and_abort_with_a_non_transactional_producer_between(server: Server) -> None:
    topic = unique_topic("txn")
    _create(server.bootstrap, topic, 3)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    commits_before = _metric(server, 'chronik_transactions_total{outcome="commit"}')
    aborts_before = _metric(server, 'chronik_transactions_total{outcome="abort"}')
    p = _producer(server.bootstrap, txn_id)
    plain = confluent_kafka.Producer({"bootstrap.servers": server.bootstrap})
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, f"c1-{i}".encode(), partition=i % 3)
    plain.produce(topic, b"plain-0", partition=0)
    plain.flush(10)
    p.commit_transaction(15)
    p.begin_transaction()
    for i in range(30):
        p.produce(topic, f"a-{i}".encode(), partition=i % 3)
    p.flush(10)
    plain.produce(topic, b"plain-1", partition=1)
    plain.flush(10)
    p.abort_transaction(15)
    p.begin_transaction()
    p.produce(topic, b"c2-0", partition=2)
    p.commit_transaction(15)

    committed = _read(server.bootstrap, topic, 3, committed=True)
    assert sorted(v for vs in committed.values() for v in vs) == sorted(
        [f"c1-{i}".encode() for i in range(30)] + [b"plain-0", b"plain-1", b"c2-0"]
    )
    for part, values in committed.items():
        ours = [v for v in values if v.startswith(b"c1-")]
        assert ours == [f"c1-{i}".encode() for i in range(part, 30, 3)]
    everything = _read(server.bootstrap, topic, 3, committed=False)
    assert sum(len(v) for v in everything.values()) == 30 + 30 + 2 + 1

    state = _describe(server.bootstrap, txn_id)
    assert (state.error_code, state.transaction_state) == (0, "CompleteCommit")
    assert _metric(server, 'chronik_transactions_total{outcome="commit"}') == commits_before + 2
    assert _metric(server, 'chronik_transactions_total{outcome="abort"}') == aborts_before + 1
    assert _metric(server, "chronik_transactions_open") == 0


def test_second_producer_fences_the_first_and_aborts_its_transaction(server: Server) -> None:
    topic = unique_topic("fence")
    _create(server.bootstrap, topic, 1)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    first = _producer(server.bootstrap, txn_id)
    first.begin_transaction()
    first.produce(topic, b"zombie")
    first.flush(10)
    before = _describe(server.bootstrap, txn_id)
    assert before.transaction_state == "Ongoing"

    second = _producer(server.bootstrap, txn_id)

    with pytest.raises(confluent_kafka.KafkaException) as info:
        first.commit_transaction(15)
    error = info.value.args[0]
    assert error.fatal(), error
    assert error.code() in (
        confluent_kafka.KafkaError.PRODUCER_FENCED,
        confluent_kafka.KafkaError._FENCED,
    ), error

    second.begin_transaction()
    second.produce(topic, b"alive")
    second.flush(10)
    after = _describe(server.bootstrap, txn_id)
    # Epoch + 1 fenced the first producer and aborted its transaction; + 2 is the second's.
    assert (after.producer_id, after.producer_epoch) == (
        before.producer_id,
        before.producer_epoch + 2,
    )
    second.commit_transaction(15)
    assert _read(server.bootstrap, topic, 1, committed=True) == {0: [b"alive"]}
    assert _read(server.bootstrap, topic, 1, committed=False) == {0: [b"zombie", b"alive"]}


@pytest.fixture
def quick_timeouts(fresh_server: Callable[..., Server]) -> Server:
    return fresh_server("--transaction-abort-check-ms", "100")


def test_coordinator_aborts_a_transaction_past_its_timeout(quick_timeouts: Server) -> None:
    server = quick_timeouts
    topic = unique_topic("timeout")
    _create(server.bootstrap, topic, 2)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    p = _producer(server.bootstrap, txn_id, **{"transaction.timeout.ms": 3000})
    p.begin_transaction()
    p.produce(topic, b"late-0", partition=0)
    p.produce(topic, b"late-1", partition=1)
    p.flush(10)
    epoch = _describe(server.bootstrap, txn_id).producer_epoch
    deadline = time.monotonic() + 10
    while _describe(server.bootstrap, txn_id).transaction_state != "CompleteAbort":
        assert time.monotonic() < deadline, "the coordinator never aborted the transaction"
        time.sleep(0.1)
    state = _describe(server.bootstrap, txn_id)
    assert state.producer_epoch == epoch + 1
    assert _read(server.bootstrap, topic, 2, committed=True) == {0: [], 1: []}
    assert _metric(server, 'chronik_transactions_total{outcome="timeout"}') == 1
    # The producer finds out on its next request: its epoch is fenced.
    with pytest.raises(confluent_kafka.KafkaException):
        p.commit_transaction(15)
    assert _read(server.bootstrap, topic, 2, committed=True) == {0: [], 1: []}


def test_kill_mid_transaction_then_commit_after_restart(
    fresh_server: Callable[..., Server],
) -> None:
    server = fresh_server()
    topic = unique_topic("crash")
    _create(server.bootstrap, topic, 2)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    p = _producer(server.bootstrap, txn_id, **{"transaction.timeout.ms": 60_000})
    p.begin_transaction()
    p.produce(topic, b"before-crash-0", partition=0)
    p.produce(topic, b"before-crash-1", partition=1)
    p.flush(10)
    server.kill()
    server.start()
    # The transaction survived as Ongoing with its partitions; the producer finishes it.
    state = _describe(server.bootstrap, txn_id)
    assert state.transaction_state == "Ongoing"
    assert sorted((t.topic, tuple(t.partitions)) for t in state.topics) == [(topic, (0, 1))]
    assert _read(server.bootstrap, topic, 2, committed=True) == {0: [], 1: []}
    p.produce(topic, b"after-restart", partition=0)
    p.commit_transaction(30)
    assert _read(server.bootstrap, topic, 2, committed=True) == {
        0: [b"before-crash-0", b"after-restart"],
        1: [b"before-crash-1"],
    }


def test_restart_aborts_a_transaction_that_timed_out_while_down(
    fresh_server: Callable[..., Server],
) -> None:
    server = fresh_server()
    topic = unique_topic("crash-timeout")
    _create(server.bootstrap, topic, 1)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"
    p = _producer(server.bootstrap, txn_id, **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic, b"orphan")
    p.flush(10)
    server.kill()
    time.sleep(2.5)
    server.start()
    state = _describe(server.bootstrap, txn_id)
    assert state.transaction_state == "CompleteAbort"
    assert _read(server.bootstrap, topic, 1, committed=True) == {0: []}
    assert _read(server.bootstrap, topic, 1, committed=False) == {0: [b"orphan"]}


def test_aiokafka_transactional_producer(server: Server) -> None:
    """aiokafka speaks the oldest versions: InitProducerId, AddPartitionsToTxn and EndTxn v0."""
    topic = unique_topic("aio")
    _create(server.bootstrap, topic, 2)
    txn_id = f"tx-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=server.bootstrap, transactional_id=txn_id)
        await p.start()
        try:
            async with p.transaction():
                await p.send_and_wait(topic, b"aio-c0", partition=0)
                await p.send_and_wait(topic, b"aio-c1", partition=1)
            await p.begin_transaction()
            await p.send_and_wait(topic, b"aio-a0", partition=0)
            await p.abort_transaction()
        finally:
            await p.stop()

    asyncio.run(run())
    assert _read(server.bootstrap, topic, 2, committed=True) == {0: [b"aio-c0"], 1: [b"aio-c1"]}
    assert _describe(server.bootstrap, txn_id).transaction_state == "CompleteAbort"
