"""Pydantic models of the search endpoints' responses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Header(BaseModel):
    key: str
    value: str | None = Field(description="UTF-8 text, or base64 when encoding says so")
    encoding: Literal["utf-8", "base64"] | None = Field(None, description="null for a null value")


class SearchHit(BaseModel):
    topic: str
    partition: int
    offset: int = Field(description="seek a Kafka consumer here to read the record")
    timestamp: str = Field(description="record timestamp, RFC 3339 (UTC)")
    timestamp_ms: int = Field(description="record timestamp, epoch milliseconds")
    key: str | None = None
    key_encoding: Literal["utf-8", "base64"] | None = None
    value: str | None = None
    encoding: Literal["utf-8", "base64"] | None = Field(
        default=None, description="how `value` is written: UTF-8 text, or base64 for other bytes"
    )
    value_json: Any | None = Field(default=None, description="the value parsed, when it is JSON")
    headers: list[Header] = Field(default_factory=list)
    score: float | None = Field(default=None, description="relevance, when sorting by relevance")
    highlights: list[str] | None = Field(
        default=None, description="value fragments with matches in <em>, when highlight=true"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "topic": "logs",
                    "partition": 0,
                    "offset": 1042,
                    "timestamp": "2026-12-01T10:00:00.123000Z",
                    "timestamp_ms": 1795946400123,
                    "key": "api-7",
                    "key_encoding": "utf-8",
                    "value": '{"level":"error","status":503,"msg":"upstream timeout"}',
                    "encoding": "utf-8",
                    "value_json": {"level": "error", "status": 503, "msg": "upstream timeout"},
                    "headers": [{"key": "trace", "value": "ab12", "encoding": "utf-8"}],
                }
            ]
        }
    }


class SearchResponse(BaseModel):
    total: int = Field(
        description="exact number of matching records (not the page size); with "
        "read_committed, without those of aborted and open transactions"
    )
    took_ms: float
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null on the last page"
    )
    segments_searched: int = Field(description="search indexes opened (sealed and open)")
    hits: list[SearchHit]


class Bucket(BaseModel):
    start: str = Field(description="bucket start, RFC 3339 (UTC)")
    start_ms: int
    count: int


class HistogramResponse(BaseModel):
    total: int = Field(description="sum of the bucket counts: the /search total")
    interval_ms: int
    took_ms: float
    buckets: list[Bucket]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "total": 3,
                    "interval_ms": 60000,
                    "took_ms": 4.2,
                    "buckets": [
                        {"start": "2026-12-01T10:00:00Z", "start_ms": 1795946400000, "count": 2},
                        {"start": "2026-12-01T10:01:00Z", "start_ms": 1795946460000, "count": 1},
                    ],
                }
            ]
        }
    }


class TermCount(BaseModel):
    value: str | int | float | bool
    count: int


class TermsResponse(BaseModel):
    field: str
    total: int = Field(description="matching records (including those without the field)")
    other: int = Field(description="records with a value outside the top `size`")
    took_ms: float
    terms: list[TermCount]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "field": "value.level",
                    "total": 10,
                    "other": 0,
                    "took_ms": 3.1,
                    "terms": [{"value": "info", "count": 7}, {"value": "error", "count": 3}],
                }
            ]
        }
    }


class Problem(BaseModel):
    detail: str
