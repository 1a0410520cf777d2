"""Prometheus metrics of the storage layers. Indexer workers are separate processes: they
report counts to the service over their pipe and the service updates these."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INDEXER_RECORDS = Counter("chronik_indexer_records", "Records indexed into search segments")
INDEXER_LAG_RECORDS = Gauge(
    "chronik_indexer_lag_records",
    "Records acknowledged but not yet searchable",
    ["topic", "partition"],
)
INDEXER_LAG_SECONDS = Gauge(
    "chronik_indexer_lag_seconds",
    "Age of the oldest acknowledged record that is not yet searchable",
    ["topic", "partition"],
)
INDEXER_COMMIT_SECONDS = Histogram(
    "chronik_indexer_commit_seconds",
    "Time to commit an open search segment",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WAL_FSYNC_SECONDS = Histogram(
    "chronik_wal_fsync_seconds",
    "Time of one fsync of a partition's write-ahead log (acks with fsync=always wait for it)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
INDEXER_ERRORS = Counter(
    "chronik_indexer_errors",
    "Records or batches that could not be indexed as given (bad codec data, JSON that does "
    "not fit), and worker failures",
)
INDEXER_WORKER_RESTARTS = Counter(
    "chronik_indexer_worker_restarts",
    "Indexer worker processes restarted because they died or their pipe failed",
)
SEGMENTS_PUBLISHED = Counter(
    "chronik_segments_published", "Search segments uploaded to the object store"
)
SEGMENTS = Gauge("chronik_segments", "Sealed search segments in the registry", ["topic"])
SEGMENT_BYTES = Gauge("chronik_segment_bytes", "Bytes of sealed search segments", ["topic"])
OBJECTSTORE_REQUESTS = Counter(
    "chronik_objectstore_requests", "Object store requests", ["op", "outcome"]
)
OBJECTSTORE_SECONDS = Histogram(
    "chronik_objectstore_seconds",
    "Object store request latency",
    ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FETCH_BYTES = Counter("chronik_fetch_bytes", "Bytes served to Kafka fetches", ["layer"])
WAL_BYTES = Gauge("chronik_wal_bytes", "Bytes in local WAL segments", ["topic", "partition"])
CLEANER_RUNS = Counter(
    "chronik_cleaner_runs", "Log cleaner runs that rewrote part of a compacted partition"
)
CLEANER_BYTES = Counter(
    "chronik_cleaner_bytes",
    "Segment bytes the log cleaner read and wrote",
    ["direction"],
)
CLEANER_DIRTY_RATIO = Gauge(
    "chronik_cleaner_dirty_ratio",
    "Share of a compacted partition's cleanable bytes not cleaned yet",
    ["topic", "partition"],
)

SEARCH_SECONDS = Histogram(
    "chronik_search_seconds",
    "Time to answer a search request",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SEARCH_SEGMENTS_OPENED = Counter(
    "chronik_search_segments_opened", "Segment indexes searched (sealed and open)"
)
SEARCH_FRESHNESS = Gauge(
    "chronik_search_freshness_seconds",
    "Age of the oldest acknowledged record that search does not find yet (all partitions)",
)

FETCH_MEMORY = FETCH_BYTES.labels("memory")
FETCH_WAL = FETCH_BYTES.labels("wal")
FETCH_SEGMENT_CACHE = FETCH_BYTES.labels("segment_cache")
FETCH_OBJECT_STORE = FETCH_BYTES.labels("object_store")
