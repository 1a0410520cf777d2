"""Records produced without a timestamp (-1 in the batch, as older librdkafka paths and some
CreateTime producers send): every batch is acknowledged, and retention, restarts and the
object-store tier keep them all, fetchable byte for byte and searchable. Raw Produce
requests, since the client libraries always stamp their records."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import confluent_kafka
import httpx
import pytest

from tests.integration.clients import confluent_consumer
from tests.integration.conftest import Server, unique_topic
from tests.integration.layered import all_indexed, segments, wait_tiered, wait_until
from tests.integration.rawkafka import RawKafka, Rec, build_batch, parse_batches
from tests.integration.test_topic_configs import create_topic

NO_TS = -1
TEN_MINUTES = "600000"
RETENTION_CHECK_MS = 200
PER_BATCH = 20
MAX_TIMESTAMP = -3


def now_ms() -> int:
    return int(time.time() * 1000)


def untimed_batches(tag: str, count: int, pad: int) -> list[bytes]:
    value = b'{"tag": "%s", "n": %d, "pad": "%s"}'
    return [
        build_batch(
            [
                Rec(b"k%d" % i, value % (tag.encode(), i, b"p" * pad))
                for i in range(b * PER_BATCH, (b + 1) * PER_BATCH)
            ],
            first_timestamp=NO_TS,
        )
        for b in range(count)
    ]


# Three small batches stay under the WAL's index interval (4 KiB); eight big ones make each
# batch after the first add a time index entry.
SHAPES = {"small": (3, 1), "big": (8, 300)}


def produce_all(srv: Server, topic: str, batches: list[bytes]) -> None:
    bases = []
    with RawKafka(srv.bootstrap) as raw:
        for b in batches:
            code, base = raw.produce(topic, 0, b)
            assert code == 0, f"batch {len(bases)}: error {code}"
            bases.append(base)
    assert bases == [n * PER_BATCH for n in range(len(batches))]


def fetched_batches(srv: Server, topic: str, end: int) -> list[bytes]:
    """Every stored batch below `end`, as raw bytes."""
    out: list[bytes] = []
    offset = 0
    with RawKafka(srv.bootstrap) as raw:
        while offset < end:
            p = raw.fetch(topic, 0, offset, max_bytes=1 << 16)
            assert p.error_code == 0, f"fetch at {offset}: error {p.error_code}"
            data = bytes(p.records)
            pos = 0
            for b in parse_batches(data):
                size = 12 + int.from_bytes(data[pos + 8 : pos + 12], "big")
                if b.base_offset >= offset:
                    out.append(data[pos : pos + size])
                offset = max(offset, b.base_offset + b.last_offset_delta + 1)
                pos += size
            assert pos, f"fetch at {offset} returned no whole batch"
    return out


def assert_all_fetchable(srv: Server, topic: str, produced: list[bytes]) -> None:
    total = len(produced) * PER_BATCH
    with RawKafka(srv.bootstrap) as raw:
        assert raw.list_offset(topic, 0, -2).offset == 0  # log start
        assert raw.list_offset(topic, 0, -1).offset == total
    got = fetched_batches(srv, topic, total)
    assert len(got) == len(produced)
    for n, (stored, sent) in enumerate(zip(got, produced, strict=True)):
        # baseOffset and partitionLeaderEpoch are the broker's; every other byte is the client's.
        assert int.from_bytes(stored[:8], "big") == n * PER_BATCH
        assert stored[8:12] == sent[8:12] and stored[16:] == sent[16:], f"batch {n} differs"
    # A CRC-checking client reads them all too.
    c = confluent_consumer(srv.bootstrap)
    try:
        c.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while len(seen) < total and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                seen.append(m.offset())
        assert seen == list(range(total))
    finally:
        c.close()


def search(srv: Server, topic: str, **params: object) -> dict[str, Any]:
    query = {"topic": topic, "q": "*", "limit": 1000, **params}
    r = httpx.get(srv.http + "/search", params=query, timeout=30)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_all_searchable(srv: Server, topic: str, total: int, since: int) -> None:
    def complete() -> dict[str, Any] | None:
        res = search(srv, topic)
        return res if res["total"] >= total else None

    res = wait_until(complete, 30, "every untimed record to be searchable")
    assert sorted(h["offset"] for h in res["hits"]) == list(range(total))
    # Their documents carry the time the broker had them, so a recent window finds them all.
    assert all(since <= h["timestamp_ms"] <= now_ms() for h in res["hits"]), res["hits"][:3]
    assert search(srv, topic, start=since)["total"] == total
    assert search(srv, topic, end=since)["total"] == 0


def wait_retention_checks(srv: Server) -> None:
    time.sleep(8 * RETENTION_CHECK_MS / 1000)
    assert "log start now" not in srv.stderr_text(200_000)


def assert_timestamp_lookups(srv: Server, topic: str) -> None:
    """Untimed records are not found by time (as in Kafka), and nothing fails."""
    with RawKafka(srv.bootstrap) as raw:
        for ts in (0, now_ms() - 60_000):
            p = raw.list_offset(topic, 0, ts)
            assert (p.error_code, p.offset) == (0, -1), (ts, p)
        p = raw.list_offset(topic, 0, MAX_TIMESTAMP)
        assert p.error_code == 0 and p.timestamp == -1, p


def assert_kept_through_restart(srv: Server, topic: str, produced: list[bytes], since: int) -> None:
    """After several retention checks, every record is there; again after a restart."""
    total = len(produced) * PER_BATCH
    for restart in (False, True):
        if restart:
            srv.restart()
            wait_until(lambda: all_indexed(srv, topic, {0: total}), 30, "the indexer")
        wait_retention_checks(srv)
        assert_all_fetchable(srv, topic, produced)
        assert_all_searchable(srv, topic, total, since)
        assert_timestamp_lookups(srv, topic)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_untimed_batches_survive_retention_and_restart(
    fresh_server: Callable[..., Server], shape: str
) -> None:
    srv = fresh_server("--retention-check-ms", str(RETENTION_CHECK_MS), "--index-commit-ms", "200")
    topic = unique_topic("nots")
    create_topic(srv, topic, **{"retention.ms": TEN_MINUTES})
    since = now_ms()
    produced = untimed_batches(shape, *SHAPES[shape])
    produce_all(srv, topic, produced)
    assert_kept_through_restart(srv, topic, produced, since)


def test_untimed_records_in_tiered_segments_survive_retention(
    fresh_server: Callable[..., Server],
) -> None:
    count, pad = SHAPES["big"]
    srv = fresh_server(
        "--retention-check-ms",
        str(RETENTION_CHECK_MS),
        "--index-commit-ms",
        "200",
        "--tiering-interval-ms",
        "200",
        "--segment-max-records",
        str(2 * PER_BATCH),
        "--segment-bytes",
        str(3 * len(untimed_batches("", 1, pad)[0])),
        "--wal-retain-ms",
        "0",
        # Smaller than one batch: fetches come from the tiers, not from memory.
        "--memtail-bytes",
        "4096",
    )
    topic = unique_topic("notier")
    create_topic(srv, topic, **{"retention.ms": TEN_MINUTES})
    since = now_ms()
    produced = untimed_batches("tier", count, pad)
    produce_all(srv, topic, produced)
    total = len(produced) * PER_BATCH
    wait_tiered(srv, topic, {0: total}, timeout=60)
    bases = [row[1] for row in segments(srv, topic)]
    assert bases[:1] == [0] and len(bases) >= 3, f"sealed segments from offsets {bases}"
    wal_start = min(int(p.stem) for p in (srv.data_dir / "logs" / f"{topic}-0").glob("*.log"))
    assert wal_start > 0, "no offsets left the WAL for the object-store tier"
    assert_kept_through_restart(srv, topic, produced, since)
