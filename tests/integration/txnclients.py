"""Transactional producers and isolation-aware consumers of the three real clients, and a
ledger of what was produced.

Every record's value names its kind and a sequence number, and the ledger keeps each
record's offset from its delivery report, so what a consumer reads can be compared with what
a read_committed or read_uncommitted reader must see, partition by partition in offset order.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import confluent_kafka
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from tests.integration.clients import confluent_consumer

TP = tuple[str, int]
# What a consumer read: per partition, (offset, value) in the order it was delivered.
Read = dict[TP, list[tuple[int, bytes]]]
VISIBLE = {True: ("plain", "committed"), False: ("plain", "committed", "aborted", "open")}


@dataclass
class Sent:
    tp: TP
    value: bytes
    kind: str  # plain, open (transaction not ended yet), committed, aborted
    offset: int = -1


class Ledger:
    """Records produced to a set of partitions, with their offsets and kinds."""

    def __init__(self, bootstrap: str, tps: Sequence[TP], pad: int = 0) -> None:
        self.bootstrap = bootstrap
        self.tps = list(tps)
        self.pad = b"p" * pad
        self.sent: list[Sent] = []
        self.n = 0
        self.plain = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": "all"}
        )

    def txn_producer(
        self, tid: str | None = None, conf: dict[str, Any] | None = None
    ) -> confluent_kafka.Producer:
        p = confluent_kafka.Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": tid or f"txn-{uuid.uuid4().hex[:10]}",
                "linger.ms": 2,
                **(conf or {}),
            }
        )
        p.init_transactions(30)
        return p

    def record(self, tp: TP, kind: str) -> Sent:
        s = Sent(tp, f"{kind}:{self.n}:".encode() + self.pad, kind)
        self.n += 1
        self.sent.append(s)
        return s

    def send(
        self,
        p: confluent_kafka.Producer,
        per_partition: int,
        kind: str,
        tps: Iterable[TP] | None = None,
    ) -> list[Sent]:
        """`per_partition` records to each partition, flushed: every offset is known."""
        out: list[Sent] = []
        errors: list[Any] = []
        for tp in self.tps if tps is None else tps:
            for _ in range(per_partition):
                s = self.record(tp, kind)

                def report(err: Any, m: Any, s: Sent = s) -> None:
                    if err is not None:
                        errors.append(err)
                    else:
                        s.offset = m.offset()

                while True:
                    try:
                        p.produce(tp[0], s.value, key=b"k", partition=tp[1], on_delivery=report)
                        break
                    except BufferError:
                        p.poll(0.05)
                out.append(s)
        assert p.flush(30) == 0, "records not delivered within 30 s"
        assert not errors, errors[:3]
        return out

    def transaction(
        self, p: confluent_kafka.Producer, per_partition: int, commit: bool, plain_inside: int = 0
    ) -> list[Sent]:
        """One transaction over every partition; `plain_inside` non-transactional records per
        partition are produced while it is open, so they lie between its records and its
        marker."""
        p.begin_transaction()
        mine = self.send(p, per_partition, "open")
        if plain_inside:
            self.send(self.plain, plain_inside, "plain")
        mine += self.send(p, per_partition, "open")
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
        self.settle(mine, commit)
        return mine

    @staticmethod
    def settle(sent: Iterable[Sent], commit: bool) -> None:
        for s in sent:
            assert s.kind == "open"
            s.kind = "committed" if commit else "aborted"

    def expected(self, committed: bool) -> Read:
        out: Read = {tp: [] for tp in self.tps}
        for s in self.sent:
            assert s.offset >= 0
            if s.kind in VISIBLE[committed]:
                out[s.tp].append((s.offset, s.value))
        return {tp: sorted(v) for tp, v in out.items()}

    def ends(self, committed: bool) -> dict[TP, int]:
        """Each partition's last visible record's offset: a reader reads up to it."""
        return {tp: max(o for o, _v in v) for tp, v in self.expected(committed).items() if v}


def _isolation(committed: bool) -> str:
    return "read_committed" if committed else "read_uncommitted"


def _done(got: Read, last: dict[TP, int]) -> bool:
    return all(got[tp] and got[tp][-1][0] >= end for tp, end in last.items())


def read_confluent(
    bootstrap: str,
    last: dict[TP, int],
    committed: bool,
    timeout: float = 30.0,
    start: dict[TP, int] | None = None,
) -> Read:
    """Read every partition from offset 0 (or `start`) until its record at `last` (or past
    it)."""
    c = confluent_consumer(bootstrap, **{"isolation.level": _isolation(committed)})
    got: Read = {tp: [] for tp in last}
    begin = start or {}
    try:
        c.assign([confluent_kafka.TopicPartition(t, p, begin.get((t, p), 0)) for t, p in last])
        deadline = time.monotonic() + timeout
        while not _done(got, last) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.2):
                if m.error() is not None:
                    raise AssertionError(f"confluent consumer error: {m.error()}")
                tp = (str(m.topic()), int(m.partition() or 0))
                got[tp].append((int(m.offset() or 0), bytes(m.value() or b"")))
    finally:
        c.close()
    return got


def read_kafka_python(bootstrap: str, last: dict[TP, int], committed: bool, timeout=30.0) -> Read:
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
        isolation_level=_isolation(committed),
    )
    got: Read = {tp: [] for tp in last}
    try:
        tps = [KpTopicPartition(t, p) for t, p in last]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        deadline = time.monotonic() + timeout
        while not _done(got, last) and time.monotonic() < deadline:
            for tp, records in c.poll(timeout_ms=200).items():
                got[(tp.topic, tp.partition)] += [(r.offset, r.value) for r in records]
    finally:
        c.close()
    return got


async def _read_aiokafka(bootstrap: str, last: dict[TP, int], committed: bool, timeout) -> Read:
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
        isolation_level=_isolation(committed),
    )
    await c.start()
    got: Read = {tp: [] for tp in last}
    try:
        tps = [AioTopicPartition(t, p) for t, p in last]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        deadline = time.monotonic() + timeout
        while not _done(got, last) and time.monotonic() < deadline:
            for tp, records in (await c.getmany(timeout_ms=200)).items():
                got[(tp.topic, tp.partition)] += [(r.offset, r.value) for r in records]
    finally:
        await c.stop()
    return got


def read_aiokafka(bootstrap: str, last: dict[TP, int], committed: bool, timeout=30.0) -> Read:
    return asyncio.run(_read_aiokafka(bootstrap, last, committed, timeout))


READERS = {
    "confluent": read_confluent,
    "kafka-python": read_kafka_python,
    "aiokafka": read_aiokafka,
}


def assert_reads(want: Read, got: Read, what: str) -> None:
    """Exactly the expected records of each partition, in offset order."""
    for tp, records in want.items():
        have = got.get(tp, [])
        if have != records:
            missing = sorted(set(records) - set(have))[:3]
            extra = sorted(set(have) - set(records))[:3]
            raise AssertionError(
                f"{what} {tp}: {len(have)} records read, {len(records)} expected; "
                f"missing {missing!r:.300}, unexpected {extra!r:.300}"
            )


def check_isolation(bootstrap: str, ledger: Ledger, clients: Sequence[str] = ("confluent",)):
    """read_committed readers of each client see the committed and plain records only; a
    confluent read_uncommitted reader sees every record."""
    for name in clients:
        got = READERS[name](bootstrap, ledger.ends(True), True)
        assert_reads(ledger.expected(True), got, f"{name} read_committed")
    got = read_confluent(bootstrap, ledger.ends(False), False)
    assert_reads(ledger.expected(False), got, "confluent read_uncommitted")
