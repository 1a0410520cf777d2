"""Compacted topics through real clients and the HTTP API: DescribeConfigs reports the
compaction configs with Kafka's defaults, a topic created with cleanup.policy=compact is
described back (Kafka Connect's way), AlterConfigs switches a topic between delete and compact
(the cleaner starts and stops looking at it), and a compacted topic's open search segment is
sealed at its segment.ms so its data becomes cleanable."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

from .clients import Msg, produce_confluent
from .conftest import Server, unique_topic

TIMEOUT = 20
KAFKA_COMPACTION_DEFAULTS = {
    "cleanup.policy": ("delete", "log.cleanup.policy"),
    "min.cleanable.dirty.ratio": ("0.5", "log.cleaner.min.cleanable.ratio"),
    "min.compaction.lag.ms": ("0", "log.cleaner.min.compaction.lag.ms"),
    "max.compaction.lag.ms": ("9223372036854775807", "log.cleaner.max.compaction.lag.ms"),
    "delete.retention.ms": ("86400000", "log.cleaner.delete.retention.ms"),
    "segment.ms": ("604800000", "log.roll.ms"),
}


def _describe(admin: AdminClient, topic: str) -> dict[str, Any]:
    res = ConfigResource("TOPIC", topic)
    return admin.describe_configs([res])[res].result(TIMEOUT)


def _partition(server: Server, topic: str) -> dict[str, Any]:
    r = server.get(f"/topics/{topic}")
    assert r.status_code == 200, r.text
    part: dict[str, Any] = r.json()["partitions"][0]
    return part


def _wait(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_compaction_configs_described_and_switched(fresh_server: Callable[..., Server]) -> None:
    server = fresh_server("--cleaner-interval-ms", "100")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    plain, compacted = unique_topic("plain"), unique_topic("compacted")
    made = admin.create_topics(
        [
            NewTopic(plain, 1, 1),
            NewTopic(
                compacted,
                1,
                1,
                config={"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
            ),
        ]
    )
    for fut in made.values():
        fut.result(TIMEOUT)

    configs = _describe(admin, plain)
    for key, (value, broker_name) in KAFKA_COMPACTION_DEFAULTS.items():
        entry = configs[key]
        assert (entry.value, entry.source) == (value, ConfigSource.DEFAULT_CONFIG.value), key
        assert [(s.name, s.value) for s in entry.synonyms.values()] == [(broker_name, value)]
    assert _partition(server, plain)["dirty_ratio"] is None

    configs = _describe(admin, compacted)
    assert configs["cleanup.policy"].value == "compact"
    assert configs["cleanup.policy"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["min.cleanable.dirty.ratio"].value == "0.1"
    assert configs["delete.retention.ms"].value == "86400000"
    # The cleaner looked at it: nothing sealed yet, nothing dirty.
    _wait("a dirty ratio", lambda: _partition(server, compacted)["dirty_ratio"] == 0.0)
    assert _partition(server, compacted)["last_compaction"] is None

    # AlterConfigs replaces the overrides: delete -> compact -> delete.
    for policy in ("compact", "compact,delete", "delete"):
        res = ConfigResource("TOPIC", plain, set_config={"cleanup.policy": policy})
        admin.alter_configs([res])[res].result(TIMEOUT)
        assert _describe(admin, plain)["cleanup.policy"].value == policy
        if "compact" in policy:
            _wait("a dirty ratio", lambda: _partition(server, plain)["dirty_ratio"] == 0.0)
        else:
            assert _partition(server, plain)["dirty_ratio"] is None


def test_a_compacted_topic_seals_its_search_segment_at_segment_ms(
    fresh_server: Callable[..., Server],
) -> None:
    server = fresh_server("--index-commit-ms", "100")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    compacted, plain = unique_topic("sealc"), unique_topic("seald")
    made = admin.create_topics(
        [
            NewTopic(compacted, 1, 1, config={"cleanup.policy": "compact", "segment.ms": "1000"}),
            NewTopic(plain, 1, 1, config={"segment.ms": "1000"}),
        ]
    )
    for fut in made.values():
        fut.result(TIMEOUT)
    now = int(time.time() * 1000)
    msgs = [Msg(b"k%d" % (i % 10), b"v%d" % i, (), now + i) for i in range(100)]
    for topic in (compacted, plain):
        produce_confluent(server.bootstrap, topic, msgs)

    def sealed(topic: str) -> list[dict[str, Any]]:
        r = server.get(f"/segments?topic={topic}")
        assert r.status_code == 200, r.text
        return [s for s in r.json()["segments"] if s["state"] in ("local", "uploaded")]

    _wait("the compacted topic's seal", lambda: bool(sealed(compacted)))
    assert sum(s["records"] for s in sealed(compacted)) == 100
    # The indexer's own limit (10 minutes) still holds for a topic that is not compacted.
    assert sealed(plain) == []
