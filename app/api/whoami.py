"""GET /whoami: the caller as the API sees it, for the console's header and sign-in."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .auth import CallerDep, HttpAuth

router = APIRouter(tags=["console"])


class WhoAmI(BaseModel):
    principal: str = Field(description="the Kafka principal ACLs are checked against")
    user: str | None = Field(description="the user's name; null when anonymous")
    auth: Literal["none", "required"] = Field(description="CHRONIK_HTTP_AUTH")
    authenticated: bool = Field(description="credentials were given and accepted")
    kafka_bootstrap: str | None = Field(
        description="advertised Kafka host:port, for consumer commands; null when unknown"
    )


@router.get("/whoami", summary="Who the caller is", response_model=WhoAmI)
async def whoami(request: Request, caller: CallerDep) -> WhoAmI:
    auth: HttpAuth = request.app.state.auth
    return WhoAmI(
        principal=caller.principal,
        user=caller.user,
        auth="required" if auth.required else "none",
        authenticated=auth.required and not caller.open_path,
        kafka_bootstrap=getattr(request.app.state, "kafka_bootstrap", None),
    )
