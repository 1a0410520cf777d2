"""The HTTP side: health, readiness and /topics agree with the Kafka side."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from .clients import make_messages, produce_confluent, produce_kafka_python
from .conftest import Server, unique_topic


def _offsets(entry: dict) -> list[dict]:
    keys = ("partition", "log_start_offset", "log_end_offset")
    parts = sorted(entry["partitions"], key=lambda p: p["partition"])
    return [{k: p[k] for k in keys} for p in parts]


def test_health_and_ready(server: Server) -> None:
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").status_code == 200


def test_topics_lists_partitions_and_offsets(server: Server) -> None:
    topic = unique_topic("http")
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(15)

    r = server.get("/topics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    entry = next(t for t in r.json() if t["name"] == topic)
    assert _offsets(entry) == [
        {"partition": p, "log_start_offset": 0, "log_end_offset": 0} for p in range(3)
    ]

    assert produce_confluent(server.bootstrap, topic, make_messages(7), "snappy", 0) == list(
        range(7)
    )
    assert produce_kafka_python(server.bootstrap, topic, make_messages(2), "gzip", 2) == [0, 1]

    entry = next(t for t in server.get("/topics").json() if t["name"] == topic)
    assert _offsets(entry) == [
        {"partition": 0, "log_start_offset": 0, "log_end_offset": 7},
        {"partition": 1, "log_start_offset": 0, "log_end_offset": 0},
        {"partition": 2, "log_start_offset": 0, "log_end_offset": 2},
    ]
    assert set(entry) >= {"name", "partitions"}
    one = server.get(f"/topics/{topic}").json()
    assert one["name"] == topic
    p0 = one["partitions"][0]
    assert p0["layers"]["wal"]["records"] == 7 and p0["layers"]["wal"]["bytes"] > 0
    assert server.get("/topics/no-such-topic").status_code == 404


def test_topics_names_unique(server: Server) -> None:
    names = [t["name"] for t in server.get("/topics").json()]
    assert len(names) == len(set(names))
