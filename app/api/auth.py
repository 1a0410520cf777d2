"""Who is asking: every HTTP request's principal, and the ACL checks the routes make with it.

CHRONIK_HTTP_AUTH=none: every request is User:ANONYMOUS, and the ACL authorizer (if on)
applies to it as to an unauthenticated Kafka client. required: HTTP Basic with a SCRAM user's
password, checked against the stored salted keys, or `Authorization: Bearer <API token>`;
anything else is a 401 with the challenge. A path in CHRONIK_HTTP_OPEN_PATHS is served without
authentication (as User:ANONYMOUS) and without the cluster-level check of /metrics and
/indexer; topics stay behind their ACLs there too.

PBKDF2 of a SCRAM credential takes milliseconds by design, too slow for every request, so a
successful Basic check is remembered for a short while, keyed by a sha256 of the user, the
password and the stored credentials (a changed or deleted credential no longer matches at
once). Failed attempts count against the address in the same limiter as Kafka's SASL
failures, and checks in progress count too."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBearer

from app.security import Security, audit, no_users_message
from app.security.acl import CLUSTER_NAME, Operation, ResourceType
from app.security.principal import ANONYMOUS, user_principal
from app.security.users import verify_user_password

CHALLENGE = 'Basic realm="chronik", Bearer realm="chronik"'
CACHE_S = 60.0
CACHE_ENTRIES = 1024
RETRY_AFTER_S = 60
_TOKEN_ID = re.compile(r"chr_([0-9a-f]{1,32})_")


class _Declared(HTTPBasic):
    """Declares HTTP Basic in the OpenAPI spec; the header is read by HttpAuth (FastAPI's
    own reader refuses non-ASCII passwords and answers without our challenge)."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


class _DeclaredBearer(HTTPBearer):
    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


BASIC = _Declared(
    scheme_name="HTTPBasic",
    description="a SCRAM user's name and password (`python -m app users set NAME`)",
    auto_error=False,
)
BEARER = _DeclaredBearer(
    scheme_name="HTTPBearer",
    description="an API token from POST /tokens",
    auto_error=False,
)


@dataclass(frozen=True)
class Caller:
    principal: str
    address: str  # the client's IP, as ACL hosts name it
    token_id: str | None = None  # authenticated with this API token
    open_path: bool = False  # served without authentication (CHRONIK_HTTP_OPEN_PATHS)

    @property
    def user(self) -> str | None:
        kind, _, name = self.principal.partition(":")
        return name if kind == "User" and self.principal != ANONYMOUS else None


