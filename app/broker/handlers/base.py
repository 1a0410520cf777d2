"""What every handler module shares: kio response helpers. The API table entry and the
broker interface a handler sees are in `..context`."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from functools import cache
from typing import Any

from kio.schema.errors import ErrorCode

from ..protocol.codec import Request, encode_response, response_type

NO_THROTTLE = datetime.timedelta(0)


def module_of(entity: type) -> Any:
    return sys.modules[entity.__module__]


@cache
def _field_names(entity: type) -> frozenset[str]:
    return frozenset(f.name for f in fields(entity))


def build(entity: type, **values: Any) -> Any:
    """Instantiate a kio entity from the keys this version of it has.

    Handlers describe a response once for all versions; fields a version lacks
    are dropped here.
    """
    names = _field_names(entity)
    return entity(**{k: v for k, v in values.items() if k in names})


def has_field(entity: type, name: str) -> bool:
    return name in _field_names(entity)


def response_classes(req: Request) -> tuple[type, Any]:
    resp = response_type(req.header.api_key, req.header.api_version)
    return resp, module_of(resp)


def respond(req: Request, body: Any) -> bytes:
    h = req.header
    return encode_response(h.api_key, h.api_version, h.correlation_id, req.flexible, body)


def err(code: int) -> ErrorCode:
    return ErrorCode(code)


def tuple_of(items: Sequence[Any] | None) -> tuple[Any, ...]:
    return tuple(items or ())


def _empty_value(f: Any) -> Any:
    kafka_type = f.metadata.get("kafka_type")
    if f.name == "throttle_time":
        return NO_THROTTLE
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    if kafka_type is None or str(f.type).startswith("tuple"):
        return ()
    if kafka_type in ("string",):
        return ""
    if kafka_type == "bool":
        return False
    if kafka_type == "uuid":
        return None
    return -1


def error_only_response(api_key: int, version: int, correlation_id: int, code: int) -> bytes | None:
    """A response carrying only a top-level error, for requests we will not serve.

    Only possible where the schema has a top-level error_code; the caller
    closes the connection otherwise.
    """
    from ..protocol.codec import UnknownApi, is_flexible

    try:
        resp = response_type(api_key, version)
        flexible = is_flexible(api_key, version)
    except (UnknownApi, KeyError):
        return None
    if "error_code" not in _field_names(resp):
        return None
    values = {f.name: _empty_value(f) for f in fields(resp)}
    values["error_code"] = err(code)
    try:
        body = resp(**values)
        return encode_response(api_key, version, correlation_id, flexible, body)
    except Exception:
        return None
