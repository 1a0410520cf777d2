"""Search over segments: the engine that plans a query over the registry and the open
segments and merges hits (service process), and what its worker pool runs on one
index. Imports log, segments, tier and index; nothing imports it but the facade."""

from app.storage.search.engine import Hit, SearchEngine, SearchFailed, SearchTimeout
from app.storage.search.execute import check_query, rewrite_query

__all__ = ["Hit", "SearchEngine", "SearchFailed", "SearchTimeout", "check_query", "rewrite_query"]
