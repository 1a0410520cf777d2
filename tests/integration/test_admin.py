"""CreateTopics and DeleteTopics through confluent's AdminClient and kafka-python's."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient

from .clients import consume_confluent, make_messages, produce_confluent, watermarks
from .conftest import Server, unique_topic
from .rawkafka import RawKafka, Rec, build_batch

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_CONFIG = 40


def _admin(server: Server) -> AdminClient:
    return AdminClient({"bootstrap.servers": server.bootstrap})


def _create_error(admin: AdminClient, topic: NewTopic, **kw) -> int | None:
    """The Kafka error code of creating one topic (None on success)."""
    fut = admin.create_topics([topic], operation_timeout=10, request_timeout=15, **kw)[topic.topic]
    try:
        fut.result(20)
        return None
    except KafkaException as exc:
        return exc.args[0].code()


def _partitions(server: Server, topic: str) -> list[int] | None:
    md = _admin(server).list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return sorted(t.partitions)


def test_confluent_create_with_partitions_and_configs(server: Server) -> None:
    admin = _admin(server)
    topic = unique_topic("cr")
    nt = NewTopic(
        topic,
        num_partitions=3,
        replication_factor=1,
        config={"retention.ms": "86400000", "segment.bytes": "1048576", "cleanup.policy": "delete"},
    )
    assert _create_error(admin, nt) is None
    assert _partitions(server, topic) == [0, 1, 2]
    assert server.topics()[topic] == {0: (0, 0), 1: (0, 0), 2: (0, 0)}
    # every partition takes writes and reads them back
    for p in range(3):
        msgs = make_messages(20, seed=p)
        assert produce_confluent(server.bootstrap, topic, msgs, "lz4", partition=p) == list(
            range(20)
        )
        got = consume_confluent(server.bootstrap, topic, 20, partition=p)
        assert [(m.key, m.value) for m in got] == [(m.key, m.value) for m in msgs]


def test_confluent_create_default_partitions(server: Server) -> None:
    """num_partitions=-1 means the broker default (--default-partitions, 1 here)."""
    admin = _admin(server)
    topic = unique_topic("crdef")
    assert _create_error(admin, NewTopic(topic)) is None
    assert _partitions(server, topic) == [0]


def test_confluent_create_validate_only(server: Server) -> None:
    admin = _admin(server)
    topic = unique_topic("validate")
    assert _create_error(admin, NewTopic(topic, 2, 1), validate_only=True) is None
    assert topic not in server.topics()
    with RawKafka(server.bootstrap) as raw:
        (t,) = raw.metadata([topic], auto_create=False).topics
        assert t.error_code == UNKNOWN_TOPIC_OR_PARTITION
    # validation still reports errors
    assert (
        _create_error(admin, NewTopic("bad/name", 1, 1), validate_only=True)
        == INVALID_TOPIC_EXCEPTION
    )
    # and the real create afterwards works
    assert _create_error(admin, NewTopic(topic, 2, 1)) is None
    assert _partitions(server, topic) == [0, 1]


def test_confluent_create_duplicate(server: Server) -> None:
    admin = _admin(server)
    topic = unique_topic("twice")
    assert _create_error(admin, NewTopic(topic, 2, 1)) is None
    assert _create_error(admin, NewTopic(topic, 5, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert KafkaError.TOPIC_ALREADY_EXISTS == TOPIC_ALREADY_EXISTS
    # the original topic is untouched
    assert _partitions(server, topic) == [0, 1]


@pytest.mark.parametrize("name", ["bad/name", "..", "has space", "x" * 250, "ümlaut"])
def test_confluent_create_bad_name(server: Server, name: str) -> None:
    admin = _admin(server)
    assert _create_error(admin, NewTopic(name, 1, 1)) == INVALID_TOPIC_EXCEPTION
    assert name not in server.topics()


def test_confluent_create_bad_partitions_and_config(server: Server) -> None:
    admin = _admin(server)
    topic = unique_topic("badcfg")
    assert _create_error(admin, NewTopic(topic, 0, 1)) == INVALID_PARTITIONS
    assert _create_error(admin, NewTopic(topic, 1, 1, config={"no.such.config": "1"})) == (
        INVALID_CONFIG
    )
    assert _create_error(admin, NewTopic(topic, 1, 1, config={"retention.ms": "abc"})) == (
        INVALID_CONFIG
    )
    assert topic not in server.topics()


def test_confluent_create_many_at_once(server: Server) -> None:
    admin = _admin(server)
    good = [unique_topic("many") for _ in range(3)]
    existing = unique_topic("many-existing")
    assert _create_error(admin, NewTopic(existing, 1, 1)) is None
    futs = admin.create_topics(
        [NewTopic(t, 1, 1) for t in good] + [NewTopic(existing, 1, 1), NewTopic("bad/x", 1, 1)],
        operation_timeout=10,
    )
    for t in good:
        futs[t].result(20)
    with pytest.raises(KafkaException) as ei:
        futs[existing].result(20)
    assert ei.value.args[0].code() == TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as ei:
        futs["bad/x"].result(20)
    assert ei.value.args[0].code() == INVALID_TOPIC_EXCEPTION
    listed = server.topics()
    assert all(t in listed for t in good)


def test_kafka_python_admin_create(server: Server) -> None:
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        t1, t2 = unique_topic("kpa"), unique_topic("kpa")
        res = admin.create_topics(
            {
                t1: {
                    "num_partitions": 2,
                    "replication_factor": 1,
                    "configs": {"retention.ms": "1000000"},
                },
                t2: {"num_partitions": -1, "replication_factor": -1},
            },
            raise_errors=False,
        )
        codes = {t["name"]: t["error_code"] for t in res["topics"]}
        assert codes == {t1: 0, t2: 0}
        assert server.topics()[t1] == {0: (0, 0), 1: (0, 0)}
        assert server.topics()[t2] == {0: (0, 0)}

        res = admin.create_topics(
            {t1: {"num_partitions": 1}, "bad/name": {"num_partitions": 1}}, raise_errors=False
        )
        codes = {t["name"]: t["error_code"] for t in res["topics"]}
        assert codes == {t1: TOPIC_ALREADY_EXISTS, "bad/name": INVALID_TOPIC_EXCEPTION}

        t3 = unique_topic("kpa-validate")
        res = admin.create_topics(
            {t3: {"num_partitions": 3}}, validate_only=True, raise_errors=False
        )
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [(t3, 0)]
        assert t3 not in server.topics()

        described = {t["name"]: t for t in admin.describe_topics([t1])}
        assert sorted(p["partition_index"] for p in described[t1]["partitions"]) == [0, 1]
        assert t1 in admin.list_topics()
    finally:
        admin.close()


def test_kafka_python_admin_delete(server: Server) -> None:
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        topic = unique_topic("kpdel")
        admin.create_topics({topic: {"num_partitions": 2}})
        assert topic in server.topics()
        res = admin.delete_topics([topic], raise_errors=False)
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [(topic, 0)]
        assert topic not in server.topics()
        assert topic not in admin.list_topics()
        res = admin.delete_topics([topic], raise_errors=False)
        assert [(t["name"], t["error_code"]) for t in res["topics"]] == [
            (topic, UNKNOWN_TOPIC_OR_PARTITION)
        ]
    finally:
        admin.close()


def _wait_gone(server: Server, topic: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while topic in server.topics():
        assert time.monotonic() < deadline, f"{topic} still listed by /topics"
        time.sleep(0.1)


def test_delete_topic_removes_data(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server("--auto-create-topics", "false")
    admin = _admin(srv)
    topic = unique_topic("del")
    assert _create_error(admin, NewTopic(topic, 2, 1)) is None
    msgs = make_messages(50)
    assert produce_confluent(srv.bootstrap, topic, msgs, "gzip") == list(range(50))
    assert srv.topics()[topic] == {0: (0, 50), 1: (0, 0)}

    admin.delete_topics([topic], operation_timeout=10)[topic].result(20)
    _wait_gone(srv, topic)
    assert topic not in admin.list_topics(timeout=10).topics

    with RawKafka(srv.bootstrap) as raw:
        # producing to it now fails: auto-create is off and the topic is gone
        err, _ = raw.produce(topic, 0, build_batch([Rec(b"k", b"v")]))
        assert err == UNKNOWN_TOPIC_OR_PARTITION
        (t,) = raw.metadata([topic], auto_create=True).topics
        assert t.error_code == UNKNOWN_TOPIC_OR_PARTITION
        p = raw.fetch(topic, 0, 0)
        assert p.error_code == UNKNOWN_TOPIC_OR_PARTITION
    assert topic not in srv.topics()

    # deleting again: unknown topic
    fut = admin.delete_topics([topic], operation_timeout=10)[topic]
    with pytest.raises(KafkaException) as ei:
        fut.result(20)
    assert ei.value.args[0].code() == UNKNOWN_TOPIC_OR_PARTITION

    # a new topic of the same name starts empty: the old records are gone
    assert _create_error(admin, NewTopic(topic, 1, 1)) is None
    assert watermarks(srv.bootstrap, topic) == (0, 0)
    assert srv.topics()[topic] == {0: (0, 0)}
    one = make_messages(1, seed=9)
    assert produce_confluent(srv.bootstrap, topic, one, "none") == [0]
    assert [m.value for m in consume_confluent(srv.bootstrap, topic, 1)] == [one[0].value]

    # the deletion survives a restart
    srv.restart()
    assert srv.topics()[topic] == {0: (0, 1)}


def test_auto_create_off_rejects_unknown_topic(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server("--auto-create-topics", "false")
    topic = unique_topic("noauto")
    with RawKafka(srv.bootstrap) as raw:
        (t,) = raw.metadata([topic], auto_create=True).topics
        assert t.error_code == UNKNOWN_TOPIC_OR_PARTITION
        err, _ = raw.produce(topic, 0, build_batch([Rec(b"k", b"v")]))
        assert err == UNKNOWN_TOPIC_OR_PARTITION
    assert topic not in srv.topics()
