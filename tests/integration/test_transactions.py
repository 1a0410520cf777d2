"""Transactions end to end with real clients: confluent-kafka, aiokafka and kafka-python
transactional producers commit and abort over three partitions of two topics, interleaved
with a non-transactional producer writing to the same partitions (also while a transaction is
open, so its records lie between a transaction's records and its marker). read_committed
consumers of all three clients read exactly the committed and non-transactional records in
offset order; a read_uncommitted one reads them all. The same after a clean restart, after a
SIGKILL, and with the segments tiered out (WAL trimmed, fetched from the object store).
ListOffsets answers the last stable offset to read_committed; a second producer with the same
transactional.id fences the first and aborts its transaction; a transaction left open past
transaction.timeout.ms is aborted by the coordinator, for consumers and for search."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import confluent_kafka
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from kafka import KafkaProducer

from tests.integration.clients import CLIENTS, confluent_consumer
from tests.integration.conftest import Server, running_server, unique_topic
from tests.integration.layered import (
    LAYERED_ARGS,
    all_indexed,
    fetch_bytes,
    wait_tiered,
    wait_until,
    wal_bases,
)
from tests.integration.test_topic_configs import create_topic
from tests.integration.txnclients import (
    TP,
    Ledger,
    Sent,
    assert_reads,
    check_isolation,
    read_confluent,
)

pytestmark = pytest.mark.timeout(120)

# The coordinator looks for expired transactions every 200 ms instead of every second.
SERVER_ARGS = ("--transaction-abort-check-ms", "200", "--index-commit-ms", "200")


@pytest.fixture(scope="module")
def txn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("transactions"), SERVER_ARGS) as srv:
        yield srv


def _topics(srv: Server) -> list[TP]:
    """Three partitions of two topics."""
    a, b = unique_topic("txa"), unique_topic("txb")
    create_topic(srv, a, partitions=2)
    create_topic(srv, b, partitions=1)
    return [(a, 0), (a, 1), (b, 0)]


def _rounds(ledger: Ledger, p: confluent_kafka.Producer, rounds: int, per: int) -> None:
    for r in range(rounds):
        ledger.send(ledger.plain, per, "plain")
        ledger.transaction(p, per, commit=True, plain_inside=per // 2 + 1)
        ledger.transaction(p, per, commit=r % 2 == 1, plain_inside=1)
        ledger.transaction(p, per, commit=False)
    ledger.send(ledger.plain, 1, "plain")


def _watermarks(bootstrap: str, tp: TP, committed: bool) -> tuple[int, int]:
    iso = "read_committed" if committed else "read_uncommitted"
    c = confluent_consumer(bootstrap, **{"isolation.level": iso})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False)
        return int(low), int(high)
    finally:
        c.close()


def _admin_latest(bootstrap: str, tps: list[TP], committed: bool) -> dict[TP, int]:
    """ListOffsets latest through the AdminClient with an isolation level."""
    iso = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.list_offsets(
        {TopicPartition(*tp): OffsetSpec.latest() for tp in tps}, isolation_level=iso
    )
    return {(tp.topic, tp.partition): f.result(20).offset for tp, f in futures.items()}


def _stable(srv: Server, tps: list[TP]) -> bool:
    """No transaction holds the last stable offset below the high watermark."""
    return all(
        _watermarks(srv.bootstrap, tp, True) == _watermarks(srv.bootstrap, tp, False) for tp in tps
    )


def test_committed_aborted_and_plain_records_survive_restarts(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server()
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    tid = f"restart-{uuid.uuid4().hex[:8]}"
    p = ledger.txn_producer(tid)
    _rounds(ledger, p, rounds=3, per=4)
    assert {s.kind for s in ledger.sent} == {"plain", "committed", "aborted"}
    check_isolation(srv.bootstrap, ledger, CLIENTS)

    srv.restart()
    check_isolation(srv.bootstrap, ledger)
    # The coordinator recovered the producer's state: the same producer goes on.
    ledger.transaction(p, 2, commit=False, plain_inside=1)
    ledger.transaction(p, 2, commit=True)
    ledger.send(ledger.plain, 1, "plain")
    check_isolation(srv.bootstrap, ledger)

    # A SIGKILL with a transaction open: a new incarnation of the transactional.id aborts it.
    p.begin_transaction()
    pending = ledger.send(p, 3, "open")
    ledger.send(ledger.plain, 1, "plain")
    srv.kill()
    srv.start()
    q = ledger.txn_producer(tid)
    ledger.settle(pending, commit=False)
    ledger.transaction(q, 2, commit=True, plain_inside=1)
    check_isolation(srv.bootstrap, ledger, CLIENTS)
    assert _stable(srv, tps)


def test_tiered_segments_keep_aborted_records_out(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server(*LAYERED_ARGS, "--segment-max-records", "2000")
    tps = _topics(srv)
    # ~260 B values: each partition outgrows a 1 MiB WAL segment, so WAL files get trimmed.
    ledger = Ledger(srv.bootstrap, tps, pad=240)
    p = ledger.txn_producer()
    _rounds(ledger, p, rounds=12, per=100)
    ends = {tp: end for tp, end in _ends(srv, tps).items()}
    for topic in {t for t, _p in tps}:
        wait_tiered(srv, topic, {p: e for (t, p), e in ends.items() if t == topic}, timeout=60)
    for tp in tps:
        start = wal_bases(srv, *tp)[0]
        aborted = [s.offset for s in ledger.sent if s.tp == tp and s.kind == "aborted"]
        # Aborted transactions now live only in segments: their markers are below the WAL.
        assert start > 0 and sum(o < start for o in aborted) >= 100, (tp, start)
    check_isolation(srv.bootstrap, ledger, CLIENTS)

    # Without the local segment cache the same reads come from the object store.
    srv.stop()
    shutil.rmtree(srv.data_dir / "segments")
    srv.start()
    check_isolation(srv.bootstrap, ledger)
    assert fetch_bytes(srv, "object_store") > 0


def _ends(srv: Server, tps: list[TP]) -> dict[TP, int]:
    topics = srv.topics()
    return {(t, p): topics[t][p][1] for t, p in tps}


def test_list_offsets_read_committed_answers_the_last_stable_offset(txn_server: Server) -> None:
    srv = txn_server
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    p = ledger.txn_producer()
    ledger.send(ledger.plain, 3, "plain")
    ledger.transaction(p, 2, commit=False)
    p.begin_transaction()
    pending = ledger.send(p, 2, "open")
    ledger.send(ledger.plain, 2, "plain")
    lso = {tp: min(s.offset for s in pending if s.tp == tp) for tp in tps}
    hwm = _ends(srv, tps)
    for tp in tps:
        assert _watermarks(srv.bootstrap, tp, True) == (0, lso[tp]), tp
        assert _watermarks(srv.bootstrap, tp, False) == (0, hwm[tp]), tp
    assert _admin_latest(srv.bootstrap, tps, True) == lso
    assert _admin_latest(srv.bootstrap, tps, False) == hwm
    # A read_committed consumer stops at the last stable offset, plain records after it too.
    got = read_confluent(srv.bootstrap, {tp: hwm[tp] for tp in tps}, True, timeout=1.5)
    for tp in tps:
        want = [(o, v) for o, v in ledger.expected(True)[tp] if o < lso[tp]]
        assert got[tp] == want, tp

    p.commit_transaction(30)
    ledger.settle(pending, commit=True)
    after = _ends(srv, tps)
    # The commit marker took one offset on each partition.
    assert after == {tp: hwm[tp] + 1 for tp in tps}
    assert _admin_latest(srv.bootstrap, tps, True) == after
    assert all(_watermarks(srv.bootstrap, tp, True) == (0, after[tp]) for tp in tps)
    check_isolation(srv.bootstrap, ledger)


def test_read_committed_from_inside_an_aborted_transaction(txn_server: Server) -> None:
    """A fetch from an offset inside an aborted transaction still gets that transaction in
    its aborted list (its marker is past the fetch offset), so its remaining records are
    skipped."""
    srv = txn_server
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    p = ledger.txn_producer()
    ledger.transaction(p, 3, commit=True)
    aborted = ledger.transaction(p, 4, commit=False, plain_inside=2)
    ledger.send(ledger.plain, 2, "plain")
    start = {tp: sorted(s.offset for s in aborted if s.tp == tp)[2] for tp in tps}
    got = read_confluent(srv.bootstrap, ledger.ends(True), True, start=start)
    want = {
        tp: [(o, v) for o, v in recs if o >= start[tp]]
        for tp, recs in ledger.expected(True).items()
    }
    assert_reads(want, got, "read_committed from inside an aborted transaction")


def _fatal_fenced(exc: KafkaException) -> None:
    err = exc.args[0]
    assert err.fatal(), err
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED), err


def test_second_producer_fences_the_first_and_aborts_its_transaction(txn_server: Server) -> None:
    srv = txn_server
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    tid = f"fence-{uuid.uuid4().hex[:8]}"
    first = ledger.txn_producer(tid)
    ledger.transaction(first, 2, commit=True)
    first.begin_transaction()
    pending = ledger.send(first, 3, "open")
    ledger.send(ledger.plain, 1, "plain")

    second = ledger.txn_producer(tid)
    ledger.settle(pending, commit=False)
    assert _stable(srv, tps), "the fenced producer's transaction is still open"
    # Its late record is refused by the partition (a read_uncommitted reader would see it).
    with pytest.raises(KafkaException) as caught:
        first.produce(tps[0][0], b"fenced:late", partition=tps[0][1])
        first.commit_transaction(20)
    _fatal_fenced(caught.value)

    ledger.transaction(second, 2, commit=True, plain_inside=1)
    check_isolation(srv.bootstrap, ledger, CLIENTS)


def test_transaction_past_its_timeout_is_aborted_by_the_coordinator(txn_server: Server) -> None:
    srv = txn_server
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    p = ledger.txn_producer(conf={"transaction.timeout.ms": 2000})
    ledger.send(ledger.plain, 2, "plain")
    p.begin_transaction()
    t0 = time.monotonic()
    pending = ledger.send(p, 5, "open")
    ledger.send(ledger.plain, 2, "plain")
    assert not _stable(srv, tps)
    wait_until(lambda: _stable(srv, tps), 15, "the coordinator to abort the transaction")
    assert time.monotonic() - t0 > 1.5, "aborted before its timeout"
    ledger.settle(pending, commit=False)
    with pytest.raises(KafkaException):
        p.commit_transaction(10)
    check_isolation(srv.bootstrap, ledger, CLIENTS)

    # Search leaves the aborted records out; read_uncommitted shows they were indexed.
    ends = _ends(srv, tps)
    for topic in {t for t, _p in tps}:
        topic_ends = {p: e for (t, p), e in ends.items() if t == topic}
        wait_until(partial(all_indexed, srv, topic, topic_ends), 30, "indexing")
        mine = [s for s in ledger.sent if s.tp[0] == topic]
        for iso, kinds in (({}, {"plain"}), ({"isolation": "read_uncommitted"}, None)):
            r = httpx.get(srv.http + "/search", params={"topic": topic, "q": "*", **iso})
            assert r.status_code == 200, r.text
            want = [s for s in mine if kinds is None or s.kind in kinds]
            assert r.json()["total"] == len(want), (topic, iso)


def test_open_transaction_survives_a_restart_and_expires_after_a_crash(
    fresh_server: Callable[..., Server],
) -> None:
    srv = fresh_server(*SERVER_ARGS)
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    p = ledger.txn_producer(conf={"transaction.timeout.ms": 60_000})
    ledger.send(ledger.plain, 2, "plain")
    p.begin_transaction()
    pending = ledger.send(p, 3, "open")
    ledger.send(ledger.plain, 2, "plain")
    lso = {tp: min(s.offset for s in pending if s.tp == tp) for tp in tps}
    srv.restart()
    # The partitions still know the open transaction: read_committed stops before it.
    for tp in tps:
        assert _watermarks(srv.bootstrap, tp, True)[1] == lso[tp], tp
    p.commit_transaction(30)
    ledger.settle(pending, commit=True)
    check_isolation(srv.bootstrap, ledger)

    # Cut off by a SIGKILL and never resumed: recovery or the timeout task aborts it.
    q = ledger.txn_producer(conf={"transaction.timeout.ms": 2000})
    q.begin_transaction()
    pending = ledger.send(q, 3, "open")
    ledger.send(ledger.plain, 1, "plain")
    srv.kill()
    srv.start()
    wait_until(lambda: _stable(srv, tps), 15, "the expired transaction to be aborted")
    ledger.settle(pending, commit=False)
    check_isolation(srv.bootstrap, ledger, CLIENTS)


async def _aiokafka_transactions(srv: Server, ledger: Ledger, tps: list[TP]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=srv.bootstrap, transactional_id=f"aio-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()

    async def send(kind: str) -> list[Sent]:
        sent = [ledger.record(tp, kind) for tp in tps for _ in range(3)]
        for s in sent:
            meta = await producer.send_and_wait(s.tp[0], s.value, partition=s.tp[1])
            s.offset = meta.offset
        return sent

    try:
        for r in range(3):
            async with producer.transaction():
                mine = await send("open")
                ledger.send(ledger.plain, 1, "plain")
            ledger.settle(mine, commit=True)
            await producer.begin_transaction()
            mine = await send("open")
            await producer.abort_transaction()
            ledger.settle(mine, commit=False)
            if r == 0:
                with pytest.raises(RuntimeError):
                    async with producer.transaction():
                        mine = await send("open")
                        raise RuntimeError("the context manager aborts")
                ledger.settle(mine, commit=False)
    finally:
        await producer.stop()


def _kafka_python_transactions(srv: Server, ledger: Ledger, tps: list[TP]) -> None:
    producer = KafkaProducer(
        bootstrap_servers=srv.bootstrap, transactional_id=f"kp-{uuid.uuid4().hex[:8]}"
    )

    def send(kind: str) -> list[Sent]:
        sent = [ledger.record(tp, kind) for tp in tps for _ in range(3)]
        futures = [producer.send(s.tp[0], s.value, partition=s.tp[1]) for s in sent]
        producer.flush(30)
        for s, f in zip(sent, futures, strict=True):
            s.offset = f.get(timeout=30).offset
        return sent

    try:
        producer.init_transactions()
        for _ in range(3):
            producer.begin_transaction()
            mine = send("open")
            ledger.send(ledger.plain, 1, "plain")
            producer.commit_transaction()
            ledger.settle(mine, commit=True)
            producer.begin_transaction()
            mine = send("open")
            producer.abort_transaction()
            ledger.settle(mine, commit=False)
    finally:
        producer.close(timeout=10)


def test_aiokafka_and_kafka_python_transactional_producers(txn_server: Server) -> None:
    srv = txn_server
    tps = _topics(srv)
    ledger = Ledger(srv.bootstrap, tps)
    asyncio.run(_aiokafka_transactions(srv, ledger, tps))
    _kafka_python_transactions(srv, ledger, tps)
    ledger.send(ledger.plain, 1, "plain")
    assert {s.kind for s in ledger.sent} == {"plain", "committed", "aborted"}
    check_isolation(srv.bootstrap, ledger, CLIENTS)
    assert _stable(srv, tps)
