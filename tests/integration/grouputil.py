"""Waiting helpers, topic helpers and a background producer for the group tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

SESSION_MS = 6000
HEARTBEAT_MS = 500
REBALANCE_MS = 20000

Event = dict[str, Any]


# --------------------------------------------------------------------------- waiting


def wait_until(
    pred: Callable[[], Any], timeout: float, what: Callable[[], str] | str, interval: float = 0.05
) -> float:
    """Poll pred until it is true; returns the seconds it took, fails after timeout."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not true within {timeout}s: {detail}")
        time.sleep(interval)


def stays(pred: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    """True when pred holds at every check for `seconds` (to show that nothing happens)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pred():
            return False
        time.sleep(interval)
    return bool(pred())


def settle(members: Iterable[Any], quiet: float = 1.5, timeout: float = 30) -> None:
    """Wait until no member sees a rebalance callback for `quiet` seconds."""
    members = list(members)
    deadline = time.monotonic() + timeout

    def snap() -> list[tuple[int, int, int]]:
        return [m.state.n_events() for m in members]

    while True:
        before = snap()
        if stays(lambda before=before: snap() == before, quiet):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"rebalances still going on after {timeout}s")


# --------------------------------------------------------------------------- topics


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)[topic].result(20)

    def visible() -> bool:
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions

    wait_until(visible, 10, f"topic {topic} with {partitions} partitions in metadata")


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:8]}"}
    )
    try:
        out = {}
        for p in range(partitions):
            _low, high = c.get_watermark_offsets(
                confluent_kafka.TopicPartition(topic, p), timeout=10
            )
            out[p] = int(high)
        return out
    finally:
        c.close()


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """OffsetFetch through a confluent consumer that never joins the group.

    A partition without a committed offset reads -1001 (OFFSET_INVALID).
    """
    c = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed(
            [confluent_kafka.TopicPartition(topic, p) for p in partitions], timeout=10
        )
        for tp in tps:
            if tp.error is not None:
                raise AssertionError(f"committed() error for {tp}: {tp.error}")
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


# --------------------------------------------------------------------------- producer


class BackgroundProducer(threading.Thread):
    """Produces numbered messages round-robin over the partitions while tests run.

    `pause()` stops sending and flushes (every delivery reported) before it
    returns; `resume()` starts again; `stop()` ends the thread after a flush.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.partitions = partitions
        self.interval = 1.0 / rate
        self.producer = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"}
        )
        self.lock = threading.Lock()
        self.produced: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self.sent = 0
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._halt = threading.Event()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.produced.append((msg.partition(), msg.offset()))

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._halt.is_set():
            if not self._running.is_set():
                self.producer.flush(30)
                self._idle.set()
                self._running.wait(0.1)
                next_at = time.monotonic()
                continue
            self._idle.clear()
            i = self.sent
            self.producer.produce(
                self.topic,
                value=b"m-%d" % i,
                partition=i % self.partitions,
                on_delivery=self._on_delivery,
            )
            self.sent += 1
            self.producer.poll(0)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.producer.flush(30)
        self._idle.set()

    def pause(self) -> None:
        self._idle.clear()
        self._running.clear()
        if not self._idle.wait(40):
            raise AssertionError("producer did not flush within 40s")
        self.check()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._halt.set()
        self._running.set()
        self.join(40)
        self.check()

    def check(self) -> None:
        with self.lock:
            assert not self.errors, f"produce errors: {self.errors[:5]}"
            assert len(self.produced) == self.sent, (
                f"{self.sent} sent, {len(self.produced)} delivered"
            )

    def snapshot(self) -> set[tuple[int, int]]:
        with self.lock:
            return set(self.produced)


# --------------------------------------------------------------------------- member state
