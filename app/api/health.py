"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

router = APIRouter(tags=["health"])


class Status(BaseModel):
    status: str

    model_config = {"json_schema_extra": {"examples": [{"status": "ready"}]}}


@router.get("/healthz", summary="Liveness: the process serves HTTP", response_model=Status)
async def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: recovery finished and both listeners are up",
    response_model=Status,
    responses={503: {"model": Status, "description": "still starting or shutting down"}},
)
async def readyz(request: Request, response: Response) -> Status:
    if not request.app.state.ready:
        response.status_code = 503
        return Status(status="starting")
    return Status(status="ready")
