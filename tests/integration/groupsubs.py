"""A confluent-kafka consumer whose subscription the test changes while it runs.

`SubscribingMember` polls in its own thread; `subscribe()` hands a new topic
list to that thread (so every librdkafka call comes from the polling thread) and
returns once the consumer has taken it. Rebalance callbacks are recorded as
(topic, partition) sets with a `time.monotonic()` timestamp; the callbacks are
incremental under cooperative-sticky, so `held()` is assigns minus revokes.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import confluent_kafka

from .groupmembers import confluent_group_conf

TP = tuple[str, int]


class SubscribingMember:
    def __init__(
        self, bootstrap: str, group: str, topics: list[str], *, name: str, **conf: Any
    ) -> None:
        self.name = name
        self.conf = confluent_group_conf(bootstrap, group, **conf)
        self.topics = list(topics)
        self.lock = threading.Lock()
        self._held: set[TP] = set()
        self.events: list[tuple[float, str, frozenset[TP]]] = []
        self.errors: list[str] = []
        self._commands: queue.Queue[list[str] | None] = queue.Queue()
        self._taken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SubscribingMember:
        self._thread.start()
        return self

    def subscribe(self, topics: list[str]) -> None:
        self._taken.clear()
        self._commands.put(list(topics))
        assert self._taken.wait(10), f"{self.name} did not take the new subscription"
        self.topics = list(topics)

    def close(self, timeout: float = 30) -> None:
        self._commands.put(None)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.name} did not close within {timeout}s"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def held(self) -> frozenset[TP]:
        with self.lock:
            return frozenset(self._held)

    def last_event_time(self) -> float:
        with self.lock:
            return self.events[-1][0] if self.events else 0.0

    def n_events(self) -> int:
        with self.lock:
            return len(self.events)

    def _record(self, kind: str, tps: list[Any]) -> None:
        parts = frozenset((tp.topic, tp.partition) for tp in tps)
        with self.lock:
            self.events.append((time.monotonic(), kind, parts))
            if kind == "assign":
                self._held |= parts
            else:
                self._held -= parts

    def _subscribe(self, c: confluent_kafka.Consumer, topics: list[str]) -> None:
        c.subscribe(
            topics,
            on_assign=lambda _c, tps: self._record("assign", tps),
            on_revoke=lambda _c, tps: self._record("revoke", tps),
            on_lost=lambda _c, tps: self._record("lost", tps),
        )

    def _run(self) -> None:
        c = confluent_kafka.Consumer(self.conf)
        try:
            self._subscribe(c, self.topics)
            while True:
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    pass
                else:
                    if cmd is None:
                        break
                    self._subscribe(c, cmd)
                    self._taken.set()
                for m in c.consume(num_messages=100, timeout=0.05):
                    if m.error() is not None:
                        self.errors.append(str(m.error()))
        except Exception as exc:
            self.errors.append(f"crashed: {exc!r}")
        finally:
            c.close()
