"""The search segment file format (batch bytes, batch index, Tantivy files, manifest) and
the SQLite registry that catalogues segments and indexer checkpoints. Shared by
index, tier and search, in every process; imports only log."""

from app.storage.segments.format import (
    BatchIndex,
    SegmentFormatError,
    extract_tantivy,
    read_manifest,
    tantivy_commit,
    write_segment,
)
from app.storage.segments.registry import LOCAL, UPLOADED, Checkpoint, Registry, SegmentRow

__all__ = [
    "LOCAL",
    "UPLOADED",
    "BatchIndex",
    "Checkpoint",
    "Registry",
    "SegmentFormatError",
    "SegmentRow",
    "extract_tantivy",
    "read_manifest",
    "tantivy_commit",
    "write_segment",
]
