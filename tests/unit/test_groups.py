"""The group coordinator's state machine, driven directly (no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.broker import errors as e
from app.broker.groups import COMPLETING, EMPTY, PREPARING, STABLE, GroupCoordinator, GroupStore

PROTOCOLS = [("range", b"\x00\x00\x00\x00\x00\x01\x00\x01t")]


@pytest.fixture
async def coord(tmp_path: Path):
    c = GroupCoordinator(
        GroupStore(tmp_path / "g.sqlite"), initial_rebalance_delay_ms=50, min_session_ms=100
    )
    await c.start()
    yield c
    await c.close()


async def join(c: GroupCoordinator, member_id: str = "", instance: str | None = None, **kw):
    args = dict(
        group_id="g",
        member_id=member_id,
        instance_id=instance,
        client_id="cli",
        client_host="/127.0.0.1",
        session_ms=kw.pop("session_ms", 1000),
        rebalance_ms=kw.pop("rebalance_ms", 1000),
        protocol_type="consumer",
        protocols=kw.pop("protocols", PROTOCOLS),
        require_known_member_id=kw.pop("require", True),
        version=kw.pop("version", 9),
    )
    return await c.join(**args)


async def join_new(c: GroupCoordinator, instance: str | None = None, **kw):
    first = await join(c, instance=instance, **kw)
    if first.error == e.MEMBER_ID_REQUIRED:
        return await join(c, first.member_id, instance, **kw)
    return first


async def sync_all(c: GroupCoordinator, results) -> dict[str, bytes]:
    leader = next(r for r in results if r.members)
    plan = {m: f"assign-{m}".encode() for m, _, _ in leader.members}
    syncs = await asyncio.gather(
        *(
            c.sync("g", r.generation, r.member_id, None, "consumer", "range",
                   plan if r.member_id == leader.member_id else {})
            for r in results
        )
    )  # fmt: skip
    assert all(s.error == e.NONE for s in syncs)
    return {r.member_id: s.assignment for r, s in zip(results, syncs, strict=True)}


async def test_two_members_share_one_generation(coord: GroupCoordinator) -> None:
    first = await join(coord)
    assert first.error == e.MEMBER_ID_REQUIRED and first.member_id
    results = await asyncio.gather(join_new(coord), join_new(coord))
    assert {r.error for r in results} == {e.NONE}
    assert results[0].generation == results[1].generation == 1
    leaders = [r for r in results if r.members]
    assert len(leaders) == 1 and len(leaders[0].members) == 2
    assert coord.groups["g"].state == COMPLETING
    got = await sync_all(coord, results)
    assert got == {r.member_id: f"assign-{r.member_id}".encode() for r in results}
    assert coord.groups["g"].state == STABLE


async def test_heartbeat_errors(coord: GroupCoordinator) -> None:
    (r,) = [await join_new(coord)]
    await sync_all(coord, [r])
    assert coord.heartbeat("g", r.generation, r.member_id, None) == e.NONE
    assert coord.heartbeat("g", r.generation, "nobody", None) == e.UNKNOWN_MEMBER_ID
    assert coord.heartbeat("g", r.generation + 5, r.member_id, None) == e.ILLEGAL_GENERATION
    assert coord.heartbeat("other", 1, r.member_id, None) == e.UNKNOWN_MEMBER_ID


async def test_leave_rebalances_the_rest(coord: GroupCoordinator) -> None:
    a, b = await asyncio.gather(join_new(coord), join_new(coord))
    await sync_all(coord, [a, b])
    code, results = coord.leave("g", [(a.member_id, None)])
    assert code == e.NONE and results == [(a.member_id, None, e.NONE)]
    assert coord.groups["g"].state == PREPARING
    assert coord.heartbeat("g", b.generation, b.member_id, None) == e.REBALANCE_IN_PROGRESS
    again = await asyncio.wait_for(join(coord, b.member_id), 1)
    # The only remaining member rejoined, so the rebalance completes at once.
    assert again.generation == b.generation + 1 and again.members
    assert coord.leave("g", [("ghost", None)])[1] == [("ghost", None, e.UNKNOWN_MEMBER_ID)]


async def test_session_expiry_removes_member(coord: GroupCoordinator) -> None:
    r = await join_new(coord, session_ms=150)
    await sync_all(coord, [r])
    await asyncio.sleep(0.4)
    assert r.member_id not in coord.groups["g"].members
    assert coord.groups["g"].state == EMPTY


async def test_static_member_rejoins_without_rebalance(coord: GroupCoordinator) -> None:
    a, b = await asyncio.gather(join_new(coord, "ia"), join_new(coord, "ib"))
    got = await sync_all(coord, [a, b])
    follower = a if not a.members else b
    inst = "ia" if follower is a else "ib"
    back = await join(coord, "", inst)
    assert back.error == e.NONE and back.member_id != follower.member_id
    assert back.generation == follower.generation  # no new generation
    assert coord.groups["g"].state == STABLE
    s = await coord.sync("g", back.generation, back.member_id, inst, None, None, {})
    assert s.assignment == got[follower.member_id]
    # The old member id of that instance is fenced.
    assert coord.heartbeat("g", back.generation, follower.member_id, inst) == (e.FENCED_INSTANCE_ID)


async def test_bad_joins(coord: GroupCoordinator) -> None:
    assert (await join(coord, protocols=[])).error == e.INCONSISTENT_GROUP_PROTOCOL
    assert (await join(coord, session_ms=10)).error == e.INVALID_SESSION_TIMEOUT
    assert (await join(coord, "made-up")).error == e.UNKNOWN_MEMBER_ID
    r = await join_new(coord)
    other = [("roundrobin", b"")]
    assert (await join(coord, protocols=other)).error == e.INCONSISTENT_GROUP_PROTOCOL
    assert r.error == e.NONE


async def test_commit_rules(coord: GroupCoordinator) -> None:
    assert coord.check_commit("simple", -1, "", None) == e.NONE
    r = await join_new(coord)
    assert coord.check_commit("g", -1, "", None) == e.UNKNOWN_MEMBER_ID
    assert coord.check_commit("g", r.generation, r.member_id, None) == e.REBALANCE_IN_PROGRESS
    await sync_all(coord, [r])
    assert coord.check_commit("g", r.generation, r.member_id, None) == e.NONE
    assert coord.check_commit("g", r.generation - 1, r.member_id, None) == e.ILLEGAL_GENERATION


async def test_groups_survive_restart(tmp_path: Path) -> None:
    store = GroupStore(tmp_path / "g.sqlite")
    c = GroupCoordinator(store, initial_rebalance_delay_ms=10, min_session_ms=100)
    await c.start()
    r = await join_new(c)
    await sync_all(c, [r])
    store.commit_offsets("g", [("t", 0, 42, 3, "meta")])
    await c.close()
    store.close()
    store2 = GroupStore(tmp_path / "g.sqlite")
    c2 = GroupCoordinator(store2, min_session_ms=100)
    c2.load()
    g = c2.groups["g"]
    assert g.state == STABLE and g.generation == r.generation
    assert g.members[r.member_id].assignment == f"assign-{r.member_id}".encode()
    assert store2.fetch_offsets("g")[("t", 0)].offset == 42
    assert c2.delete_group("g") == e.NON_EMPTY_GROUP
    assert c2.delete_group("nope") == e.GROUP_ID_NOT_FOUND
    store2.close()


async def test_offsets_expire_for_long_empty_groups(coord: GroupCoordinator) -> None:
    coord.store.commit_offsets("idle", [("t", 0, 1, -1, None)])
    coord.check_commit("idle", -1, "", None)
    coord.offsets_retention_ms = 10_000
    import time

    coord.expire_offsets(int(time.time() * 1000))
    assert coord.store.fetch_offsets("idle")
    coord.expire_offsets(int(time.time() * 1000) + 20_000)
    assert not coord.store.fetch_offsets("idle")
    assert "idle" not in coord.groups
