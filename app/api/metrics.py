"""Prometheus metrics of the whole service (storage layers, indexer, object store)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.security.acl import Operation

from .auth import CallerDep, require_cluster

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request, caller: CallerDep) -> Response:
    require_cluster(request, caller, Operation.DESCRIBE)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
