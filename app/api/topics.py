"""Topics, their partitions' offsets, what each storage layer holds, and their configs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from app.security.acl import Operation, ResourceType

from .auth import CallerDep, allowed, require_topic

router = APIRouter(tags=["topics"])


class LayerStats(BaseModel):
    records: int
    bytes: int


class PartitionInfo(BaseModel):
    partition: int
    log_start_offset: int = Field(description="first offset still stored")
    log_end_offset: int = Field(description="offset the next record will get (high watermark)")
    last_stable_offset: int = Field(
        description="offsets below it hold no open transaction (read_committed consumers "
        "read up to here); equals log_end_offset when no transaction is open"
    )
    indexed_offset: int | None = Field(
        default=None, description="every record below this is searchable; null without indexing"
    )
    dirty_ratio: float | None = Field(
        default=None,
        description="compacted topics: share of the cleanable bytes (sealed segments below "
        "the last stable offset and min.compaction.lag.ms) not cleaned yet; null otherwise or "
        "before the cleaner first looked",
    )
    last_compaction: int | None = Field(
        default=None,
        description="when the log cleaner last compacted this partition (ms since the epoch); "
        "null if never",
    )
    layers: dict[str, LayerStats] = Field(
        default_factory=dict,
        description="memory (tail cache), wal (local log) and segments (sealed search "
        "segments); memory and wal overlap",
    )


class TopicInfo(BaseModel):
    name: str
    topic_id: str
    partitions: list[PartitionInfo]
    configs: dict[str, str] = Field(default_factory=dict, description="topic config overrides")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "name": "logs",
                    "topic_id": "6fae8272-437e-456e-affa-5bcd19db1bbe",
                    "partitions": [
                        {
                            "partition": 0,
                            "log_start_offset": 0,
                            "log_end_offset": 3000,
                            "last_stable_offset": 2990,
                            "indexed_offset": 3000,
                            "dirty_ratio": None,
                            "last_compaction": None,
                            "layers": {
                                "memory": {"records": 3000, "bytes": 91474},
                                "wal": {"records": 3000, "bytes": 91474},
                                "segments": {"records": 3000, "bytes": 403891},
                            },
                        }
                    ],
                    "configs": {"retention.ms": "604800000"},
                }
            ]
        }
    }


def _topic(storage: Any, name: str, meta: Any) -> TopicInfo:
    indexer = storage.indexer
    seg: dict[int, tuple[int, int]] = {}
    for r in storage.registry.segments(name):
        n, b = seg.get(r.partition, (0, 0))
        seg[r.partition] = (n + r.records, b + r.size)
    parts = []
    for plog in storage.logs(name):
        layers = {k: LayerStats(records=n, bytes=b) for k, (n, b) in plog.layer_stats().items()}
        n, b = seg.get(plog.partition, (0, 0))
        layers["segments"] = LayerStats(records=n, bytes=b)
        progress = indexer.progress.get((name, plog.partition)) if indexer is not None else None
        dirty_ratio, last_compaction = storage.cleaner.status(name, plog.partition)
        parts.append(
            PartitionInfo(
                partition=plog.partition,
                log_start_offset=plog.log_start_offset,
                log_end_offset=plog.high_watermark,
                last_stable_offset=plog.last_stable_offset,
                indexed_offset=progress.indexed if progress is not None else None,
                dirty_ratio=dirty_ratio if plog.config.compact else None,
                last_compaction=last_compaction,
                layers=layers,
            )
        )
    configs = dict(meta.configs)
    return TopicInfo(name=name, topic_id=str(meta.topic_id), partitions=parts, configs=configs)


@router.get(
    "/topics",
    summary="List the topics the principal may describe, with per-partition offsets",
    response_model=list[TopicInfo],
)
async def list_topics(request: Request, caller: CallerDep) -> list[TopicInfo]:
    storage = request.app.state.storage
    return [
        _topic(storage, n, m)
        for n, m in sorted(storage.metadata.topics().items())
        if allowed(request, caller, Operation.DESCRIBE, ResourceType.TOPIC, n, audit=False)
    ]


@router.get(
    "/topics/{topic}",
    summary="One topic: offsets, indexed offset and bytes per storage layer, configs",
    response_model=TopicInfo,
    responses={404: {"description": "unknown topic"}},
)
async def get_topic(request: Request, caller: CallerDep, topic: str) -> TopicInfo:
    require_topic(request, caller, Operation.DESCRIBE, topic)
    storage = request.app.state.storage
    meta = storage.metadata.get(topic)
    if meta is None:
        raise HTTPException(404, detail=f"unknown topic {topic!r}")
    return _topic(storage, topic, meta)
