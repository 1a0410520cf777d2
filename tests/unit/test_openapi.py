"""The checked-in OpenAPI spec must match what the app serves."""

from __future__ import annotations

from pathlib import Path

from scripts.export_openapi import spec

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_openapi_spec_is_current() -> None:
    assert SPEC.read_text() == spec(), "openapi/openapi.json is stale: run `make openapi`"
