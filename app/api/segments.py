"""GET /segments: the search segments of each partition, sealed and open, with totals."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from app.security.acl import Operation, ResourceType
from app.storage import LOCAL, SEALING, UPLOADED, Checkpoint

from .auth import CallerDep, allowed, require_topic
from .search import iso

router = APIRouter(tags=["segments"])


class SegmentInfo(BaseModel):
    topic: str
    partition: int
    base_offset: int
    last_offset: int = Field(description="last offset held (open: last one indexed)")
    min_timestamp: str | None
    max_timestamp: str | None
    min_timestamp_ms: int | None
    max_timestamp_ms: int | None
    records: int
    bytes: int = Field(description="segment object size (open: batch bytes so far)")
    object_key: str | None = Field(
        description="key in the object store; null while open or sealing"
    )
    state: Literal["open", "sealing", "local", "uploaded"] = Field(
        description="open: being indexed; sealing: full, being packaged into a segment "
        "file (searchable); local: sealed, not yet uploaded; uploaded"
    )


class Totals(BaseModel):
    segments: int
    records: int
    bytes: int


class SegmentsResponse(BaseModel):
    segments: list[SegmentInfo]
    topics: dict[str, Totals] = Field(description="totals per topic")
    total: Totals

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "segments": [
                        {
                            "topic": "logs",
                            "partition": 0,
                            "base_offset": 0,
                            "last_offset": 999999,
                            "min_timestamp": "2026-12-01T10:00:00.000Z",
                            "max_timestamp": "2026-12-01T10:09:59.999Z",
                            "min_timestamp_ms": 1795946400000,
                            "max_timestamp_ms": 1795946999999,
                            "records": 1000000,
                            "bytes": 210000000,
                            "object_key": "logs/0/000…000-000…999999-1a2b3c4d.seg",
                            "state": "uploaded",
                        }
                    ],
                    "topics": {"logs": {"segments": 1, "records": 1000000, "bytes": 210000000}},
                    "total": {"segments": 1, "records": 1000000, "bytes": 210000000},
                }
            ]
        }
    }


def _ts(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


def _unpublished(
    cp: Checkpoint, kind: Literal["open", "sealing"], base: int, end: int, state: dict[str, Any]
) -> SegmentInfo:
    """The open segment or the frozen one being packaged ([base, end)), from the indexer's
    bookkeeping in the checkpoint."""
    return SegmentInfo(
        topic=cp.topic,
        partition=cp.partition,
        base_offset=base,
        last_offset=end - 1,
        min_timestamp=_ts(state.get("min_ts")),
        max_timestamp=_ts(state.get("max_ts")),
        min_timestamp_ms=state.get("min_ts"),
        max_timestamp_ms=state.get("max_ts"),
        records=int(state.get("records", 0)),
        bytes=int(state.get("batches_len", 0)),
        object_key=None,
        state=kind,
    )


@router.get(
    "/segments",
    summary="Search segments (sealed and open) with offsets, times, sizes and state, of "
    "the topics the principal may describe",
    response_model=SegmentsResponse,
    responses={404: {"description": "unknown topic"}},
)
async def list_segments(
    request: Request,
    caller: CallerDep,
    topic: Annotated[str | None, Query(description="only this topic")] = None,
    partition: Annotated[
        int | None, Query(ge=0, le=2**31 - 1, description="only this partition")
    ] = None,
) -> SegmentsResponse:
    storage = request.app.state.storage
    if topic is not None:
        require_topic(request, caller, Operation.DESCRIBE, topic)
        if storage.metadata.get(topic) is None:
            raise HTTPException(404, detail=f"unknown topic {topic!r}")
    seen: dict[str, bool] = {}

    def visible(name: str) -> bool:
        if name not in seen:
            seen[name] = allowed(
                request, caller, Operation.DESCRIBE, ResourceType.TOPIC, name, audit=False
            )
        return seen[name]

    out: list[SegmentInfo] = []
    for r in storage.registry.segments(topic, partition, states=(LOCAL, UPLOADED)):
        if not visible(r.topic):
            continue
        out.append(
            SegmentInfo(
                topic=r.topic,
                partition=r.partition,
                base_offset=r.base_offset,
                last_offset=r.last_offset,
                min_timestamp=_ts(r.min_timestamp),
                max_timestamp=_ts(r.max_timestamp),
                min_timestamp_ms=r.min_timestamp,
                max_timestamp_ms=r.max_timestamp,
                records=r.records,
                bytes=r.size,
                object_key=r.object_key,
                state=r.state,
            )
        )
    for cp in storage.registry.checkpoints():
        if (
            (topic is not None and cp.topic != topic)
            or (partition is not None and cp.partition != partition)
            or not visible(cp.topic)
        ):
            continue
        state = cp.open_state
        if frozen := state.get(SEALING):
            out.append(_unpublished(cp, "sealing", frozen["base"], frozen["next"], frozen))
        if cp.indexed_offset > cp.open_base and state.get("records"):
            out.append(_unpublished(cp, "open", cp.open_base, cp.indexed_offset, state))
    out.sort(key=lambda s: (s.topic, s.partition, s.base_offset))
    per_topic: dict[str, Totals] = {}
    for s in out:
        t = per_topic.setdefault(s.topic, Totals(segments=0, records=0, bytes=0))
        t.segments += 1
        t.records += s.records
        t.bytes += s.bytes
    total = Totals(
        segments=len(out),
        records=sum(s.records for s in out),
        bytes=sum(s.bytes for s in out),
    )
    return SegmentsResponse(segments=out, topics=per_topic, total=total)
