"""Topics and their partitions' offsets."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

router = APIRouter(tags=["topics"])


class PartitionInfo(BaseModel):
    partition: int
    log_start_offset: int = Field(description="first offset still stored")
    log_end_offset: int = Field(description="offset the next record will get (high watermark)")


class TopicInfo(BaseModel):
    name: str
    topic_id: str
    partitions: list[PartitionInfo]


@router.get(
    "/topics", summary="List topics with per-partition offsets", response_model=list[TopicInfo]
)
async def list_topics(request: Request) -> list[TopicInfo]:
    storage = request.app.state.storage
    out: list[TopicInfo] = []
    for name, meta in sorted(storage.metadata.topics().items()):
        parts = [
            PartitionInfo(
                partition=plog.partition,
                log_start_offset=plog.log_start_offset,
                log_end_offset=plog.high_watermark,
            )
            for plog in storage.logs(name)
        ]
        out.append(TopicInfo(name=name, topic_id=str(meta.topic_id), partitions=parts))
    return out
