"""FastAPI application factory."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import Counter

from app.config import LimitsConfig
from app.security import Security

from ..storage.store import Storage
from . import console, groups, health, indexer, metrics, search, segments, tokens, topics, whoami
from .auth import HttpAuth, authenticate
from .limits import Limits
from .search_models import Problem

HTTP_REQUESTS = Counter(
    "chronik_http_requests", "HTTP requests by route template and status", ["route", "status"]
)

# Every route authenticates (auth.py); those that check ACLs add 403.
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "no or wrong credentials (CHRONIK_HTTP_AUTH=required); the "
        "WWW-Authenticate header names the schemes",
    },
    429: {
        "model": Problem,
        "description": "too many failed authentications from this address, or (searches) "
        "too many expensive searches at once; see Retry-After",
    },
}
_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "the principal's ACLs do not allow it (message)"},
}


def create_app(storage: Storage, security: Security | None = None) -> FastAPI:
    """`security` None: no authentication, no ACLs, default limits (tools and tests)."""
    app = FastAPI(
        title="Chronik",
        version="0.1.0",
        description="Search and analytics over the records stored by the Chronik Kafka broker.",
        dependencies=[Depends(authenticate)],
        responses=_AUTH,
    )
    app.state.storage = storage
    app.state.security = security
    app.state.auth = HttpAuth(security)
    app.state.limits = Limits(security.limits if security is not None else LimitsConfig())

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        HTTP_REQUESTS.labels(path, str(response.status_code)).inc()
        return response

    app.state.ready = False
    app.include_router(health.router)
    app.include_router(topics.router, responses=_FORBIDDEN)
    app.include_router(groups.router, responses=_FORBIDDEN)
    app.include_router(search.router, responses=_FORBIDDEN)
    app.include_router(segments.router, responses=_FORBIDDEN)
    app.include_router(indexer.router, responses=_FORBIDDEN)
    app.include_router(metrics.router, responses=_FORBIDDEN)
    app.include_router(tokens.router)
    app.include_router(whoami.router)
    console.mount(app)
    return app
