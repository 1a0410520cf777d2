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
from app.storage.segments.registry import (
    DELETING,
    LOCAL,
    UPLOADED,
    Checkpoint,
    CleanerState,
    Registry,
    SegmentRow,
)

__all__ = [
    "DELETING",
    "LOCAL",
    "UPLOADED",
    "BatchIndex",
    "Checkpoint",
    "CleanerState",
    "Registry",
    "SegmentFormatError",
    "SegmentRow",
    "extract_tantivy",
    "read_manifest",
    "tantivy_commit",
    "write_segment",
]
