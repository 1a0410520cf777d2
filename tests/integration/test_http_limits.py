"""HTTP search limits (issue 16) on a real server: 100 concurrent expensive searches get
429s with Retry-After while simple searches keep answering (they do not queue behind the
expensive ones in the search pool), and over-long, over-complex or over-wide requests are
refused with a message before anything runs."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import httpx
import pytest

from tests.integration.conftest import Server, running_server, unique_topic
from tests.integration.layered import wait_until
from tests.integration.test_topic_configs import create_topic

RECORDS = 200_000  # a terms aggregation over value.n (all distinct) takes ~0.3 s
MAX_EXPENSIVE = 8
ARGS = (
    "--index-commit-ms",
    "200",
    "--max-concurrent-searches",
    str(MAX_EXPENSIVE),
    "--http-max-query-length",
    "200",
    "--http-max-query-clauses",
    "8",
    "--http-max-page",
    "100",
    "--http-max-buckets",
    "50",
)
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]
LEVELS = ("info", "warn", "error")


@dataclass
class Corpus:
    srv: Server
    topic: str
    start_ms: int
    end_ms: int


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    with running_server(tmp_path_factory.mktemp("limits"), ARGS) as srv:
        topic = unique_topic("limits")
        create_topic(srv, topic, partitions=2)
        rnd = random.Random(7)
        start = int(time.time() * 1000) - 60_000
        p = confluent_kafka.Producer(
            {"bootstrap.servers": srv.bootstrap, "linger.ms": 20, "batch.num.messages": 10_000}
        )
        for i in range(RECORDS):
            value = {
                "n": i,
                "level": LEVELS[i % 3],
                "msg": " ".join(rnd.choice(WORDS) for _ in range(8)),
            }
            p.produce(topic, json.dumps(value).encode(), partition=i % 2, timestamp=start + i // 10)
            if i % 10_000 == 0:
                p.poll(0)
        assert p.flush(60) == 0

        def indexed() -> bool:
            r = httpx.get(srv.http + "/search", params={"topic": topic, "q": "*", "limit": 1})
            return r.status_code == 200 and r.json()["total"] == RECORDS

        wait_until(indexed, 90, "the corpus to be searchable")
        yield Corpus(srv, topic, start, start + RECORDS // 10)


def _get(c: Corpus, path: str, **params: Any) -> httpx.Response:
    return httpx.get(c.srv.http + path, params={"topic": c.topic, **params}, timeout=30)


# Each would visit far more than its matches: refused with 429 while the places are taken.
EXPENSIVE = [
    ("/search", {"q": '"alpha beta"'}),
    ("/search", {"q": "value.n:[10 TO 5000]"}),
    ("/search", {"q": "value.n:>5"}),
    ("/search", {"q": "value.msg:alph*"}),
    ("/search", {"q": "alpha~1"}),
    ("/search", {"q": ""}),
    ("/search/histogram", {"q": "alpha"}),
    ("/search/terms", {"field": "value.level"}),
]
CHEAP = [
    ("/search", {"q": "value.level:error"}),
    ("/search", {"q": "alpha AND NOT beta"}),
    ("/search", {"q": "(alpha OR gamma) AND value.level:warn"}),
    ("/search", {"q": "*", "start": "0"}),
]


SLOW = ("/search/terms", {"field": "value.n", "size": "5"})  # ~0.3 s each, one at a time


def test_expensive_searches_past_the_cap_get_429_while_simple_ones_answer(c: Corpus) -> None:
    """100 at once: 8 slow ones take the places, then each kind of expensive search ten
    times and the cheap ones three times, interleaved."""
    mixed = [kind for _ in range(10) for kind in EXPENSIVE] + CHEAP * 3
    burst_plan = [SLOW] * MAX_EXPENSIVE + mixed
    assert len(burst_plan) == 100

    async def run() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=c.srv.http, timeout=60, limits=limits) as client:
            done: dict[int, tuple[float, httpx.Response]] = {}

            async def send(i: int, path: str, params: dict[str, str]) -> None:
                r = await client.get(path, params={"topic": c.topic, **params})
                done[i] = (time.monotonic(), r)

            burst = [
                asyncio.create_task(send(i, path, params))
                for i, (path, params) in enumerate(burst_plan)
            ]
            while not any(r.status_code == 429 for _t, r in done.values()):
                assert not all(t.done() for t in burst), done
                await asyncio.sleep(0.005)
            # The places are taken now: a simple search still answers.
            sent = time.monotonic()
            simple = await client.get(
                "/search", params={"topic": c.topic, "q": "value.level:error", "limit": 5}
            )
            answered = time.monotonic()
            await asyncio.gather(*burst)
            return {"done": done, "simple": simple, "answered": answered, "sent": sent}

    got = asyncio.run(run())
    done: dict[int, tuple[float, httpx.Response]] = got["done"]
    codes = {i: r.status_code for i, (_t, r) in done.items()}
    assert set(codes.values()) <= {200, 429}, codes
    refused = [r for _t, r in done.values() if r.status_code == 429]
    assert len(refused) >= 50, len(refused)
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
        assert "CHRONIK_MAX_CONCURRENT_SEARCHES" in r.json()["detail"]
    # Cheap searches are never refused; every kind of expensive one was.
    for i, (path, params) in enumerate(burst_plan):
        if (path, params) in CHEAP:
            assert codes[i] == 200, (path, params, done[i][1].text)
    for kind in EXPENSIVE:
        assert any(codes[i] == 429 for i, k in enumerate(burst_plan) if k == kind), kind
    simple = got["simple"]
    assert simple.status_code == 200, simple.text
    assert simple.json()["total"] == RECORDS // 3
    # It did not wait for the slow searches admitted before it: most answered after it.
    slow = [done[i][0] for i in range(MAX_EXPENSIVE) if codes[i] == 200]
    before = sum(t < got["answered"] for t in slow)
    latency = got["answered"] - got["sent"]
    assert before <= 2 and len(slow) - before >= 3, (before, len(slow), latency)
    # The places are given back: the same expensive search runs now.
    after = _get(c, *SLOW[:1], **SLOW[1])
    assert after.status_code == 200, after.text
    assert after.json()["total"] == RECORDS


def _validation(r: httpx.Response, param: str) -> str:
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", param]
    return str(error["msg"])


def test_a_query_longer_than_the_limit_is_refused(c: Corpus) -> None:
    assert _get(c, "/search", q="x" * 200).status_code == 200
    msg = _validation(_get(c, "/search", q="x" * 201), "q")
    assert "201 characters" in msg and "CHRONIK_HTTP_MAX_QUERY_LENGTH" in msg
    for path in ("/search/histogram", "/search/terms"):
        params = {"field": "key"} if path.endswith("terms") else {}
        _validation(_get(c, path, q="y" * 201, **params), "q")


def test_a_query_with_too_many_clauses_is_refused(c: Corpus) -> None:
    eight = " OR ".join(WORDS[:8])
    assert _get(c, "/search", q=eight).status_code == 200
    for q in (
        " OR ".join(WORDS[:9]),
        "((((((((alpha))))))))",  # groups count: nesting is bounded too
        "value.level: IN [a b c d e f g h i]",
        '"alpha beta gamma delta epsilon zeta eta theta iota"',
    ):
        r = _get(c, "/search", q=q)
        assert r.status_code == 400, (q, r.text)
        assert "CHRONIK_HTTP_MAX_QUERY_CLAUSES" in r.json()["detail"], r.text


def test_pages_buckets_and_terms_are_bounded(c: Corpus) -> None:
    assert len(_get(c, "/search", limit=100).json()["hits"]) == 100
    assert "CHRONIK_HTTP_MAX_PAGE" in _validation(_get(c, "/search", limit=101), "limit")
    # 20 s at 100 ms is 200 buckets: refused before anything is aggregated.
    window = {"start": str(c.start_ms), "end": str(c.start_ms + 20_000)}
    msg = _validation(_get(c, "/search/histogram", interval="100ms", **window), "interval")
    assert "201 buckets" in msg or "200 buckets" in msg, msg
    ok = _get(c, "/search/histogram", interval="1s", **window)
    assert ok.status_code == 200 and len(ok.json()["buckets"]) in (20, 21), ok.text
    # Without a range the matches' own span counts (the whole corpus: 20 s).
    _validation(_get(c, "/search/histogram", q="alpha", interval="100ms"), "interval")
    auto = _get(c, "/search/histogram", q="alpha")
    assert auto.status_code == 200 and 1 < len(auto.json()["buckets"]) <= 50, auto.text
    assert "CHRONIK_HTTP_MAX_BUCKETS" in _validation(
        _get(c, "/search/terms", field="key", size=51), "size"
    )
    assert _get(c, "/search/terms", field="value.level", size=50).status_code == 200
