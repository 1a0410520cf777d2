"""The response a request gets when its handler failed unexpectedly.

Kafka answers such a request with its own shape (every topic and partition it named,
each carrying the error, as `AbstractRequest.getErrorResponse` does) so the client sees
an error code for what it asked and keeps the connection. kio's schemas name fields
consistently enough that one mirror of request onto response covers every API.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, Field, fields, is_dataclass
from functools import cache
from typing import Any

from ..protocol.codec import Request, encode_response, response_type
from .base import NO_THROTTLE, err

# Response field -> request fields that carry the same identity, in order of preference.
_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "topic", "topic_name"),
    "topic": ("topic", "name", "topic_name"),
    "topic_name": ("topic_name", "name", "topic"),
    "partition_index": ("partition_index", "partition", "index"),
    "partition": ("partition", "partition_index", "index"),
    "index": ("index", "partition_index", "partition"),
}

# Fields that, when an element of the request array is a bare value, receive it.
_IDENTITY = (
    "partition_index",
    "partition",
    "index",
    "name",
    "topic",
    "topic_name",
    "group_id",
    "key",
)
# The only request fields copied into the response: what identifies the thing that failed.
# The rest (generation, member id, session id) keeps the "unknown" values Kafka's error
# responses carry, so a client does not mistake the failure for state.
_COPIED = frozenset(_IDENTITY) | {"topic_id", "resource_type", "resource_name", "transactional_id"}


@cache
def _hints(entity: type) -> dict[str, Any]:
    return typing.get_type_hints(entity)


def _array_element(hint: Any) -> tuple[Any, bool] | None:
    """(element type, nullable) for a tuple[X, ...] (| None) field, else None."""
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return None
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin is not tuple:
        return None
    return typing.get_args(hint)[0], nullable


def _is_nullable(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(
        None
    ) in typing.get_args(hint)


def _default(f: Field[Any], hint: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    kind = f.metadata.get("kafka_type")
    if kind == "timedelta_i32" or kind == "timedelta_i64":
        return NO_THROTTLE
    if _is_nullable(hint):
        return None
    if kind == "string":
        return ""
    if kind == "bool":
        return False
    if kind in ("bytes", "records"):
        return b""
    if kind == "uuid":
        return None
    if is_dataclass(hint) and isinstance(hint, type):
        return _mirror(hint, None, 0, None)
    return -1


def _request_arrays(source: Any) -> list[tuple[str, Any]]:
    if source is None or not is_dataclass(source):
        return []
    out = []
    for f in fields(source):
        value = getattr(source, f.name)
        if isinstance(value, tuple):
            out.append((f.name, value))
    return out


def _identity_field(entity: type, value: Any) -> str | None:
    """The field of `entity` that a bare request value (a partition index, a name) fills."""
    want = "string" if isinstance(value, str) else "int32"
    by_name = {f.name: f for f in fields(entity)}
    for name in _IDENTITY:
        f = by_name.get(name)
        if f is not None and f.metadata.get("kafka_type") == want:
            return name
    return None


def _matches(entity: type, item: Any) -> bool:
    """Whether a request array element describes the same thing as a response element:
    they share an identity (topic, partition, group, resource) field."""
    if not is_dataclass(item):
        return _identity_field(entity, item) is not None
    for f in fields(entity):
        if _array_element(_hints(entity)[f.name]) is None and _scalar(item, f.name, entity) is not (
            MISSING
        ):
            return True
    return False


def _pick_array(name: str, kind: type, arrays: list[tuple[str, Any]]) -> Any:
    for key, value in arrays:
        if key == name:
            return value
    # Response and request often name their list differently (topic_data -> responses).
    # The first such list is the one the request is about (Fetch's topics, not its
    # forgotten topics).
    candidates = [v for _k, v in arrays if v and _matches(kind, v[0])]
    return candidates[0] if candidates else ()


def _scalar(source: Any, name: str, entity: type) -> Any:
    if source is None or name not in _COPIED:
        return MISSING
    if not is_dataclass(source):
        return source if _identity_field(entity, source) == name else MISSING
    for alias in _ALIASES.get(name, (name,)):
        if hasattr(source, alias):
            value = getattr(source, alias)
            if not isinstance(value, tuple):
                return value
    return MISSING


def _mirror(entity: type, source: Any, code: int, message: str | None) -> Any:
    hints = _hints(entity)
    arrays = _request_arrays(source)
    values: dict[str, Any] = {}
    for f in fields(entity):
        hint = hints[f.name]
        if f.metadata.get("kafka_type") == "error_code":
            # Most are `error_code`; AddPartitionsToTxn's is `partition_error_code`.
            values[f.name] = err(code)
            continue
        if f.name == "error_message" and _is_nullable(hint):
            values[f.name] = message
            continue
        if f.name == "throttle_time":
            values[f.name] = NO_THROTTLE
            continue
        element = _array_element(hint)
        if element is not None:
            kind, nullable = element
            if is_dataclass(kind) and isinstance(kind, type):
                items = _pick_array(f.name, kind, arrays)
                values[f.name] = tuple(_mirror(kind, item, code, message) for item in items or ())
            else:
                values[f.name] = None if nullable and f.default is None else ()
            continue
        value = _scalar(source, f.name, entity)
        values[f.name] = _default(f, hint) if value is MISSING else value
    return entity(**values)


def failed_response(req: Request, code: int, message: str | None) -> bytes | None:
    """The request's own response with `code` in every error field it has, or None when
    none can be built (the caller then closes the connection, as Kafka does)."""
    h = req.header
    try:
        resp = response_type(h.api_key, h.api_version)
        body = _mirror(resp, req.body, code, message)
        return encode_response(h.api_key, h.api_version, h.correlation_id, req.flexible, body)
    except Exception:
        return None


def topics_named(body: Any) -> list[str]:
    """The topic names a request carries at its top level, for the failure's log line."""
    names: list[str] = []
    for _key, items in _request_arrays(body):
        for item in items[:20]:
            for attr in ("name", "topic", "topic_name"):
                value = getattr(item, attr, None)
                if isinstance(value, str):
                    names.append(value)
                    break
    return names
