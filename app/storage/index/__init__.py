"""Turns the log into search segments: the indexer supervisor (service process), the
worker process and its per-partition indexers, sealing and merging, and the one
document schema. Imports log and segments."""

from app.storage.index.docs import PRODUCER_ID, DocBuilder, build_schema
from app.storage.index.partition_indexer import WorkerConfig, open_index_dir, partition_dir_name
from app.storage.index.sealing import SEALING, object_key
from app.storage.index.supervisor import Indexer

__all__ = [
    "PRODUCER_ID",
    "SEALING",
    "DocBuilder",
    "Indexer",
    "WorkerConfig",
    "build_schema",
    "object_key",
    "open_index_dir",
    "partition_dir_name",
]
