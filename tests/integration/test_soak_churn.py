"""Soak (bounded, well under a minute): an idempotent producer and a two-member consumer
group work one topic while another client keeps creating, producing to and deleting topics.
Every acknowledged record must be consumed exactly once (issue 12)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from .conftest import Server, unique_topic

PRODUCE_SECONDS = 15.0
DRAIN_SECONDS = 25.0
PARTITIONS = 4


def _churn(bootstrap: str, stop: threading.Event, cycles: list[int], errors: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    while not stop.is_set():
        name = unique_topic("churn")
        try:
            admin.create_topics([NewTopic(name, PARTITIONS)])[name].result(10)
            for p in range(PARTITIONS):
                producer.produce(name, b"short-lived", partition=p)
            producer.flush(10)
            admin.delete_topics([name])[name].result(10)
            cycles[0] += 1
        except Exception as exc:  # reported by the test, not swallowed
            errors.append(f"churn {name}: {exc!r}")
            return


class _Member:
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.seen: list[bytes] = []
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 500,
            }
        )
        self.assigned: list[Any] = []

        def on_assign(consumer: Any, partitions: list[Any]) -> None:
            self.assigned = list(partitions)

        def on_revoke(consumer: Any, partitions: list[Any]) -> None:
            # What this member consumed is committed before another member may take it.
            self.assigned = []
            try:
                consumer.commit(asynchronous=False)
            except confluent_kafka.KafkaException as exc:
                if exc.args[0].code() != confluent_kafka.KafkaError._NO_OFFSET:
                    raise

        self.consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)

    def poll(self) -> None:
        msgs = self.consumer.consume(500, timeout=0.1)
        got = [m for m in msgs if m.error() is None]
        self.seen.extend(m.value() for m in got)
        if got:
            self.consumer.commit(asynchronous=False)


def _until(condition: Callable[[], bool], timeout: float, step: Callable[[], None]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        step()
    return condition()


def test_group_consumes_every_acked_record_once_under_topic_churn(server: Server) -> None:
    topic, group = unique_topic("soak"), unique_topic("soak-group")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS)])[topic].result(10)
    members = [_Member(server.bootstrap, group, topic) for _ in range(2)]

    def poll_all() -> None:
        for m in members:
            m.poll()

    assert _until(
        lambda: (
            sum(len(m.assigned) for m in members) == PARTITIONS and all(m.assigned for m in members)
        ),
        30,
        poll_all,
    ), "the group never settled"

    stop = threading.Event()
    cycles, churn_errors = [0], []
    churner = threading.Thread(
        target=_churn, args=(server.bootstrap, stop, cycles, churn_errors), daemon=True
    )
    churner.start()

    acked: list[bytes] = []
    failed: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            acked.append(msg.value())
        else:
            failed.append(str(err))

    producer = confluent_kafka.Producer(
        {"bootstrap.servers": server.bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    sent = 0
    deadline = time.monotonic() + PRODUCE_SECONDS
    try:
        while time.monotonic() < deadline:
            for _ in range(200):
                producer.produce(topic, f"record-{sent}".encode(), on_delivery=report)
                sent += 1
            producer.poll(0)
            poll_all()
        assert producer.flush(20) == 0
    finally:
        stop.set()
        churner.join(20)

    _until(lambda: sum(len(m.seen) for m in members) >= len(acked), DRAIN_SECONDS, poll_all)
    for m in members:
        m.consumer.close()

    counts = Counter(v for m in members for v in m.seen)
    duplicated = [v for v, n in counts.items() if n > 1]
    missing = set(acked) - set(counts)
    print(
        f"soak: {len(acked)} acked of {sent} sent, {len(counts)} consumed, "
        f"{cycles[0]} topic create/produce/delete cycles meanwhile"
    )
    assert not churn_errors, churn_errors
    assert not failed, failed[:5]
    assert cycles[0] >= 5, "the churn thread barely ran"
    assert not missing, f"{len(missing)} acknowledged records never consumed"
    assert not duplicated, f"{len(duplicated)} records consumed more than once"
    assert set(counts) <= set(acked)
