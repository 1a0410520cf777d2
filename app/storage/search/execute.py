"""Search work done in the search pool's processes: one Tantivy index (a sealed segment or a
partition's open segment) per task. Tantivy's binding re-takes the GIL around every call, so
searching beside the event loop would stall it (ARCHITECTURE.md, decision 4).

Every index holds one partition, so within an index the order (sort field, partition,
offset) is (sort field, offset). Sorting by timestamp needs the tie-break: the hits on the
last timestamp of a page are fetched again ordered by offset.

Read committed: a task carries the partition's exclusions for the index's offsets, each
(producer id, first offset, last offset or None for a transaction still open); documents
with that `producer_id` in that range are left out of hits, counts and aggregations alike.
An index written before the field existed holds no transactional records and gets none.
A task may also carry `start_offset`, the log start for an index that straddles it: the
records below it were deleted (DeleteRecords, retention) and their aborted transactions are
no longer listed."""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tantivy

from app.storage.index import PRODUCER_ID, build_schema

DEFAULT_FIELDS = ["key", "text"]
# Tantivy's query parser recurses once per parenthesis on the caller's stack: about 20,000
# nested groups overflow it and kill the process, whatever the HTTP limits are set to.
MAX_QUERY_DEPTH = 100

_NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+\.?\d*(?:[eE][-+]?\d+)?)(?![\w.])")
_CACHE = 64

_indexes: OrderedDict[tuple[str, int], tantivy.Index] = OrderedDict()
# Whether each cached index's schema has `producer_id` (an older index's has not: a query
# naming a field the index lacks panics inside Tantivy).
_has_pid: dict[tuple[str, int], bool] = {}
_schema: tantivy.Schema | None = None

# (producer id, first offset, last offset; None: the transaction is open, up to the end)
Exclusion = tuple[int, int, int | None]


@dataclass(frozen=True)
class SegmentTask:
    index_dir: str
    # The index's (topic, partition) place in the order: hits tie-break on it after the
    # sort field, then on offset.
    rank: int
    query: str
    start_ms: int | None = None
    end_ms: int | None = None
    # The open segment holds offsets from its base: sealed ones below are searched apart.
    min_offset: int | None = None
    generation: int = 0  # the open segment's base: a new one is a new index
    sort_field: str | None = "timestamp"  # None: relevance
    descending: bool = True
    # (sort value, rank, offset) of the last hit already returned.
    after: tuple[int, int, int] | None = None
    limit: int = 20
    # The index's newest timestamp (oldest, sorting ascending) when known (sealed ones):
    # once the indexes searched before it in the same job hold `limit` better hits, it
    # can add none and is only counted.
    bound: int | None = None
    exclude: tuple[Exclusion, ...] = ()
    # Offsets at and past it are left out (the log end when the exclusions were taken: a
    # transaction begun after that is in none of them).
    end_offset: int | None = None
    # Offsets below it are left out (the log start, when the index holds some below it).
    start_offset: int | None = None


