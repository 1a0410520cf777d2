"""GET /groups, GET /groups/{group} and chronik_consumer_group_lag on a real server, with a
real confluent-kafka consumer group: records produced, some consumed and committed, the lag
is the difference everywhere it is shown; with the ACL authorizer and HTTP auth a principal
without DESCRIBE on the group gets 403 naming it, and one without DESCRIBE on the topic sees
the group without its offsets."""

from __future__ import annotations

import re
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AclOperation, ResourceType
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.broker.groups.view import decode_assignment
from app.config import Settings
from app.storage.store import Storage

from .aclcluster import secure_cluster
from .clients import Msg, produce_confluent
from .conftest import Server, unique_topic
from .test_topic_configs import create_topic

PRODUCED = {0: 12, 1: 8}
COMMITTED = {0: 10, 1: 5}
LAG = {p: PRODUCED[p] - COMMITTED[p] for p in PRODUCED}


def _now() -> int:
    return int(time.time() * 1000)


def _assigned(consumer: confluent_kafka.Consumer, n: int, timeout: float = 15.0) -> None:
    """Polls until the group's rebalance gave the consumer n partitions."""
    deadline = time.monotonic() + timeout
    while len(consumer.assignment()) < n:
        assert time.monotonic() < deadline, "no assignment"
        consumer.poll(0.1)


def _lag_series(text: str, group: str) -> dict[tuple[str, int], float]:
    """The group's chronik_consumer_group_lag samples (labels in any order)."""
    out = {}
    for labels, value in re.findall(r"^chronik_consumer_group_lag\{(.*)\} (\S+)$", text, re.M):
        d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert d.keys() == {"group", "topic", "partition"}, labels
        if d["group"] == group:
            out[(d["topic"], int(d["partition"]))] = float(value)
    return out


@pytest.fixture(scope="module")
def group(server: Server) -> Iterator[tuple[str, str]]:
    """A stable one-member group of a 2-partition topic, with COMMITTED committed."""
    topic, gid = unique_topic("groups"), f"g-{uuid.uuid4().hex[:8]}"
    create_topic(server, topic, partitions=len(PRODUCED))
    for p, n in PRODUCED.items():
        msgs = [Msg(b"k", b"v%d" % i, (), _now()) for i in range(n)]
        assert produce_confluent(server.bootstrap, topic, msgs, partition=p) == list(range(n))
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": server.bootstrap,
            "group.id": gid,
            "client.id": "lag-test",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "partition.assignment.strategy": "range",
        }
    )
    try:
        consumer.subscribe([topic])
        _assigned(consumer, len(PRODUCED))
        consumed = 0
        deadline = time.monotonic() + 10
        while consumed < sum(COMMITTED.values()) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                consumed += 1
        assert consumed >= sum(COMMITTED.values())
        offsets = [TopicPartition(topic, p, o) for p, o in COMMITTED.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
        yield topic, gid
    finally:
        consumer.close()


def test_list_shows_the_group_with_its_lag(server: Server, group: tuple[str, str]) -> None:
    topic, gid = group
    r = server.get("/groups")
    assert r.status_code == 200, r.text
    (g,) = [g for g in r.json()["groups"] if g["group"] == gid]
    assert g == {
        "group": gid,
        "state": "Stable",
        "protocol_type": "consumer",
        "protocol": "range",
        "members": 1,
        "lag": sum(LAG.values()),
        "topics": [topic],
    }


def test_detail_shows_members_assignment_and_offsets(
    server: Server, group: tuple[str, str]
) -> None:
    topic, gid = group
    r = server.get(f"/groups/{gid}")
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["group"], d["state"], d["protocol_type"], d["protocol"]) == (
        gid,
        "Stable",
        "consumer",
        "range",
    )
    assert d["generation"] >= 1
    (m,) = d["members"]
    assert m["client_id"] == "lag-test" and m["member_id"].startswith("lag-test-")
    assert m["group_instance_id"] is None and "127.0.0.1" in m["client_host"]
    assert m["assignment"] == [{"topic": topic, "partitions": sorted(PRODUCED)}]
    assert d["offsets"] == [
        {
            "topic": topic,
            "partition": p,
            "committed": COMMITTED[p],
            "high_watermark": PRODUCED[p],
            "log_start_offset": 0,
            "lag": LAG[p],
            "metadata": "",
        }
        for p in sorted(PRODUCED)
    ]


def test_metrics_have_the_lag_series(server: Server, group: tuple[str, str]) -> None:
    topic, gid = group
    r = server.get("/metrics")
    assert r.status_code == 200, r.text
    assert "# TYPE chronik_consumer_group_lag gauge" in r.text
    assert _lag_series(r.text, gid) == {(topic, p): float(n) for p, n in LAG.items()}


