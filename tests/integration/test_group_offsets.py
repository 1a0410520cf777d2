"""Committed offsets: durability across restarts, simple (non-joining) consumers,
raw OffsetCommit/OffsetFetch/OffsetDelete edge cases, and offsets of deleted topics."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition
from kafka.structs import OffsetAndMetadata

from .conftest import Server, unique_topic
from .groupclients import close_all, start_member
from .groupmembers import confluent_group_conf
from .grouputil import committed_offsets, create_topic, wait_until
from .rawkafka import RawKafka, ms, schema

pytestmark = pytest.mark.timeout(120)

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
GROUP_ID_NOT_FOUND = 69
GROUP_SUBSCRIBED_TO_TOPIC = 86
OFFSET_INVALID = -1001  # confluent's "no committed offset"


def _group() -> str:
    return f"off-{uuid.uuid4().hex[:10]}"


def _produce(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for part, n in per_partition.items():
        for i in range(n):
            p.produce(topic, value=b"v-%d-%d" % (part, i), partition=part)
    assert p.flush(30) == 0


def _req(api_key: int, version: int, cls_name: str, /, **kw: Any) -> Any:
    cls = getattr(schema(api_key, version), cls_name)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kw.items() if k in names})


def _commit_raw(
    raw: RawKafka,
    group: str,
    topics: dict[str, dict[int, int]],
    *,
    version: int = 8,
    generation: int = -1,
    member_id: str = "",
) -> dict[tuple[str, int], int]:
    """OffsetCommit of {topic: {partition: offset}}; returns {(topic, partition): error}."""
    req = _req(
        8,
        version,
        "OffsetCommitRequest",
        group_id=group,
        generation_id_or_member_epoch=generation,
        member_id=member_id,
        group_instance_id=None,
        retention_time=ms(-1),
        topics=tuple(
            _req(
                8,
                version,
                "OffsetCommitRequestTopic",
                name=t,
                partitions=tuple(
                    _req(
                        8,
                        version,
                        "OffsetCommitRequestPartition",
                        partition_index=p,
                        committed_offset=o,
                        committed_leader_epoch=-1,
                        committed_metadata=f"meta-{p}",
                    )
                    for p, o in parts.items()
                ),
            )
            for t, parts in topics.items()
        ),
    )
    resp = raw.request(req)
    return {
        (t.name, int(p.partition_index)): int(p.error_code)
        for t in resp.topics
        for p in t.partitions
    }


def _fetch_raw(
    raw: RawKafka, group: str, topics: dict[str, list[int]] | None, version: int = 7
) -> tuple[int, dict[tuple[str, int], tuple[int, str | None, int]]]:
    """OffsetFetch (v1-v7 layout); (top-level error, {(topic, p): (offset, metadata, error)})."""
    mod = schema(9, version)
    req = _req(
        9,
        version,
        "OffsetFetchRequest",
        group_id=group,
        topics=None
        if topics is None
        else tuple(
            mod.OffsetFetchRequestTopic(name=t, partition_indexes=tuple(ps))
            for t, ps in topics.items()
        ),
        require_stable=False,
    )
    resp = raw.request(req)
    out = {
        (t.name, int(p.partition_index)): (int(p.committed_offset), p.metadata, int(p.error_code))
        for t in resp.topics
        for p in t.partitions
    }
    return int(getattr(resp, "error_code", 0)), out


# --------------------------------------------------------------------------- restart


def _first_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Subscribe as a new group member; the offset of the first message of each partition."""
    c = confluent_kafka.Consumer(confluent_group_conf(bootstrap, group))
    firsts: dict[int, int] = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(firsts) < partitions and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.2):
                assert m.error() is None, m.error()
                firsts.setdefault(m.partition(), m.offset())
    finally:
        c.close()
    return firsts


