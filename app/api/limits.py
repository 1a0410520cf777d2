"""Bounds on what one HTTP search may ask for (LimitsConfig): the length and complexity of
`q`, hits per page, histogram buckets and terms, and how many expensive searches run at
once.

What is expensive: a query whose cost grows with the index rather than with its matches,
or one that visits every match. Those are aggregations (every histogram and terms request),
phrases (`"…"`: positions of every document holding the words), ranges (`[a TO b]`, `{…}`,
`>`/`<`) and sets (`IN […]`), wildcards and existence tests (`*` anywhere but a lone `*`),
fuzzy terms and slops (`~`), and a search for everything (`q` empty or `*`) with neither
`start` nor `end`. Plain terms, `field:value` pairs and their AND/OR/NOT combinations are
cheap: a term's posting list is as long as its matches, and the newest hits come first
without reading the rest. Expensive searches beyond `max_concurrent_searches` answer 429
at once with Retry-After; they also run in their own lane of the search pool
(storage/search/lanes.py), so a cheap search keeps answering while they run."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from fastapi import HTTPException

from app.config import LimitsConfig

RETRY_AFTER_S = 1
_CLAUSE = re.compile(r'"[^"]*"|\[[^\]]*\]|\{[^}]*\}|\(|[^\s()"\[\]{}]+')
_OPERATORS = {"AND", "OR", "NOT", "TO", "IN", "+", "-", "&&", "||", "!"}


def bad(param: str, message: str) -> HTTPException:
    # The shape of FastAPI's own 422s (HTTPValidationError), which the spec documents.
    error = {"loc": ["query", param], "msg": f"{param}: {message}", "type": "value_error"}
    return HTTPException(422, detail=[error])


def clauses(q: str) -> int:
    """Terms and clauses in `q`: each word of a phrase, each member of an `IN […]` set, each
    range, each other term and each parenthesised group (so nesting is bounded too);
    operators are free."""
    n = 0
    previous = ""
    for m in _CLAUSE.finditer(q):
        token = m.group(0)
        if token.startswith('"'):
            n += max(len(token[1:-1].split()), 1)
        elif token[0] in "[{":
            n += max(len(token[1:-1].split()), 1) if previous == "IN" else 1
        elif token == "(" or (
            token.lstrip("+-") not in ("", *_OPERATORS) and not token.endswith(":")
        ):
            n += 1
        previous = token
    return n


def expensive(q: str, start_ms: int | None, end_ms: int | None) -> str | None:
    """Why a search with this (rewritten) query is expensive, or None if it is cheap."""
    bare = q.strip()
    if bare in ("", "*"):
        return "it matches every record in no time range" if start_ms is end_ms is None else None
    if '"' in bare:
        return "it has a phrase"
    if re.search(r"[\[{]|:\s*[<>]", bare):
        return "it has a range or a set"
    if "*" in bare:
        return "it has a wildcard"
    if "~" in bare:
        return "it has a fuzzy term"
    return None


class Limits:
    def __init__(self, cfg: LimitsConfig) -> None:
        self.cfg = cfg
        self.expensive_running = 0

    def check_query(self, q: str) -> None:
        cfg = self.cfg
        if len(q) > cfg.http_max_query_length:
            raise bad(
                "q",
                f"{len(q)} characters, more than the {cfg.http_max_query_length} allowed "
                "(CHRONIK_HTTP_MAX_QUERY_LENGTH)",
            )
        n = clauses(q)
        if n > cfg.http_max_query_clauses:
            raise HTTPException(
                400,
                detail=f"q: {n} terms and clauses, more than the {cfg.http_max_query_clauses} "
                "allowed (CHRONIK_HTTP_MAX_QUERY_CLAUSES); split the search",
            )

    def check_page(self, limit: int) -> None:
        if limit > self.cfg.http_max_page:
            raise bad(
                "limit", f"at most {self.cfg.http_max_page} hits per page (CHRONIK_HTTP_MAX_PAGE)"
            )

    def check_buckets(self, param: str, n: int, what: str) -> None:
        if n > self.cfg.http_max_buckets:
            raise bad(
                param,
                f"{what}: more than {self.cfg.http_max_buckets} (CHRONIK_HTTP_MAX_BUCKETS)",
            )

    @contextlib.contextmanager
    def admit(self, reason: str | None) -> Iterator[None]:
        """Hold one of the expensive searches' places while the body runs (nothing for a
        cheap search); none free -> 429."""
        if reason is None:
            yield
            return
        if self.expensive_running >= self.cfg.max_concurrent_searches:
            raise HTTPException(
                429,
                detail=f"too many expensive searches at once ({self.expensive_running}, "
                f"CHRONIK_MAX_CONCURRENT_SEARCHES); this one is expensive because {reason}: "
                "retry later, or narrow it (plain terms, a time range)",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.expensive_running += 1
        try:
            yield
        finally:
            self.expensive_running -= 1
