"""POST, GET and DELETE /tokens: a user's bearer API tokens.

Only a request authenticated with the user's password (HTTP Basic) may manage tokens: as
with Kafka's delegation tokens (DELEGATION_TOKEN_REQUEST_NOT_ALLOWED), a token cannot make,
list or revoke tokens, so a leaked one cannot outlive its expiry by minting successors."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, Response
from pydantic import BaseModel, Field

from app.security import Security, audit
from app.security.store import TokenInfo

from .auth import Caller, CallerDep
from .limits import bad
from .search import iso
from .search_models import Problem

router = APIRouter(tags=["tokens"])
DEFAULT_TTL_S = 30 * 86400

_ERRORS: dict[int | str, dict[str, object]] = {
    403: {
        "model": Problem,
        "description": "not authenticated with a user's password (anonymous, or a token)",
    },
}


class TokenRequest(BaseModel):
    ttl_seconds: int = Field(
        default=DEFAULT_TTL_S,
        ge=1,
        description="lifetime in seconds, at most CHRONIK_HTTP_TOKEN_MAX_TTL_S (90 days)",
    )
    description: str = Field(default="", max_length=256, description="what the token is for")


class TokenOut(BaseModel):
    id: str
    user: str
    description: str
    created: str
    expires: str
    created_ms: int
    expires_ms: int


class TokenCreated(TokenOut):
    token: str = Field(
        description="the secret, shown only in this answer: send it as "
        "`Authorization: Bearer <token>`"
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": "3f2a9c0d1e4b5a69",
                    "user": "alice",
                    "description": "dashboards",
                    "created": "2026-12-01T10:00:00.000Z",
                    "expires": "2026-12-31T10:00:00.000Z",
                    "created_ms": 1795946400000,
                    "expires_ms": 1798538400000,
                    "token": "chr_3f2a9c0d1e4b5a69_…",
                }
            ]
        }
    }


def _out(t: TokenInfo) -> TokenOut:
    return TokenOut(
        id=t.id,
        user=t.user,
        description=t.description,
        created=iso(t.created_ms),
        expires=iso(t.expires_ms),
        created_ms=t.created_ms,
        expires_ms=t.expires_ms,
    )


def _owner(request: Request, caller: Caller) -> tuple[Security, str]:
    security: Security | None = request.app.state.security
    user = caller.user
    if security is None or user is None:
        raise HTTPException(
            403,
            detail="API tokens belong to users: authenticate with HTTP Basic "
            "(needs CHRONIK_HTTP_AUTH=required)",
        )
    if caller.token_id is not None:
        raise HTTPException(
            403,
            detail="a request authenticated with an API token cannot manage tokens; "
            "authenticate with HTTP Basic",
        )
    return security, user


@router.post(
    "/tokens",
    summary="Create an API token for the authenticated user (the secret is shown once)",
    response_model=TokenCreated,
    status_code=201,
    responses=_ERRORS,
)
async def create_token(
    request: Request, caller: CallerDep, body: Annotated[TokenRequest, Body()]
) -> TokenCreated:
    security, user = _owner(request, caller)
    if body.ttl_seconds > security.tokens.max_ttl_s:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["body", "ttl_seconds"],
                    "msg": f"ttl_seconds: at most {security.tokens.max_ttl_s} "
                    "(CHRONIK_HTTP_TOKEN_MAX_TTL_S)",
                    "type": "value_error",
                }
            ],
        )
    try:
        info, secret = await asyncio.to_thread(
            security.tokens.create, user, body.ttl_seconds, body.description
        )
    except ValueError as exc:
        raise bad("description", str(exc)) from None
    audit.changed(caller.principal, caller.address, "token created", f"id={info.id} user={user}")
    return TokenCreated(**_out(info).model_dump(), token=secret)


@router.get(
    "/tokens",
    summary="The authenticated user's API tokens (never their secrets)",
    response_model=list[TokenOut],
    responses=_ERRORS,
)
async def list_tokens(request: Request, caller: CallerDep) -> list[TokenOut]:
    security, user = _owner(request, caller)
    tokens = await asyncio.to_thread(security.tokens.list, user)
    return [_out(t) for t in sorted(tokens, key=lambda t: (t.created_ms, t.id))]


@router.delete(
    "/tokens/{token_id}",
    summary="Revoke one of the authenticated user's API tokens",
    status_code=204,
    response_class=Response,
    responses={**_ERRORS, 404: {"model": Problem, "description": "no such token of this user"}},
)
async def revoke_token(request: Request, caller: CallerDep, token_id: str) -> Response:
    security, user = _owner(request, caller)
    if not await asyncio.to_thread(security.tokens.revoke, token_id, user):
        raise HTTPException(404, detail=f"no token {token_id!r} of user {user!r}")
    audit.changed(caller.principal, caller.address, "token revoked", f"id={token_id} user={user}")
    return Response(status_code=204)
