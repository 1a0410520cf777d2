"""GET /search, /search/histogram and /search/terms over the topics' search segments."""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from app.security.acl import Operation
from app.storage import (
    Hit,
    Record,
    SearchFailed,
    SearchTimeout,
    check_query,
    metrics,
    rewrite_query,
)
from app.storage.errors import StorageError, UnknownTopic

from .auth import CallerDep, require_topic
from .limits import Limits, bad, expensive
from .search_models import (
    Bucket,
    Header,
    HistogramResponse,
    Problem,
    SearchHit,
    SearchResponse,
    TermCount,
    TermsResponse,
)

router = APIRouter(tags=["search"])

MAX_SKIP = 10_000
AGGREGATION = "it is an aggregation (histogram, terms)"
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_NICE = [
    1,
    10,
    100,
    1000,
    5000,
    10_000,
    30_000,
    60_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    604_800_000,
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the query does not parse (message and position)"},
    404: {"model": Problem, "description": "unknown topic"},
    503: {"model": Problem, "description": "a segment is only in an unreachable object store"},
    504: {"model": Problem, "description": "the search took longer than the search timeout"},
}

Sort = Literal["-timestamp", "timestamp", "offset", "-offset", "relevance"]
Isolation = Literal["read_committed", "read_uncommitted"]


_bad = bad


