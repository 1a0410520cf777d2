"""Helpers for the log-compaction tests: a changelog corpus with tombstones, the brute-force
state a compacted log must show, a consumer that reads a partition to its end, the cleaner's
checkpoint from the real registry, and search queries against that state."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka
import httpx

from tests.integration.clients import Msg, confluent_consumer
from tests.integration.conftest import Server
from tests.integration.layered import open_bases, registry, segments

HOUR = 3_600_000
DAY = 24 * HOUR


def changelog(n: int, keys: int, rnd: random.Random, ts: Callable[[int], int]) -> list[Msg]:
    """`n` updates of `keys` keys, about 4 % tombstones (null value); each value holds a word
    (r<seq>) found in no other record, so a search can ask for one record."""
    out = []
    for i in range(n):
        key = b"k%04d" % rnd.randrange(keys)
        value = None if rnd.random() < 0.04 else b'{"rev": "r%07d", "pad": "%s"}' % (i, b"x" * 20)
        out.append(Msg(key, value, (), ts(i)))
    return out


def compacted_state(
    produced: Sequence[Msg], cleaned_end: int, expired: Callable[[Msg], bool]
) -> list[Msg]:
    """What a consumer from offset 0 must read: below `cleaned_end` the latest record of each
    key (a tombstone only while not `expired`), from it on every record."""
    latest: dict[bytes | None, int] = {}
    for m in produced:
        if m.offset < cleaned_end:
            latest[m.key] = max(latest.get(m.key, -1), m.offset)

    def kept(m: Msg) -> bool:
        if m.offset >= cleaned_end:
            return True
        return latest[m.key] == m.offset and not (m.value is None and expired(m))

    return [m for m in sorted(produced, key=lambda m: m.offset) if kept(m)]


def consume_all(
    srv: Server, topic: str, partition: int = 0, start: int = 0, timeout: float = 60
) -> list[Msg]:
    """Every record from `start` to the partition's end (partition EOF), CRCs checked. Fails
    on any consumer error, OFFSET_OUT_OF_RANGE included (auto.offset.reset=error), and when
    the end is not reached in time (a consumer stuck before the high watermark)."""
    c = confluent_consumer(
        srv.bootstrap, **{"enable.partition.eof": True, "auto.offset.reset": "error"}
    )
    out: list[Msg] = []
    try:
        c.assign([confluent_kafka.TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, (
                f"{topic}-{partition}: no end of partition after {timeout}s; "
                f"{len(out)} records read, last offset "
                f"{out[-1].offset if out else None}, watermarks "
                f"{c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, partition))}"
            )
            for m in c.consume(num_messages=1000, timeout=0.5):
                err = m.error()
                if err is not None and err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    return out
                assert err is None, f"consumer error at {len(out)} records: {err}"
                out.append(
                    Msg(m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1], m.offset())
                )
    finally:
        c.close()


def assert_state(srv: Server, topic: str, want: Sequence[Msg], what: str) -> None:
    got = consume_all(srv, topic)
    if got != list(want):
        w = {m.offset: m for m in want}
        g = {m.offset: m for m in got}
        missing = sorted(set(w) - set(g))
        extra = sorted(set(g) - set(w))
        changed = sorted(o for o in set(w) & set(g) if w[o] != g[o])
        raise AssertionError(
            f"{what}: read {len(got)} records, expected {len(want)}; missing offsets "
            f"{missing[:10]} ({len(missing)}), unexpected {extra[:10]} ({len(extra)}), "
            f"different {changed[:5]} ({len(changed)})"
        )


def cleaner_checkpoint(srv: Server, topic: str, partition: int = 0) -> tuple[int, int] | None:
    """(cleaned_end, last_run_ms) from the registry's cleaner table, None before a run."""
    with registry(srv) as db:
        row = db.execute(
            "SELECT cleaned_end, last_run_ms FROM cleaner WHERE topic=? AND partition=?",
            (topic, partition),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def segment_base_at(srv: Server, topic: str, offset: int, partition: int = 0) -> int | None:
    """The base of the live search segment (sealed, else the open one) that holds `offset`."""
    for p, base, last, *_ in segments(srv, topic):
        if p == partition and base <= offset <= last:
            return int(base)
    base = open_bases(srv, topic).get(partition)
    return int(base) if base is not None and base <= offset else None


def assert_live_segments_tile(srv: Server, topic: str, end: int, partition: int = 0) -> None:
    """The live segments cover [0, end) once each: a cleaned segment replaced its source
    whole, never beside it."""
    rows = [r for r in segments(srv, topic) if r[0] == partition]
    spans = [(int(r[1]), int(r[2])) for r in rows]
    nxt = 0
    for base, last in spans:
        assert base == nxt, f"live segments do not tile: {spans}"
        nxt = last + 1
    assert nxt <= end, (spans, end)


def partition_info(srv: Server, topic: str, partition: int = 0) -> dict[str, Any]:
    r = srv.get(f"/topics/{topic}")
    assert r.status_code == 200, r.text
    (p,) = [p for p in r.json()["partitions"] if p["partition"] == partition]
    return p


def search(srv: Server, topic: str, q: str, limit: int = 1000) -> httpx.Response:
    return httpx.get(
        srv.http + "/search",
        params={"topic": topic, "q": q, "limit": limit, "sort": "offset"},
        timeout=30,
    )


def search_hits(srv: Server, topic: str, q: str) -> tuple[int, list[int]]:
    r = search(srv, topic, q)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["total"], [h["offset"] for h in body["hits"]]


def assert_search_follows(
    srv: Server,
    topic: str,
    produced: Sequence[Msg],
    state: Sequence[Msg],
    rnd: random.Random,
    what: str,
    samples: int = 15,
) -> None:
    """Search over the log equals the brute-force state: the total of q=*, each sampled key's
    hits, and a record's own word found for kept records and not for removed ones."""
    total, _ = search_hits(srv, topic, "*")
    assert total == len(state), f"{what}: q=* total {total}, the log holds {len(state)}"
    kept = {m.offset for m in state}
    by_key: dict[bytes | None, list[int]] = {}
    for m in state:
        by_key.setdefault(m.key, []).append(m.offset)
    for key in rnd.sample(sorted(k for k in by_key if k), min(samples, len(by_key))):
        want = by_key[key]
        total, hits = search_hits(srv, topic, f"key:{key.decode()}")
        assert (total, hits) == (len(want), want[:1000]), f"{what}: key {key!r}"
    removed = [m for m in produced if m.offset not in kept and m.value is not None]
    present = [m for m in state if m.value is not None]
    for m in rnd.sample(removed, min(samples, len(removed))):
        word = m.value.split(b'"')[3].decode()  # type: ignore[union-attr]
        assert search_hits(srv, topic, word)[0] == 0, f"{what}: removed offset {m.offset} found"
    for m in rnd.sample(present, min(samples, len(present))):
        word = m.value.split(b'"')[3].decode()  # type: ignore[union-attr]
        assert search_hits(srv, topic, word) == (1, [m.offset]), f"{what}: offset {m.offset}"
