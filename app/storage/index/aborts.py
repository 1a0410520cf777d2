"""Aborted transactions' documents deleted from search segments as they are sealed or merged.

The rule: every sealed or merged segment holding offsets [base, last] has the documents of
every aborted transaction whose ABORT marker is at or below `last` and that overlaps
[base, last] deleted (Tantivy deletes, committed before the segment is packaged). Search
(search/engine.py) then leaves out, in a sealed segment, only the aborted transactions with a
marker past its `last` that overlap it (a transaction that straddled the seal and aborted
after it), besides the open ones; in the open segment and one being packaged, all of them.
So a query over sealed segments, most of history, does not cost more as aborted
transactions accumulate.

Sound because the service appends an aborted transaction's entry to `aborted-txns` in the
same event-loop step that writes its marker, and the worker reads the WAL only up to the high
watermark the service sends it, later: once the worker has indexed through `last`, every
entry with a marker at or below it is in the file (log/txn.py: read_aborted). Entries dropped
from the file below the log start are covered by search's cut at the log start."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import tantivy

from app.storage.index.docs import PRODUCER_ID, build_schema
from app.storage.log import AbortedTxn, read_aborted
from app.storage.segments import SegmentRow

# Deletes need a writer; Tantivy wants at least 15 MB of heap per indexing thread.
_WRITER_HEAP = 16 * 1024 * 1024

_schema: tantivy.Schema | None = None


def _offsets(lo: int, hi: int) -> tantivy.Query:
    global _schema
    if _schema is None:
        _schema = build_schema()
    return tantivy.Query.range_query(
        _schema, "offset", tantivy.FieldType.Integer, lo, hi, include_lower=True, include_upper=True
    )


def settled(aborted: Iterable[AbortedTxn], base: int, last: int) -> list[AbortedTxn]:
    """The aborted transactions whose documents a segment [base, last] must not hold: a
    marker at or below `last` is past the transaction's records, so the transaction overlaps
    the segment exactly when its marker is at or above `base`."""
    return sorted(set(a for a in aborted if base <= a.last_offset <= last))


def settled_by_merge(
    aborted: Iterable[AbortedTxn], rows: Sequence[SegmentRow], last: int
) -> list[AbortedTxn]:
    """Those of a merge into [rows[0].base, last] that its sources still hold: each source
    deleted the ones with a marker up to its own last offset."""
    out: set[AbortedTxn] = set()
    for a in aborted:
        for r in rows:
            if r.last_offset < a.last_offset <= last and a.first_offset <= r.last_offset:
                out.add(a)
    return sorted(out)


def delete_query(txns: Sequence[AbortedTxn]) -> tantivy.Query:
    """Documents of `txns`: per producer, its id and any of its transactions' offsets."""
    global _schema
    if _schema is None:
        _schema = build_schema()
    ranges: dict[int, list[tantivy.Query]] = {}
    for a in txns:
        ranges.setdefault(a.producer_id, []).append(_offsets(a.first_offset, a.last_offset))
    clauses = []
    for pid, rs in ranges.items():
        any_range = rs[0] if len(rs) == 1 else _should(rs)
        pid_term = tantivy.Query.term_query(_schema, PRODUCER_ID, pid)
        clauses.append(
            tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, pid_term), (tantivy.Occur.Must, any_range)]
            )
        )
    return clauses[0] if len(clauses) == 1 else _should(clauses)


def _should(queries: list[tantivy.Query]) -> tantivy.Query:
    return tantivy.Query.boolean_query([(tantivy.Occur.Should, q) for q in queries])


def delete_settled(writer: tantivy.IndexWriter, log_dir: Path, base: int, last: int) -> int:
    """Queue the deletes of a segment about to be sealed (the caller commits); returns how
    many transactions they cover."""
    txns = settled(read_aborted(log_dir), base, last)
    if txns:
        writer.delete_documents_by_query(delete_query(txns))
    return len(txns)


def delete_in_merge(index_dir: Path, log_dir: Path, rows: Sequence[SegmentRow]) -> int:
    """Delete, in the merged index at `index_dir`, what the rule asks of it beyond what its
    sources deleted, and commit; returns how many transactions that covered."""
    txns = settled_by_merge(read_aborted(log_dir), rows, rows[-1].last_offset)
    if not txns or not _has_producer_id(index_dir):
        # Sources indexed before the field existed hold no transactional records.
        return 0
    writer = tantivy.Index.open(str(index_dir)).writer(_WRITER_HEAP, 1)
    writer.delete_documents_by_query(delete_query(txns))
    writer.commit()
    # Dropped, not waited for: a merge of Tantivy segments it may have begun is not part of
    # the commit, which is all that is packaged (segments/format.py: tantivy_commit).
    del writer
    return len(txns)


def _has_producer_id(index_dir: Path) -> bool:
    meta = json.loads((index_dir / "meta.json").read_bytes())
    return any(f.get("name") == PRODUCER_ID for f in meta.get("schema", ()))
