"""Consumer-group members driven by the three real Python clients, in one shape.

See groupclients.py for what a member records and how processing commits.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import confluent_kafka

from .grouputil import HEARTBEAT_MS, REBALANCE_MS, SESSION_MS, Event


class MemberState:
    """What one member saw; updated from its own thread or from a child's stdout."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.assigned: set[int] = set()
        self.assigns: list[tuple[float, frozenset[int]]] = []
        self.revokes: list[tuple[float, frozenset[int]]] = []
        self.losts: list[tuple[float, frozenset[int]]] = []
        self.records: list[tuple[int, int]] = []
        self.commits: dict[int, int] = {}
        self.errors: list[str] = []
        self.ready = False
        self.closed = False

    def apply(self, ev: Event) -> None:
        kind = ev["ev"]
        with self.lock:
            if kind in ("assign", "revoke", "lost"):
                parts = frozenset(ev["parts"])
                if kind == "assign":
                    self.assigns.append((ev["t"], parts))
                    self.assigned |= parts
                else:
                    (self.revokes if kind == "revoke" else self.losts).append((ev["t"], parts))
                    self.assigned -= parts
            elif kind == "records":
                self.records.extend((p, o) for p, o in ev["recs"])
            elif kind == "commit":
                for p, o in ev["offsets"]:
                    self.commits[p] = o
            elif kind == "error":
                self.errors.append(ev["msg"])
            elif kind == "ready":
                self.ready = True
            elif kind == "closed":
                self.closed = True

    # snapshots -------------------------------------------------------------

    def partitions(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self.assigned)

    def consumed(self) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.records)

    def n_events(self) -> tuple[int, int, int]:
        with self.lock:
            return len(self.assigns), len(self.revokes), len(self.losts)

    def last_assign_time(self) -> float | None:
        with self.lock:
            return self.assigns[-1][0] if self.assigns else None

    def summary(self) -> str:
        with self.lock:
            return (
                f"assigned={sorted(self.assigned)} assigns={[sorted(p) for _, p in self.assigns]} "
                f"revokes={[sorted(p) for _, p in self.revokes]} "
                f"losts={[sorted(p) for _, p in self.losts]} records={len(self.records)} "
                f"commits={dict(sorted(self.commits.items()))} errors={self.errors[:5]}"
            )


def _now() -> float:
    return time.monotonic()


# --------------------------------------------------------------------------- members


class Member:
    """A subscribed consumer in a thread. Subclasses implement `_run()`."""

    client = "?"

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        *,
        name: str = "",
        conf: dict[str, Any] | None = None,
        sink: Callable[[Event], None] | None = None,
        commit: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.name = name or f"{self.client}-{uuid.uuid4().hex[:4]}"
        self.conf = dict(conf or {})
        self.sink = sink
        self.do_commit = commit
        self.state = MemberState()
        self.pending: dict[int, int] = {}  # processed, not yet committed: partition -> next offset
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self.close_started: float | None = None

    # events ----------------------------------------------------------------

    def emit(self, kind: str, **kw: Any) -> None:
        ev = {"ev": kind, "t": _now(), **kw}
        self.state.apply(ev)
        if self.sink is not None:
            self.sink(ev)

    def _processed(self, recs: list[tuple[int, int]]) -> None:
        if not recs:
            return
        self.emit("records", recs=recs)
        for p, o in recs:
            self.pending[p] = max(self.pending.get(p, 0), o + 1)

    def _commit_pending(self, only: Iterable[int] | None = None) -> None:
        if not self.do_commit:
            return
        parts = set(self.pending) if only is None else set(only) & set(self.pending)
        if not parts:
            return
        offsets = {p: self.pending[p] for p in parts}
        try:
            self._commit_sync(offsets)
        except Exception as exc:
            self.emit("error", msg=f"commit {offsets} failed: {exc!r}")
            return
        for p in parts:
            if self.pending.get(p) == offsets[p]:
                del self.pending[p]
        self.emit("commit", offsets=sorted(offsets.items()))

    def _on_assigned(self, parts: Iterable[int]) -> None:
        self.emit("assign", parts=sorted(parts))

    def _on_revoked(self, parts: Iterable[int]) -> None:
        parts = sorted(parts)
        self._commit_pending(parts)
        for p in parts:
            self.pending.pop(p, None)
        self.emit("revoke", parts=parts)

    def _on_lost(self, parts: Iterable[int]) -> None:
        parts = sorted(parts)
        for p in parts:
            self.pending.pop(p, None)
        self.emit("lost", parts=parts)

    # lifecycle -------------------------------------------------------------

    def start(self) -> Member:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self._run()
        except Exception as exc:
            self.emit("error", msg=f"member crashed: {exc!r}")
        finally:
            self.emit("closed")

    def close(self, timeout: float = 30) -> float:
        """Stop polling and close the consumer (LeaveGroup); returns when it is closed."""
        self.close_started = _now()
        self._halt.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.name} did not close within {timeout}s"
        return _now() - self.close_started

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        raise NotImplementedError

    def _commit_sync(self, offsets: dict[int, int]) -> None:
        raise NotImplementedError


def confluent_group_conf(bootstrap: str, group: str, **conf: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": HEARTBEAT_MS,
        "max.poll.interval.ms": REBALANCE_MS,
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "check.crcs": True,
        **conf,
    }