def _member_commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Join the group, wait for the assignment, then commit as a member (with a generation)."""
    c = confluent_kafka.Consumer(confluent_group_conf(bootstrap, group))
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(c.assignment()) < len(offsets):
            assert time.monotonic() < deadline, f"no assignment: {c.assignment()}"
            c.consume(num_messages=100, timeout=0.2)  # what it reads is not committed
        res = c.commit(
            offsets=[TopicPartition(topic, p, o, f"m{p}") for p, o in offsets.items()],
            asynchronous=False,
        )
        assert all(tp.error is None for tp in res), res
    finally:
        c.close()


def test_committed_offsets_survive_restart_and_kill(fresh_server: Callable[..., Server]) -> None:
    srv = fresh_server()
    topic = unique_topic("restart")
    create_topic(srv.bootstrap, topic, 2)
    _produce(srv.bootstrap, topic, {0: 10, 1: 10})
    group = _group()
    _member_commit(srv.bootstrap, group, topic, {0: 4, 1: 7})

    srv.restart()
    c = confluent_kafka.Consumer({"bootstrap.servers": srv.bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=15)
    finally:
        c.close()
    assert [(tp.partition, tp.offset, tp.metadata, tp.error) for tp in got] == [
        (0, 4, "m0", None),
        (1, 7, "m1", None),
    ]
    # a new member of the group resumes exactly there
    assert _first_offsets(srv.bootstrap, group, topic, 2) == {0: 4, 1: 7}

    # a commit acknowledged just before SIGKILL is durable too
    _member_commit(srv.bootstrap, group, topic, {0: 9, 1: 10})
    srv.kill()
    srv.start()
    assert committed_offsets(srv.bootstrap, group, topic, range(2)) == {0: 9, 1: 10}
    kp = KafkaConsumer(bootstrap_servers=srv.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert kp.committed(KpTopicPartition(topic, 0)) == 9
        got1 = kp.committed(KpTopicPartition(topic, 1), metadata=True)
        # confluent-kafka (2.16) sends a str metadata with its C string's trailing NUL; the
        # broker stores the bytes it got, which kafka-python shows as they are
        assert (got1.offset, got1.metadata) == (10, "m1\x00")
    finally:
        kp.close()
    _produce(srv.bootstrap, topic, {0: 1, 1: 1})
    assert _first_offsets(srv.bootstrap, group, topic, 2) == {0: 9, 1: 10}


# --------------------------------------------------------------------------- simple consumers


def test_confluent_simple_consumer_commits_without_joining(server: Server) -> None:
    topic = unique_topic("simple")
    create_topic(server.bootstrap, topic, 3)
    _produce(server.bootstrap, topic, {0: 5, 1: 5, 2: 5})
    group = _group()
    c = confluent_kafka.Consumer(confluent_group_conf(server.bootstrap, group))
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(3)])
        seen = 0
        deadline = time.monotonic() + 20
        while seen < 15 and time.monotonic() < deadline:
            seen += len(c.consume(num_messages=100, timeout=0.2))
        assert seen == 15
        res = c.commit(
            offsets=[TopicPartition(topic, 0, 2, "first"), TopicPartition(topic, 2, 5, "last")],
            asynchronous=False,
        )
        assert [(tp.partition, tp.error) for tp in res] == [(0, None), (2, None)]
    finally:
        c.close()
    c2 = confluent_kafka.Consumer({"bootstrap.servers": server.bootstrap, "group.id": group})
    try:
        got = c2.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        c2.close()
    assert [(tp.partition, tp.offset, tp.metadata) for tp in got] == [
        (0, 2, "first"),
        (1, OFFSET_INVALID, None),
        (2, 5, "last"),
    ]
    # the group exists, is empty, and is a simple group (no protocol type)
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    listed = {
        g.group_id: g for g in admin.list_consumer_groups(request_timeout=10).result(15).valid
    }
    assert group in listed
    assert listed[group].state == ConsumerGroupState.EMPTY
    assert listed[group].is_simple_consumer_group is True
    # a member joining later starts from the committed offsets (and "earliest" elsewhere)
    assert _first_offsets(server.bootstrap, group, topic, 2) == {0: 2, 1: 0}


def test_kafka_python_simple_consumer_commits_without_joining(server: Server) -> None:
    topic = unique_topic("kpsimple")
    create_topic(server.bootstrap, topic, 2)
    group = _group()
    tp0, tp1 = KpTopicPartition(topic, 0), KpTopicPartition(topic, 1)
    c = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        c.assign([tp0, tp1])
        c.commit({tp0: OffsetAndMetadata(5, "kp-meta", -1), tp1: OffsetAndMetadata(0, "", -1)})
        assert c.committed(tp0) == 5
    finally:
        c.close(autocommit=False)
    c2 = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert c2.committed(tp0) == 5
        assert c2.committed(tp0, metadata=True).metadata == "kp-meta"
        assert c2.committed(tp1) == 0
    finally:
        c2.close(autocommit=False)
    assert committed_offsets(server.bootstrap, group, topic, range(2)) == {0: 5, 1: 0}


def test_aiokafka_simple_consumer_commits_without_joining(server: Server) -> None:
    topic = unique_topic("aiosimple")
    create_topic(server.bootstrap, topic, 1)
    group = _group()

    async def run() -> tuple[int | None, int | None]:
        tp = AioTopicPartition(topic, 0)
        c = AIOKafkaConsumer(
            bootstrap_servers=server.bootstrap, group_id=group, enable_auto_commit=False
        )
        await c.start()
        try:
            c.assign([tp])
            await c.commit({tp: (12, "aio")})
        finally:
            await c.stop()
        c2 = AIOKafkaConsumer(
            bootstrap_servers=server.bootstrap, group_id=group, enable_auto_commit=False
        )
        await c2.start()
        try:
            return await c2.committed(tp), await c2.committed(AioTopicPartition(topic, 1))
        finally:
            await c2.stop()

    assert asyncio.run(run()) == (12, None)
    assert committed_offsets(server.bootstrap, group, topic, [0]) == {0: 12}


# --------------------------------------------------------------------------- raw requests


@pytest.mark.parametrize("version", range(2, 10))
def test_raw_offset_commit_unknown_topic_and_partition(server: Server, version: int) -> None:
    topic = unique_topic("rawoff")
    create_topic(server.bootstrap, topic, 2)
    missing = unique_topic("nosuch")
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        errors = _commit_raw(
            raw, group, {topic: {0: 3, 1: 4, 7: 1}, missing: {0: 1}}, version=version
        )
        assert errors == {
            (topic, 0): NONE,
            (topic, 1): NONE,
            (topic, 7): UNKNOWN_TOPIC_OR_PARTITION,
            (missing, 0): UNKNOWN_TOPIC_OR_PARTITION,
        }
        # the unknown topic was not created by the commit
        assert raw.metadata([missing]).topics[0].error_code == UNKNOWN_TOPIC_OR_PARTITION
        for fetch_version in range(1, 8):
            top, got = _fetch_raw(raw, group, {topic: [0, 1]}, fetch_version)
            assert top == NONE
            assert got == {
                (topic, 0): (3, "meta-0", NONE),
                (topic, 1): (4, "meta-1", NONE),
            }, fetch_version
        # all of the group's offsets (topics=null, v2+)
        top, got = _fetch_raw(raw, group, None, 7)
        assert (top, got) == (
            NONE,
            {(topic, 0): (3, "meta-0", NONE), (topic, 1): (4, "meta-1", NONE)},
        )
        assert int(raw.api_versions().error_code) == 0


@pytest.mark.parametrize("version", [8, 9])
def test_raw_offset_fetch_several_groups(server: Server, version: int) -> None:
    topic = unique_topic("multi")
    create_topic(server.bootstrap, topic, 1)
    g1, g2, g3 = _group(), _group(), _group()
    with RawKafka(server.bootstrap) as raw:
        assert _commit_raw(raw, g1, {topic: {0: 11}}) == {(topic, 0): NONE}
        assert _commit_raw(raw, g2, {topic: {0: 22}}) == {(topic, 0): NONE}
        mod = schema(9, version)

        def grp(group_id: str, topics: Any) -> Any:
            return _req(
                9,
                version,
                "OffsetFetchRequestGroup",
                group_id=group_id,
                member_id=None,
                member_epoch=-1,
                topics=topics,
            )

        resp = raw.request(
            mod.OffsetFetchRequest(
                groups=(
                    grp(g1, (mod.OffsetFetchRequestTopics(name=topic, partition_indexes=(0,)),)),
                    grp(g2, None),
                    grp(g3, (mod.OffsetFetchRequestTopics(name=topic, partition_indexes=(0,)),)),
                ),
                require_stable=False,
            )
        )
        got = {
            g.group_id: (
                int(g.error_code),
                {
                    (t.name, int(p.partition_index)): (int(p.committed_offset), int(p.error_code))
                    for t in g.topics
                    for p in t.partitions
                },
            )
            for g in resp.groups
        }
        assert got == {
            g1: (NONE, {(topic, 0): (11, NONE)}),
            g2: (NONE, {(topic, 0): (22, NONE)}),
            g3: (NONE, {(topic, 0): (-1, NONE)}),
        }


def _offset_delete(raw: RawKafka, group: str, topic: str, partitions: list[int]) -> Any:
    mod = schema(47, 0)
    return raw.request(
        mod.OffsetDeleteRequest(
            group_id=group,
            topics=(
                mod.OffsetDeleteRequestTopic(
                    name=topic,
                    partitions=tuple(
                        mod.OffsetDeleteRequestPartition(partition_index=p) for p in partitions
                    ),
                ),
            ),
        )
    )


def test_offset_delete(server: Server) -> None:
    topic = unique_topic("offdel")
    create_topic(server.bootstrap, topic, 2)
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        assert _commit_raw(raw, group, {topic: {0: 5, 1: 6}}) == {
            (topic, 0): NONE,
            (topic, 1): NONE,
        }
        # a member subscribed to the topic protects its offsets
        member = start_member("confluent", server.bootstrap, group, topic, name="M")
        try:
            wait_until(
                lambda: member.state.partitions() == frozenset({0, 1}), 30, member.state.summary
            )
            resp = _offset_delete(raw, group, topic, [0])
            assert int(resp.error_code) == NONE
            ((t,),) = (resp.topics,)
            assert [(int(p.partition_index), int(p.error_code)) for p in t.partitions] == [
                (0, GROUP_SUBSCRIBED_TO_TOPIC)
            ]
        finally:
            close_all([member])
        resp = _offset_delete(raw, group, topic, [0])
        assert int(resp.error_code) == NONE
        assert [(int(p.partition_index), int(p.error_code)) for p in resp.topics[0].partitions] == [
            (0, NONE)
        ]
        _, got = _fetch_raw(raw, group, {topic: [0, 1]})
        assert {k: v[0] for k, v in got.items()} == {(topic, 0): -1, (topic, 1): 6}
        # an unknown group
        resp = _offset_delete(raw, _group(), topic, [0])
        assert int(resp.error_code) == GROUP_ID_NOT_FOUND


# --------------------------------------------------------------------------- deleted topics


def test_offsets_of_deleted_topic_are_removed(server: Server) -> None:
    doomed = unique_topic("doomed")
    kept = unique_topic("kept")
    create_topic(server.bootstrap, doomed, 2)
    create_topic(server.bootstrap, kept, 1)
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        assert _commit_raw(raw, group, {doomed: {0: 5, 1: 6}, kept: {0: 7}}) == {
            (doomed, 0): NONE,
            (doomed, 1): NONE,
            (kept, 0): NONE,
        }
        assert committed_offsets(server.bootstrap, group, doomed, range(2)) == {0: 5, 1: 6}
        admin = AdminClient({"bootstrap.servers": server.bootstrap})
        admin.delete_topics([doomed], operation_timeout=10)[doomed].result(20)

        def only_kept() -> bool:
            return _fetch_raw(raw, group, None)[1] == {(kept, 0): (7, "meta-0", NONE)}

        wait_until(only_kept, 15, lambda: f"OffsetFetch(all) = {_fetch_raw(raw, group, None)}")
        _, got = _fetch_raw(raw, group, {doomed: [0, 1]})
        assert got == {(doomed, 0): (-1, "", NONE), (doomed, 1): (-1, "", NONE)} or got == {
            (doomed, 0): (-1, None, NONE),
            (doomed, 1): (-1, None, NONE),
        }, got
    # a topic re-created under the same name starts without committed offsets
    create_topic(server.bootstrap, doomed, 2)
    assert committed_offsets(server.bootstrap, group, doomed, range(2)) == {
        0: OFFSET_INVALID,
        1: OFFSET_INVALID,
    }
    assert committed_offsets(server.bootstrap, group, kept, [0]) == {0: 7}
