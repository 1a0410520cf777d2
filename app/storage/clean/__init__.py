"""Log compaction of sealed search segments: the cleaner's CPU job (job.py, run in a worker
process: the offset map, the rewrite of each segment keeping the latest record per key, its
re-indexing and packaging) and, in the service, the task that plans runs and swaps the
cleaned segments into the registry. Imports log, segments, tier and index (the document
builder)."""

from app.storage.clean.cleaner import Cleaner, CleanPlan, plan_clean
from app.storage.clean.job import CleanedSegment, CleanJob, CleanResult, SourceSegment, run_clean

__all__ = [
    "CleanJob",
    "CleanPlan",
    "CleanResult",
    "CleanedSegment",
    "Cleaner",
    "SourceSegment",
    "plan_clean",
    "run_clean",
]