@dataclass
class SegmentResult:
    total: int
    # An open segment sealed and reset while it was opened: the search plans again.
    vanished: bool = False
    # Tantivy panicked on this query (a panic cannot cross the process boundary).
    error: str | None = None
    # (sort value or score, offset, timestamp)
    hits: list[tuple[float | int, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class AggTask:
    index_dir: str
    query: str
    agg: dict[str, Any]
    start_ms: int | None = None
    end_ms: int | None = None
    min_offset: int | None = None
    generation: int = 0
    exclude: tuple[Exclusion, ...] = ()
    end_offset: int | None = None
    start_offset: int | None = None


def schema() -> tantivy.Schema:
    global _schema
    if _schema is None:
        _schema = build_schema()
    return _schema


def _open(index_dir: str, generation: int, live: bool) -> tantivy.Index:
    """The index, kept open between searches; a `live` (open) segment's worker commits
    to it meanwhile, so its searcher is reloaded. Sealed ones never change."""
    key = (index_dir, generation)
    index = _indexes.get(key)
    if index is None:
        index = tantivy.Index.open(index_dir)
        _indexes[key] = index
        _has_pid[key] = _has_field(index_dir, PRODUCER_ID)
        if len(_indexes) > _CACHE:
            _forget(next(iter(_indexes)))
    else:
        _indexes.move_to_end(key)
        if live:
            index.reload()
    return index


def _forget(key: tuple[str, int]) -> None:
    _indexes.pop(key, None)
    _has_pid.pop(key, None)


def _has_field(index_dir: str, name: str) -> bool:
    """From the index's meta.json: the parser takes an unknown field for a JSON path."""
    try:
        meta = json.loads((Path(index_dir) / "meta.json").read_bytes())
    except (OSError, ValueError):
        return True
    return any(f.get("name") == name for f in meta.get("schema", ()))


def parse(index: tantivy.Index, query: str) -> tantivy.Query:
    if query.strip() in ("", "*"):
        return tantivy.Query.all_query()
    return index.parse_query(query, DEFAULT_FIELDS)


def _range(name: str, lo: int | None, hi: int | None, lo_in: bool, hi_in: bool) -> tantivy.Query:
    return tantivy.Query.range_query(
        schema(),
        name,
        tantivy.FieldType.Integer,
        lo,
        hi,
        include_lower=lo_in or lo is None,
        include_upper=hi_in or hi is None,
    )


def _all(*queries: tantivy.Query) -> tantivy.Query:
    if len(queries) == 1:
        return queries[0]
    return tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for q in queries])


def _any(*queries: tantivy.Query) -> tantivy.Query:
    if len(queries) == 1:
        return queries[0]
    return tantivy.Query.boolean_query([(tantivy.Occur.Should, q) for q in queries])


def base_query(
    index: tantivy.Index,
    query: str,
    start_ms: int | None,
    end_ms: int | None,
    min_offset: int | None,
) -> tantivy.Query:
    parts = [parse(index, query)]
    if start_ms is not None or end_ms is not None:
        parts.append(_range("timestamp", start_ms, end_ms, True, False))
    if min_offset is not None:
        parts.append(_range("offset", min_offset, None, True, True))
    return _all(*parts)


def excluding(q: tantivy.Query, exclude: tuple[Exclusion, ...]) -> tantivy.Query:
    """`q` without the documents of the excluded transactions: one clause per producer, its
    offset ranges under it."""
    if not exclude:
        return q
    ranges: dict[int, list[tantivy.Query]] = {}
    for pid, first, last in exclude:
        ranges.setdefault(pid, []).append(_range("offset", first, last, True, True))
    clauses = [
        _all(tantivy.Query.term_query(schema(), PRODUCER_ID, pid), _any(*rs))
        for pid, rs in ranges.items()
    ]
    return tantivy.Query.boolean_query(
        [(tantivy.Occur.Must, q), (tantivy.Occur.MustNot, _any(*clauses))]
    )


def _after(t: SegmentTask) -> tantivy.Query | None:
    """Documents that come after the cursor in the order (sort field, partition, offset)."""
    if t.after is None or t.sort_field is None:
        return None
    value, rank, off = t.after
    desc = t.descending

    def beyond(name: str, v: int, inclusive: bool) -> tantivy.Query:
        return (
            _range(name, None, v, True, inclusive)
            if desc
            else _range(name, v, None, inclusive, True)
        )

    earlier = t.rank < rank if desc else t.rank > rank
    if t.sort_field == "offset":
        # Key (offset, rank): the same offset in an index that sorts later is after.
        return beyond("offset", off, earlier)
    if t.rank != rank:
        return beyond("timestamp", value, earlier)
    return _any(
        beyond("timestamp", value, False),
        _all(_range("timestamp", value, value, True, True), beyond("offset", off, False)),
    )


