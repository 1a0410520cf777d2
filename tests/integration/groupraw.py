"""Hand-built group requests (JoinGroup, SyncGroup, Heartbeat, ...) and error codes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from .grouputil import (
    SESSION_MS,
)
from .rawkafka import RawKafka, ms, schema

pytestmark = pytest.mark.timeout(150)

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82
REBALANCE_IN_PROGRESS = 27


def _req(api_key: int, version: int, cls_name: str, /, **kw: Any) -> Any:
    """A kio request of one version, built from whichever of kw its fields take."""
    cls = getattr(schema(api_key, version), cls_name)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in kw.items() if k in names})


def _join(
    raw: RawKafka,
    group: str,
    member_id: str = "",
    *,
    version: int = 5,
    protocols: tuple[tuple[str, bytes], ...] = (("range", b"\x00\x01meta"),),
    instance: str | None = None,
    session_ms: int = SESSION_MS,
    rebalance_ms: int = 10_000,
    send_only: bool = False,
) -> Any:
    mod = schema(11, version)
    req = _req(
        11,
        version,
        "JoinGroupRequest",
        group_id=group,
        session_timeout=ms(session_ms),
        rebalance_timeout=ms(rebalance_ms),
        member_id=member_id,
        group_instance_id=instance,
        protocol_type="consumer",
        protocols=tuple(mod.JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols),
        reason=None,
    )
    if send_only:
        return raw.send(req)
    return raw.request(req, timeout=20)


def _sync(
    raw: RawKafka,
    group: str,
    generation: int,
    member_id: str,
    assignments: dict[str, bytes],
    version: int = 5,
) -> Any:
    mod = schema(14, version)
    req = _req(
        14,
        version,
        "SyncGroupRequest",
        group_id=group,
        generation_id=generation,
        member_id=member_id,
        group_instance_id=None,
        protocol_type="consumer",
        protocol_name="range",
        assignments=tuple(
            mod.SyncGroupRequestAssignment(member_id=m, assignment=a)
            for m, a in assignments.items()
        ),
    )
    return raw.request(req, timeout=20)


def _heartbeat(
    raw: RawKafka,
    group: str,
    generation: int,
    member_id: str,
    instance: str | None = None,
    version: int = 4,
) -> int:
    req = _req(
        12,
        version,
        "HeartbeatRequest",
        group_id=group,
        generation_id=generation,
        member_id=member_id,
        group_instance_id=instance,
    )
    return int(raw.request(req).error_code)


def _commit_raw(
    raw: RawKafka,
    group: str,
    topic: str,
    offsets: dict[int, int],
    *,
    generation: int = -1,
    member_id: str = "",
    version: int = 8,
) -> dict[int, int]:
    """OffsetCommit; returns {partition: error code}."""
    mod = schema(8, version)
    parts = tuple(
        _req(
            8,
            version,
            "OffsetCommitRequestPartition",
            partition_index=p,
            committed_offset=o,
            committed_leader_epoch=-1,
            committed_metadata="",
        )
        for p, o in offsets.items()
    )
    req = _req(
        8,
        version,
        "OffsetCommitRequest",
        group_id=group,
        generation_id_or_member_epoch=generation,
        member_id=member_id,
        group_instance_id=None,
        retention_time=ms(-1),
        topics=(mod.OffsetCommitRequestTopic(name=topic, partitions=parts),),
    )
    resp = raw.request(req)
    (t,) = resp.topics
    assert t.name == topic
    return {int(p.partition_index): int(p.error_code) for p in t.partitions}


def _joined(raw: RawKafka, group: str, version: int, **kw: Any) -> Any:
    """A successful JoinGroup: the KIP-394 member-id round trip first for v4+."""
    resp = _join(raw, group, version=version, **kw)
    if version >= 4:
        assert int(resp.error_code) == MEMBER_ID_REQUIRED, resp
        assert resp.member_id
        resp = _join(raw, group, resp.member_id, version=version, **kw)
    assert int(resp.error_code) == NONE, (version, resp)
    return resp


def _leave(raw: RawKafka, group: str, member_id: str, version: int) -> int:
    if version <= 2:
        req = _req(13, version, "LeaveGroupRequest", group_id=group, member_id=member_id)
        return int(raw.request(req).error_code)
    mod = schema(13, version)
    ident = _req(
        13, version, "MemberIdentity", member_id=member_id, group_instance_id=None, reason=None
    )
    resp = raw.request(mod.LeaveGroupRequest(group_id=group, members=(ident,)))
    assert [(m.member_id, int(m.error_code)) for m in resp.members] == [(member_id, NONE)]
    return int(resp.error_code)


def _advertised(raw: RawKafka) -> dict[int, tuple[int, int]]:
    return {
        int(k.api_key): (int(k.min_version), int(k.max_version))
        for k in raw.api_versions().api_keys
    }
