"""Request headers and bodies decoded with kio; responses encoded with kio.

Only the hot-path responses (Produce, Fetch) have hand-written encoders, in
their own modules.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from kio.index import load_payload_module
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

from app.storage import RecordError, read_uvarint

from .counts import CountError, check_counts

_HEADER_PREFIX = struct.Struct(">hhi")
_I32 = struct.Struct(">i")
_I16 = struct.Struct(">h")
log = logging.getLogger(__name__)

API_VERSIONS_KEY = 18


class UnknownApi(Exception):
    """The API key or version has no schema: the request cannot be parsed."""


class MalformedRequest(Exception):
    pass


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


@dataclass(slots=True)
class Request:
    header: RequestHeader
    body: Any
    flexible: bool
    client_host: str = ""  # "/ip", as Kafka's group descriptions show it
    client_address: str = ""  # the ip alone, for ACL host matching
    principal: str = "User:ANONYMOUS"  # who sent it: SASL identity, client certificate CN
    elements: int = 0  # array elements in the body, all arrays together (counts.py)


def peek_header(frame: bytes) -> tuple[int, int, int]:
    """API key, version and correlation id: readable even when nothing else is."""
    if len(frame) < 8:
        raise MalformedRequest("request shorter than its header")
    return _HEADER_PREFIX.unpack_from(frame, 0)


def _payload_type(api_key: int, version: int, kind: EntityType) -> type:
    try:
        module = load_payload_module(api_key, version, kind)  # type: ignore[arg-type]
    except Exception as exc:
        raise UnknownApi(f"no schema for api {api_key} v{version}") from exc
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "__type__", None) is kind:
            return value
    raise UnknownApi(f"no {kind.name} entity for api {api_key} v{version}")


@cache
def request_type(api_key: int, version: int) -> type:
    return _payload_type(api_key, version, EntityType.request)


@cache
def response_type(api_key: int, version: int) -> type:
    return _payload_type(api_key, version, EntityType.response)


@cache
def _reader(entity: Any) -> Callable[..., Any]:
    return entity_reader(entity)


@cache
def _writer(entity: Any) -> Callable[..., Any]:
    return entity_writer(entity)


def is_flexible(api_key: int, version: int) -> bool:
    return bool(getattr(request_type(api_key, version), "__flexible__", False))


def decode_request(frame: bytes) -> Request:
    """Parse header and body. Raises UnknownApi or MalformedRequest."""
    api_key, version, correlation_id = peek_header(frame)
    req_type = request_type(api_key, version)
    flexible = bool(getattr(req_type, "__flexible__", False))
    try:
        client_id, pos = _read_header_rest(frame, flexible)
        elements = check_counts(frame, pos, req_type)
        body, size = _reader(req_type)(frame, pos)
    except CountError as exc:
        raise MalformedRequest(f"api {api_key} v{version}: {exc}") from None
    except MalformedRequest:
        raise
    except Exception as exc:
        raise MalformedRequest(f"cannot decode api {api_key} v{version}: {exc}") from exc
    _check_nulls(body, req_type)
    if pos + size != len(frame):
        # Apache Kafka does not check for bytes after the body, and librdkafka
        # 2.x sends three of them with Metadata v13; reject them and it never
        # connects.
        log.debug(
            "api %d v%d: ignoring %d trailing bytes", api_key, version, len(frame) - pos - size
        )
    header = RequestHeader(api_key, version, correlation_id, client_id)
    return Request(header, body, flexible, elements=elements)


# (field, nullable, element or struct entity whose fields need checking too, or None)
_Shape = tuple[tuple[str, bool, type | None], ...]


@cache
def _shape(entity: type) -> _Shape:
    """The fields of an entity that null must be checked in: its arrays, and its structs
    and array elements that hold arrays themselves."""
    hints = typing.get_type_hints(entity)
    out: list[tuple[str, bool, type | None]] = []
    for f in dataclasses.fields(entity):
        t = hints[f.name]
        nullable = typing.get_origin(t) in (typing.Union, types.UnionType)
        if nullable:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        is_array = typing.get_origin(t) is tuple
        inner = typing.get_args(t)[0] if is_array else t
        nested: type | None = None
        if isinstance(inner, type) and dataclasses.is_dataclass(inner) and _shape(inner):
            nested = inner
        if is_array or nested is not None:
            out.append((f.name, nullable, nested))
    return tuple(out)


def _check_nulls(value: Any, entity: type) -> None:
    """kio reads a null count (-1, compact 0) as None even where the schema has no null, and
    handlers iterate it: Kafka's generated readers refuse it ("non-nullable field ... was
    serialized as null"), so do we."""
    for name, nullable, nested in _shape(entity):
        v = getattr(value, name)
        if v is None:
            if not nullable:
                raise MalformedRequest(f"non-nullable field {name} was serialized as null")
        elif nested is not None:
            for item in v if isinstance(v, tuple) else (v,):
                _check_nulls(item, nested)


def _read_header_rest(frame: bytes, flexible: bool) -> tuple[str | None, int]:
    """Client id and (header v2) the tag buffer, whose tags are all skipped.

    Parsed by hand because kio raises KeyError on header tags it does not
    know, where the protocol says to ignore them.
    """
    if len(frame) < 10:
        raise MalformedRequest("request header truncated")
    (n,) = _I16.unpack_from(frame, 8)
    pos = 10 + max(n, 0)
    if pos > len(frame):
        raise MalformedRequest("client id runs past the end of the request")
    client_id = None if n < 0 else frame[10:pos].decode("utf-8", "replace")
    if flexible:
        count, pos = _read_uvarint(frame, pos)
        for _ in range(count):
            _, pos = _read_uvarint(frame, pos)
            length, pos = _read_uvarint(frame, pos)
            pos += length
        if pos > len(frame):
            raise MalformedRequest("header tag buffer runs past the end of the request")
    return client_id, pos


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_uvarint(buf, pos, max_shift=35)
    except RecordError as exc:
        raise MalformedRequest(str(exc)) from None


def response_header(correlation_id: int, flexible: bool) -> bytes:
    # Response header v1 appends an empty tag buffer.
    return _I32.pack(correlation_id) + (b"\x00" if flexible else b"")


def encode_response(
    api_key: int, version: int, correlation_id: int, flexible: bool, body: Any
) -> bytes:
    """A whole response frame (size prefix, header, body) encoded by kio."""
    buf = io.BytesIO()
    buf.write(b"\x00\x00\x00\x00")
    # ApiVersions responses always use header v0 so that clients can parse
    # them before they know which versions the broker speaks.
    header_flexible = flexible and api_key != API_VERSIONS_KEY
    buf.write(response_header(correlation_id, header_flexible))
    body_type: Any = type(body)
    _writer(body_type)(buf, body)
    data = buf.getbuffer()
    _I32.pack_into(data, 0, len(data) - 4)
    out = bytes(data)
    data.release()
    return out
