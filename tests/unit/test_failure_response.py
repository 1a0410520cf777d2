"""The error response a failed request gets: every supported API and version, built from a
request that names one of everything, must encode, decode, and carry the error code where
its schema has one, mirroring the topics and partitions the request named."""

from __future__ import annotations

import datetime
import typing
import uuid
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from app.broker.handlers import all_apis
from app.broker.handlers.failure import _array_element, _hints, failed_response, topics_named
from app.broker.protocol.codec import Request, RequestHeader, is_flexible, request_type
from tests.integration.rawkafka import decode_response

CODE = 48  # INVALID_TXN_STATE: never produced by a default value


def _sample_scalar(kind: str | None, hint: Any) -> Any:
    if kind in ("timedelta_i32", "timedelta_i64"):
        return datetime.timedelta(milliseconds=7)
    if kind == "datetime_i64":
        return datetime.datetime.now(datetime.UTC)
    if kind == "string":
        return "t"
    if kind == "bool":
        return False
    if kind == "uuid":
        return uuid.uuid4()
    if kind in ("bytes", "records"):
        return b""
    if kind == "error_code":
        return ErrorCode.none
    if kind is None and is_dataclass(hint):
        return sample(hint)
    return 3


def sample(entity: Any) -> Any:
    hints = _hints(entity)
    values: dict[str, Any] = {}
    for f in fields(entity):
        hint = hints[f.name]
        element = _array_element(hint)
        if element is not None:
            kind = element[0]
            if is_dataclass(kind):
                values[f.name] = (sample(kind),)
            elif kind is str or "str" in str(kind) or "Name" in str(kind) or "Id" in str(kind):
                values[f.name] = ("t",) if "int" not in str(kind) else (3,)
            else:
                values[f.name] = (3,)
            continue
        if typing.get_origin(hint) is not None and type(None) in typing.get_args(hint):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0]
        values[f.name] = _sample_scalar(f.metadata.get("kafka_type"), hint)
    return entity(**values)


def _error_codes(obj: Any) -> list[int]:
    out: list[int] = []
    if isinstance(obj, tuple):
        for item in obj:
            out += _error_codes(item)
    elif is_dataclass(obj):
        for f in fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("kafka_type") == "error_code":
                out.append(int(value))
            else:
                out += _error_codes(value)
    return out


def _top(response: Any) -> set[str]:
    return {f.name for f in fields(type(response))}


# APIs whose requests name topics or resources: each one named gets the error.
MIRRORED = {0, 1, 2, 3, 8, 9, 19, 20, 21, 24, 28, 32, 33, 37, 44}


CASES = [
    (spec.key, version)
    for spec in all_apis()
    for version in range(spec.min_version, spec.max_version + 1)
]


@pytest.mark.parametrize(("api_key", "version"), CASES)
def test_every_api_version_gets_an_error_response(api_key: int, version: int) -> None:
    try:
        req_type = request_type(api_key, version)
        body = sample(req_type)
    except (TypeError, ValueError) as exc:  # a schema the sampler cannot fill
        pytest.skip(f"cannot build a sample request: {exc}")
    req = Request(RequestHeader(api_key, version, 77, "test"), body, is_flexible(api_key, version))
    frame = failed_response(req, CODE, "what went wrong")
    assert frame is not None
    correlation_id, response = decode_response(api_key, version, frame[4:])
    assert correlation_id == 77
    codes = _error_codes(response)
    assert set(codes) <= {CODE}, codes
    if "error_code" in {f.name for f in fields(type(response))}:
        assert CODE in codes
    if api_key in MIRRORED:
        assert codes.count(CODE) >= 2 or (codes and "error_code" not in _top(response)), codes


def test_partitions_are_mirrored_with_the_error() -> None:
    from kio.schema.list_offsets.v7 import request as lo

    body = lo.ListOffsetsRequest(
        replica_id=-1,
        isolation_level=0,
        topics=(
            lo.ListOffsetsTopic(
                name="orders",
                partitions=(
                    lo.ListOffsetsPartition(
                        partition_index=2, current_leader_epoch=-1, timestamp=-1
                    ),
                    lo.ListOffsetsPartition(
                        partition_index=5, current_leader_epoch=-1, timestamp=-1
                    ),
                ),
            ),
        ),
    )
    req = Request(RequestHeader(2, 7, 1, None), body, True)
    frame = failed_response(req, CODE, None)
    assert frame is not None
    _, response = decode_response(2, 7, frame[4:])
    (topic,) = response.topics
    assert topic.name == "orders"
    assert [(int(p.partition_index), int(p.error_code)) for p in topic.partitions] == [
        (2, CODE),
        (5, CODE),
    ]
    assert topics_named(body) == ["orders"]
