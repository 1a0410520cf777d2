"""SaslHandshake (17) and SaslAuthenticate (36).

Listed here so ApiVersions advertises them. On a SASL listener the connection's session
(`..session`) answers them itself, before any handler runs; a request that reaches these
handlers came on a listener without SASL or after authentication, and Kafka answers it
with ILLEGAL_SASL_STATE (KafkaApis.handleSaslHandshakeRequest / handleSaslAuthenticateRequest).
"""

from __future__ import annotations

import datetime

from ..context import ApiSpec, BrokerContext, Frame
from ..protocol.codec import Request
from .base import build, err, respond, response_classes

SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
HANDSHAKE_VERSIONS = (0, 1)
AUTHENTICATE_VERSIONS = (0, 2)

UNSUPPORTED_SASL_MECHANISM = 33
ILLEGAL_SASL_STATE = 34
SASL_AUTHENTICATION_FAILED = 58


def handshake_response(req: Request, code: int, mechanisms: tuple[str, ...]) -> bytes:
    resp, _ = response_classes(req)
    return respond(req, build(resp, error_code=err(code), mechanisms=mechanisms))


def authenticate_response(
    req: Request,
    code: int,
    message: str | None = None,
    auth_bytes: bytes = b"",
    session_lifetime_ms: int = 0,
) -> bytes:
    resp, _ = response_classes(req)
    body = build(
        resp,
        error_code=err(code),
        error_message=message,
        auth_bytes=auth_bytes,
        session_lifetime=datetime.timedelta(milliseconds=session_lifetime_ms),
    )
    return respond(req, body)


async def handle_handshake(broker: BrokerContext, req: Request) -> Frame:
    return handshake_response(req, ILLEGAL_SASL_STATE, ())


async def handle_authenticate(broker: BrokerContext, req: Request) -> Frame:
    return authenticate_response(
        req, ILLEGAL_SASL_STATE, "SaslAuthenticate request received after successful authentication"
    )


APIS = [
    ApiSpec(SASL_HANDSHAKE_KEY, *HANDSHAKE_VERSIONS, handle_handshake),
    ApiSpec(SASL_AUTHENTICATE_KEY, *AUTHENTICATE_VERSIONS, handle_authenticate),
]