def _hits(searcher: tantivy.Searcher, result: Any) -> list[tuple[float | int, int, int]]:
    addrs = [a for _k, a in result.hits]
    if not addrs:
        return []
    offsets = searcher.fast_field_values("offset", addrs)
    stamps = searcher.fast_field_values("timestamp", addrs)
    return [
        (k, int(o or 0), int(ts or 0))
        for (k, _a), o, ts in zip(result.hits, offsets, stamps, strict=True)
    ]


def _count(result: Any) -> int:
    return int(result.count or 0)


def search_many(tasks: list[SegmentTask]) -> list[SegmentResult]:
    """One job of a search: its indexes newest first (sorting by time), and those that
    cannot hold one of the best `limit` hits only counted. Counting a term over a 1M-record
    index took 0.8 ms against 2.8 ms for its 20 newest hits."""
    results: list[SegmentResult | None] = [None] * len(tasks)
    best: list[int] = []  # sort values of the hits found so far, best first
    for i in sorted(range(len(tasks)), key=lambda i: _newest_first(tasks[i])):
        t = tasks[i]
        if _cannot_place(t, best):
            results[i] = count_segment(t)
            continue
        res = search_segment(t)
        results[i] = res
        if t.sort_field == "timestamp" and res.hits:
            best = sorted(best + [int(h[0]) for h in res.hits], reverse=t.descending)[: t.limit]
    return [r for r in results if r is not None]


def _newest_first(t: SegmentTask) -> tuple[int, int]:
    if t.sort_field != "timestamp" or t.bound is None:
        return (0, 0)  # open segments (bound unknown) first: they hold the newest records
    return (1, -t.bound if t.descending else t.bound)


def _cannot_place(t: SegmentTask, best: list[int]) -> bool:
    if t.sort_field != "timestamp" or t.bound is None or len(best) < t.limit:
        return False
    worst = best[t.limit - 1]
    return t.bound < worst if t.descending else t.bound > worst


def aggregate_many(tasks: list[AggTask]) -> list[dict[str, Any] | None]:
    return [aggregate_segment(t) for t in tasks]


def search_segment(t: SegmentTask) -> SegmentResult:
    return _guarded(_search, t)


def count_segment(t: SegmentTask) -> SegmentResult:
    """The number of matches only."""
    return _guarded(_count_only, t)


def _guarded(fn: Callable[[SegmentTask], SegmentResult], t: SegmentTask) -> SegmentResult:
    try:
        return fn(t)
    except (KeyboardInterrupt, SystemExit):
        raise
    except ValueError:
        # An open segment is written by its worker meanwhile: it was sealed and removed, or
        # a merge inside it removed files this reader had just listed. A sealed one was
        # merged away or deleted by retention since the search was planned. Plan again.
        _forget((t.index_dir, t.generation))
        return SegmentResult(0, vanished=True)
    except BaseException as exc:
        # pyo3 raises a Rust panic as PanicException, a BaseException that cannot be sent
        # back across the process boundary: report it as text.
        return SegmentResult(0, error=f"{type(exc).__name__}: {exc}")


def _prepared(t: SegmentTask | AggTask) -> tuple[tantivy.Searcher, tantivy.Query] | None:
    """The index's searcher and the task's query with its time and offset filters; None if
    the index holds no documents."""
    index = _open(t.index_dir, t.generation, t.min_offset is not None)
    searcher = index.searcher()
    if searcher.num_docs == 0:
        return None
    q = base_query(index, t.query, t.start_ms, t.end_ms, t.min_offset)
    if t.end_offset is not None or t.start_offset is not None:
        q = _all(q, _range("offset", t.start_offset, t.end_offset, True, False))
    if t.exclude and _has_pid.get((t.index_dir, t.generation), True):
        q = excluding(q, t.exclude)
    return searcher, q


def _count_only(t: SegmentTask) -> SegmentResult:
    prepared = _prepared(t)
    if prepared is None:
        return SegmentResult(0)
    searcher, base = prepared
    return SegmentResult(_count(searcher.search(base, 1)))


