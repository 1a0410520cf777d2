"""Static membership (KIP-345) with confluent-kafka: a member restarted with the same
group.instance.id within the session timeout gets its old partitions back without a
rebalance, whether it was the group's leader or a follower, and whatever its assignor."""

from __future__ import annotations

import time
import uuid

import pytest

from .conftest import Server, unique_topic
from .groupclients import close_all, start_member
from .groupmembers import Member
from .grouputil import SESSION_MS, create_topic, stays, wait_until

pytestmark = pytest.mark.timeout(90)

PARTITIONS = 6


def _describe(members: list[Member]) -> str:
    return "\n".join(f"{m.name}: {m.state.summary()}" for m in members)


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
@pytest.mark.parametrize("restarted", ["leader", "follower"])
def test_static_member_restart_keeps_its_partitions(
    server: Server, restarted: str, assignor: str
) -> None:
    bootstrap = server.bootstrap
    topic = unique_topic("static")
    create_topic(bootstrap, topic, PARTITIONS)
    group = f"grp-{uuid.uuid4().hex[:10]}"
    conf = {"partition.assignment.strategy": assignor}
    members: list[Member] = []

    def start(name: str, instance: str) -> Member:
        m = start_member(
            "confluent", bootstrap, group, topic, name=name,
            conf={**conf, "group.instance.id": instance},
        )  # fmt: skip
        assert isinstance(m, Member)
        members.append(m)
        return m

    try:
        # The first member to join leads the group, and stays its leader while it rejoins.
        leader = start("L", "inst-l")
        wait_until(
            lambda: leader.state.partitions() == frozenset(range(PARTITIONS)), 30,
            lambda: _describe(members),
        )  # fmt: skip
        follower = start("F", "inst-f")

        def split() -> bool:
            a, b = leader.state.partitions(), follower.state.partitions()
            return len(a) == len(b) == PARTITIONS // 2 and not a & b

        wait_until(split, 30, lambda: _describe(members))
        assert stays(split, 1.5), _describe(members)

        gone, other = (leader, follower) if restarted == "leader" else (follower, leader)
        held, other_held = gone.state.partitions(), other.state.partitions()
        other_events = other.state.n_events()
        t0 = time.monotonic()
        gone.close()  # a static member sends no LeaveGroup
        back = start(f"{gone.name}2", f"inst-{gone.name.lower()}")
        wait_until(lambda: back.state.partitions() == held, 15, lambda: _describe(members))
        took = time.monotonic() - t0
        print(f"static {restarted} ({assignor}) had its partitions back {took:.2f}s after close")
        assert took < SESSION_MS / 1000, _describe(members)

        # No rebalance: the other member sees no callback at all, the restarted one one
        # assign of its old partitions and no revoke.
        def unchanged() -> bool:
            return other.state.n_events() == other_events and (
                other.state.partitions() == other_held and back.state.partitions() == held
            )

        assert stays(unchanged, 2.5), _describe(members)
        assert [p for _, p in back.state.assigns] == [held], _describe(members)
        assert not back.state.revokes and not back.state.losts, _describe(members)
    finally:
        close_all(members)
