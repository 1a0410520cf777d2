"""Group membership APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups,
DescribeGroups, DeleteGroups."""

from __future__ import annotations

from typing import Any

from app.security.acl import Operation, ResourceType

from ..authz import allowed, authorized_operations, cluster_allowed
from ..context import ApiSpec, BrokerContext, Frame
from ..errors import GROUP_AUTHORIZATION_FAILED, INCONSISTENT_GROUP_PROTOCOL, NONE
from ..protocol.codec import Request
from .base import NO_THROTTLE, build, err, respond, response_classes

JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
DELETE_GROUPS = 42
# KIP-394: from JoinGroup v4 a new member must first obtain its member id.
REQUIRE_MEMBER_ID_FROM = 4
OPS_NOT_REQUESTED = -(2**31)
GROUP = ResourceType.GROUP


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000)


def _may_read(broker: BrokerContext, req: Request, group_id: str) -> bool:
    return allowed(broker, req, Operation.READ, GROUP, group_id)


def _join_error(req: Request, code: int) -> Frame:
    """JoinGroupRequest.getErrorResponse: no generation, no member id, no members."""
    resp, _ = response_classes(req)
    body = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(code),
        generation_id=-1,
        protocol_type=None,
        protocol_name=None if req.header.api_version >= 7 else "",
        leader="",
        skip_assignment=False,
        member_id="",
        members=(),
    )
    return respond(req, body)


async def join_group(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    if not _may_read(broker, req, b.group_id):
        return _join_error(req, GROUP_AUTHORIZATION_FAILED)
    session_ms = _ms(b.session_timeout)
    rebalance = getattr(b, "rebalance_timeout", None)
    result = await broker.groups.join(
        group_id=b.group_id,
        member_id=b.member_id,
        instance_id=getattr(b, "group_instance_id", None),
        client_id=req.header.client_id or "",
        client_host=req.client_host,
        session_ms=session_ms,
        rebalance_ms=_ms(rebalance) if rebalance is not None else session_ms,
        protocol_type=b.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in b.protocols],
        require_known_member_id=req.header.api_version >= REQUIRE_MEMBER_ID_FROM,
        version=req.header.api_version,
    )
    members = tuple(
        build(mod.JoinGroupResponseMember, member_id=m, group_instance_id=i, metadata=meta)
        for m, i, meta in result.members
    )
    body = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(result.error),
        generation_id=result.generation,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name or ("" if req.header.api_version < 7 else None),
        leader=result.leader,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=members,
    )
    return respond(req, body)


async def sync_group(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    b = req.body
    # KafkaApis checks v5's mandatory protocol type and name before authorizing.
    if req.header.api_version >= 5 and (b.protocol_type is None or b.protocol_name is None):
        code = INCONSISTENT_GROUP_PROTOCOL
    elif not _may_read(broker, req, b.group_id):
        code = GROUP_AUTHORIZATION_FAILED
    else:
        code = NONE
    if code != NONE:
        body = build(resp, throttle_time=NO_THROTTLE, error_code=err(code), assignment=b"")
        return respond(req, body)
    result = await broker.groups.sync(
        group_id=b.group_id,
        generation=int(b.generation_id),
        member_id=b.member_id,
        instance_id=getattr(b, "group_instance_id", None),
        protocol_type=getattr(b, "protocol_type", None),
        protocol_name=getattr(b, "protocol_name", None),
        assignments={a.member_id: bytes(a.assignment) for a in b.assignments},
    )
    body = build(
        resp,
        throttle_time=NO_THROTTLE,
        error_code=err(result.error),
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )
    return respond(req, body)


async def heartbeat(broker: BrokerContext, req: Request) -> Frame:
    resp, _ = response_classes(req)
    b = req.body
    if not _may_read(broker, req, b.group_id):
        code = GROUP_AUTHORIZATION_FAILED
    else:
        code = broker.groups.heartbeat(
            b.group_id, int(b.generation_id), b.member_id, getattr(b, "group_instance_id", None)
        )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, error_code=err(code)))