class ConfluentMember(Member):
    client = "confluent"

    def _run(self) -> None:
        c = confluent_kafka.Consumer(confluent_group_conf(self.bootstrap, self.group, **self.conf))
        self.consumer = c

        def on_assign(_c: Any, tps: list[Any]) -> None:
            self._on_assigned(tp.partition for tp in tps)

        def on_revoke(_c: Any, tps: list[Any]) -> None:
            self._on_revoked(tp.partition for tp in tps)

        def on_lost(_c: Any, tps: list[Any]) -> None:
            self._on_lost(tp.partition for tp in tps)

        c.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        self.emit("ready")
        try:
            while not self._halt.is_set():
                msgs = c.consume(num_messages=500, timeout=0.1)
                recs = []
                for m in msgs:
                    if m.error() is not None:
                        self.emit("error", msg=f"consume error: {m.error()}")
                        continue
                    recs.append((m.partition(), m.offset()))
                self._processed(recs)
                self._commit_pending()
        finally:
            c.close()

    def _commit_sync(self, offsets: dict[int, int]) -> None:
        res = self.consumer.commit(
            offsets=[confluent_kafka.TopicPartition(self.topic, p, o) for p, o in offsets.items()],
            asynchronous=False,
        )
        for tp in res or ():
            if tp.error is not None:
                raise RuntimeError(f"partition {tp.partition}: {tp.error}")


class KafkaPythonMember(Member):
    client = "kafka-python"

    def _run(self) -> None:
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                member._on_revoked(tp.partition for tp in revoked)

            def on_partitions_assigned(self, assigned: Any) -> None:
                member._on_assigned(tp.partition for tp in assigned)

            def on_partitions_lost(self, lost: Any) -> None:
                member._on_lost(tp.partition for tp in lost)

        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "group_id": self.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": SESSION_MS,
            "heartbeat_interval_ms": HEARTBEAT_MS,
            "max_poll_interval_ms": REBALANCE_MS,
            "fetch_max_wait_ms": 100,
            "retry_backoff_ms": 50,
            "reconnect_backoff_ms": 50,
            "reconnect_backoff_max_ms": 500,
            "check_crcs": True,
            **self.conf,
        }
        c = KafkaConsumer(**conf)
        self.consumer = c
        c.subscribe([self.topic], listener=Listener())
        self.emit("ready")
        try:
            while not self._halt.is_set():
                batches = c.poll(timeout_ms=100)
                recs = [(r.partition, r.offset) for rs in batches.values() for r in rs]
                self._processed(recs)
                self._commit_pending()
        finally:
            c.close(autocommit=False)

    def _commit_sync(self, offsets: dict[int, int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self.consumer.commit(
            {
                TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in offsets.items()
            }
        )


class AioMember(Member):
    client = "aiokafka"

    def _run(self) -> None:
        asyncio.run(self._arun())

    async def _arun(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
        from aiokafka.structs import TopicPartition

        member = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                parts = sorted(tp.partition for tp in revoked)
                todo = {p: member.pending[p] for p in parts if p in member.pending}
                if todo and member.do_commit:
                    try:
                        await c.commit(
                            {TopicPartition(member.topic, p): o for p, o in todo.items()}
                        )
                        member.emit("commit", offsets=sorted(todo.items()))
                    except Exception as exc:
                        member.emit("error", msg=f"commit {todo} on revoke failed: {exc!r}")
                for p in parts:
                    member.pending.pop(p, None)
                member.emit("revoke", parts=parts)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                member._on_assigned(tp.partition for tp in assigned)

        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "group_id": self.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": SESSION_MS,
            "heartbeat_interval_ms": HEARTBEAT_MS,
            "max_poll_interval_ms": REBALANCE_MS,
            "rebalance_timeout_ms": REBALANCE_MS,
            "fetch_max_wait_ms": 100,
            "retry_backoff_ms": 50,
            "check_crcs": True,
            **self.conf,
        }
        c = AIOKafkaConsumer(**conf)
        await c.start()
        c.subscribe([self.topic], listener=Listener())
        self.emit("ready")
        try:
            while not self._halt.is_set():
                batches = await c.getmany(timeout_ms=100)
                recs = [(r.partition, r.offset) for rs in batches.values() for r in rs]
                self._processed(recs)
                todo = dict(self.pending)
                if todo and self.do_commit:
                    try:
                        await c.commit({TopicPartition(self.topic, p): o for p, o in todo.items()})
                    except Exception as exc:
                        self.emit("error", msg=f"commit {todo} failed: {exc!r}")
                        continue
                    for p, o in todo.items():
                        if self.pending.get(p) == o:
                            del self.pending[p]
                    self.emit("commit", offsets=sorted(todo.items()))
        finally:
            await c.stop()


MEMBERS: dict[str, type[Member]] = {
    "confluent": ConfluentMember,
    "kafka-python": KafkaPythonMember,
    "aiokafka": AioMember,
}


def range_conf(client: str) -> dict[str, Any]:
    """Settings that make a client offer only the 'range' assignor (common to all three)."""
    if client == "confluent":
        return {"partition.assignment.strategy": "range"}
    if client == "kafka-python":
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        return {"partition_assignment_strategy": [RangePartitionAssignor]}
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor as AioRange

    return {"partition_assignment_strategy": (AioRange,)}
