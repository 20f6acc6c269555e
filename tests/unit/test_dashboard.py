"""The Grafana dashboard (deploy/grafana/rtvi-dashboard.json) queries only metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rtvi.core.telemetry.metrics import Metrics
from rtvi.services.vlm.serving import VlmMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "rtvi-dashboard.json"
# PromQL words with an underscore that are not metric names.
PROMQL = {"histogram_quantile", "label_values", "__rate_interval"}


def exported_sample_names() -> set[str]:
    """Every sample name both services can export (counters with _total, histograms' series)."""
    metrics = Metrics()
    VlmMetrics(metrics.registry)
    names: set[str] = set()
    for family in metrics.registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_sample_names()
    used: set[str] = set()
    for expr in queries(dashboard):
        without_labels = re.sub(r"\{[^}]*\}", "", expr)
        names = {w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", without_labels) if "_" in w} - PROMQL
        assert names, expr
        assert names <= exported, f"{expr}: {sorted(names - exported)} not exported"
        used |= names
    # The spec's latency histograms and the live gauges all have a panel.
    for name in (
        "chunk_latency_seconds_bucket",
        "live_stream_chunk_latency_seconds_bucket",
        "vlm_latency_seconds_bucket",
        "active_live_streams",
        "video_file_queries_pending",
    ):
        assert name in used, name