async def leave_group(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    b = req.body
    if not _may_read(broker, req, b.group_id):
        out = build(
            resp, throttle_time=NO_THROTTLE, error_code=err(GROUP_AUTHORIZATION_FAILED), members=()
        )
        return respond(req, out)
    if hasattr(b, "members"):
        wanted = [(m.member_id, m.group_instance_id) for m in b.members]
    else:
        wanted = [(b.member_id, None)]
    code, results = broker.groups.leave(b.group_id, wanted)
    if not hasattr(b, "members") and results:
        # Before v3 there is one member and its error is the response's error.
        code = results[0][2]
    member_cls = getattr(mod, "MemberResponse", None)
    members = tuple(
        build(member_cls, member_id=m, group_instance_id=i, error_code=err(c))
        for m, i, c in results
        if member_cls is not None
    )
    out = build(resp, throttle_time=NO_THROTTLE, error_code=err(code), members=members)
    return respond(req, out)


async def list_groups(broker: BrokerContext, req: Request) -> Frame:
    resp, mod = response_classes(req)
    states = {s.lower() for s in getattr(req.body, "states_filter", ())}
    types = {t.lower() for t in getattr(req.body, "types_filter", ())}
    # KafkaApis: DESCRIBE on the cluster lists every group, otherwise only the groups the
    # principal may describe; neither check is a denial worth an audit line.
    everything = cluster_allowed(broker, req, Operation.DESCRIBE, audit=False)
    groups = [
        g
        for g in broker.groups.list_groups(states or None)
        if (not types or "classic" in types or (g.protocol_type or "") in types)
        and (everything or allowed(broker, req, Operation.DESCRIBE, GROUP, g.group_id, audit=False))
    ]
    listed = tuple(
        build(
            mod.ListedGroup,
            group_id=g.group_id,
            protocol_type=g.protocol_type or "",
            group_state=g.state,
            group_type="classic",
        )
        for g in sorted(groups, key=lambda g: g.group_id)
    )
    out = build(resp, throttle_time=NO_THROTTLE, error_code=err(NONE), groups=listed)
    return respond(req, out)


def _described(
    mod: Any, group_id: str, code: int, g: Any = None, ops: int = OPS_NOT_REQUESTED
) -> Any:
    """One DescribedGroup: an error (DescribeGroupsResponse.groupError: no state), the
    coordinator's "Dead" for a group it does not know, or the group itself."""
    members: tuple[Any, ...] = ()
    if g is not None:
        members = tuple(
            build(
                mod.DescribedGroupMember,
                member_id=m.member_id,
                group_instance_id=m.instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=m.metadata_for(g.protocol_name),
                member_assignment=m.assignment,
            )
            for m in g.members.values()
        )
    state = "" if code != NONE else ("Dead" if g is None else g.state)
    return build(
        mod.DescribedGroup,
        error_code=err(code),
        group_id=group_id,
        group_state=state,
        protocol_type=(g.protocol_type or "") if g is not None else "",
        protocol_data=(g.protocol_name or "") if g is not None else "",
        members=members,
        authorized_operations=ops,
    )


async def describe_groups(broker: BrokerContext, req: Request) -> Frame:
    """KafkaApis.handleDescribeGroupsRequest: the groups the principal may not DESCRIBE come
    first with GROUP_AUTHORIZATION_FAILED, then the coordinator's answers for the rest."""
    resp, mod = response_classes(req)
    with_ops = bool(getattr(req.body, "include_authorized_operations", False))
    denied, described = [], []
    for group_id in req.body.groups:
        if not allowed(broker, req, Operation.DESCRIBE, GROUP, group_id):
            denied.append(_described(mod, group_id, GROUP_AUTHORIZATION_FAILED))
            continue
        ops = OPS_NOT_REQUESTED
        if with_ops:
            ops = authorized_operations(broker, req, GROUP, group_id)
        g = broker.groups.describe(group_id)
        described.append(_described(mod, group_id, NONE, g, ops))
    groups = tuple(denied + described)
    return respond(req, build(resp, throttle_time=NO_THROTTLE, groups=groups))


async def delete_groups(broker: BrokerContext, req: Request) -> Frame:
    """KafkaApis.handleDeleteGroupsRequest: each name once, the deleted (or failed) groups
    first, then those the principal may not DELETE."""
    resp, mod = response_classes(req)
    names = list(dict.fromkeys(req.body.groups_names))
    may = {g: allowed(broker, req, Operation.DELETE, GROUP, g) for g in names}
    codes = [(g, broker.groups.delete_group(g)) for g in names if may[g]]
    codes += [(g, GROUP_AUTHORIZATION_FAILED) for g in names if not may[g]]
    results = tuple(
        build(mod.DeletableGroupResult, group_id=g, error_code=err(code)) for g, code in codes
    )
    return respond(req, build(resp, throttle_time=NO_THROTTLE, results=results))


APIS = [
    ApiSpec(JOIN_GROUP, 0, 9, join_group),
    ApiSpec(SYNC_GROUP, 0, 5, sync_group),
    ApiSpec(HEARTBEAT, 0, 4, heartbeat),
    ApiSpec(LEAVE_GROUP, 0, 5, leave_group),
    ApiSpec(LIST_GROUPS, 0, 5, list_groups),
    ApiSpec(DESCRIBE_GROUPS, 0, 5, describe_groups),
    ApiSpec(DELETE_GROUPS, 0, 2, delete_groups),
]