def limits(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


def parse_time(param: str, value: str | None) -> int | None:
    """RFC 3339 or epoch milliseconds."""
    if value is None or value == "":
        return None
    if re.fullmatch(r"-?\d+", value):
        if not -(2**63) <= int(value) < 2**63:  # timestamps are 64-bit
            raise _bad(param, f"{value!r} is out of range")
        return int(value)
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(param, f"{value!r} is neither RFC 3339 nor epoch milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return int(dt.timestamp() * 1000)


def iso(ms: int) -> str:
    dt = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Filters:
    topics: list[str]
    q: str
    start_ms: int | None
    end_ms: int | None
    partitions: list[int] | None
    isolation: Isolation = "read_committed"
    # Why the search is expensive (limits.py), None when it is cheap.
    expensive: str | None = None

    @property
    def read_committed(self) -> bool:
        return self.isolation == "read_committed"

    def fingerprint(self, sort: str) -> str:
        raw = json.dumps(
            [
                sorted(self.topics),
                self.q,
                self.start_ms,
                self.end_ms,
                self.partitions,
                sort,
                self.isolation,
            ]
        )
        return hashlib.sha1(raw.encode()).hexdigest()[:12]


def filters(
    request: Request,
    caller: CallerDep,
    topic: Annotated[
        str, Query(description="topic, or a comma-separated list of topics", min_length=1)
    ],
    q: Annotated[
        str,
        Query(
            description="Tantivy query syntax over `key`, `value` (text), `value.<json path>`, "
            "`headers.<name>`, with AND/OR/NOT, phrases and ranges; bare words search key "
            "and value; empty or `*` matches every record",
        ),
    ] = "",
    start: Annotated[
        str | None, Query(description="records at or after this time (RFC 3339 or epoch ms)")
    ] = None,
    end: Annotated[
        str | None, Query(description="records before this time (RFC 3339 or epoch ms)")
    ] = None,
    partition: Annotated[
        list[int] | None, Query(description="only these partitions (repeatable)")
    ] = None,
    isolation: Annotated[
        Isolation,
        Query(
            description="read_committed: records of aborted transactions and of transactions "
            "still open are left out (they appear once committed; other records are not held "
            "back); read_uncommitted, for debugging: open transactions' records too, and "
            "aborted ones until their search segment is sealed (sealing deletes them from "
            "the index; a read_uncommitted Kafka fetch still returns them)",
        ),
    ] = "read_committed",
) -> Filters:
    # Once each: a topic named twice would be searched, and counted, twice.
    topics = list(dict.fromkeys(t.strip() for t in topic.split(",") if t.strip()))
    if not topics:
        raise _bad("topic", "no topic given")
    for t in topics:
        require_topic(request, caller, Operation.READ, t)
    storage = request.app.state.storage
    for t in topics:
        if storage.metadata.get(t) is None:
            raise HTTPException(404, detail=f"unknown topic {t!r}")
    limits(request).check_query(q)
    query = rewrite_query(q)
    try:
        check_query(query)
    except ValueError as exc:
        raise HTTPException(400, detail=f"q: {exc}") from None
    start_ms, end_ms = parse_time("start", start), parse_time("end", end)
    if start_ms is not None and end_ms is not None and end_ms < start_ms:
        raise _bad("end", "is before start")
    parts = sorted(set(partition)) if partition else None
    cost = expensive(query, start_ms, end_ms)
    return Filters(topics, query, start_ms, end_ms, parts, isolation, cost)


FiltersDep = Annotated[Filters, Depends(filters)]


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    try:
        yield
    except UnknownTopic as exc:
        raise HTTPException(404, detail=f"unknown topic {exc}") from None
    except SearchTimeout as exc:
        raise HTTPException(504, detail=str(exc)) from None
    except SearchFailed as exc:
        raise HTTPException(400, detail=f"q: the query cannot be run: {exc}") from None
    except StorageError as exc:
        # The object store is unreachable for a segment not in the local cache.
        raise HTTPException(503, detail=f"storage unavailable: {exc}") from None


def _cursor(f: Filters, sort: str, hit: Hit) -> str:
    value = hit.timestamp if sort.endswith("timestamp") else hit.offset
    raw = json.dumps([f.fingerprint(sort), value, hit.rank, hit.offset])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(f: Filters, sort: str, cursor: str) -> tuple[int, int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        fp, value, rank_, offset = json.loads(raw)
        after = (int(value), int(rank_), int(offset))
        if not all(-(2**63) <= v < 2**63 for v in after):
            raise ValueError("out of range")
    except (ValueError, TypeError, OverflowError):
        raise _bad("cursor", "not a cursor returned by this endpoint") from None
    if fp != f.fingerprint(sort):
        raise _bad("cursor", "belongs to a search with other parameters")
    return after


def _text(raw: bytes | None) -> tuple[str | None, Literal["utf-8", "base64"] | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def _terms(q: str) -> list[str]:
    words = re.findall(r"[\w]+(?![\w.]*:)", re.sub(r"\[[^\]]*\]|\{[^}]*\}", " ", q))
    return [w for w in words if w not in ("AND", "OR", "NOT", "TO")]


def _highlights(text: str, terms: list[str]) -> list[str]:
    if not terms:
        return []
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, terms)) + r")\b", re.IGNORECASE)
    out = []
    for m in list(pattern.finditer(text))[:3]:
        lo, hi = max(m.start() - 60, 0), min(m.end() + 60, len(text))
        frag = pattern.sub(lambda x: f"<em>{x.group(0)}</em>", text[lo:hi])
        out.append(("…" if lo else "") + frag + ("…" if hi < len(text) else ""))
    return out


def render(hit: Hit, score: bool, terms: list[str] | None) -> SearchHit:
    rec: Record | None = hit.record
    out = SearchHit(
        topic=hit.topic,
        partition=hit.partition,
        offset=hit.offset,
        timestamp=iso(hit.timestamp),
        timestamp_ms=hit.timestamp,
        score=float(hit.sort_value) if score else None,
    )
    if rec is None:
        return out
    out.key, out.key_encoding = _text(rec.key)
    out.value, out.encoding = _text(rec.value)
    if out.encoding == "utf-8" and out.value and out.value.lstrip()[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            out.value_json = json.loads(out.value)
    for name, raw in rec.headers:
        value, enc = _text(raw)
        out.headers.append(Header(key=name, value=value, encoding=enc))
    if terms is not None:
        out.highlights = _highlights(out.value or "", terms) if out.encoding == "utf-8" else []
    return out


@router.get(
    "/search",
    summary="Full-text, JSON-path and time-range search over the stored records",
    response_model=SearchResponse,
    responses=_ERRORS,
)
async def search(
    request: Request,
    f: FiltersDep,
    limit: Annotated[
        int, Query(ge=1, description="hits per page, at most CHRONIK_HTTP_MAX_PAGE (1000)")
    ] = 20,
    sort: Annotated[Sort, Query(description="order of the hits")] = "-timestamp",
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page (not with relevance)")
    ] = None,
    offset: Annotated[
        int, Query(ge=0, le=MAX_SKIP, description="hits to skip (small skips only)")
    ] = 0,
    highlight: Annotated[bool, Query(description="add highlighted value fragments")] = False,
) -> SearchResponse:
    started = time.perf_counter()
    limits(request).check_page(limit)
    if cursor is not None and sort == "relevance":
        raise _bad("cursor", "relevance order has no cursor; page with offset")
    after = _after(f, sort, cursor) if cursor else None
    sort_field = None if sort == "relevance" else sort.lstrip("-")
    storage = request.app.state.storage
    with limits(request).admit(f.expensive), storage_errors():
        result = await storage.search.search(
            f.topics,
            f.q,
            partitions=f.partitions,
            start_ms=f.start_ms,
            end_ms=f.end_ms,
            sort_field=sort_field,
            descending=sort.startswith("-") or sort == "relevance",
            after=after,
            limit=limit,
            skip=offset,
            read_committed=f.read_committed,
            heavy=f.expensive is not None,
        )
    metrics.SEARCH_SECONDS.labels("search").observe(time.perf_counter() - started)
    terms = _terms(f.q) if highlight else None
    hits = [render(h, sort == "relevance", terms) for h in result.hits]
    next_cursor = None
    if sort != "relevance" and len(result.hits) == limit:
        next_cursor = _cursor(f, sort, result.hits[-1])
    return SearchResponse(
        total=result.total,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
        next_cursor=next_cursor,
        segments_searched=result.segments,
        hits=hits,
    )


def parse_interval(value: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value.strip())
    if not m or int(m.group(1)) <= 0:
        raise _bad("interval", f"{value!r} is not like 500ms, 1s, 5m, 1h, 1d")
    width = int(m.group(1)) * _UNITS[m.group(2) or "ms"]
    if width >= 2**63:
        raise _bad("interval", f"{value!r} is out of range")
    return width


async def _aggregate(request: Request, f: Filters, agg: dict[str, Any]) -> list[dict[str, Any]]:
    with storage_errors():
        results = await request.app.state.storage.search.aggregate(
            f.topics,
            f.q,
            agg,
            partitions=f.partitions,
            start_ms=f.start_ms,
            end_ms=f.end_ms,
            read_committed=f.read_committed,
            heavy=True,
        )
    return [r for r in results if r]


async def _time_range(request: Request, f: Filters) -> tuple[int, int]:
    """[lo, hi) of the histogram: start and end, or where not given the first and last
    matching record's time."""
    lo, hi = f.start_ms, f.end_ms
    if lo is None or hi is None:
        stats = await _aggregate(
            request,
            f,
            {"lo": {"min": {"field": "timestamp"}}, "hi": {"max": {"field": "timestamp"}}},
        )
        found_lo = [s["lo"]["value"] for s in stats if s["lo"]["value"] is not None]
        found_hi = [s["hi"]["value"] for s in stats if s["hi"]["value"] is not None]
        lo = lo if lo is not None else int(min(found_lo, default=0))
        hi = hi if hi is not None else int(max(found_hi, default=0)) + 1
    return lo, max(hi, lo + 1)


@router.get(
    "/search/histogram",
    summary="Counts of matching records per time bucket",
    response_model=HistogramResponse,
    responses=_ERRORS,
)
async def histogram(
    request: Request,
    f: FiltersDep,
    interval: Annotated[
        str | None,
        Query(
            description="bucket width: 500ms, 1s, 1m, 1h, 1d; default about 100 buckets. "
            "The range (start to end, or the first to the last match where one is not "
            "given) may hold at most CHRONIK_HTTP_MAX_BUCKETS (10000) of them"
        ),
    ] = None,
) -> HistogramResponse:
    started = time.perf_counter()
    width = parse_interval(interval) if interval is not None else None
    with limits(request).admit(AGGREGATION):
        lo, hi = await _time_range(request, f)
        if width is None:
            # About 100 buckets, fewer if the limit is lower (one more may come of alignment).
            span = hi - lo
            most = max(min(100, limits(request).cfg.http_max_buckets - 1), 1)
            width = next((n for n in _NICE if span / n <= most), max(_NICE[-1], -(-span // most)))
        n = (hi - 1) // width - lo // width + 1
        limits(request).check_buckets("interval", n, f"{n} buckets; use a wider interval")
        agg = {"h": {"histogram": {"field": "timestamp", "interval": width, "min_doc_count": 1}}}
        counts: dict[int, int] = {}
        for r in await _aggregate(request, f, agg):
            for b in r["h"]["buckets"]:
                key = math.floor(b["key"])
                counts[key] = counts.get(key, 0) + int(b["doc_count"])
    buckets: list[Bucket] = []
    if counts:
        first, last = min(counts), max(counts)
        for key in range(first, last + 1, width):
            buckets.append(Bucket(start=iso(key), start_ms=key, count=counts.get(key, 0)))
    metrics.SEARCH_SECONDS.labels("histogram").observe(time.perf_counter() - started)
    return HistogramResponse(
        total=sum(counts.values()),
        interval_ms=width,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
        buckets=buckets,
    )


def _terms_field(field: str) -> str:
    if field == "key":
        return "key_exact"
    if field == "partition":
        return "partition"
    if re.fullmatch(r"value\.[^\s:]+", field):
        return field
    raise _bad("field", "one of key, partition or value.<json path>")


@router.get(
    "/search/terms",
    summary="Top values of a field among the matching records, with counts",
    response_model=TermsResponse,
    responses=_ERRORS,
)
async def terms(
    request: Request,
    f: FiltersDep,
    field: Annotated[str, Query(description="key, partition, or a JSON path such as value.level")],
    size: Annotated[
        int, Query(ge=1, description="how many values, at most CHRONIK_HTTP_MAX_BUCKETS (10000)")
    ] = 10,
) -> TermsResponse:
    started = time.perf_counter()
    name = _terms_field(field)
    limits(request).check_buckets("size", size, f"{size} terms")
    agg = {"t": {"terms": {"field": name, "size": 65_000, "segment_size": 65_000}}}
    counts: dict[Any, int] = {}
    other = 0
    total_agg = {"n": {"value_count": {"field": "offset"}}}
    with limits(request).admit(AGGREGATION):
        results = await _aggregate(request, f, {**agg, **total_agg})
    total = 0
    for r in results:
        total += int(r["n"]["value"] or 0)
        other += int(r["t"].get("sum_other_doc_count", 0))
        for b in r["t"]["buckets"]:
            counts[b["key"]] = counts.get(b["key"], 0) + int(b["doc_count"])
    top = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    other += sum(n for _k, n in top[size:])
    metrics.SEARCH_SECONDS.labels("terms").observe(time.perf_counter() - started)
    return TermsResponse(
        field=field,
        total=total,
        other=other,
        took_ms=round((time.perf_counter() - started) * 1000, 3),
        terms=[TermCount(value=_term_value(k), count=n) for k, n in top[:size]],
    )


def _term_value(key: Any) -> str | int | float | bool:
    if isinstance(key, float) and key.is_integer():
        return int(key)
    if isinstance(key, str | int | float | bool):
        return key
    return str(key)
