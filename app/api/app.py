"""FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from ..storage.store import Storage
from . import health, metrics, search, topics


def create_app(storage: Storage) -> FastAPI:
    app = FastAPI(
        title="Chronik",
        version="0.1.0",
        description="Search and analytics over the records stored by the Chronik Kafka broker.",
    )
    app.state.storage = storage
    app.state.ready = False
    app.include_router(health.router)
    app.include_router(topics.router)
    app.include_router(search.router)
    app.include_router(metrics.router)
    return app
