"""GET /search, /search/histogram and /search/terms against brute force over a known corpus:
exact totals and hit sets on sealed, open and mixed segments, every sort order, cursor pages
(also while records are produced), freshness, and errors for bad input."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.clients import Msg, produce_confluent
from tests.integration.conftest import Server, running_server, unique_topic
from tests.integration.layered import all_indexed, segments, wait_until
from tests.integration.test_topic_configs import create_topic

PARTITIONS = 3
PER_PARTITION = 1200
LEVELS = ("info", "warn", "error", "debug")
SERVICES = ("api", "auth", "billing", "search", "cart")
STATUSES = (200, 201, 204, 301, 404, 500, 503, 599)
MESSAGES = (
    "disk full on var",
    "connection timeout to db",
    "user login ok",
    "payment declined by bank",
    "disk almost full",
    "cache miss for item",
)
DAY = 86_400_000
# Within the default retention (7 days), or retention would delete the corpus mid-test.
BASE_TS = (int(time.time() * 1000) // DAY - 4) * DAY


@dataclass(frozen=True)
class Doc:
    partition: int
    offset: int
    msg: Msg
    obj: dict[str, Any] | None

    @property
    def text(self) -> str:
        try:
            return (self.msg.value or b"").decode()
        except UnicodeDecodeError:
            return ""

    def words(self) -> set[str]:
        key = (self.msg.key or b"").decode()
        return set(re.findall(r"[0-9a-z]+", (self.text + " " + key).lower()))

    def header(self, name: str) -> set[str]:
        return {(v or b"").decode() for k, v in self.msg.headers if k == name}


def _record(i: int) -> tuple[Msg, dict[str, Any] | None]:
    kind = i % 5
    obj: dict[str, Any] | None = None
    if kind <= 2:
        obj = {
            "level": LEVELS[(i * 7) % 4],
            "service": SERVICES[i % 5],
            "status": STATUSES[(i * 3) % 8],
            "msg": f"{MESSAGES[i % 6]} req {i}",
        }
        value = json.dumps(obj).encode()
    elif kind == 3:
        value = f"plain {MESSAGES[(i + 1) % 6]} line {i}".encode()
    else:
        value = b"\xff\x00" + bytes([i % 256]) * 8
    headers: tuple[tuple[str, bytes | None], ...] = ()
    if i % 3 == 0:
        headers = (("trace", f"t{i % 10}".encode()), ("env", b"prod" if i % 2 else b"dev"))
    # Spread over three days, not in offset order; some share a timestamp.
    ts = BASE_TS + ((i * 7919) % 900) * (3 * DAY // 900)
    return Msg(f"user-{i % 37}".encode(), value, headers, ts), obj


@pytest.fixture(scope="module")
def corpus_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, str, list[Doc]]]:
    args = ("--segment-max-records", "500", "--index-commit-ms", "200")
    with running_server(tmp_path_factory.mktemp("search"), args) as srv:
        topic = unique_topic("search")
        create_topic(srv, topic, partitions=PARTITIONS)
        docs: list[Doc] = []
        for p in range(PARTITIONS):
            made = [_record(p * PER_PARTITION + i) for i in range(PER_PARTITION)]
            offsets = produce_confluent(
                srv.bootstrap,
                topic,
                [m for m, _o in made],
                "gzip" if p else "none",
                partition=p,
                **{"batch.num.messages": 100},
            )
            docs += [Doc(p, off, m, o) for (m, o), off in zip(made, offsets, strict=True)]
        ends = {p: PER_PARTITION for p in range(PARTITIONS)}
        wait_until(lambda: all_indexed(srv, topic, ends), 60, "indexing")
        yield srv, topic, docs


def _get(srv: Server, path: str, **params: Any) -> httpx.Response:
    return httpx.get(srv.http + path, params=params, timeout=30)


def _walk(srv: Server, topic: str, limit: int = 250, **params: Any) -> tuple[int, list[dict]]:
    hits: list[dict] = []
    cursor = None
    total = -1
    while True:
        r = _get(srv, "/search", topic=topic, limit=limit, cursor=cursor, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert total in (-1, body["total"])
        total = body["total"]
        hits += body["hits"]
        cursor = body["next_cursor"]
        if cursor is None:
            return total, hits


QUERIES: dict[str, Callable[[Doc], bool]] = {
    "*": lambda d: True,
    "value.level:error": lambda d: d.obj is not None and d.obj["level"] == "error",
    "value.status:[500 TO 599]": lambda d: d.obj is not None and 500 <= d.obj["status"] <= 599,
    '"disk full"': lambda d: "disk full" in d.text,
    "value.level:error AND NOT value.service:auth": lambda d: (
        d.obj is not None and d.obj["level"] == "error" and d.obj["service"] != "auth"
    ),
    "timeout": lambda d: "timeout" in d.words(),
    "value:declined OR cache": lambda d: "declined" in d.words() or "cache" in d.words(),
    "headers.env:prod": lambda d: "prod" in d.header("env"),
    "value.msg:payment AND value.status:>=500": lambda d: (
        d.obj is not None and "payment" in d.obj["msg"] and d.obj["status"] >= 500
    ),
}


@pytest.mark.parametrize("query", list(QUERIES))
def test_totals_and_hit_sets_match_brute_force(
    corpus_server: tuple[Server, str, list[Doc]], query: str
) -> None:
    srv, topic, docs = corpus_server
    want = {(d.partition, d.offset) for d in docs if QUERIES[query](d)}
    assert want, "the corpus should have matches for every query"
    total, hits = _walk(srv, topic, q=query)
    got = [(h["partition"], h["offset"]) for h in hits]
    assert total == len(want)
    assert len(got) == len(set(got)) and set(got) == want


def test_segments_are_sealed_and_open(corpus_server: tuple[Server, str, list[Doc]]) -> None:
    srv, topic, _docs = corpus_server
    rows = segments(srv, topic)
    assert {r[0] for r in rows} == set(range(PARTITIONS))
    # Each partition has records beyond its last sealed segment, in the open segment.
    for p in range(PARTITIONS):
        assert max(r[2] for r in rows if r[0] == p) + 1 < PER_PARTITION


def test_time_range_and_partition_filters(corpus_server: tuple[Server, str, list[Doc]]) -> None:
    srv, topic, docs = corpus_server
    start, end = BASE_TS + DAY // 2, BASE_TS + 2 * DAY
    want = {
        (d.partition, d.offset)
        for d in docs
        if start <= d.msg.timestamp < end and d.partition in (0, 2) and "warn" in d.words()
    }
    iso_start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start / 1000))
    iso_start += f".{start % 1000:03d}Z"
    total, hits = _walk(
        srv, topic, q="warn", start=iso_start, end=str(end), partition=[0, 2], sort="timestamp"
    )
    assert total == len(want) and {(h["partition"], h["offset"]) for h in hits} == want


@pytest.mark.parametrize("sort", ["-timestamp", "timestamp", "offset", "-offset"])
def test_sort_orders_and_cursor_pages(
    corpus_server: tuple[Server, str, list[Doc]], sort: str
) -> None:
    srv, topic, docs = corpus_server
    matching = [d for d in docs if QUERIES["value.status:[500 TO 599]"](d)]
    sign = -1 if sort.startswith("-") else 1
    if sort.endswith("timestamp"):
        matching.sort(key=lambda d: (sign * d.msg.timestamp, sign * d.partition, sign * d.offset))
    else:
        matching.sort(key=lambda d: (sign * d.offset, sign * d.partition))
    _total, hits = _walk(srv, topic, limit=37, q="value.status:[500 TO 599]", sort=sort)
    assert [(h["partition"], h["offset"]) for h in hits] == [
        (d.partition, d.offset) for d in matching
    ]


def test_hits_carry_the_record(corpus_server: tuple[Server, str, list[Doc]]) -> None:
    srv, topic, docs = corpus_server
    by_key = {(d.partition, d.offset): d for d in docs}
    r = _get(srv, "/search", topic=topic, q="*", limit=1000, highlight="true")
    assert r.status_code == 200
    kinds = set()
    for h in r.json()["hits"]:
        d = by_key[(h["partition"], h["offset"])]
        assert h["timestamp_ms"] == d.msg.timestamp and h["key"] == d.msg.key.decode()
        if d.obj is not None:
            assert h["value_json"] == d.obj and h["encoding"] == "utf-8"
            kinds.add("json")
        elif d.text:
            assert h["value"] == d.text and h["value_json"] is None
            kinds.add("text")
        else:
            import base64

            assert base64.b64decode(h["value"]) == d.msg.value and h["encoding"] == "base64"
            kinds.add("binary")
        assert [(x["key"], x["value"]) for x in h["headers"]] == [
            (k, (v or b"").decode()) for k, v in d.msg.headers
        ]
    assert kinds == {"json", "text", "binary"}
    r = _get(srv, "/search", topic=topic, q='"disk full"', highlight="true", limit=5)
    assert all("<em>disk</em>" in h["highlights"][0] for h in r.json()["hits"])


def test_relevance_and_offset_skips(corpus_server: tuple[Server, str, list[Doc]]) -> None:
    srv, topic, _docs = corpus_server
    first = _get(srv, "/search", topic=topic, q="disk full", sort="relevance", limit=10).json()
    assert all(h["score"] > 0 for h in first["hits"]) and first["next_cursor"] is None
    scores = [h["score"] for h in first["hits"]]
    assert scores == sorted(scores, reverse=True)
    a = _get(srv, "/search", topic=topic, q="*", limit=10).json()["hits"]
    b = _get(srv, "/search", topic=topic, q="*", limit=5, offset=5).json()["hits"]
    assert a[5:] == b


def test_histogram_sums_to_the_total_and_terms_match(
    corpus_server: tuple[Server, str, list[Doc]],
) -> None:
    srv, topic, docs = corpus_server
    for params in ({"q": "value.level:error"}, {"q": "*", "interval": "1h"}, {"q": "timeout"}):
        total = _get(srv, "/search", topic=topic, limit=1, **params).json()["total"]
        h = _get(srv, "/search/histogram", topic=topic, **params).json()
        assert h["total"] == total == sum(b["count"] for b in h["buckets"])
        starts = [b["start_ms"] for b in h["buckets"]]
        assert all(b - a == h["interval_ms"] for a, b in itertools.pairwise(starts))
    t = _get(srv, "/search/terms", topic=topic, field="value.level", size=10).json()
    want: dict[str, int] = {}
    for d in docs:
        if d.obj is not None:
            want[d.obj["level"]] = want.get(d.obj["level"], 0) + 1
    assert {x["value"]: x["count"] for x in t["terms"]} == want
    t = _get(srv, "/search/terms", topic=topic, field="partition", q="value.level:warn").json()
    assert {x["value"]: x["count"] for x in t["terms"]} == {
        p: sum(1 for d in docs if d.partition == p and d.obj and d.obj["level"] == "warn")
        for p in range(PARTITIONS)
    }


def test_pages_stay_exact_while_records_arrive(
    corpus_server: tuple[Server, str, list[Doc]],
) -> None:
    srv, topic, docs = corpus_server
    want = {(d.partition, d.offset) for d in docs if "disk" in d.words()}
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            more = [
                Msg(b"late", f"disk late {n + i}".encode(), (), int(time.time() * 1000))
                for i in range(50)
            ]
            produce_confluent(srv.bootstrap, topic, more, partition=n % PARTITIONS)
            n += 50

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        seen: list[tuple[int, int]] = []
        cursor = None
        while True:
            # Newest first: records arriving meanwhile sort before the cursor, so the walk
            # ends (oldest first it would chase the producer).
            r = _get(srv, "/search", topic=topic, q="disk", limit=50, cursor=cursor, sort="-offset")
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [(h["partition"], h["offset"]) for h in body["hits"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(30)
    assert len(seen) == len(set(seen))  # no hit twice
    assert want <= set(seen)  # none of the records present at the start skipped


def test_fresh_records_are_searchable_within_two_seconds(
    corpus_server: tuple[Server, str, list[Doc]],
) -> None:
    srv, topic, _docs = corpus_server
    delays = []
    for _ in range(50):
        token = "tok" + uuid.uuid4().hex[:12]
        produce_confluent(
            srv.bootstrap,
            topic,
            [Msg(None, f"fresh {token}".encode(), (), int(time.time() * 1000))],
        )
        acked = time.monotonic()
        while True:
            if _get(srv, "/search", topic=topic, q=token, limit=1).json()["total"] == 1:
                break
            assert time.monotonic() - acked < 2.0, f"{token} not searchable after 2 s"
            time.sleep(0.02)
        delays.append(time.monotonic() - acked)
    delays.sort()
    print(f"freshness p50 {delays[24]:.3f}s p99 {delays[-1]:.3f}s")


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"q": "value.level:(error"}, 400, "position"),
        ({"q": "nosuchfield:x"}, 400, "nosuchfield"),
        # Tantivy panics on a range bound beyond 64 bits: refused before it gets there.
        ({"q": "value.status:[0 TO 9223372036854775808]"}, 400, "out of range"),
        ({"start": "yesterday"}, 422, "start"),
        ({"end": "2026-13-45"}, 422, "end"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 1001}, 422, "limit"),
        ({"cursor": "!!!"}, 422, "cursor"),
        ({"sort": "sideways"}, 422, "sort"),
    ],
)
def test_bad_input_gets_a_clear_error(
    corpus_server: tuple[Server, str, list[Doc]], params: dict[str, Any], status: int, needle: str
) -> None:
    srv, topic, _docs = corpus_server
    r = _get(srv, "/search", topic=topic, **params)
    assert r.status_code == status, r.text
    assert needle in r.text
    assert _get(srv, "/search", topic="no-such-topic").status_code == 404
    other = _get(srv, "/search", topic=topic, limit=1).json()["next_cursor"]
    r = _get(srv, "/search", topic=topic, q="timeout", cursor=other)
    assert r.status_code == 422 and "cursor" in r.text


def test_metrics_parse_and_name_every_metric(
    corpus_server: tuple[Server, str, list[Doc]],
) -> None:
    from tests.integration.clients import consume_confluent
    from tests.integration.layered import metrics
    from tests.integration.test_layered_storage import STORAGE_METRICS

    srv, topic, _docs = corpus_server
    assert consume_confluent(srv.bootstrap, topic, 10, partition=1)
    _get(srv, "/search", topic=topic, limit=1)
    _get(srv, "/search/histogram", topic=topic)
    _get(srv, "/search/terms", topic=topic, field="key")
    names = {name for name, _labels in metrics(srv)}
    wanted = STORAGE_METRICS | {
        "chronik_kafka_requests_total",
        "chronik_kafka_request_seconds_bucket",
        "chronik_produce_records_total",
        "chronik_produce_bytes_total",
        "chronik_fetch_records_total",
        "chronik_http_requests_total",
        "chronik_search_seconds_bucket",
        "chronik_search_segments_opened_total",
        "chronik_search_freshness_seconds",
    }
    assert names >= wanted, wanted - names
    samples = metrics(srv)
    assert samples[("chronik_produce_records_total", (("topic", topic),))] >= PARTITIONS * 1200
    assert samples[("chronik_fetch_records_total", (("topic", topic),))] >= 10
    assert samples[("chronik_http_requests_total", (("route", "/search"), ("status", "200")))] > 0
    assert any(
        n == "chronik_kafka_requests_total" and dict(labels)["api"] == "Produce"
        for n, labels in samples
    )


def test_segments_and_indexer_endpoints(corpus_server: tuple[Server, str, list[Doc]]) -> None:
    srv, topic, _docs = corpus_server
    body = _get(srv, "/segments", topic=topic).json()
    segs = body["segments"]
    assert {s["state"] for s in segs} >= {"open"} and {s["state"] for s in segs} & {
        "local",
        "uploaded",
    }
    for p in range(PARTITIONS):
        mine = sorted((s for s in segs if s["partition"] == p), key=lambda s: s["base_offset"])
        assert mine[0]["base_offset"] == 0
        assert all(a["last_offset"] + 1 == b["base_offset"] for a, b in itertools.pairwise(mine))
    assert body["topics"][topic]["records"] == sum(s["records"] for s in segs)
    assert body["total"]["segments"] >= len(segs)
    only = _get(srv, "/segments", topic=topic, partition=1).json()["segments"]
    assert only and {s["partition"] for s in only} == {1}
    assert _get(srv, "/segments", topic="no-such-topic").status_code == 404

    status = _get(srv, "/indexer").json()
    assert status["enabled"] and status["workers"] and all(w["alive"] for w in status["workers"])
    parts = [p for p in status["partitions"] if p["topic"] == topic]
    assert len(parts) == PARTITIONS
    for p in parts:
        assert p["indexed_offset"] == p["high_watermark"] and p["lag_records"] == 0
        assert p["last_commit"] is not None


def test_several_topics_in_one_search(corpus_server: tuple[Server, str, list[Doc]]) -> None:
    srv, topic, docs = corpus_server
    other = unique_topic("other")
    create_topic(srv, other, partitions=2)
    extra = [
        Msg(b"k", json.dumps({"level": "error", "n": i}).encode(), (), BASE_TS + i * 1000)
        for i in range(120)
    ]
    for p in range(2):
        produce_confluent(srv.bootstrap, other, extra[p::2], partition=p)
    wait_until(lambda: all_indexed(srv, other, {0: 60, 1: 60}), 30, "indexing")
    mine = {(topic, d.partition, d.offset) for d in docs if QUERIES["value.level:error"](d)}
    total, hits = _walk(srv, f"{topic},{other}", limit=97, q="value.level:error")
    got = [(h["topic"], h["partition"], h["offset"]) for h in hits]
    assert total == len(mine) + 120 == len(got) == len(set(got))
    assert {g for g in got if g[0] == topic} == mine
    stamps = [h["timestamp_ms"] for h in hits]
    assert stamps == sorted(stamps, reverse=True)
