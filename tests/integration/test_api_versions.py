"""ApiVersions: every version a client opens with, and the KIP-511 fallback."""

from __future__ import annotations

import struct

import pytest

from .conftest import Server
from .rawkafka import (
    RawKafka,
    decode_response_as,
    encode_body,
    encode_request_header,
    request_class,
    response_class,
)

UNSUPPORTED_VERSION = 35

# Every API the broker must speak, with the versions real clients need.
# (api key: (highest min version allowed, lowest max version allowed))
REQUIRED = {
    0: (3, 9),  # Produce: librdkafka/kafka-python use v7-v9+
    1: (4, 11),  # Fetch: kafkajs sends v11 unasked
    2: (1, 5),  # ListOffsets
    3: (1, 9),  # Metadata
    10: (0, 1),  # FindCoordinator: without it librdkafka disables LZ4
    18: (0, 4),  # ApiVersions
    19: (2, 5),  # CreateTopics
    20: (1, 4),  # DeleteTopics
    22: (0, 1),  # InitProducerId
}


def _check_table(api_keys) -> dict[int, tuple[int, int]]:
    table = {int(a.api_key): (int(a.min_version), int(a.max_version)) for a in api_keys}
    assert len(table) == len(api_keys), "duplicate api keys"
    for key, (need_min, need_max) in REQUIRED.items():
        assert key in table, f"api {key} not advertised"
        lo, hi = table[key]
        assert lo <= need_min, f"api {key}: min version {lo} > {need_min}"
        assert hi >= need_max, f"api {key}: max version {hi} < {need_max}"
    for key, (lo, hi) in table.items():
        assert 0 <= lo <= hi, f"api {key}: bad range {lo}..{hi}"
    return table


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions(server: Server, version: int) -> None:
    with RawKafka(server.bootstrap) as raw:
        resp = raw.api_versions(version)
        assert resp.error_code == 0
        table = _check_table(resp.api_keys)
        assert table[18][1] >= 4
        # a second request on the same connection gets the same table
        again = raw.api_versions(version)
        assert {
            int(a.api_key): (int(a.min_version), int(a.max_version)) for a in again.api_keys
        } == (table)


def _send_api_versions(raw: RawKafka, version: int, correlation_id: int) -> bytes:
    """ApiVersions at a version the broker does not know: header v2 + a v3-layout body."""
    body = encode_body(
        request_class(18, 3)(client_software_name="future-client", client_software_version="9.9")
    )
    payload = encode_request_header(18, version, correlation_id, "future", flexible=True) + body
    raw.send_bytes(struct.pack(">i", len(payload)) + payload)
    return raw.recv_frame()


@pytest.mark.parametrize("version", [99, 5, 32767])
def test_unsupported_api_versions_version(server: Server, version: int) -> None:
    with RawKafka(server.bootstrap) as raw:
        frame = _send_api_versions(raw, version, 31337)
        # KIP-511: response header v0 and the v0 body layout, whatever was asked
        cid, resp = decode_response_as(response_class(18, 0), frame)
        assert cid == 31337
        assert resp.error_code == UNSUPPORTED_VERSION
        table = _check_table(resp.api_keys)
        # the client can now retry with a version from the table
        retry = raw.api_versions(min(table[18][1], 3))
        assert retry.error_code == 0
        assert _check_table(retry.api_keys) == table


def test_api_versions_matches_between_versions(server: Server) -> None:
    with RawKafka(server.bootstrap) as raw:
        tables = [
            {
                int(a.api_key): (int(a.min_version), int(a.max_version))
                for a in raw.api_versions(v).api_keys
            }
            for v in range(5)
        ]
    assert all(t == tables[0] for t in tables)
