"""Prometheus metrics exported at /v1/metrics (names from spec §7)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """One registry per app, so several apps (tests) in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.files_processed = Counter("video_file_queries_processed", "File queries completed", registry=r)
        self.files_pending = Gauge("video_file_queries_pending", "File queries in progress", registry=r)
        self.active_live_streams = Gauge("active_live_streams", "Live streams being processed", registry=r)
        self.decode_latency = Histogram("decode_latency_seconds", "Frame sampling time per chunk", registry=r)
        self.inference_latency = Histogram(
            "embedding_latency_seconds", "Model call time per chunk batch", registry=r
        )
        self.chunk_latency = Histogram(
            "chunk_latency_seconds", "Decode start -> result per chunk", registry=r
        )
        self.uptime = Gauge("system_uptime_seconds", "Seconds since start", registry=r)
