"""Per-record produce errors (KIP-467, issue 12 point 5): a batch with a record the topic
must refuse is rejected whole, nothing of it is stored, and the client learns which records
failed (record_errors with their batch index) and why (error_message)."""

from __future__ import annotations

import time
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from .clients import watermarks
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch

INVALID_RECORD = 87
INVALID_TIMESTAMP = 32
HOUR_MS = 3_600_000


def _topic(server: Server, configs: dict[str, str]) -> str:
    name = unique_topic("rec-errors")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(name, 1, config=configs)])[name].result(10)
    return name


def _deliver(server: Server, topic: str, messages: list[dict[str, Any]]) -> list[Any]:
    """Each message's delivery report error (None when it was stored)."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": server.bootstrap, "linger.ms": 50, "retries": 0}
    )
    errors: list[Any] = [0] * len(messages)

    def report(i: int) -> Any:
        def cb(err: Any, _msg: Any) -> None:
            errors[i] = err

        return cb

    for i, m in enumerate(messages):
        producer.produce(topic, on_delivery=report(i), **m)
    assert producer.flush(20) == 0
    return errors


def _raw_produce(server: Server, topic: str, batch: bytes) -> Any:
    with RawKafka(server.bootstrap) as conn:
        resp = conn.request(conn.produce_request(topic, 0, batch, -1, 9))
    (t,) = resp.responses
    (p,) = t.partition_responses
    return p


def test_keyless_record_to_compacted_topic_fails_whole_batch(server: Server) -> None:
    topic = _topic(server, {"cleanup.policy": "compact"})
    errors = _deliver(server, topic, [{"key": b"k1", "value": b"a"}, {"value": b"no key"}])
    assert errors[1] is not None and errors[1].code() == KafkaError.INVALID_RECORD, errors
    # librdkafka fails the keyed record of the same batch too: nothing of it was stored.
    assert errors[0] is not None, errors
    assert watermarks(server.bootstrap, topic, 0) == (0, 0)

    # Keyed records alone are stored.
    assert _deliver(server, topic, [{"key": b"k2", "value": b"b"}]) == [None]
    assert watermarks(server.bootstrap, topic, 0) == (0, 1)


def test_record_errors_name_the_batch_index(server: Server) -> None:
    topic = _topic(server, {"cleanup.policy": "compact,delete"})
    batch = build_batch([Rec(b"k", b"v"), Rec(None, b"v"), Rec(b"k", b"v"), Rec(None, None)])
    p = _raw_produce(server, topic, batch)
    assert int(p.error_code) == INVALID_RECORD
    assert [int(e.batch_index) for e in p.record_errors] == [1, 3]
    assert all("without key" in e.batch_index_error_message for e in p.record_errors)
    assert "2 record errors" in p.error_message
    assert watermarks(server.bootstrap, topic, 0) == (0, 0)


@pytest.mark.parametrize(
    "configs",
    [
        {"message.timestamp.before.max.ms": str(HOUR_MS)},
        {"message.timestamp.difference.max.ms": str(HOUR_MS)},
    ],
)
def test_timestamp_too_old_is_rejected(server: Server, configs: dict[str, str]) -> None:
    topic = _topic(server, configs)
    now = int(time.time() * 1000)
    errors = _deliver(
        server,
        topic,
        [{"value": b"old", "timestamp": now - 2 * HOUR_MS}],
    )
    assert errors[0] is not None and errors[0].code() == KafkaError.INVALID_TIMESTAMP, errors
    assert _deliver(server, topic, [{"value": b"recent", "timestamp": now - 60_000}]) == [None]
    assert watermarks(server.bootstrap, topic, 0) == (0, 1)


def test_timestamp_too_far_ahead_is_rejected_per_record(server: Server) -> None:
    topic = _topic(server, {"message.timestamp.after.max.ms": str(HOUR_MS)})
    now = int(time.time() * 1000)
    batch = build_batch(
        [Rec(b"k", b"ok"), Rec(b"k", b"future", timestamp_delta=2 * HOUR_MS)],
        first_timestamp=now,
    )
    p = _raw_produce(server, topic, batch)
    assert int(p.error_code) == INVALID_TIMESTAMP
    assert [int(e.batch_index) for e in p.record_errors] == [1]
    assert "out of range" in p.record_errors[0].batch_index_error_message
    assert p.error_message == "One or more records have been rejected due to invalid timestamp"
    assert watermarks(server.bootstrap, topic, 0) == (0, 0)


def test_log_append_time_topic_does_not_check_timestamps(server: Server) -> None:
    topic = _topic(
        server,
        {"message.timestamp.type": "LogAppendTime", "message.timestamp.before.max.ms": "1000"},
    )
    errors = _deliver(server, topic, [{"value": b"old", "timestamp": 1_000_000}])
    assert errors == [None]
