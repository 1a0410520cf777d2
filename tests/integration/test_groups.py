"""Consumer groups with real clients: membership, rebalances, exactly-once, admin.

Every member runs a real consumer (confluent-kafka, kafka-python, aiokafka)
subscribed to a topic; see groupclients.py for how they record what they saw.
Session timeouts are the broker minimum (6 s) with 500 ms heartbeats, so a
dead member is noticed in about six seconds.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from .conftest import Server, unique_topic
from .groupclients import SubprocessMember, close_all, start_member, union_check
from .groupmembers import Member
from .groupraw import FENCED_INSTANCE_ID, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, NONE, _heartbeat
from .grouputil import (
    SESSION_MS,
    BackgroundProducer,
    committed_offsets,
    create_topic,
    end_offsets,
    settle,
    stays,
    wait_until,
)
from .rawkafka import RawKafka

pytestmark = pytest.mark.timeout(150)


SESSION = SESSION_MS / 1000

AnyMember = Member | SubprocessMember


def _group() -> str:
    return f"grp-{uuid.uuid4().hex[:10]}"


def _balanced(members: list[AnyMember], each: int, partitions: int) -> bool:
    """Every member holds `each` partitions and together they hold each partition once."""
    held = [m.state.partitions() for m in members]
    total = sum(len(h) for h in held)
    union = frozenset().union(*held)
    return all(len(h) == each for h in held) and total == partitions == len(union)


def _describe(members: list[AnyMember]) -> str:
    return "\n".join(f"{m.name}: {m.state.summary()}" for m in members)


# --------------------------------------------------------------------------- lifecycle

LIFECYCLES = {
    # A (closed), B (survives), K (child process, SIGKILLed); range_assignor
    "confluent": (("confluent", "confluent", "confluent"), False),
    "kafka-python": (("kafka-python", "kafka-python", "kafka-python"), False),
    "aiokafka": (("aiokafka", "aiokafka", "aiokafka"), False),
    # kafka-python leads first (and assigns for confluent), then confluent leads
    "mixed-confluent-kafka-python": (("kafka-python", "confluent", "kafka-python"), True),
}


@pytest.mark.parametrize("flavour", list(LIFECYCLES))
def test_group_lifecycle_exactly_once(server: Server, flavour: str) -> None:
    """Three members split six partitions; one closes, one is SIGKILLed; nothing is lost
    and nothing is consumed twice while messages keep being produced throughout."""
    (ca, cb, ck), use_range = LIFECYCLES[flavour]
    bootstrap = server.bootstrap
    topic = unique_topic("grp")
    create_topic(bootstrap, topic, 6)
    group = _group()
    prod = BackgroundProducer(bootstrap, topic, 6, rate=200)
    prod.start()
    members: list[AnyMember] = []
    try:
        a = start_member(ca, bootstrap, group, topic, name="A", range_assignor=use_range)
        members.append(a)
        b = start_member(cb, bootstrap, group, topic, name="B", range_assignor=use_range)
        members.append(b)
        k = start_member(
            ck, bootstrap, group, topic, name="K", range_assignor=use_range, subprocess=True
        )
        members.append(k)
        wait_until(lambda: _balanced([a, b, k], 2, 6), 60, lambda: _describe(members))

        # A closes (LeaveGroup): B and K take its partitions well within the session timeout
        t0 = time.monotonic()
        a.close()
        wait_until(lambda: _balanced([b, k], 3, 6), 30, lambda: _describe(members))
        took = time.monotonic() - t0
        assert took < SESSION, f"takeover after close took {took:.2f}s\n{_describe(members)}"

        # Quiesce, so that K has committed everything it consumed, then SIGKILL it.
        prod.pause()
        ends = end_offsets(bootstrap, topic, 6)
        wait_until(
            lambda: committed_offsets(bootstrap, group, topic, range(6)) == ends,
            30,
            lambda: (
                f"committed {committed_offsets(bootstrap, group, topic, range(6))} "
                f"!= ends {ends}\n{_describe(members)}"
            ),
            interval=0.2,
        )
        k_parts = k.state.partitions()
        assert len(k_parts) == 3
        b_seen = len(b.state.consumed())
        t_kill = k.kill()
        prod.resume()
        wait_until(
            lambda: b.state.partitions() == frozenset(range(6)), 40, lambda: _describe(members)
        )
        t_assign = b.state.last_assign_time()
        assert t_assign is not None
        took = t_assign - t_kill
        # K's last heartbeat was at most one interval before the kill
        assert SESSION - 1.5 <= took <= SESSION + 10, (
            f"survivor got the dead member's partitions {took:.2f}s after SIGKILL "
            f"(session {SESSION}s)\n{_describe(members)}"
        )

        # keep producing a little, then check every message was consumed exactly once
        wait_until(
            lambda: all(any(p == q for q, _ in b.state.consumed()[b_seen:]) for p in k_parts),
            30,
            lambda: f"B consumes nothing from {sorted(k_parts)}\n{_describe(members)}",
        )
        prod.stop()
        produced = prod.snapshot()
        wait_until(
            lambda: not union_check(members, produced)[1],
            30,
            lambda: (
                f"missing {sorted(union_check(members, produced)[1])[:20]}\n" + _describe(members)
            ),
        )
        # B resumed K's partitions exactly where K had committed
        firsts = {}
        for p, o in b.state.consumed()[b_seen:]:
            if p in k_parts and p not in firsts:
                firsts[p] = o
        assert firsts == {p: ends[p] for p in k_parts}, _describe(members)
        dups, missing, unexpected = union_check(members, produced)
        assert (dups, missing, unexpected) == ([], set(), set()), (
            f"duplicates {dups[:20]} missing {sorted(missing)[:20]} "
            f"unexpected {sorted(unexpected)[:20]}\n{_describe(members)}"
        )
        assert len(produced) > 500
        errors = {m.name: m.state.errors for m in members if m.state.errors}
        assert errors == {}, errors
        final = end_offsets(bootstrap, topic, 6)
        wait_until(
            lambda: committed_offsets(bootstrap, group, topic, range(6)) == final,
            20,
            lambda: (
                f"committed {committed_offsets(bootstrap, group, topic, range(6))} != ends {final}"
            ),
            interval=0.2,
        )
    finally:
        if prod.is_alive():
            prod.stop()
        close_all(members)


# --------------------------------------------------------------------------- raw requests


def _admin(server: Server) -> AdminClient:
    return AdminClient({"bootstrap.servers": server.bootstrap})


def _describe_group(server: Server, group: str) -> Any:
    admin = _admin(server)  # kept alive until the future is done
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(15)


def _current_generation(raw: RawKafka, group: str, member_id: str, instance: str) -> int:
    """The generation the coordinator accepts from this member (probed with Heartbeat)."""
    codes = {}
    for g in range(1, 30):
        code = _heartbeat(raw, group, g, member_id, instance)
        if code == NONE:
            return g
        codes[g] = code
    raise AssertionError(f"no generation accepted for {member_id}: {codes}")


def test_static_member_restart_keeps_assignment_without_rebalance(server: Server) -> None:
    bootstrap = server.bootstrap
    topic = unique_topic("static")
    create_topic(bootstrap, topic, 6)
    group = _group()
    members: list[AnyMember] = []
    try:
        a = start_member(
            "confluent", bootstrap, group, topic, name="A", conf={"group.instance.id": "inst-a"}
        )
        members.append(a)
        wait_until(lambda: a.state.partitions() == frozenset(range(6)), 30, a.state.summary)
        # B joins second, so A stays the leader and B, a follower, is the one restarted
        # (test_groups_static.py restarts a leader)
        b = start_member(
            "confluent", bootstrap, group, topic, name="B", conf={"group.instance.id": "inst-b"}
        )
        members.append(b)
        wait_until(lambda: _balanced([a, b], 3, 6), 30, lambda: _describe(members))

        def described_ok() -> bool:
            d = _describe_group(server, group)
            return d.state == ConsumerGroupState.STABLE and len(d.members) == 2

        wait_until(described_ok, 20, lambda: str(vars(_describe_group(server, group))))
        desc = _describe_group(server, group)
        ids = {m.group_instance_id: m.member_id for m in desc.members}
        assert set(ids) == {"inst-a", "inst-b"}
        with RawKafka(bootstrap) as raw:
            generation = _current_generation(raw, group, ids["inst-a"], "inst-a")
            a_events = a.state.n_events()
            a_parts = a.state.partitions()
            b_parts = b.state.partitions()

            # static members send no LeaveGroup on close; the same instance id comes back
            t0 = time.monotonic()
            b.close()
            b2 = start_member(
                "confluent",
                bootstrap,
                group,
                topic,
                name="B2",
                conf={"group.instance.id": "inst-b"},
            )
            members.append(b2)
            wait_until(lambda: b2.state.partitions() == b_parts, 20, lambda: _describe(members))
            took = time.monotonic() - t0
            assert took < SESSION, f"restarted static member got its partitions after {took:.2f}s"
            # A sees no rebalance at all, now or in the next two seconds
            assert stays(
                lambda: a.state.n_events() == a_events and a.state.partitions() == a_parts, 2.0
            ), _describe(members)
            assert len(b2.state.assigns) == 1, _describe(members)
            assert _heartbeat(raw, group, generation, ids["inst-a"], "inst-a") == NONE
            desc = _describe_group(server, group)
            assert desc.state == ConsumerGroupState.STABLE
            new_ids = {m.group_instance_id: m.member_id for m in desc.members}
            assert set(new_ids) == {"inst-a", "inst-b"}
            assert new_ids["inst-a"] == ids["inst-a"]
            assert new_ids["inst-b"] != ids["inst-b"]  # a new member id, fencing the old one
            # the old member id of inst-b is fenced
            assert _heartbeat(raw, group, generation, ids["inst-b"], "inst-b") == FENCED_INSTANCE_ID
            assert _heartbeat(raw, group, generation, new_ids["inst-b"], "inst-b") == NONE
    finally:
        close_all(members)


# --------------------------------------------------------------------------- cooperative


def _union(events: list[tuple[float, frozenset[int]]]) -> frozenset[int]:
    return frozenset().union(*(p for _, p in events))


def test_cooperative_sticky_moves_only_what_the_new_member_takes(server: Server) -> None:
    bootstrap = server.bootstrap
    topic = unique_topic("coop")
    create_topic(bootstrap, topic, 6)
    group = _group()
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    members: list[AnyMember] = []
    try:
        a = start_member("confluent", bootstrap, group, topic, name="A", conf=conf)
        members.append(a)
        b = start_member("confluent", bootstrap, group, topic, name="B", conf=conf)
        members.append(b)
        wait_until(lambda: _balanced([a, b], 3, 6), 40, lambda: _describe(members))
        # let any follow-up cooperative round finish
        settle([a, b])
        a_before, b_before = a.state.partitions(), b.state.partitions()
        na, nb = len(a.state.assigns), len(b.state.assigns)
        ra, rb = len(a.state.revokes), len(b.state.revokes)

        c = start_member("confluent", bootstrap, group, topic, name="C", conf=conf)
        members.append(c)
        wait_until(lambda: _balanced([a, b, c], 2, 6), 40, lambda: _describe(members))
        assert stays(lambda: _balanced([a, b, c], 2, 6), 1.5), _describe(members)

        a_after, b_after = a.state.partitions(), b.state.partitions()
        a_revoked = _union(a.state.revokes[ra:])
        b_revoked = _union(b.state.revokes[rb:])
        # A and B keep what they keep: they only ever revoke the moved partitions...
        assert a_after < a_before and b_after < b_before, _describe(members)
        assert a_revoked == a_before - a_after, _describe(members)
        assert b_revoked == b_before - b_after, _describe(members)
        assert len(a_revoked) == len(b_revoked) == 1, _describe(members)
        # ...gain nothing, and C holds exactly what they gave up
        assert _union(a.state.assigns[na:]) == frozenset(), _describe(members)
        assert _union(b.state.assigns[nb:]) == frozenset(), _describe(members)
        assert c.state.partitions() == a_revoked | b_revoked, _describe(members)
        assert not a.state.losts and not b.state.losts, _describe(members)
    finally:
        close_all(members)


# --------------------------------------------------------------------------- admin


def _list_groups(server: Server, **kw: Any) -> dict[str, Any]:
    admin = _admin(server)  # kept alive until the future is done
    res = admin.list_consumer_groups(request_timeout=10, **kw).result(15)
    assert not res.errors, res.errors
    return {g.group_id: g for g in res.valid}


def _admin_error(fut: Any) -> int | None:
    try:
        fut.result(15)
        return None
    except KafkaException as exc:
        return exc.args[0].code()


def test_admin_list_describe_delete_groups(server: Server) -> None:
    bootstrap = server.bootstrap
    topic = unique_topic("adm")
    create_topic(bootstrap, topic, 4)
    group = _group()
    prod = BackgroundProducer(bootstrap, topic, 4, rate=1000)
    prod.start()
    members: list[AnyMember] = []
    try:
        wait_until(lambda: prod.sent >= 40, 20, "40 messages sent")
        prod.pause()
        ends = end_offsets(bootstrap, topic, 4)
        for name in ("A", "B"):
            members.append(
                start_member("confluent", bootstrap, group, topic, name=name, range_assignor=True)
            )
        wait_until(lambda: _balanced(members, 2, 4), 40, lambda: _describe(members))
        wait_until(
            lambda: committed_offsets(bootstrap, group, topic, range(4)) == ends,
            20,
            "members committed everything",
            interval=0.2,
        )
        admin = _admin(server)

        listed = _list_groups(server)
        assert group in listed
        assert listed[group].state == ConsumerGroupState.STABLE
        assert listed[group].is_simple_consumer_group is False
        assert group in _list_groups(server, states={ConsumerGroupState.STABLE})
        assert group not in _list_groups(server, states={ConsumerGroupState.EMPTY})

        desc = _describe_group(server, group)
        assert desc.group_id == group
        assert desc.state == ConsumerGroupState.STABLE
        assert desc.partition_assignor == "range"
        assert desc.is_simple_consumer_group is False
        assert len(desc.members) == 2
        held = [
            sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
            for m in desc.members
        ]
        assert sorted(held) == [[(topic, 0), (topic, 1)], [(topic, 2), (topic, 3)]]
        assert {m.client_id for m in desc.members} == {"rdkafka"}
        assert all(m.member_id and m.host for m in desc.members)

        # a group with members cannot be deleted
        err = _admin_error(admin.delete_consumer_groups([group], request_timeout=10)[group])
        assert err == NON_EMPTY_GROUP

        # committed offsets through the admin API
        got = (
            admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
            .result(15)
            .topic_partitions
        )
        assert {(tp.topic, tp.partition): tp.offset for tp in got} == {
            (topic, p): ends[p] for p in range(4)
        }

        close_all(members)
        wait_until(
            lambda: _describe_group(server, group).state == ConsumerGroupState.EMPTY,
            20,
            lambda: str(vars(_describe_group(server, group))),
        )
        assert _describe_group(server, group).members == []
        assert _list_groups(server)[group].state == ConsumerGroupState.EMPTY

        # an empty group's offsets can be altered
        res = admin.alter_consumer_group_offsets(
            [
                ConsumerGroupTopicPartitions(
                    group, [TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 5)]
                )
            ]
        )[group].result(15)
        assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
        assert committed_offsets(bootstrap, group, topic, range(4)) == {
            0: 3,
            1: 5,
            2: ends[2],
            3: ends[3],
        }

        # deleting the empty group removes it and its offsets
        assert (
            _admin_error(admin.delete_consumer_groups([group], request_timeout=10)[group]) is None
        )
        assert group not in _list_groups(server)
        assert committed_offsets(bootstrap, group, topic, range(4)) == {p: -1001 for p in range(4)}
        err = _admin_error(admin.delete_consumer_groups([group], request_timeout=10)[group])
        assert err == GROUP_ID_NOT_FOUND
    finally:
        if prod.is_alive():
            prod.stop()
        close_all(members)
