"""The transaction APIs' error codes, by hand: what Kafka answers for unknown producers,
stale epochs (per API version), unknown partitions, wrong states, produce outside the
transaction and control batches from a client."""

from __future__ import annotations

import dataclasses
import uuid

from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch, ms, request_class, schema

INIT_PRODUCER_ID = 22
ADD_PARTITIONS = 24
ADD_OFFSETS = 25
END_TXN = 26
DESCRIBE = 65
LIST = 66

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
INVALID_PRODUCER_ID_MAPPING = 49
TXN_ID_AUTHORIZATION_FAILED = 53
INVALID_TRANSACTION_TIMEOUT = 50
OPERATION_NOT_ATTEMPTED = 55
INVALID_RECORD = 87
PRODUCER_FENCED = 90
TRANSACTIONAL_ID_NOT_FOUND = 105
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20


def _txn_id() -> str:
    return f"raw-{uuid.uuid4().hex[:10]}"


def _init(raw: RawKafka, txn_id: str, version: int = 4, **kw: int) -> tuple[int, int, int]:
    cls = request_class(INIT_PRODUCER_ID, version)
    r = raw.request(cls(transactional_id=txn_id, transaction_timeout=ms(60_000), **kw))
    return int(r.error_code), int(r.producer_id), int(r.producer_epoch)


def _add(
    raw: RawKafka, txn_id: str, pid: int, epoch: int, parts: dict[str, list[int]], version=3
) -> dict[tuple[str, int], int]:
    mod = schema(ADD_PARTITIONS, version)
    r = raw.request(
        mod.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=txn_id,
            v3_and_below_producer_id=pid,
            v3_and_below_producer_epoch=epoch,
            v3_and_below_topics=tuple(
                mod.AddPartitionsToTxnTopic(name=t, partitions=tuple(ps)) for t, ps in parts.items()
            ),
        )
    )
    return {
        (t.name, p.partition_index): int(p.partition_error_code)
        for t in r.results_by_topic_v3_and_below
        for p in t.results_by_partition
    }


def _end(raw: RawKafka, txn_id: str, pid: int, epoch: int, commit: bool, version=3) -> int:
    cls = request_class(END_TXN, version)
    r = raw.request(
        cls(transactional_id=txn_id, producer_id=pid, producer_epoch=epoch, committed=commit)
    )
    return int(r.error_code)


def _txn_batch(pid: int, epoch: int, seq: int = 0, attributes: int = ATTR_TRANSACTIONAL) -> bytes:
    return build_batch(
        [Rec(b"k", b"v")],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        attributes=attributes,
    )


def _produce(raw: RawKafka, txn_id: str, topic: str, partition: int, batch: bytes) -> int:
    """The error code of a produce carrying the transactional id, as Kafka's producers send
    transactional batches."""
    req = raw.produce_request(topic, partition, batch)
    (t,) = raw.request(dataclasses.replace(req, transactional_id=txn_id)).responses
    (p,) = t.partition_responses
    return int(p.error_code)


