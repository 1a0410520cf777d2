"""Consumer groups: state, members and their assignments, committed offsets and lag.

The groups live in the broker, which the API does not import: the service sets a
GroupsSource (app/broker/groups/view.py) as `app.state.groups`; an app built without a
broker (tools, tests) answers 503. ACLs as Kafka's: DESCRIBE on the group (ListGroups
shows all of them to a principal that may DESCRIBE the cluster), and only the topics the
principal may DESCRIBE in offsets, assignments and lag (OffsetFetch filters them so)."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from app.security.acl import CLUSTER_NAME, Operation, ResourceType

from .auth import Caller, CallerDep, allowed
from .search_models import Problem

router = APIRouter(tags=["groups"])


class GroupsSource(Protocol):
    def group_ids(self) -> list[str]: ...

    def describe(self, group_id: str) -> dict[str, Any] | None:
        """The group in GroupDetail's shape, every topic included; None if unknown."""
        ...


class GroupSummary(BaseModel):
    group: str
    state: str = Field(
        description="Empty, PreparingRebalance, CompletingRebalance or Stable (Kafka's names)"
    )
    protocol_type: str = Field(description='"consumer" for consumers; "" for simple consumers')
    protocol: str = Field(description="the assignor the members chose, e.g. range")
    members: int
    lag: int | None = Field(
        description="sum of the partitions' lag; null when no committed offset is visible"
    )
    topics: list[str] = Field(description="topics with committed offsets or assigned")


class GroupList(BaseModel):
    groups: list[GroupSummary]


class TopicPartitions(BaseModel):
    topic: str
    partitions: list[int]


class GroupMember(BaseModel):
    member_id: str
    client_id: str
    client_host: str
    group_instance_id: str | None = Field(description="static membership id, if any")
    assignment: list[TopicPartitions] = Field(
        description="decoded consumer-protocol assignment; empty for other protocols"
    )


class PartitionLag(BaseModel):
    topic: str
    partition: int
    committed: int = Field(description="the group's committed offset")
    high_watermark: int
    log_start_offset: int
    lag: int = Field(description="high_watermark - committed, never below 0")
    metadata: str | None = Field(description="the metadata committed with the offset")


class GroupDetail(BaseModel):
    group: str
    state: str
    protocol_type: str
    protocol: str
    generation: int
    members: list[GroupMember]
    offsets: list[PartitionLag] = Field(description="per committed partition, by topic/partition")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "group": "billing",
                    "state": "Stable",
                    "protocol_type": "consumer",
                    "protocol": "range",
                    "generation": 3,
                    "members": [
                        {
                            "member_id": "rdkafka-0c6d2f1e",
                            "client_id": "rdkafka",
                            "client_host": "/127.0.0.1",
                            "group_instance_id": None,
                            "assignment": [{"topic": "orders", "partitions": [0, 1]}],
                        }
                    ],
                    "offsets": [
                        {
                            "topic": "orders",
                            "partition": 0,
                            "committed": 900,
                            "high_watermark": 1000,
                            "log_start_offset": 0,
                            "lag": 100,
                            "metadata": "",
                        }
                    ],
                }
            ]
        }
    }


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "served without a broker (tools)"}
}


def _source(request: Request) -> GroupsSource:
    source: GroupsSource | None = getattr(request.app.state, "groups", None)
    if source is None:
        raise HTTPException(503, detail="consumer groups need the broker; this app has none")
    return source


def _may_describe(request: Request, caller: Caller, rtype: ResourceType, name: str) -> bool:
    return allowed(request, caller, Operation.DESCRIBE, rtype, name, audit=False)


def _visible(request: Request, caller: Caller, detail: dict[str, Any]) -> GroupDetail:
    """The group with only the topics the caller may DESCRIBE."""
    topics = {o["topic"] for o in detail["offsets"]}
    topics |= {a["topic"] for m in detail["members"] for a in m["assignment"]}
    may = {t for t in topics if _may_describe(request, caller, ResourceType.TOPIC, t)}
    members = [
        {**m, "assignment": [a for a in m["assignment"] if a["topic"] in may]}
        for m in detail["members"]
    ]
    offsets = [o for o in detail["offsets"] if o["topic"] in may]
    return GroupDetail.model_validate({**detail, "members": members, "offsets": offsets})


def _summary(d: GroupDetail) -> GroupSummary:
    topics = {o.topic for o in d.offsets} | {a.topic for m in d.members for a in m.assignment}
    return GroupSummary(
        group=d.group,
        state=d.state,
        protocol_type=d.protocol_type,
        protocol=d.protocol,
        members=len(d.members),
        lag=sum(o.lag for o in d.offsets) if d.offsets else None,
        topics=sorted(topics),
    )


@router.get(
    "/groups",
    summary="List the consumer groups the principal may describe, with their total lag",
    response_model=GroupList,
    responses=_UNAVAILABLE,
)
async def list_groups(request: Request, caller: CallerDep) -> GroupList:
    source = _source(request)
    everything = _may_describe(request, caller, ResourceType.CLUSTER, CLUSTER_NAME)
    out = []
    for group_id in source.group_ids():
        if not everything and not _may_describe(request, caller, ResourceType.GROUP, group_id):
            continue
        detail = source.describe(group_id)
        if detail is not None:
            out.append(_summary(_visible(request, caller, detail)))
    return GroupList(groups=out)


@router.get(
    "/groups/{group:path}",
    summary="One consumer group: members, their assignments, committed offsets and lag",
    response_model=GroupDetail,
    responses={404: {"model": Problem, "description": "unknown group"}, **_UNAVAILABLE},
)
async def get_group(request: Request, caller: CallerDep, group: str) -> GroupDetail:
    # Checked before the lookup, so a refusal does not tell whether the group exists.
    if not allowed(request, caller, Operation.DESCRIBE, ResourceType.GROUP, group):
        raise HTTPException(
            403, detail=f"{caller.principal} is not authorized to DESCRIBE group {group!r}"
        )
    detail = _source(request).describe(group)
    if detail is None:
        raise HTTPException(404, detail=f"unknown group {group!r}")
    return _visible(request, caller, detail)
