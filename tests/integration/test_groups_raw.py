"""Group APIs over raw requests: every version, and the errors real clients never provoke."""

from __future__ import annotations

import time
import uuid

import pytest

from .conftest import Server, unique_topic
from .groupclients import SubprocessMember
from .groupmembers import Member
from .groupraw import (
    ILLEGAL_GENERATION,
    INCONSISTENT_GROUP_PROTOCOL,
    INVALID_SESSION_TIMEOUT,
    MEMBER_ID_REQUIRED,
    NONE,
    REBALANCE_IN_PROGRESS,
    UNKNOWN_MEMBER_ID,
    _advertised,
    _commit_raw,
    _heartbeat,
    _join,
    _joined,
    _leave,
    _req,
    _sync,
)
from .grouputil import (
    SESSION_MS,
    create_topic,
    wait_until,
)
from .rawkafka import RawKafka, decode_response, schema

pytestmark = pytest.mark.timeout(150)

SESSION = SESSION_MS / 1000

AnyMember = Member | SubprocessMember


def _group() -> str:
    return f"grp-{uuid.uuid4().hex[:10]}"


def test_raw_join_sync_heartbeat_errors(server: Server) -> None:
    """Bad group requests get the right error codes; the connection keeps working."""
    group = _group()
    with RawKafka(server.bootstrap) as raw:
        # an empty protocol list is inconsistent with any group (v0 and v5)
        for version in (0, 5):
            resp = _join(raw, group, version=version, protocols=())
            assert int(resp.error_code) == INCONSISTENT_GROUP_PROTOCOL, (version, resp)
        # a session timeout below the broker minimum
        resp = _join(raw, group, session_ms=100)
        assert int(resp.error_code) == INVALID_SESSION_TIMEOUT, resp

        # v4+: the first join with an empty member id is answered with a member id to use
        first = _join(raw, group, version=5)
        assert int(first.error_code) == MEMBER_ID_REQUIRED, first
        member_id = first.member_id
        assert member_id
        joined = _join(raw, group, member_id, version=5)
        assert int(joined.error_code) == NONE, joined
        assert joined.member_id == member_id
        assert joined.leader == member_id
        assert joined.protocol_name == "range"
        generation = int(joined.generation_id)
        assert generation >= 1
        assert [m.member_id for m in joined.members] == [member_id]
        assert [bytes(m.metadata) for m in joined.members] == [b"\x00\x01meta"]

        # SyncGroup with a wrong generation, then the right one
        bad = _sync(raw, group, generation + 7, member_id, {member_id: b"assignment"})
        assert int(bad.error_code) == ILLEGAL_GENERATION, bad
        good = _sync(raw, group, generation, member_id, {member_id: b"assignment"})
        assert int(good.error_code) == NONE, good
        assert bytes(good.assignment) == b"assignment"

        # Heartbeats: unknown member, wrong generation, right member
        assert _heartbeat(raw, group, generation, "no-such-member") == UNKNOWN_MEMBER_ID
        assert _heartbeat(raw, group, generation + 1, member_id) == ILLEGAL_GENERATION
        assert _heartbeat(raw, group, generation, member_id) == NONE
        for version in (0, 1, 2, 3):
            assert _heartbeat(raw, group, generation, member_id, version=version) == NONE

        # a simple (generation -1) commit to a group with a live member is refused
        topic = unique_topic("rawgrp")
        create_topic(server.bootstrap, topic, 1)
        assert _commit_raw(raw, group, topic, {0: 0}) == {0: UNKNOWN_MEMBER_ID}
        # the member itself may commit
        assert _commit_raw(
            raw, group, topic, {0: 0}, generation=generation, member_id=member_id
        ) == {0: NONE}
        assert _commit_raw(
            raw, group, topic, {0: 0}, generation=generation + 3, member_id=member_id
        ) == {0: ILLEGAL_GENERATION}

        # LeaveGroup, after which the member is unknown
        leave = raw.request(
            _req(
                13,
                5,
                "LeaveGroupRequest",
                group_id=group,
                members=(
                    schema(13, 5).MemberIdentity(
                        member_id=member_id, group_instance_id=None, reason=None
                    ),
                ),
            )
        )
        assert int(leave.error_code) == NONE
        assert [(m.member_id, int(m.error_code)) for m in leave.members] == [(member_id, NONE)]
        assert _heartbeat(raw, group, generation, member_id) == UNKNOWN_MEMBER_ID

        # v3 and older need no member-id round trip: the join completes directly
        old_group = _group()
        old = _join(raw, old_group, version=3)
        assert int(old.error_code) == NONE, old
        assert old.member_id
        assert old.leader == old.member_id

        # the connection still serves other requests
        assert int(raw.api_versions().error_code) == 0
        md = raw.metadata([topic])
        assert [t.name for t in md.topics] == [topic]


# --------------------------------------------------------------------------- static membership


