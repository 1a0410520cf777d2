"""When a join phase completes, and what a static member that comes back gets.

Each case follows Kafka's GroupCoordinator: a join phase completes as soon as every
member awaits its answer and no member id handed out is still to come back; a static
member restarted into a Stable group keeps its assignment (KIP-345).
"""

from __future__ import annotations

import asyncio

from app.broker import errors as e
from app.broker.groups import COMPLETING, PREPARING, STABLE, GroupCoordinator

from .test_groups import PROTOCOLS, coord, join, join_new, sync_all

__all__ = ["coord"]  # the fixture, shared with test_groups

# The same subscription (topic "t") with other owned partitions / user data after it.
SAME_TOPICS = [("range", PROTOCOLS[0][1] + b"\x00\x00\x00\x04data")]
OTHER_TOPICS = [("range", b"\x00\x00\x00\x00\x00\x01\x00\x01u")]


async def _stable(c: GroupCoordinator, *instances: str | None, **kw):
    results = await asyncio.gather(*(join_new(c, i, **kw) for i in instances))
    assignments = await sync_all(c, results)
    assert c.groups["g"].state == STABLE
    return results, assignments


async def test_a_pending_member_that_leaves_is_not_waited_for(coord: GroupCoordinator) -> None:
    (a,), _ = await _stable(coord, None, rebalance_ms=30_000)
    pending = await join(coord)
    assert pending.error == e.MEMBER_ID_REQUIRED
    # The leader's rejoin starts a rebalance that waits for the pending id too.
    rejoin = asyncio.create_task(join(coord, a.member_id, rebalance_ms=30_000))
    await asyncio.sleep(0.05)
    assert coord.groups["g"].state == PREPARING and not rejoin.done()
    assert coord.leave("g", [(pending.member_id, None)])[1] == [(pending.member_id, None, e.NONE)]
    again = await asyncio.wait_for(rejoin, 0.5)
    assert again.error == e.NONE and again.generation == a.generation + 1


async def test_an_answered_member_is_not_counted_as_rejoined(coord: GroupCoordinator) -> None:
    (a, b, c), _ = await _stable(coord, None, None, None, rebalance_ms=30_000)
    rejoins = [
        asyncio.create_task(join(coord, m.member_id, protocols=SAME_TOPICS, rebalance_ms=30_000))
        for m in (a, b)
    ]
    await asyncio.sleep(0.05)
    assert coord.groups["g"].state == PREPARING
    # Without awaiting in between (so the answered JoinGroups have not returned yet): c's
    # leave completes the phase, a's leave starts the next one, which must wait for b.
    coord.leave("g", [(c.member_id, None)])
    assert coord.groups["g"].generation == a.generation + 1
    coord.leave("g", [(a.member_id, None)])
    assert coord.groups["g"].state == PREPARING
    assert coord.groups["g"].generation == a.generation + 1
    answered = await asyncio.wait_for(rejoins[1], 0.5)
    assert answered.error == e.NONE and answered.generation == a.generation + 1
    rejoins[0].cancel()


async def test_a_static_member_that_does_not_rejoin_keeps_its_place(
    coord: GroupCoordinator,
) -> None:
    (s, d), got = await _stable(coord, "is", None, rebalance_ms=200)
    # d's new subscription starts a rebalance; s (perhaps restarting) does not rejoin.
    rejoin = await asyncio.wait_for(
        join(coord, d.member_id, protocols=SAME_TOPICS, rebalance_ms=200), 2
    )
    group = coord.groups["g"]
    assert rejoin.error == e.NONE and group.state == COMPLETING
    assert s.member_id in group.members and group.leader_id == d.member_id
    assert {m for m, _, _ in rejoin.members} == {s.member_id, d.member_id}
    plan = {s.member_id: b"for-s", d.member_id: b"for-d"}
    synced = await coord.sync("g", rejoin.generation, d.member_id, None, None, None, plan)
    assert synced.assignment == b"for-d" and group.state == STABLE
    back = await join(coord, "", "is", version=5)
    assert back.error == e.NONE and back.generation == rejoin.generation
    s2 = await coord.sync("g", back.generation, back.member_id, "is", None, None, {})
    assert s2.assignment == b"for-s"
    assert got[s.member_id] != b"for-s"


async def test_a_restarted_static_leader_keeps_the_assignment(coord: GroupCoordinator) -> None:
    (a, b), got = await _stable(coord, "ia", "ib")
    leader, inst = (a, "ia") if a.members else (b, "ib")
    generation = leader.generation
    # JoinGroup v5 (librdkafka): the previous leader id is named, so it runs no assignor.
    back = await join(coord, "", inst, version=5, protocols=SAME_TOPICS)
    assert back.error == e.NONE and back.generation == generation
    assert back.leader == leader.member_id != back.member_id and not back.members
    assert coord.groups["g"].state == STABLE
    assert coord.groups["g"].leader_id == back.member_id
    s = await coord.sync("g", generation, back.member_id, inst, None, None, {})
    assert s.error == e.NONE and s.assignment == got[leader.member_id]
    # v9: it is told it leads and to skip the assignment.
    again = await join(coord, "", inst, version=9)
    assert again.error == e.NONE and again.generation == generation
    assert again.leader == again.member_id and again.skip_assignment and again.members
    assert coord.groups["g"].state == STABLE
    assert coord.heartbeat("g", generation, back.member_id, inst) == e.FENCED_INSTANCE_ID


async def test_a_static_member_with_new_topics_rebalances(coord: GroupCoordinator) -> None:
    (a, b), _ = await _stable(coord, "ia", "ib", rebalance_ms=200)
    follower, inst = (b, "ib") if a.members else (a, "ia")
    back = asyncio.create_task(join(coord, "", inst, protocols=OTHER_TOPICS, rebalance_ms=200))
    await asyncio.sleep(0.05)
    assert coord.groups["g"].state == PREPARING
    result = await asyncio.wait_for(back, 2)
    assert result.generation == follower.generation + 1
