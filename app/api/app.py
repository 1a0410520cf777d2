"""FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter

from ..storage.store import Storage
from . import health, indexer, metrics, search, segments, topics

HTTP_REQUESTS = Counter(
    "chronik_http_requests", "HTTP requests by route template and status", ["route", "status"]
)


def create_app(storage: Storage) -> FastAPI:
    app = FastAPI(
        title="Chronik",
        version="0.1.0",
        description="Search and analytics over the records stored by the Chronik Kafka broker.",
    )
    app.state.storage = storage

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        HTTP_REQUESTS.labels(path, str(response.status_code)).inc()
        return response

    app.state.ready = False
    app.include_router(health.router)
    app.include_router(topics.router)
    app.include_router(search.router)
    app.include_router(segments.router)
    app.include_router(indexer.router)
    app.include_router(metrics.router)
    return app