def _search(t: SegmentTask) -> SegmentResult:
    prepared = _prepared(t)
    if prepared is None:
        return SegmentResult(0)
    searcher, base = prepared
    after = _after(t)
    q = base if after is None else _all(base, after)
    limit = max(t.limit, 1)  # limit=0 panics inside Tantivy
    if t.sort_field is None:
        res = searcher.search(q, limit)
        return SegmentResult(_count(res), hits=_hits(searcher, res))
    order = tantivy.Order.Desc if t.descending else tantivy.Order.Asc
    res = searcher.search(q, limit, order_by_field=t.sort_field, order=order)
    total = _count(res if after is None else searcher.search(base, 1))
    hits = _hits(searcher, res)
    if t.sort_field == "timestamp":
        if len(hits) == limit:
            # Hits on the page's last timestamp may not be the first ones by offset.
            last = hits[-1][2]
            tie = _all(q, _range("timestamp", last, last, True, True))
            group = searcher.search(tie, limit, order_by_field="offset", order=order)
            hits = [h for h in hits if h[2] != last] + _hits(searcher, group)
        sign = -1 if t.descending else 1
        hits = [(ts, off, ts) for _k, off, ts in hits]
        hits.sort(key=lambda h: (sign * h[2], sign * h[1]))
        hits = hits[:limit]
    return SegmentResult(total, hits=hits)


def aggregate_segment(t: AggTask) -> dict[str, Any] | None:
    """The aggregation's result; None if the open segment changed under it (see
    search_segment)."""
    try:
        return _aggregate(t)
    except (KeyboardInterrupt, SystemExit):
        raise
    except ValueError:
        _forget((t.index_dir, t.generation))
        return None
    except BaseException as exc:
        return {"__error__": f"{type(exc).__name__}: {exc}"}


def _aggregate(t: AggTask) -> dict[str, Any]:
    prepared = _prepared(t)
    if prepared is None:
        return {}
    searcher, q = prepared
    result: dict[str, Any] = searcher.aggregate(q, t.agg)
    return result


# `value:word` means the value's text, which lives in the `text` field.
_VALUE_TEXT = re.compile(r"(?<![\w.])value:")
_AND_NOT = re.compile(r"\bAND\s+NOT\s+")
_LEADING_NOT = re.compile(r"(^|\()\s*NOT\s+")


def rewrite_query(query: str) -> str:
    """The user's query in the form Tantivy evaluates as meant. Tantivy turns `a AND NOT b`
    into a required clause holding only an exclusion, which matches nothing, and refuses a
    query that only excludes; `a AND -b` and `* -b` say the same and work."""
    query = _VALUE_TEXT.sub("text:", query)
    query = _AND_NOT.sub("AND -", query)
    return _LEADING_NOT.sub(lambda m: m.group(1) + "* -", query)


def check_query(query: str) -> None:
    """Raise ValueError with the parser's messages (with positions) if `query` does not
    parse."""
    if query.strip() in ("", "*"):
        return
    depth = _nesting(query)
    if depth > MAX_QUERY_DEPTH:
        raise ValueError(f"query nests {depth} parentheses deep, at most {MAX_QUERY_DEPTH}")
    for m in _NUMBER.finditer(query):
        value = float(m.group(0))
        if not math.isfinite(value) or abs(value) >= 2**63:
            raise ValueError(f"number {m.group(0)} at position {m.start()} is out of range")
    global _checker
    if _checker is None:
        _checker = tantivy.Index(schema())
    try:
        _checker.parse_query(query, DEFAULT_FIELDS)
    except ValueError as exc:
        # The lenient parser says where each error is; the strict one does not.
        _q, errors = _checker.parse_query_lenient(query, DEFAULT_FIELDS)
        raise ValueError("; ".join(str(e) for e in errors) or str(exc)) from None


def _nesting(query: str) -> int:
    """The deepest parenthesis nesting outside quoted phrases (a backslash escapes)."""
    depth = deepest = 0
    quoted = escaped = False
    for ch in query:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth = max(0, depth - 1)
    return deepest


_checker: tantivy.Index | None = None