def _too_many() -> HTTPException:
    return HTTPException(
        429,
        detail="too many failed authentications from this address; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class HttpAuth:
    def __init__(self, security: Security | None) -> None:
        self.security = security
        self.required = security is not None and security.settings.http_auth == "required"
        self.open_paths = security.settings.open_paths if security is not None else frozenset()
        self._verified: OrderedDict[bytes, float] = OrderedDict()

    async def caller(self, request: Request) -> Caller:
        address = request.client.host if request.client is not None else ""
        path = request.url.path
        if path in self.open_paths or path == "/" or path.startswith("/console/"):
            # The console's shell and static files hold no data (console.py).
            return Caller(ANONYMOUS, address, open_path=True)
        if not self.required or self.security is None:
            return Caller(ANONYMOUS, address)
        if self.security.limiter.blocked(address):
            raise _too_many()
        scheme, _, param = request.headers.get("authorization", "").strip().partition(" ")
        scheme, param = scheme.lower(), param.strip()
        if scheme == "basic":
            return Caller(user_principal(await self._basic(param, address)), address)
        if scheme == "bearer":
            return await self._bearer(param, address)
        if scheme:
            self._failed("HTTP", None, address, f"unsupported scheme {scheme[:20]!r}")
        raise self._unauthorized(
            "authentication required: HTTP Basic with a user's password, or "
            "Authorization: Bearer <API token>"
        )

    async def _basic(self, param: str, address: str) -> str:
        assert self.security is not None
        try:
            user, sep, password = base64.b64decode(param, validate=True).decode().partition(":")
        except (binascii.Error, ValueError):
            user, sep, password = "", "", ""
        if not sep or not user:
            self._failed("HTTP-BASIC", None, address, "malformed credentials")
            raise self._unauthorized("malformed Basic credentials: base64 of user:password")
        store = self.security.store
        creds = store.credentials(user).get(user, [])
        # The whole stored credential, not only its salt: a credential replaced with the same
        # salt (AlterUserScramCredentials takes the client's) no longer matches either.
        stored = b"".join(c.salt + c.stored_key + c.server_key for c in creds)
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), stored))).digest()
        now = time.monotonic()
        if creds and self._verified.get(key, 0.0) > now:
            return user
        ok = await self._attempt(address, verify_user_password, store, user, password.encode())
        if not ok:
            audit.auth_failed("HTTP-BASIC", user, address, "invalid credentials")
            raise self._unauthorized("invalid user name or password")
        self._verified[key] = now + CACHE_S
        self._verified.move_to_end(key)
        while len(self._verified) > CACHE_ENTRIES:
            self._verified.popitem(last=False)
        return user

    async def _attempt(self, address: str, check: Callable[..., Any], *args: Any) -> Any:
        """Runs `check` off the event loop holding a place in the failure limiter, so
        guesses sent at once are bounded as those sent one after another; a false result
        counts as a failure."""
        assert self.security is not None
        limiter = self.security.limiter
        if not limiter.begin(address):
            raise _too_many()
        result = None
        try:
            result = await asyncio.to_thread(check, *args)
        finally:
            limiter.end(address, ok=bool(result))
        return result

    async def _bearer(self, secret: str, address: str) -> Caller:
        assert self.security is not None
        user = await self._attempt(address, self.security.tokens.verify, secret)
        # The id is not the secret: "chr_<id>_<secret>".
        m = _TOKEN_ID.match(secret)
        token_id = m.group(1) if m else None
        if user is None:
            who = f"token {token_id}" if token_id else None
            audit.auth_failed("HTTP-BEARER", who, address, "invalid credentials")
            raise self._unauthorized("invalid, expired or revoked token")
        return Caller(user_principal(user), address, token_id=token_id)

    def _failed(self, mechanism: str, user: str | None, address: str, reason: str) -> None:
        assert self.security is not None
        self.security.limiter.failed(address)
        audit.auth_failed(mechanism, user, address, reason or "invalid credentials")

    def _unauthorized(self, message: str) -> HTTPException:
        if self.security is not None and not self.security.store.has_users():
            message += f"; {no_users_message()}"
        return HTTPException(401, detail=message, headers={"WWW-Authenticate": CHALLENGE})


async def authenticate(
    request: Request,
    _basic: Annotated[None, Depends(BASIC)],
    _bearer: Annotated[None, Depends(BEARER)],
) -> Caller:
    """The request's caller; every route depends on it (app.py), so each has its
    principal and the spec lists the security schemes on every operation."""
    auth: HttpAuth = request.app.state.auth
    caller = await auth.caller(request)
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


def allowed(
    request: Request,
    caller: Caller,
    op: Operation,
    rtype: ResourceType,
    name: str,
    *,
    audit: bool = True,
) -> bool:
    security: Security | None = request.app.state.security
    if security is None:
        return True
    return security.authorizer.authorize(
        caller.principal, caller.address, op, rtype, name, audit=audit
    )


def require_topic(request: Request, caller: Caller, op: Operation, topic: str) -> None:
    """403 naming the topic unless the caller may `op` it (checked before the topic is
    looked up, so a refusal does not tell whether it exists, as in Kafka)."""
    if not allowed(request, caller, op, ResourceType.TOPIC, topic):
        raise HTTPException(
            403, detail=f"{caller.principal} is not authorized to {op.name} topic {topic!r}"
        )


def require_cluster(request: Request, caller: Caller, op: Operation) -> None:
    if caller.open_path:
        return
    if not allowed(request, caller, op, ResourceType.CLUSTER, CLUSTER_NAME):
        raise HTTPException(
            403, detail=f"{caller.principal} is not authorized to {op.name} the cluster"
        )