def test_apis_are_advertised(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        keys = {
            int(k.api_key): (int(k.min_version), int(k.max_version))
            for k in raw.api_versions().api_keys
        }
    assert keys[ADD_PARTITIONS] == (0, 4)
    assert keys[ADD_OFFSETS] == (0, 3)
    assert keys[END_TXN] == (0, 3)
    assert keys[DESCRIBE] == (0, 0)
    assert keys[LIST] == (0, 1)


def test_init_producer_id_validation_and_kip360(server: Server) -> None:
    txn = _txn_id()
    with RawKafka(server.bootstrap) as raw:
        cls = request_class(INIT_PRODUCER_ID, 4)
        r = raw.request(cls(transactional_id=txn, transaction_timeout=ms(900_001)))
        assert int(r.error_code) == INVALID_TRANSACTION_TIMEOUT
        code, pid, epoch = _init(raw, txn)
        assert (code, epoch) == (0, 0)
        # The producer bumps its own epoch; a lost answer and the retry get the same.
        assert _init(raw, txn, producer_id=pid, producer_epoch=0) == (0, pid, 1)
        assert _init(raw, txn, producer_id=pid, producer_epoch=0) == (0, pid, 1)
        # Someone else's epoch: v4 says PRODUCER_FENCED, v3 the older INVALID_PRODUCER_EPOCH.
        assert _init(raw, txn, producer_id=pid, producer_epoch=9)[0] == PRODUCER_FENCED
        assert _init(raw, txn, 3, producer_id=pid, producer_epoch=9)[0] == INVALID_PRODUCER_EPOCH
        assert _init(raw, txn, producer_id=pid, producer_epoch=-1)[0] == 42  # INVALID_REQUEST


def test_add_partitions_and_end_txn_errors(server: Server) -> None:
    topic = unique_topic("rawtxn")
    txn = _txn_id()
    with RawKafka(server.bootstrap) as raw:
        raw.create_topic(topic, 2)
        assert _end(raw, txn, 1, 0, True) == INVALID_PRODUCER_ID_MAPPING
        _, pid, epoch = _init(raw, txn)
        assert _add(raw, txn, pid, epoch, {topic: [0, 7], "no-such-topic": [0]}) == {
            (topic, 0): OPERATION_NOT_ATTEMPTED,
            (topic, 7): UNKNOWN_TOPIC_OR_PARTITION,
            ("no-such-topic", 0): UNKNOWN_TOPIC_OR_PARTITION,
        }
        assert _add(raw, txn, pid + 1, epoch, {topic: [0]}) == {
            (topic, 0): INVALID_PRODUCER_ID_MAPPING
        }
        assert _add(raw, txn, pid, epoch + 1, {topic: [0]}) == {(topic, 0): PRODUCER_FENCED}
        assert _add(raw, txn, pid, epoch + 1, {topic: [0]}, version=1) == {
            (topic, 0): INVALID_PRODUCER_EPOCH
        }
        assert _end(raw, txn, pid, epoch, True) == INVALID_TXN_STATE  # nothing begun
        assert _add(raw, txn, pid, epoch, {topic: [0, 1]}) == {(topic, 0): 0, (topic, 1): 0}
        assert _end(raw, txn, pid, epoch + 1, True) == PRODUCER_FENCED
        assert _end(raw, txn, pid, epoch + 1, True, version=1) == INVALID_PRODUCER_EPOCH
        assert _end(raw, txn, pid, epoch, True) == 0
        assert _end(raw, txn, pid, epoch, True) == 0  # a retry of the same outcome
        assert _end(raw, txn, pid, epoch, False) == INVALID_TXN_STATE


def test_add_offsets_then_describe_and_list(server: Server) -> None:
    topic = unique_topic("rawdesc")
    txn = _txn_id()
    with RawKafka(server.bootstrap) as raw:
        raw.create_topic(topic, 3)
        _, pid, epoch = _init(raw, txn)
        cls = request_class(ADD_OFFSETS, 3)
        r = raw.request(
            cls(transactional_id=txn, producer_id=pid, producer_epoch=epoch, group_id="g1")
        )
        assert int(r.error_code) == 0
        assert _add(raw, txn, pid, epoch, {topic: [2, 0]}) == {(topic, 2): 0, (topic, 0): 0}
        mod = schema(DESCRIBE, 0)
        r = raw.request(mod.DescribeTransactionsRequest(transactional_ids=(txn, "nobody-" + txn)))
        mine, nobody = r.transaction_states
        assert (int(mine.error_code), mine.transaction_state) == (0, "Ongoing")
        assert (int(mine.producer_id), int(mine.producer_epoch)) == (pid, epoch)
        assert mine.transaction_timeout.total_seconds() == 60
        assert [(t.topic, tuple(t.partitions)) for t in mine.topics] == [(topic, (0, 2))]
        assert int(nobody.error_code) == TRANSACTIONAL_ID_NOT_FOUND

        mod = schema(LIST, 1)
        r = raw.request(
            mod.ListTransactionsRequest(
                state_filters=("Ongoing", "Nonsense"),
                producer_id_filters=(pid,),
                duration_filter=-1,
            )
        )
        assert int(r.error_code) == 0
        assert tuple(r.unknown_state_filters) == ("Nonsense",)
        assert [
            (s.transactional_id, int(s.producer_id), s.transaction_state)
            for s in r.transaction_states
        ] == [(txn, pid, "Ongoing")]
        r = raw.request(
            mod.ListTransactionsRequest(producer_id_filters=(pid,), duration_filter=3_600_000)
        )
        assert r.transaction_states == ()
        assert _end(raw, txn, pid, epoch, False) == 0


def test_verify_only_v4(server: Server) -> None:
    topic = unique_topic("rawv4")
    txn = _txn_id()
    with RawKafka(server.bootstrap) as raw:
        raw.create_topic(topic, 2)
        _, pid, epoch = _init(raw, txn)
        assert _add(raw, txn, pid, epoch, {topic: [0]}) == {(topic, 0): 0}
        mod = schema(ADD_PARTITIONS, 4)
        r = raw.request(
            mod.AddPartitionsToTxnRequest(
                transactions=(
                    mod.AddPartitionsToTxnTransaction(
                        transactional_id=txn,
                        producer_id=pid,
                        producer_epoch=epoch,
                        verify_only=True,
                        topics=(mod.AddPartitionsToTxnTopic(name=topic, partitions=(0, 1)),),
                    ),
                )
            )
        )
        (result,) = r.results_by_transaction
        got = {
            (t.name, p.partition_index): int(p.partition_error_code)
            for t in result.topic_results
            for p in t.results_by_partition
        }
        assert got == {(topic, 0): 0, (topic, 1): INVALID_TXN_STATE}
        # verify_only added nothing.
        mod = schema(DESCRIBE, 0)
        (state,) = raw.request(
            mod.DescribeTransactionsRequest(transactional_ids=(txn,))
        ).transaction_states
        assert [(t.topic, tuple(t.partitions)) for t in state.topics] == [(topic, (0,))]
        assert _end(raw, txn, pid, epoch, True) == 0


def test_produce_checks_transactional_and_control_batches(server: Server) -> None:
    topic = unique_topic("rawprod")
    txn = _txn_id()
    with RawKafka(server.bootstrap) as raw:
        raw.create_topic(topic, 2)
        _, pid, epoch = _init(raw, txn)
        # Transactional batches without a transactional id: Kafka refuses the whole request.
        assert raw.produce(topic, 0, _txn_batch(pid, epoch))[0] == TXN_ID_AUTHORIZATION_FAILED
        # Not added to a transaction yet.
        assert _produce(raw, txn, topic, 0, _txn_batch(pid, epoch)) == INVALID_TXN_STATE
        assert _add(raw, txn, pid, epoch, {topic: [0]}) == {(topic, 0): 0}
        assert _produce(raw, txn, topic, 0, _txn_batch(pid, epoch)) == 0
        # Partition 1 is not in the transaction; a stale epoch is refused; an id the
        # coordinator does not know is not mapped.
        assert _produce(raw, txn, topic, 1, _txn_batch(pid, epoch)) == INVALID_TXN_STATE
        assert _produce(raw, txn, topic, 0, _txn_batch(pid, epoch + 5, 1)) == INVALID_PRODUCER_EPOCH
        assert _produce(raw, txn, topic, 0, _txn_batch(pid + 999, 0)) == INVALID_PRODUCER_ID_MAPPING
        # Only the coordinator writes markers.
        control = _txn_batch(pid, epoch, -1, ATTR_TRANSACTIONAL | ATTR_CONTROL)
        assert _produce(raw, txn, topic, 0, control) == INVALID_RECORD
        assert (
            raw.produce(topic, 1, build_batch([Rec(b"k", b"v")], attributes=ATTR_CONTROL))[0]
            == INVALID_RECORD
        )
        assert _end(raw, txn, pid, epoch, True) == 0
        # After the commit the partition is no longer in a transaction.
        assert _produce(raw, txn, topic, 0, _txn_batch(pid, epoch, 1)) == INVALID_TXN_STATE
