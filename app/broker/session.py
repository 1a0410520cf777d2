"""One connection's SASL authentication, as Kafka's SaslServerAuthenticator does it (sans-I/O).

The connection hands every frame to the session until it is authenticated, and afterwards
a SaslHandshake (KIP-368 re-authentication) and any request once the session expired;
the session says what to do with it (`Step`): serve it as usual, answer it, close.

- Before SaslHandshake only ApiVersions is served; any other request closes the connection
  without a response (Kafka's IllegalSaslStateException before the handshake).
- SaslHandshake v1 (KIP-152): the tokens come in SaslAuthenticate requests. SaslHandshake
  v0: the tokens come as raw length-prefixed frames without Kafka headers (`raw_tokens`),
  and a failure can only close the connection.
- A failed authentication is answered after `sasl_failure_delay_ms` and the connection
  closed (connection.failed.authentication.delay.ms); every failure is audited and counted
  per address, and an address past `sasl_failures_per_minute` is refused before its
  credentials are looked at.
- With connections_max_reauth_ms the session expires that long after authentication; the
  client re-authenticates on the open connection (SaslHandshake again, same mechanism and
  principal), else its next request closes the connection.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from prometheus_client import Counter

from ..security import Security, audit, no_users_message
from ..security.errors import AuthenticationFailed
from ..security.plain import authenticate_plain
from ..security.principal import ANONYMOUS, user_principal
from ..security.scram import MECHANISMS as SCRAM_MECHANISMS
from ..security.scram import ScramServer
from ..security.users import verify_user_password
from . import metrics
from .errors import NONE
from .handlers.failure import failed_response
from .handlers.sasl import (
    AUTHENTICATE_VERSIONS,
    HANDSHAKE_VERSIONS,
    ILLEGAL_SASL_STATE,
    SASL_AUTHENTICATE_KEY,
    SASL_AUTHENTICATION_FAILED,
    SASL_HANDSHAKE_KEY,
    UNSUPPORTED_SASL_MECHANISM,
    authenticate_response,
    handshake_response,
)
from .protocol.codec import API_VERSIONS_KEY, MalformedRequest, Request, UnknownApi, decode_request

log = logging.getLogger(__name__)

# Kafka's sasl.server.max.receive.size: the largest frame read before authentication.
MAX_RECEIVE_SIZE = 524288

_SIZE = struct.Struct(">i")

AUTHENTICATIONS = Counter(
    "chronik_kafka_sasl_authentications",
    "SASL authentications on the Kafka listener, by mechanism and outcome: ok, "
    "reauthenticated (KIP-368, on an open connection), failed (bad credentials, mechanism or "
    "protocol state, or refused while the address is past sasl_failures_per_minute)",
    ["mechanism", "outcome"],
)


class State(Enum):
    HANDSHAKE = "handshake"  # ApiVersions or SaslHandshake expected
    AUTHENTICATE = "authenticate"  # tokens expected
    CHECKING = "checking"  # a password is being checked off the event loop
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Step:
    """What the connection does with one frame. With `check`, the answer is not known yet:
    the connection runs `check` in a thread (PBKDF2 would stall every connection for
    milliseconds) and then does what `then(its result)` says."""

    serve: bool = False  # decode and run it as any request
    frame: bytes | None = None  # the answer
    close: bool = False  # close the connection after the answer
    delay: float = 0.0  # seconds to hold the answer (a failed authentication)
    check: Callable[[], object] | None = None
    then: Callable[[object], Step] | None = None


SERVE = Step(serve=True)
CLOSE = Step(close=True)


class _Mechanism(Protocol):
    complete: bool
    username: str | None

    def step(self, client_message: bytes) -> bytes: ...


class _Plain:
    def __init__(self, verify: Callable[[str, bytes], bool]) -> None:
        self._verify = verify
        self.complete = False
        self.username: str | None = None

    def step(self, client_message: bytes) -> bytes:
        # Named before the check so a failure's audit line says who tried.
        parts = client_message.split(b"\0")
        if len(parts) == 3:
            self.username = parts[1].decode("utf-8", "replace")
        self.username = authenticate_plain(client_message, self._verify)
        self.complete = True
        return b""


class SaslSession:
    def __init__(
        self, security: Security, address: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._security = security
        self._cfg = security.settings
        self.address = address
        self._clock = clock
        self.state = State.HANDSHAKE
        self.principal = ANONYMOUS
        self.raw_tokens = False  # after SaslHandshake v0: frames are bare tokens
        self._mechanism_name = ""
        self._mechanism: _Mechanism | None = None
        self._expires_at: float | None = None
        # Re-authentication: what the first authentication established, and why a
        # handshake with another mechanism fails at its first token (Kafka's
        # REAUTH_BAD_MECHANISM).
        self._reauthenticating = False
        self._bad_mechanism: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.state is State.COMPLETE

    def expired(self) -> bool:
        return self._expires_at is not None and self._clock() > self._expires_at

    def needs(self, api_key: int) -> bool:
        """Whether a request with this key must go through `receive`."""
        if self.state is not State.COMPLETE:
            return True
        return api_key == SASL_HANDSHAKE_KEY or self.expired()

    # Kafka-framed requests -------------------------------------------------------------

    def receive(self, frame: bytes, api_key: int, version: int) -> Step:
        state = self.state
        if state is State.COMPLETE:
            if api_key != SASL_HANDSHAKE_KEY:
                log.debug("closing connection from %s: SASL session expired", self.address)
                return CLOSE
            self._reauthenticating = True
            self.state = state = State.HANDSHAKE
        if state is State.HANDSHAKE:
            if api_key == API_VERSIONS_KEY and not self._reauthenticating:
                return SERVE
            if api_key == SASL_HANDSHAKE_KEY:
                return self._handshake(frame, version)
            return self._failure(
                f"Unexpected Kafka request of type {metrics.api_name(api_key)} during SASL "
                "handshake.",
                None,
            )
        if state is State.AUTHENTICATE:
            if api_key != SASL_AUTHENTICATE_KEY or not _in(version, AUTHENTICATE_VERSIONS):
                return self._unexpected_during_authentication(frame, api_key)
            req = _decode(frame)
            if req is None:
                return self._failure("Malformed SaslAuthenticate request", None)
            return self._authenticate(bytes(req.body.auth_bytes), req)
        return CLOSE

    def _handshake(self, frame: bytes, version: int) -> Step:
        req = _decode(frame) if _in(version, HANDSHAKE_VERSIONS) else None
        if req is None:
            return self._failure("Malformed or unsupported SaslHandshake request", None)
        mechanism = str(req.body.mechanism)[:64]
        enabled = self._cfg.mechanisms
        if mechanism not in enabled:
            self._mechanism_name = mechanism
            return self._failure(
                f"Unsupported SASL mechanism {mechanism}",
                handshake_response(req, UNSUPPORTED_SASL_MECHANISM, enabled),
            )
        if self._reauthenticating and mechanism != self._mechanism_name:
            self._bad_mechanism = (
                f"SASL mechanism '{mechanism}' requested by client is not supported for "
                f"re-authentication of mechanism '{self._mechanism_name}'"
            )
        else:
            self._mechanism_name = mechanism
            self._mechanism = self._new_mechanism(mechanism)
        self.raw_tokens = version == 0
        self.state = State.AUTHENTICATE
        return Step(frame=handshake_response(req, NONE, enabled))

    def _new_mechanism(self, mechanism: str) -> _Mechanism:
        store = self._security.store
        if mechanism in SCRAM_MECHANISMS:
            return ScramServer(mechanism, lambda user: store.credential(user, mechanism))
        return _Plain(lambda user, password: verify_user_password(store, user, password))

    def _unexpected_during_authentication(self, frame: bytes, api_key: int) -> Step:
        name = metrics.api_name(api_key)
        message = f"Unexpected Kafka request of type {name} during SASL authentication."
        req = _decode(frame)
        answer = None
        if req is not None:
            try:
                answer = failed_response(req, ILLEGAL_SASL_STATE, message)
            except Exception:  # an API whose error response cannot be built: close only
                answer = None
        return self._failure(message, answer)

    # Tokens ------------------------------------------------------------------------------

    def receive_token(self, token: bytes) -> Step:
        """A bare token after SaslHandshake v0; the answer is a bare length-prefixed token."""
        if self.state is not State.AUTHENTICATE:
            return CLOSE
        return self._authenticate(token, None)

    def _authenticate(self, token: bytes, req: Request | None) -> Step:
        # Checked before every token, not just the first: exchanges begun together on
        # many connections are then still limited when their final messages arrive.
        limiter = self._security.limiter
        if limiter.blocked(self.address):
            return self._too_many(req)
        if self._bad_mechanism is not None:
            return self._failed(req, self._bad_mechanism)
        mechanism = self._mechanism
        assert mechanism is not None
        if not isinstance(mechanism, _Plain):
            # SCRAM's server side is HMACs over stored keys: cheap enough for the loop.
            return self._stepped(_step(mechanism, token), req, counted=True)
        # PLAIN derives the salted password (PBKDF2) from what the client sent: off the
        # loop, holding a place in the limiter so guesses sent at once count as they run.
        if not limiter.begin(self.address):
            return self._too_many(req)
        self.state = State.CHECKING

        def then(outcome: object) -> Step:
            # None: the connection went away first; counted as a failure all the same.
            ok = outcome is not None and not isinstance(outcome, AuthenticationFailed)
            limiter.end(self.address, ok=ok)
            if outcome is None:
                self.state = State.FAILED
                return CLOSE
            self.state = State.AUTHENTICATE
            return self._stepped(outcome, req, counted=False)

        return Step(check=lambda: _step(mechanism, token), then=then)

    def _stepped(self, outcome: object, req: Request | None, *, counted: bool) -> Step:
        """The answer to a token, from what the mechanism's step returned or raised."""
        mechanism = self._mechanism
        assert mechanism is not None
        if isinstance(outcome, AuthenticationFailed):
            message = str(outcome)
            if not self._security.store.has_users():
                message = f"{message}. The broker has {no_users_message()}"
            # SCRAM says why for the log only (unknown user or bad proof): never the client.
            reason = getattr(mechanism, "reason", "") or message
            return self._failed(req, message, reason=reason, counted=counted)
        assert isinstance(outcome, bytes)
        lifetime_ms = 0
        if mechanism.complete:
            principal = user_principal(mechanism.username or "")
            if self._reauthenticating and principal != self.principal:
                return self._failed(
                    req,
                    "Cannot change principals during re-authentication from "
                    f"{self.principal}: {principal}",
                )
            lifetime_ms = self._complete(principal)
        if req is None:
            return Step(frame=_SIZE.pack(len(outcome)) + outcome)
        return Step(frame=authenticate_response(req, NONE, None, outcome, lifetime_ms))

    def _too_many(self, req: Request | None) -> Step:
        # Refused before the credentials are looked at, and not counted: the address is
        # let in again once its failures leave the window.
        message = (
            f"Too many failed authentication attempts from {self.address}; try again in a minute"
        )
        return self._failed(req, message, counted=False)

    def _failed(
        self, req: Request | None, message: str, *, reason: str = "", counted: bool = True
    ) -> Step:
        """A failed token: SASL_AUTHENTICATION_FAILED with the message (nothing can carry
        it in the v0 framing), then the connection closes."""
        answer = None
        if req is not None:
            answer = authenticate_response(req, SASL_AUTHENTICATION_FAILED, message)
        return self._failure(reason or message, answer, counted=counted)

    def _complete(self, principal: str) -> int:
        outcome = "reauthenticated" if self._reauthenticating else "ok"
        AUTHENTICATIONS.labels(self._metric_label(), outcome).inc()
        self.principal = principal
        self.state = State.COMPLETE
        self.raw_tokens = False
        self._reauthenticating = False
        max_reauth = self._cfg.connections_max_reauth_ms
        if max_reauth > 0:
            self._expires_at = self._clock() + max_reauth / 1000
            return max_reauth
        self._expires_at = None
        return 0

    def _metric_label(self) -> str:
        # A client names any mechanism it likes: only enabled ones become label values.
        name = self._mechanism_name
        return name if name in self._cfg.mechanisms else "-"

    def _failure(self, reason: str, answer: bytes | None, *, counted: bool = True) -> Step:
        mechanism = self._mechanism
        user = mechanism.username if mechanism is not None else None
        audit.auth_failed(self._mechanism_name or "-", user, self.address, reason)
        AUTHENTICATIONS.labels(self._metric_label(), "failed").inc()
        if counted:
            self._security.limiter.failed(self.address)
        self.state = State.FAILED
        self.raw_tokens = False
        return Step(frame=answer, close=True, delay=self._cfg.sasl_failure_delay_ms / 1000)


def _step(mechanism: _Mechanism, token: bytes) -> bytes | AuthenticationFailed:
    try:
        return mechanism.step(token)
    except AuthenticationFailed as exc:
        return exc


def _in(version: int, versions: tuple[int, int]) -> bool:
    return versions[0] <= version <= versions[1]


def _decode(frame: bytes) -> Request | None:
    try:
        return decode_request(frame)
    except (UnknownApi, MalformedRequest):
        return None
