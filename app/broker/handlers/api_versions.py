"""ApiVersions (KIP-511): the handshake every client starts with."""

from __future__ import annotations

from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0

from ..context import ApiSpec, BrokerContext, Frame
from ..errors import NONE, UNSUPPORTED_VERSION
from ..protocol.codec import API_VERSIONS_KEY, encode_response
from ..protocol.codec import Request as KafkaRequest
from .base import NO_THROTTLE, build, err, respond, response_classes

MIN_VERSION = 0
MAX_VERSION = 4

# The API table is fixed at import time, so the encoded body per version is too.
_cache: dict[int, bytes] = {}


def unsupported_version_response(broker: BrokerContext, correlation_id: int) -> bytes:
    """Error 35 in the v0 body layout, so any client can read which versions exist."""
    body = ApiVersionsResponseV0(
        error_code=err(UNSUPPORTED_VERSION),
        api_keys=tuple(
            build(ApiVersionV0, api_key=s.key, min_version=s.min_version, max_version=s.max_version)
            for s in sorted(broker.apis.values(), key=lambda s: s.key)
        ),
    )
    return encode_response(API_VERSIONS_KEY, 0, correlation_id, False, body)


async def handle(broker: BrokerContext, req: KafkaRequest) -> Frame:
    cached = _cache.get(req.header.api_version)
    if cached is not None:
        # The body never changes for a version; only the correlation id does.
        return cached[:4] + req.header.correlation_id.to_bytes(4, "big", signed=True) + cached[8:]
    resp, mod = response_classes(req)
    api_keys = tuple(
        build(mod.ApiVersion, api_key=s.key, min_version=s.min_version, max_version=s.max_version)
        for s in sorted(broker.apis.values(), key=lambda s: s.key)
    )
    body = build(
        resp,
        error_code=err(NONE),
        api_keys=api_keys,
        throttle_time=NO_THROTTLE,
        supported_features=(),
        finalized_features_epoch=-1,
        finalized_features=(),
        zk_migration_ready=False,
    )
    frame = respond(req, body)
    _cache[req.header.api_version] = frame
    return frame


APIS = [ApiSpec(API_VERSIONS_KEY, MIN_VERSION, MAX_VERSION, handle)]
