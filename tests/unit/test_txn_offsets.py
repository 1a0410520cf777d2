"""Transactional offset commits in the group coordinator, driven directly: staging,
commit and abort, their idempotence, what survives a restart, and the checks Kafka's
GroupCoordinator makes of a TxnOffsetCommit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from app.broker import errors as e
from app.broker.groups import EMPTY, STABLE, GroupCoordinator, GroupStore

from .test_groups import coord, join_new, sync_all

__all__ = ["coord"]  # the fixture, shared with test_groups

PID = 4000
EPOCH = 0


def _rows(*offsets: tuple[int, int]) -> list[tuple[str, int, int, int, str | None]]:
    """(partition, offset) pairs of topic "t"."""
    return [("t", p, o, 3, f"m{p}") for p, o in offsets]


def _committed(c: GroupCoordinator, group: str = "g") -> dict[tuple[str, int], int]:
    return {tp: o.offset for tp, o in c.store.fetch_offsets(group).items()}


async def test_commit_moves_pending_to_committed(coord: GroupCoordinator) -> None:
    coord.store.commit_offsets("g", _rows((0, 5)))
    codes = coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10), (1, 20)))
    assert codes == {("t", 0): e.NONE, ("t", 1): e.NONE}
    # Invisible until the transaction commits; the plain commit still answers.
    assert _committed(coord) == {("t", 0): 5}
    assert coord.has_pending_txn_offsets("g", "t", 0)
    assert coord.has_pending_txn_offsets("g", "t", 1)
    assert not coord.has_pending_txn_offsets("g", "t", 2)
    assert not coord.has_pending_txn_offsets("other", "t", 0)
    assert coord.pending_txn_partitions("g") == {("t", 0), ("t", 1)}

    await coord.complete_txn_offsets("g", PID, commit=True)
    assert _committed(coord) == {("t", 0): 10, ("t", 1): 20}
    got = coord.store.fetch_offsets("g")[("t", 1)]
    assert (got.leader_epoch, got.metadata) == (3, "m1")
    assert not coord.has_pending_txn_offsets("g", "t", 0)
    assert coord.pending_txn_partitions("g") == set()

    # Completing again (the coordinator's recovery may) changes nothing, commit or abort.
    await coord.complete_txn_offsets("g", PID, commit=True)
    await coord.complete_txn_offsets("g", PID, commit=False)
    assert _committed(coord) == {("t", 0): 10, ("t", 1): 20}


async def test_abort_discards_pending(coord: GroupCoordinator) -> None:
    coord.store.commit_offsets("g", _rows((0, 5)))
    coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10), (1, 20)))
    await coord.complete_txn_offsets("g", PID, commit=False)
    assert _committed(coord) == {("t", 0): 5}
    assert coord.pending_txn_partitions("g") == set()
    await coord.complete_txn_offsets("g", PID, commit=False)
    await coord.complete_txn_offsets("g", PID, commit=True)
    assert _committed(coord) == {("t", 0): 5}


async def test_restaging_replaces_and_producers_are_separate(coord: GroupCoordinator) -> None:
    coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10)))
    coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 12)))
    coord.stage_txn_offsets("g", PID + 1, EPOCH, _rows((0, 30), (2, 31)))
    await coord.complete_txn_offsets("g", PID, commit=True)
    assert _committed(coord) == {("t", 0): 12}
    # The other producer's transaction still holds partitions 0 and 2.
    assert coord.pending_txn_partitions("g") == {("t", 0), ("t", 2)}
    await coord.complete_txn_offsets("g", PID + 1, commit=False)
    assert _committed(coord) == {("t", 0): 12}
    assert coord.pending_txn_partitions("g") == set()


async def test_plain_commit_after_staging_wins(coord: GroupCoordinator) -> None:
    """Kafka keeps whichever offset record came later in __consumer_offsets."""
    coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10), (1, 20)))
    time.sleep(0.005)
    coord.store.commit_offsets("g", _rows((0, 99)))
    await coord.complete_txn_offsets("g", PID, commit=True)
    assert _committed(coord) == {("t", 0): 99, ("t", 1): 20}


async def test_pending_survive_restart_and_complete_after(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    first = GroupCoordinator(GroupStore(path))
    await first.start()
    first.store.commit_offsets("g", _rows((0, 5)))
    first.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10)))
    first.stage_txn_offsets("h", PID, EPOCH, _rows((1, 7)))
    # No close: a second process opens the file as after a SIGKILL of the first.
    second = GroupCoordinator(GroupStore(path))
    await second.start()
    try:
        # A group with nothing but pending offsets is known again too.
        assert {"g", "h"} <= set(second.groups)
        assert second.has_pending_txn_offsets("g", "t", 0)
        assert second.has_pending_txn_offsets("h", "t", 1)
        assert _committed(second) == {("t", 0): 5}
        await second.complete_txn_offsets("g", PID, commit=True)
        await second.complete_txn_offsets("h", PID, commit=False)
        assert _committed(second) == {("t", 0): 10}
        assert _committed(second, "h") == {}
        assert second.pending_txn_partitions("h") == set()
    finally:
        await second.close()
        second.store.close()
        await first.close()
        first.store.close()


async def test_group_is_created_empty_and_member_checks(coord: GroupCoordinator) -> None:
    codes = coord.stage_txn_offsets("fresh", PID, EPOCH, _rows((0, 1)))
    assert codes == {("t", 0): e.NONE}
    assert coord.groups["fresh"].state == EMPTY
    assert coord.stage_txn_offsets("", PID, EPOCH, _rows((0, 1))) == {("t", 0): e.INVALID_GROUP_ID}

    results = await asyncio.gather(join_new(coord), join_new(coord, "static-1"))
    await sync_all(coord, results)
    group = coord.groups["g"]
    assert group.state == STABLE
    dynamic = next(r for r in results if r.member_id not in group.static.values())
    static = next(r for r in results if r.member_id in group.static.values())
    gen = group.generation

    def stage(**kw: object) -> int:
        (code,) = coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 1)), **kw).values()  # type: ignore[arg-type]
        return code

    # Without a member (v0-v2, or v3 without one) a producer commits to any group.
    assert stage() == e.NONE
    assert stage(generation=gen, member_id=dynamic.member_id) == e.NONE
    assert stage(generation=gen + 1, member_id=dynamic.member_id) == e.ILLEGAL_GENERATION
    assert stage(generation=gen, member_id="nobody") == e.UNKNOWN_MEMBER_ID
    assert stage(generation=-1, member_id="nobody") == e.UNKNOWN_MEMBER_ID
    assert stage(generation=gen, member_id=static.member_id, instance_id="static-1") == e.NONE
    assert (
        stage(generation=gen, member_id=dynamic.member_id, instance_id="static-1")
        == e.FENCED_INSTANCE_ID
    )
    assert (
        stage(generation=gen, member_id=dynamic.member_id, instance_id="unknown-instance")
        == e.UNKNOWN_MEMBER_ID
    )


async def test_metadata_too_large_is_per_partition(coord: GroupCoordinator) -> None:
    rows = [("t", 0, 10, -1, "x" * 4097), ("t", 1, 20, -1, "ok")]
    assert coord.stage_txn_offsets("g", PID, EPOCH, rows) == {
        ("t", 0): e.OFFSET_METADATA_TOO_LARGE,
        ("t", 1): e.NONE,
    }
    assert coord.pending_txn_partitions("g") == {("t", 1)}


async def test_old_epoch_is_fenced(coord: GroupCoordinator) -> None:
    coord.stage_txn_offsets("g", PID, 5, _rows((0, 10)))
    assert coord.stage_txn_offsets("g", PID, 4, _rows((1, 1))) == {
        ("t", 1): e.INVALID_PRODUCER_EPOCH
    }
    # Fencing aborts with the bumped epoch; the old one may no longer stage anything.
    await coord.complete_txn_offsets("g", PID, commit=False, producer_epoch=6)
    assert coord.stage_txn_offsets("g", PID, 5, _rows((0, 11))) == {
        ("t", 0): e.INVALID_PRODUCER_EPOCH
    }
    assert coord.pending_txn_partitions("g") == set()
    assert coord.stage_txn_offsets("g", PID, 6, _rows((0, 12))) == {("t", 0): e.NONE}
    await coord.complete_txn_offsets("g", PID, commit=True, producer_epoch=6)
    assert _committed(coord) == {("t", 0): 12}
    # A group added to the transaction that nothing was staged for yet is fenced as well.
    await coord.complete_txn_offsets("unseen", PID, commit=False, producer_epoch=9)
    assert coord.stage_txn_offsets("unseen", PID, 8, _rows((0, 1))) == {
        ("t", 0): e.INVALID_PRODUCER_EPOCH
    }


async def test_no_producer_id_is_a_plain_commit(coord: GroupCoordinator) -> None:
    assert coord.stage_txn_offsets("g", -1, -1, _rows((0, 10))) == {("t", 0): e.NONE}
    assert _committed(coord) == {("t", 0): 10}
    assert coord.pending_txn_partitions("g") == set()


async def test_deletes_drop_pending(coord: GroupCoordinator) -> None:
    coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10), (1, 20)))
    coord.stage_txn_offsets("g", PID, EPOCH, [("u", 0, 5, -1, None)])
    coord.store.delete_offsets("g", [("t", 1)])  # OffsetDelete
    assert coord.pending_txn_partitions("g") == {("t", 0), ("u", 0)}
    coord.store.delete_topic("u")
    assert coord.pending_txn_partitions("g") == {("t", 0)}
    assert coord.delete_group("g") == e.NONE
    assert coord.pending_txn_partitions("g") == set()
    await coord.complete_txn_offsets("g", PID, commit=True)
    assert _committed(coord) == {}
    assert "g" not in coord.groups


async def test_retention_keeps_pending_and_their_group(coord: GroupCoordinator) -> None:
    coord.store.commit_offsets("g", _rows((1, 5)))
    coord.stage_txn_offsets("g", PID, EPOCH, _rows((0, 10)))
    assert coord.check_commit("plain", -1, "", None) == e.NONE
    coord.store.commit_offsets("plain", _rows((0, 1)))
    later = int(time.time() * 1000) + coord.offsets_retention_ms + 1000
    coord.expire_offsets(later)
    assert "plain" not in coord.groups
    assert "g" in coord.groups
    assert _committed(coord) == {}
    assert coord.pending_txn_partitions("g") == {("t", 0)}
    await coord.complete_txn_offsets("g", PID, commit=True)
    assert _committed(coord) == {("t", 0): 10}


def test_store_opens_a_data_dir_from_before(tmp_path: Path) -> None:
    """groups.sqlite written before transactional offsets existed keeps working."""
    path = tmp_path / "groups.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE offsets (
            group_id TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
            committed_offset INTEGER NOT NULL, leader_epoch INTEGER NOT NULL, metadata TEXT,
            commit_ms INTEGER NOT NULL, PRIMARY KEY (group_id, topic, partition)
        ) WITHOUT ROWID;
        CREATE INDEX offsets_by_topic ON offsets (topic);
        CREATE TABLE groups (group_id TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
        INSERT INTO offsets VALUES ('old', 't', 0, 42, -1, 'meta', 1);
        """
    )
    db.commit()
    db.close()
    store = GroupStore(path)
    try:
        assert store.fetch_offsets("old")[("t", 0)].offset == 42
        assert store.pending_txn_partitions("old") == set()
        store.stage_txn_offsets("old", PID, EPOCH, _rows((0, 50)))
        assert store.complete_txn_offsets("old", PID, True) == 1
        assert store.fetch_offsets("old")[("t", 0)].offset == 50
    finally:
        store.close()
