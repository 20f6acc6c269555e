"""Read a running service's /metrics once and look samples up by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, base_url: str, path: str = "/v1/metrics") -> None:
        response = httpx.get(base_url + path, timeout=30)
        response.raise_for_status()
        self.text = response.text
        self.samples = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(self.text)
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The one sample `name` whose labels include `labels`; AssertionError when there is none."""
        found = self.find(name, **labels)
        assert found is not None, f"metric {name}{labels or ''} not exported"
        return found

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        found = self.find(name, **labels)
        return default if found is None else found

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when there is none)."""
        return sum(v for n, ls, v in self.samples if n == name and _has(ls, labels))

    def find(self, name: str, **labels: str) -> float | None:
        values = [v for n, ls, v in self.samples if n == name and _has(ls, labels)]
        assert len(values) <= 1, f"{name}{labels}: {len(values)} samples; name more labels"
        return values[0] if values else None


def _has(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


# Spec §7, as exported: family names, counters with the exporter's `_total`.
SPEC_METRICS = [
    "video_file_queries_processed",
    "video_file_queries_pending",
    "active_live_streams",
    "rtvi_decode_retry_total",
    "system_uptime_seconds",
    "e2e_latency_seconds_latest",
    "vlm_pipeline_latency_seconds_latest",
    "decode_latency_seconds_latest",
    "vlm_latency_seconds_latest",
    "chunk_latency_seconds_latest",
    "avg_chunk_latency_seconds",
    "live_stream_chunk_latency_seconds_latest",
    "live_stream_avg_chunk_latency_seconds",
    "live_stream_captions_latency_seconds_latest",
    "stream_fps",
    "decode_latency_seconds",
    "vlm_latency_seconds",
    "chunk_latency_seconds",
    "live_stream_chunk_latency_seconds",
    "live_stream_captions_latency_seconds",
    "rtvi_stream_delete_latency_seconds",
    "rtvi_stream_delete_drain_latency_seconds",
    "asset_download_duration_seconds",
    "asset_download_bytes_total",
    "asset_download_requests_total",
]
VLM_ONLY_METRICS = ["vlm_input_tokens_per_chunk", "vlm_output_tokens_per_chunk"]


def exported_families(text: str) -> set[str]:
    """The exposed family names (counters with their `_total`), read from the `# TYPE` lines: a labelled
    family with no sample yet has only its HELP/TYPE lines."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
