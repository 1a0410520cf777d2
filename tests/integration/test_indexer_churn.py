"""Topic create/delete churn with indexing on: no indexer worker may die of it, and the
partitions that stay are indexed all along."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable

import confluent_kafka
import httpx
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.conftest import Server, unique_topic
from tests.integration.layered import metrics, registry, wait_until

PARTITIONS = 4
CHURN_TOPICS = 200
# Names are reused: three creations in four re-create a topic deleted shortly before.
CHURN_NAMES = 50
# Topics alive at once, and records produced to each: the worker has real work to do while
# deletes arrive, as when a client's test suite runs.
CHURN_WINDOW = 45
CHURN_RECORDS = 1000
STEADY_RECORDS = 2000


def _producer(srv: Server) -> confluent_kafka.Producer:
    return confluent_kafka.Producer(
        {"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 2}
    )


def _produce_steadily(srv: Server, topic: str, stop: threading.Event, acked: list[int]) -> None:
    """STEADY_RECORDS records over the churn, in small flushed bursts; acked[0] counts the
    delivered ones."""
    p = _producer(srv)

    def report(err: object, _msg: object) -> None:
        if err is None:
            acked[0] += 1

    for i in range(STEADY_RECORDS):
        value = json.dumps({"n": i, "word": "steady"}).encode()
        p.produce(
            topic, value=value, key=str(i).encode(), partition=i % PARTITIONS, on_delivery=report
        )
        if i % 20 == 19:
            p.flush(30)
            if not stop.is_set():
                time.sleep(0.02)
    assert p.flush(30) == 0


def _delete(admin: AdminClient, name: str) -> None:
    admin.delete_topics([name], operation_timeout=10)[name].result(20)


def _churn(srv: Server, admin: AdminClient, prefix: str) -> None:
    p = _producer(srv)
    alive: deque[str] = deque()
    for i in range(CHURN_TOPICS):
        name = f"{prefix}-{i % CHURN_NAMES}"
        admin.create_topics([NewTopic(name, PARTITIONS, 1)], operation_timeout=10)[name].result(20)
        for n in range(CHURN_RECORDS):
            p.produce(name, value=b'{"churn": %d, "n": %d}' % (i, n), partition=n % PARTITIONS)
            if n % 500 == 0:
                p.poll(0)
        assert p.flush(30) == 0, f"records to {name} not delivered"
        alive.append(name)
        if len(alive) == CHURN_WINDOW:
            _delete(admin, alive.popleft())
    for name in alive:
        _delete(admin, name)


def _search_total(srv: Server, topic: str, **params: object) -> int:
    r = httpx.get(srv.http + "/search", params={"topic": topic, "limit": 1, **params}, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def _checkpointed(srv: Server) -> list[str]:
    with registry(srv) as db:
        return [r[0] for r in db.execute("SELECT DISTINCT topic FROM checkpoints")]


def _restarts(srv: Server) -> float:
    return metrics(srv).get(("chronik_indexer_worker_restarts_total", ()), 0.0)


def test_topic_churn_never_restarts_a_worker(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server("--auto-create-topics", "false", "--index-commit-ms", "200")
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    steady = unique_topic("steady")
    admin.create_topics([NewTopic(steady, PARTITIONS, 1)])[steady].result(20)

    stop = threading.Event()
    acked = [0]
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            _produce_steadily(srv, steady, stop, acked)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    producer = threading.Thread(target=produce, name="steady-producer")
    producer.start()
    try:
        _churn(srv, admin, unique_topic("churn"))
    finally:
        stop.set()
        producer.join(60)
    assert not errors, errors
    assert acked[0] == STEADY_RECORDS

    log = srv.stderr_text(10_000_000)
    restarts = [line for line in log.splitlines() if "restarting it" in line]
    assert not restarts, f"{len(restarts)} worker restarts, the first: {restarts[0]}"
    status = httpx.get(srv.http + "/indexer", timeout=10).json()
    assert [w["restarts"] for w in status["workers"]] == [0], status["workers"]
    assert _restarts(srv) == 0

    wait_until(
        lambda: _search_total(srv, steady) == STEADY_RECORDS,
        20,
        f"all {STEADY_RECORDS} records of {steady} to be searchable",
    )
    for part in range(PARTITIONS):
        assert _search_total(srv, steady, partition=part) == STEADY_RECORDS // PARTITIONS
    assert _search_total(srv, steady, q="value.word:steady") == STEADY_RECORDS
    # A deleted topic leaves no checkpoint behind (a re-created one would start from it).
    wait_until(lambda: set(_checkpointed(srv)) == {steady}, 10, "only the steady checkpoints")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]
