"""Search sees committed data only by default: confluent-kafka transactional producers commit
and abort transactions over two partitions, interleaved with a non-transactional producer,
and one transaction is left open. Hits (cursor pages), totals, histograms and terms equal
brute force over the committed and non-transactional records; isolation=read_uncommitted
sees them all but those of aborted transactions deleted from the segments sealed or merged
past their ABORT marker (index/aborts.py); the open transaction's records appear once it
commits; records of other producers stay fresh while it is open. The same with sealed and
merged search segments and after a restart."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import httpx
import pytest

from tests.integration.conftest import Server, running_server, unique_topic
from tests.integration.layered import all_indexed, segments, wait_until
from tests.integration.test_topic_configs import create_topic

PARTITIONS = 2
ROUNDS = 8
LEVELS = ("info", "warn", "error")
# Small segments sealed by age, so that runs of them are merged (merge.MIN_SMALL_RUN).
SERVER_ARGS = (
    "--segment-max-records",
    "2000",
    "--segment-max-age-ms",
    "400",
    "--index-commit-ms",
    "100",
)


@dataclass
class Rec:
    partition: int
    offset: int
    ts: int
    level: str
    kind: str  # plain, committed, aborted, open
    token: str
    label: str  # the value's `kind` field: what the record was sent as
    marker: int = -1  # an aborted record's ABORT marker offset


class Writer:
    """Producers and what they wrote: every record with its offset from its delivery report."""

    def __init__(self, srv: Server, topic: str) -> None:
        self.srv = srv
        self.topic = topic
        self.bootstrap = srv.bootstrap
        self.recs: list[Rec] = []
        self.n = 0
        self.ts0 = int(time.time() * 1000) - 3_600_000
        self.plain = confluent_kafka.Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 2})

    def txn_producer(self, name: str) -> confluent_kafka.Producer:
        p = confluent_kafka.Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": f"{self.topic}-{name}",
                "transaction.timeout.ms": 120_000,
                "linger.ms": 2,
            }
        )
        p.init_transactions(20)
        return p

    def send(
        self, p: confluent_kafka.Producer, per_partition: int, kind: str, label: str = ""
    ) -> list[Rec]:
        """`per_partition` records to each partition, delivered (offsets known)."""
        sent: list[Rec] = []
        errors: list[Any] = []
        for part in range(PARTITIONS):
            for _ in range(per_partition):
                i = self.n
                self.n += 1
                token = "tok" + uuid.uuid4().hex[:10]
                ts = self.ts0 + i * 997
                rec = Rec(part, -1, ts, LEVELS[i % 3], kind, token, label or kind)

                def report(err: Any, m: Any, rec: Rec = rec) -> None:
                    if err is not None:
                        errors.append(err)
                    else:
                        rec.offset = m.offset()

                value = {"level": rec.level, "kind": rec.label, "token": rec.token}
                p.produce(
                    self.topic,
                    json.dumps(value).encode(),
                    key=b"k%d" % (i % 7),
                    partition=part,
                    timestamp=rec.ts,
                    on_delivery=report,
                )
                sent.append(rec)
        assert p.flush(30) == 0 and not errors, errors
        self.recs += sent
        return sent

    def transaction(self, p: confluent_kafka.Producer, per_partition: int, commit: bool) -> None:
        p.begin_transaction()
        sent = self.send(p, per_partition, "open", "committed" if commit else "aborted")
        if commit:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)
        # Nothing else is written meanwhile: each partition's marker is its last offset.
        ends = _ends(self.srv, self.topic)
        for r in sent:
            r.kind = "committed" if commit else "aborted"
            r.marker = ends[r.partition] - 1

    def visible(self, committed: bool = True, rows: list[Any] | None = None) -> list[Rec]:
        """Read committed: the committed and plain records. Read uncommitted: all but those
        of aborted transactions deleted from the sealed segments `rows` (registry rows)."""
        if committed:
            return [r for r in self.recs if r.kind in ("plain", "committed")]
        deleted = {
            (r.partition, r.offset)
            for r in self.recs
            if r.kind == "aborted"
            for part, base, last, *_rest in rows or ()
            if part == r.partition and base <= r.offset <= last and r.marker <= last
        }
        return [r for r in self.recs if (r.partition, r.offset) not in deleted]


def _get(srv: Server, path: str, **params: Any) -> httpx.Response:
    return httpx.get(srv.http + path, params=params, timeout=30)


def _ends(srv: Server, topic: str) -> dict[int, int]:
    return {p: end for p, (_start, end) in srv.topics()[topic].items()}


def _walk(srv: Server, topic: str, **params: Any) -> tuple[int, list[tuple[int, int]]]:
    hits: list[tuple[int, int]] = []
    cursor = None
    total = -1
    while True:
        r = _get(srv, "/search", topic=topic, limit=23, cursor=cursor, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert total in (-1, body["total"])
        total = body["total"]
        hits += [(h["partition"], h["offset"]) for h in body["hits"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return total, hits


def _check(srv: Server, topic: str, w: Writer) -> None:
    """Every endpoint against brute force, read committed and read uncommitted."""
    wait_until(lambda: all_indexed(srv, topic, _ends(srv, topic)), 30, "indexing")
    _check_isolation(srv, topic, w.visible())
    # What read_uncommitted sees depends on the segments (seals and merges go on): checked
    # against the segments before, again if they changed meanwhile.
    for attempt in range(5):
        rows = segments(srv, topic)
        try:
            _check_isolation(srv, topic, w.visible(False, rows), uncommitted=True)
            return
        except AssertionError:
            if attempt == 4 or segments(srv, topic) == rows:
                raise


def _check_isolation(srv: Server, topic: str, recs: list[Rec], uncommitted: bool = False) -> None:
    """Every endpoint against brute force: `recs` are what the isolation level sees."""
    iso = {"isolation": "read_uncommitted"} if uncommitted else {}
    for q in ("*", "value.level:error"):
        want = [r for r in recs if q == "*" or r.level == "error"]
        for sort in ("-timestamp", "offset"):
            total, hits = _walk(srv, topic, q=q, sort=sort, **iso)
            assert total == len(want) == len(hits), (iso, q, sort)
            assert sorted(hits) == sorted((r.partition, r.offset) for r in want)
        h = _get(srv, "/search/histogram", topic=topic, q=q, interval="1m", **iso).json()
        buckets: dict[int, int] = {}
        for r in want:
            key = r.ts // 60_000 * 60_000
            buckets[key] = buckets.get(key, 0) + 1
        assert h["total"] == len(want)
        assert {b["start_ms"]: b["count"] for b in h["buckets"] if b["count"]} == buckets
    t = _get(srv, "/search/terms", topic=topic, field="value.kind", **iso).json()
    kinds: dict[str, int] = {}
    for r in recs:
        kinds[r.label] = kinds.get(r.label, 0) + 1
    assert t["total"] == len(recs)
    assert {x["value"]: x["count"] for x in t["terms"]} == kinds


@pytest.fixture(scope="module")
def txn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("search-isolation"), SERVER_ARGS) as srv:
        yield srv


def test_search_sees_committed_records_only(txn_server: Server) -> None:
    srv = txn_server
    topic = unique_topic("siso")
    create_topic(srv, topic, partitions=PARTITIONS)
    w = Writer(srv, topic)
    a = w.txn_producer("a")
    for r in range(ROUNDS):
        w.send(w.plain, 3, "plain")
        w.transaction(a, 3, commit=r % 3 != 1)
        w.send(w.plain, 2, "plain")
        # A pause past the seal age: the rounds land in separate small segments.
        time.sleep(0.5)
    assert {r.kind for r in w.recs} == {"plain", "committed", "aborted"}

    b = w.txn_producer("b")
    b.begin_transaction()
    pending = w.send(b, 4, "open", "pending")
    # Records of other producers are searchable at once while b's transaction is open.
    fresh = w.send(w.plain, 1, "plain")
    for rec in fresh:
        wait_until(
            lambda rec=rec: _get(srv, "/search", topic=topic, q=rec.token).json()["total"] == 1,
            5,
            "a record produced beside an open transaction",
        )
    parts = {p["partition"]: p for p in srv.get(f"/topics/{topic}").json()["partitions"]}
    for part in range(PARTITIONS):
        first = min(r.offset for r in pending if r.partition == part)
        assert parts[part]["last_stable_offset"] == first < parts[part]["log_end_offset"]
    _check(srv, topic, w)

    # Merged: a segment spans several rounds' offsets (each round sealed on its own).
    def merged() -> bool:
        return any(last - base > 40 for _p, base, last, *_rest in segments(srv, topic))

    wait_until(merged, 30, "a merged segment")
    time.sleep(0.6)  # b's records sealed too
    _check(srv, topic, w)

    b.commit_transaction(20)
    for r in pending:
        r.kind = "committed"
    _check(srv, topic, w)
    parts = {p["partition"]: p for p in srv.get(f"/topics/{topic}").json()["partitions"]}
    assert all(p["last_stable_offset"] == p["log_end_offset"] for p in parts.values())

    # A transaction left open across the restart stays out of sight after it.
    c = w.txn_producer("c")
    c.begin_transaction()
    w.send(c, 2, "open")
    w.send(w.plain, 1, "plain")
    for p in (a, b, c):
        p.purge()
    del a, b, c
    srv.restart()
    _check(srv, topic, w)


def test_isolation_is_validated(txn_server: Server) -> None:
    srv = txn_server
    topic = unique_topic("siso-bad")
    create_topic(srv, topic, partitions=PARTITIONS)
    for path in ("/search", "/search/histogram", "/search/terms"):
        r = _get(srv, path, topic=topic, field="key", isolation="dirty")
        assert r.status_code == 422, r.text
        assert "isolation" in r.text and "read_committed" in r.text
    r = _get(srv, "/search", topic=topic, isolation="read_uncommitted")
    assert r.status_code == 200
    # A cursor of one isolation level is refused by the other.
    w = Writer(srv, topic)
    w.send(w.plain, 30, "plain")
    wait_until(lambda: all_indexed(srv, topic, _ends(srv, topic)), 30, "indexing")
    cursor = _get(srv, "/search", topic=topic, limit=5).json()["next_cursor"]
    r = _get(srv, "/search", topic=topic, limit=5, cursor=cursor, isolation="read_uncommitted")
    assert r.status_code == 422 and "cursor" in r.text
