"""The Kafka listener's resource limits: connections in total and per address (closed at
accept, counted, warned about without a line per refusal), idle, silent and partial-frame
connections closed after connections_max_idle_ms, and back-pressure by request bytes in flight
per connection and in total while every record still gets through."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import confluent_kafka
import pytest

from .conftest import unique_topic
from .rawkafka import RawKafka
from .secservers import SecureServer, consume_values, raw, started

pytestmark = pytest.mark.timeout(120)
IDLE_MS = 600


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    srv = SecureServer(
        tmp_path_factory.mktemp("capped"),
        ["--max-connections", "5", "--max-connections-per-ip", "3"],
    )
    with started(srv):
        yield srv


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    srv = SecureServer(
        tmp_path_factory.mktemp("tight"),
        [
            "--connections-max-idle-ms",
            str(IDLE_MS),
            "--connection-max-inflight-bytes",
            str(64 * 1024),
        ],
    )
    with started(srv):
        yield srv


def served(client: RawKafka) -> bool:
    try:
        return client.api_versions(3).error_code == 0
    except Exception:
        return False


def test_connections_are_capped_in_total_and_per_address(capped: SecureServer) -> None:
    first = [raw(capped.bootstrap) for _ in range(3)]
    assert all(served(c) for c in first)
    refused = raw(capped.bootstrap)  # a fourth from 127.0.0.1
    assert refused.wait_closed(timeout=5)
    other = [raw(capped.bootstrap, source="127.0.0.2") for _ in range(2)]
    assert all(served(c) for c in other)
    over_total = raw(capped.bootstrap, source="127.0.0.3")  # a sixth in all
    assert over_total.wait_closed(timeout=5)
    assert capped.metric("chronik_kafka_connections_refused_total", reason="per_ip") == 1
    assert capped.metric("chronik_kafka_connections_refused_total", reason="total") == 1
    assert capped.metric("chronik_kafka_connections") == 5
    # One warning for both refusals: a flood of refusals is not a flood of log lines.
    log = capped.stderr_text(100_000)
    assert log.count("refusing Kafka connection") == 1, log
    # A closed connection frees its place.
    first[0].close()
    deadline = time.monotonic() + 5
    while capped.metric("chronik_kafka_connections") > 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    again = raw(capped.bootstrap)
    assert served(again)
    for c in [*first[1:], *other, again, refused, over_total]:
        c.close()


def test_idle_silent_and_partial_frames_are_closed(tight: SecureServer) -> None:
    before = tight.metric("chronik_kafka_connections_idle_closed_total")
    silent = raw(tight.bootstrap)
    partial = raw(tight.bootstrap)
    partial.send_bytes(b"\x00\x00\x01\x00\x00\x12")  # 256 bytes announced, 2 sent
    slow = raw(tight.bootstrap)
    slow.send_bytes(b"\x00\x00\x01\x00")  # 256 bytes announced, then a trickle
    active = raw(tight.bootstrap)
    started_at = time.monotonic()
    deadline = started_at + 3 * IDLE_MS / 1000
    while time.monotonic() < deadline:
        assert served(active)
        with contextlib.suppress(OSError):  # a byte now and then is no complete request
            slow.send_bytes(b"\x00")
        time.sleep(0.1)
    for c in (silent, partial, slow):
        assert c.wait_closed(timeout=2)
    assert served(active)
    assert tight.metric("chronik_kafka_connections_idle_closed_total") - before >= 3
    active.close()


@pytest.fixture(scope="module")
def budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    """Only the total is small: each large request alone exhausts it."""
    srv = SecureServer(tmp_path_factory.mktemp("budget"), ["--max-inflight-bytes", str(256 * 1024)])
    with started(srv):
        yield srv


def produce_large(srv: SecureServer, producers: int = 2, n: int = 150) -> None:
    """n 20 kB records in requests of up to 1 MB, from several connections at once."""
    topic = unique_topic("inflight")
    conf = {
        "bootstrap.servers": srv.bootstrap,
        "linger.ms": 50,
        "batch.size": 1_000_000,
        "enable.idempotence": False,
    }
    clients = [confluent_kafka.Producer(conf) for _ in range(producers)]
    value = uuid.uuid4().bytes * 1250
    for i in range(n):
        clients[i % producers].produce(topic, value)
    for p in clients:
        assert p.flush(30) == 0
    got = consume_values({"bootstrap.servers": srv.bootstrap}, topic, n, unique_topic("g"))
    assert len(got) == n and set(got) == {value}
    # Once the clients are gone (the broker sees their connections close a moment later).
    deadline = time.monotonic() + 10
    while srv.metric("chronik_kafka_inflight_bytes") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.metric("chronik_kafka_inflight_bytes") == 0


@pytest.mark.parametrize("limit", ["connection", "total"])
def test_inflight_bytes_pause_reading_and_everything_arrives(
    tight: SecureServer, budget: SecureServer, limit: str
) -> None:
    srv = tight if limit == "connection" else budget
    before = srv.metric("chronik_kafka_read_pauses_total", limit=limit)
    produce_large(srv)
    assert srv.metric("chronik_kafka_read_pauses_total", limit=limit) > before
