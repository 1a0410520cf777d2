"""The web console: GET / answers the shell page, /console/ its CSS and JS modules.

The shell holds no data (every figure comes from the public API, with the caller's
credentials), so it is served without authentication and kept out of the OpenAPI spec."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PREFIX = "/console"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    # no-cache: a new release's shell must not run against stale module URLs.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PREFIX, StaticFiles(directory=STATIC), name="console")
