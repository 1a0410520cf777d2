"""GET /indexer: indexing progress per partition and the worker processes."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.security.acl import Operation

from .auth import CallerDep, require_cluster
from .search import iso

router = APIRouter(tags=["indexer"])


class PartitionIndexing(BaseModel):
    topic: str
    partition: int
    indexed_offset: int = Field(description="every record below this offset is searchable")
    high_watermark: int
    lag_records: int
    lag_seconds: float = Field(description="age of the oldest record not yet searchable")
    records_per_second: float = Field(description="indexing rate over the last minute")
    last_commit: str | None = Field(description="time of the last index commit, RFC 3339")
    open_segment_base: int


class WorkerStatus(BaseModel):
    worker: int
    pid: int | None
    alive: bool
    restarts: int
    partitions: int
    uptime_s: float


class IndexerResponse(BaseModel):
    enabled: bool = Field(description="false when CHRONIK_INDEX_WORKERS is 0")
    errors: int = Field(description="records or batches indexed as text or skipped, and failures")
    workers: list[WorkerStatus]
    partitions: list[PartitionIndexing]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "enabled": True,
                    "errors": 0,
                    "workers": [
                        {
                            "worker": 0,
                            "pid": 4242,
                            "alive": True,
                            "restarts": 0,
                            "partitions": 3,
                            "uptime_s": 3600.0,
                        }
                    ],
                    "partitions": [
                        {
                            "topic": "logs",
                            "partition": 0,
                            "indexed_offset": 1042,
                            "high_watermark": 1050,
                            "lag_records": 8,
                            "lag_seconds": 0.21,
                            "records_per_second": 9871.5,
                            "last_commit": "2026-12-01T10:00:00.000Z",
                            "open_segment_base": 1000,
                        }
                    ],
                }
            ]
        }
    }


@router.get(
    "/indexer",
    summary="Indexing progress, lag and rate per partition, and the worker processes",
    response_model=IndexerResponse,
)
async def indexer_status(request: Request, caller: CallerDep) -> IndexerResponse:
    require_cluster(request, caller, Operation.DESCRIBE)
    storage = request.app.state.storage
    indexer = storage.indexer
    if indexer is None:
        return IndexerResponse(enabled=False, errors=0, workers=[], partitions=[])
    now = time.monotonic()
    parts = []
    for (topic, partition), plog in sorted(storage.partition_logs().items()):
        p = indexer.progress.get((topic, partition))
        hw = plog.high_watermark
        indexed = p.indexed if p is not None else 0
        parts.append(
            PartitionIndexing(
                topic=topic,
                partition=partition,
                indexed_offset=indexed,
                high_watermark=hw,
                lag_records=max(hw - indexed, 0),
                lag_seconds=round(p.lag_seconds(now), 3) if p is not None else 0.0,
                records_per_second=round(indexer.records_per_second((topic, partition)), 1),
                last_commit=iso(p.last_commit_ms) if p is not None and p.last_commit_ms else None,
                open_segment_base=p.open_base if p is not None else 0,
            )
        )
    return IndexerResponse(
        enabled=True,
        errors=indexer.errors,
        workers=[WorkerStatus(**w) for w in indexer.status()],
        partitions=parts,
    )