def test_lag_follows_new_records(server: Server, group: tuple[str, str]) -> None:
    """Computed at scrape time: a record produced after the commit counts at once."""
    topic, gid = group
    try:
        msgs = [Msg(b"k", b"late", (), _now())]
        assert produce_confluent(server.bootstrap, topic, msgs, partition=1) == [PRODUCED[1]]
        assert _lag_series(server.get("/metrics").text, gid)[(topic, 1)] == LAG[1] + 1
        (g,) = [g for g in server.get("/groups").json()["groups"] if g["group"] == gid]
        assert g["lag"] == sum(LAG.values()) + 1
    finally:
        PRODUCED[1] += 1
        LAG[1] += 1


def test_unknown_group_is_404(server: Server) -> None:
    r = server.get("/groups/no-such-group")
    assert r.status_code == 404, r.text
    assert "no-such-group" in r.json()["detail"]


def test_simple_consumer_commits_make_an_empty_group(server: Server) -> None:
    """Offsets committed without joining (generation -1): listed Empty, no members."""
    topic, gid = unique_topic("simple"), f"s/{uuid.uuid4().hex[:8]}"
    create_topic(server, topic)
    produce_confluent(server.bootstrap, topic, [Msg(None, b"x", (), _now())] * 4)
    c = confluent_kafka.Consumer({"bootstrap.servers": server.bootstrap, "group.id": gid})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        c.close()
    # A group id with a slash is one path segment when encoded, and still found.
    r = server.get(f"/groups/{gid.replace('/', '%2F')}")
    assert r.status_code == 200, r.text
    d = r.json()
    assert (d["state"], d["protocol_type"], d["members"]) == ("Empty", "", [])
    assert [(o["partition"], o["committed"], o["lag"]) for o in d["offsets"]] == [(0, 1, 3)]


# --------------------------------------------------------------------------- ACLs


def _get(c: Any, path: str, user: str) -> httpx.Response:
    return httpx.get(c.srv.http + path, auth=(user, c.passwords[user]), timeout=10)


def _names(r: httpx.Response) -> set[str]:
    assert r.status_code == 200, r.text
    return {g["group"] for g in r.json()["groups"]}


def test_acls_decide_which_groups_and_offsets_are_shown(tmp_path: Path) -> None:
    extra = ("--http-auth", "required", "--http-open-paths", "/readyz")
    with secure_cluster(tmp_path, ("alice", "bob"), extra) as c:
        topic, gid = c.topic("acl-"), "alice-group"
        c.create_acls(
            [
                c.binding("alice", ResourceType.TOPIC, topic, AclOperation.READ),
                c.binding("alice", ResourceType.GROUP, gid, AclOperation.READ),
            ]
        )
        assert c.produce("admin", topic, 3) == [None] * 3
        consumer = c.consumer("alice", gid)
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
        finally:
            consumer.close()

        r = _get(c, f"/groups/{gid}", "alice")
        assert r.status_code == 200, r.text
        assert [(o["topic"], o["lag"]) for o in r.json()["offsets"]] == [(topic, 1)]
        assert gid in _names(_get(c, "/groups", "alice"))
        assert gid in _names(_get(c, "/groups", "admin"))

        r = _get(c, f"/groups/{gid}", "bob")
        assert r.status_code == 403, r.text
        assert "bob" in r.json()["detail"] and repr(gid) in r.json()["detail"]
        assert gid not in _names(_get(c, "/groups", "bob"))
        # Same refusal for a group that does not exist: a 403 tells nothing.
        assert _get(c, "/groups/nope", "bob").status_code == 403

        # DESCRIBE on the group but not on its topic: the group, none of its offsets.
        c.create_acls([c.binding("bob", ResourceType.GROUP, gid, AclOperation.DESCRIBE)])
        r = _get(c, f"/groups/{gid}", "bob")
        assert r.status_code == 200, r.text
        assert r.json()["offsets"] == []
        (g,) = [g for g in _get(c, "/groups", "bob").json()["groups"] if g["group"] == gid]
        assert (g["lag"], g["topics"]) == (None, [])


# --------------------------------------------------------------------------- without a broker


def test_an_app_without_a_broker_answers_503(tmp_path: Path) -> None:
    """create_app alone (tools, the spec export) has no group coordinator to read."""
    app = create_app(Storage(Settings(data_dir=tmp_path)))
    with TestClient(app) as client:
        for path in ("/groups", "/groups/g"):
            r = client.get(path)
            assert r.status_code == 503, r.text
            assert "broker" in r.json()["detail"]


def test_assignment_bytes_from_a_client_are_decoded_or_ignored() -> None:
    good = struct.pack(">hih3siii", 3, 1, 3, b"abc", 2, 1, 0) + struct.pack(">i", -1)
    assert decode_assignment(good) == [{"topic": "abc", "partitions": [0, 1]}]
    huge = struct.pack(">hi", 0, 2**31 - 1)
    bad_utf8 = struct.pack(">hih2si", 0, 1, 2, b"\xff\xfe", 0)
    for garbage in (b"", good[:9], huge, bad_utf8, struct.pack(">hih", 0, 1, -5)):
        assert decode_assignment(garbage) == []
