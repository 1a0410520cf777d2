"""deploy/grafana/chronik.json: valid JSON of an importable dashboard whose every query names
metrics the service exports (a renamed metric would leave a panel silently empty)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

import app.service  # noqa: F401  (imports every module that defines a metric)
from app.broker.groups.lag_metrics import LagCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "chronik.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def _exported() -> set[str]:
    """Sample names as /metrics shows them, including families without samples yet."""
    families = [*REGISTRY.collect(), *LagCollector().describe()]
    return {f.name + s for f in families for s in SUFFIXES.get(f.type, ("",))}


def _panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def _exprs(d: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _panels(d) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in d["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_is_importable_json() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["schemaVersion"] >= 36 and d["title"] and d["uid"]
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    panels = _panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert {"h", "w", "x", "y"} <= p["gridPos"].keys()


def test_every_queried_metric_is_exported() -> None:
    d = json.loads(DASHBOARD.read_text())
    used = {m for e in _exprs(d) for m in re.findall(r"\bchronik_[a-z0-9_]+", e)}
    assert used, "no chronik metric queried"
    missing = used - _exported()
    assert not missing, f"the dashboard queries metrics the service does not export: {missing}"


def test_the_issue_s_panels_are_there() -> None:
    used = " ".join(_exprs(json.loads(DASHBOARD.read_text())))
    for name in (
        "chronik_produce_records_total",
        "chronik_fetch_records_total",
        "chronik_indexer_lag_records",
        "chronik_search_seconds_bucket",
        "chronik_http_requests_total",
        "chronik_consumer_group_lag",
    ):
        assert name in used, name