def test_raw_every_group_api_version(server: Server) -> None:
    """Join/Sync/Heartbeat/Leave/Describe/List/Delete at every version the broker
    advertises; kio decodes each response strictly (no trailing bytes)."""
    with RawKafka(server.bootstrap) as raw:
        adv = _advertised(raw)
        wanted = {11: (0, 9), 14: (0, 5), 12: (0, 4), 13: (0, 5), 8: (2, 9), 9: (1, 9)}
        for key, (lo, hi) in wanted.items():
            assert key in adv, f"api {key} not advertised"
            assert adv[key][0] <= lo and adv[key][1] >= hi, (key, adv[key])
        for key in (15, 16, 42):
            assert key in adv, f"api {key} not advertised"
        for version in range(0, 10):
            group = f"{_group()}-v{version}"
            joined = _joined(raw, group, version)
            member_id = joined.member_id
            generation = int(joined.generation_id)
            assert joined.leader == member_id
            assert [m.member_id for m in joined.members] == [member_id]
            sync_v = min(version, 5)
            synced = _sync(
                raw, group, generation, member_id, {member_id: b"as-%d" % version}, sync_v
            )
            assert int(synced.error_code) == NONE, (version, synced)
            assert bytes(synced.assignment) == b"as-%d" % version
            hb_v = min(version, 4)
            assert _heartbeat(raw, group, generation, member_id, version=hb_v) == NONE

            lo, hi = adv[15]
            dv = min(max(version, lo), hi)
            resp = raw.request(
                _req(
                    15,
                    dv,
                    "DescribeGroupsRequest",
                    groups=(group,),
                    include_authorized_operations=False,
                )
            )
            (g,) = resp.groups
            assert (
                int(g.error_code),
                g.group_id,
                g.group_state,
                g.protocol_type,
                g.protocol_data,
            ) == (
                NONE,
                group,
                "Stable",
                "consumer",
                "range",
            ), (dv, g)
            assert [
                (m.member_id, m.client_id, bytes(m.member_metadata), bytes(m.member_assignment))
                for m in g.members
            ] == [(member_id, "rawkafka", b"\x00\x01meta", b"as-%d" % version)], (dv, g)

            lo, hi = adv[16]
            lv = min(max(version, lo), hi)
            resp = raw.request(_req(16, lv, "ListGroupsRequest", states_filter=(), types_filter=()))
            assert int(resp.error_code) == NONE
            listed = {x.group_id: x for x in resp.groups}
            assert group in listed, lv
            assert listed[group].protocol_type == "consumer"
            if lv >= 4:
                assert listed[group].group_state == "Stable"

            assert _leave(raw, group, member_id, min(version, 5)) == NONE
            resp = raw.request(
                _req(
                    15,
                    dv,
                    "DescribeGroupsRequest",
                    groups=(group,),
                    include_authorized_operations=False,
                )
            )
            assert [(gg.group_state, len(gg.members)) for gg in resp.groups] == [("Empty", 0)]

            lo, hi = adv[42]
            delv = min(max(version, lo), hi)
            resp = raw.request(_req(42, delv, "DeleteGroupsRequest", groups_names=(group,)))
            assert [(r.group_id, int(r.error_code)) for r in resp.results] == [(group, NONE)]
            resp = raw.request(_req(16, lv, "ListGroupsRequest", states_filter=(), types_filter=()))
            assert group not in {x.group_id for x in resp.groups}


def test_rebalance_drops_a_member_that_does_not_rejoin(server: Server) -> None:
    """While a rebalance waits, the old member's heartbeat says REBALANCE_IN_PROGRESS; a
    member that does not rejoin within the rebalance timeout is removed from the group."""
    group = _group()
    with RawKafka(server.bootstrap) as r1, RawKafka(server.bootstrap) as r2:
        m1 = _joined(r1, group, 5, rebalance_ms=2000)
        gen1 = int(m1.generation_id)
        synced = _sync(r1, group, gen1, m1.member_id, {m1.member_id: b"x"})
        assert int(synced.error_code) == NONE
        first = _join(r2, group, version=5, rebalance_ms=2000)
        assert int(first.error_code) == MEMBER_ID_REQUIRED
        t0 = time.monotonic()
        cid = _join(r2, group, first.member_id, version=5, rebalance_ms=2000, send_only=True)
        wait_until(
            lambda: _heartbeat(r1, group, gen1, m1.member_id) == REBALANCE_IN_PROGRESS,
            5,
            "heartbeat of the old member reports the rebalance",
        )
        got_cid, m2 = decode_response(11, 5, r2.recv_frame(timeout=20))
        took = time.monotonic() - t0
        assert got_cid == cid
        assert int(m2.error_code) == NONE, m2
        assert int(m2.generation_id) == gen1 + 1
        assert m2.leader == first.member_id
        assert [m.member_id for m in m2.members] == [first.member_id]
        assert 1.5 <= took <= 10, f"join completed after {took:.2f}s (rebalance timeout 2s)"
        assert _heartbeat(r1, group, gen1, m1.member_id) == UNKNOWN_MEMBER_ID
