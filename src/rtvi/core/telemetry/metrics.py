"""Prometheus metrics exported at /v1/metrics and /metrics: every name of spec §7, plus rtvi_* extras.

The contract describes an OpenTelemetry meter (up/down counters, observable gauges, histograms); here the
same names are prometheus_client instruments: an up/down counter or observable gauge is a Gauge set where
its event happens, so it is exported under its exact name; a Counter gains the `_total` suffix.
A latency series (`_Latency`) updates its histogram, `_latest` gauge and average together, and the event
methods of Metrics update every series one event moves.
"""

from __future__ import annotations

import threading
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from 5 ms to 2 min: a chunk of a fast embedder up to a long VLM call.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))
_FPS_BUCKETS = (1, 5, 10, 15, 20, 25, 30, 45, 60, 120, float("inf"))
# The averages are over the last chunks, so they follow the current load rather than the whole uptime.
AVERAGE_WINDOW = 100


class _Latency:
    """A latency histogram, its `<name>_latest` gauge and, when named, the mean of the last
    AVERAGE_WINDOW observations: the three views the spec gives of one series."""

    def __init__(self, registry: CollectorRegistry, name: str, doc: str, average: str | None = None) -> None:
        self.histogram = Histogram(name, doc, registry=registry, buckets=_LATENCY_BUCKETS)
        self.latest = Gauge(f"{name}_latest", f"{doc} (last observation)", registry=registry)
        self.average = (
            Gauge(average, f"{doc} (mean of the last {AVERAGE_WINDOW})", registry=registry)
            if average
            else None
        )
        self._recent: deque[float] = deque(maxlen=AVERAGE_WINDOW)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        self.histogram.observe(seconds)
        self.latest.set(seconds)
        if self.average is not None:
            with self._lock:
                self._recent.append(seconds)
                self.average.set(sum(self._recent) / len(self._recent))


class Metrics:
    """One registry per app, so several apps (tests) in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> Histogram:
            return Histogram(name, doc, registry=r, buckets=buckets)

        # --- spec §7: up/down counters ---
        self.files_processed = gauge("video_file_queries_processed", "File queries completed")
        self.files_pending = gauge("video_file_queries_pending", "File queries in progress")
        self.active_live_streams = gauge("active_live_streams", "Live inference jobs running")
        # --- spec §7: counter ---
        self.decode_retry = Counter("rtvi_decode_retry", "RTSP reconnection attempts", ["reason"], registry=r)
        # --- spec §7: observable gauges (the `_latest` and average ones are part of the series below) ---
        self.uptime = gauge("system_uptime_seconds", "Seconds since start")
        self.e2e_latest = gauge("e2e_latency_seconds_latest", "Last file query: received -> last result")
        self.pipeline_latest = gauge(
            "vlm_pipeline_latency_seconds_latest", "Last file query: first decode -> last result"
        )
        # --- spec §7: histograms ---
        self.stream_fps = histogram("stream_fps", "Frames per second a live stream delivers", _FPS_BUCKETS)
        self.decode_latency = _Latency(r, "decode_latency_seconds", "Frame sampling time per chunk")
        # The spec's name; it times every model call (a caption, or a batch of embeddings).
        self.model_latency = _Latency(r, "vlm_latency_seconds", "Model call time")
        self.chunk_latency = _Latency(
            r, "chunk_latency_seconds", "File chunk: decode start -> result", "avg_chunk_latency_seconds"
        )
        self.live_chunk_latency = _Latency(
            r,
            "live_stream_chunk_latency_seconds",
            "Live chunk end (camera clock) -> result ready",
            "live_stream_avg_chunk_latency_seconds",
        )
        self.live_delivery_latency = _Latency(
            r,
            "live_stream_captions_latency_seconds",
            "Live chunk end -> result handed to readers and the message bus",
        )
        self.stream_delete_latency = histogram(
            "rtvi_stream_delete_latency_seconds", "Time to delete a live stream"
        )
        self.stream_delete_drain_latency = histogram(
            "rtvi_stream_delete_drain_latency_seconds", "Time a deleted stream's jobs took to wind down"
        )
        # VLM token counts (vlm_input/output_tokens_per_chunk) are registered by the VLM service.
        # --- spec §7: asset downloads (labels source = http | s3 | data, status = ok | error) ---
        download_labels = ("source", "status")
        self.download_duration = Histogram(
            "asset_download_duration_seconds",
            "Remote asset download time",
            download_labels,
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.download_bytes = Counter(
            "asset_download_bytes", "Bytes downloaded for remote assets", download_labels, registry=r
        )
        self.download_requests = Counter(
            "asset_download_requests", "Remote asset downloads", download_labels, registry=r
        )

        # --- rtvi extras ---
        # Message bus (spec §6): `bus` is kafka | redis, `kind` is result | error.
        bus_labels = ("bus", "kind")
        self.bus_published = Counter(
            "rtvi_bus_messages_published", "Messages the broker acknowledged", bus_labels, registry=r
        )
        self.bus_failed = Counter(
            "rtvi_bus_messages_failed",
            "Messages the broker did not take in time (or rejected)",
            bus_labels,
            registry=r,
        )
        self.bus_dropped = Counter(
            "rtvi_bus_messages_dropped",
            "Messages not queued: the send queue was full",
            bus_labels,
            registry=r,
        )
        self.bus_producer_rebuilds = Counter(
            "rtvi_bus_producer_rebuilds",
            "Producers rebuilt after a stall or fatal error (their queue sent again)",
            ["bus"],
            registry=r,
        )
        # Live streams: reader threads running (one per stream, however many jobs share it) and queue
        # drops (the bounded-queue policy).
        self.live_decoders_open = gauge("live_decoders_open", "RTSP reader/decoder threads running")
        self.live_dropped = Counter(
            "live_dropped", "Live chunks or results dropped by a full queue", ["reason"], registry=r
        )
        # The search index (core/index): chunks written, dropped by its full queue, failed writes.
        self.index_written = Counter(
            "rtvi_index_chunks_written", "Chunks written to the search index", registry=r
        )
        self.index_dropped = Counter(
            "rtvi_index_chunks_dropped", "Chunks not indexed because the index queue was full", registry=r
        )
        self.index_errors = Counter("rtvi_index_errors", "Search index writes that failed", registry=r)
        self.index_size = gauge("rtvi_index_chunks", "Chunks in the search index's open collection")
        # Retention (RTVI_INDEX_RETENTION_*, RTVI_INDEX_MAX_GB) and what the index costs here.
        self.index_expired = Counter(
            "rtvi_index_chunks_expired",
            "Live chunks removed from the index by retention",
            ["reason"],
            registry=r,
        )
        self.index_thumbnails_dropped = Counter(
            "rtvi_index_thumbnails_dropped",
            "Thumbnails of live chunks removed by RTVI_INDEX_THUMBNAIL_RETENTION_HOURS (their entries stay)",
            registry=r,
        )
        # --- alert rules (core/alerts) ---
        self.alert_decisions = Counter(
            "rtvi_alert_decisions",
            "Live chunks scored against a rule, by outcome (below, warming-up, candidate, cooldown, fired, "
            "rejected, verify-failed)",
            ["outcome"],
            registry=r,
        )
        self.alert_vlm_calls = Counter(
            "rtvi_alert_vlm_calls",
            "Verifications sent to the VLM, by decision (yes, no, error)",
            ["decision"],
            registry=r,
        )
        self.alert_deliveries = Counter(
            "rtvi_alert_deliveries",
            "Incident deliveries, by action type and outcome (delivered, failed, dropped)",
            ["type", "outcome"],
            registry=r,
        )
        self.alert_delivery_latency = histogram(
            "rtvi_alert_delivery_latency_seconds", "Chunk end -> incident delivered (webhook, mqtt, kafka)"
        )
        self.index_disk_bytes = gauge("rtvi_index_disk_bytes", "The search index's bytes on local disk")
        self.index_memory_bytes = gauge("rtvi_index_memory_bytes", "The search index's vectors in memory")

    # --- events -------------------------------------------------------------------------------
    def observe_chunk(self, decode_latency_s: float, chunk_latency_s: float) -> None:
        """A file chunk done: its frame sampling time and its decode start -> result time."""
        self.decode_latency.observe(decode_latency_s)
        self.chunk_latency.observe(chunk_latency_s)

    def observe_live_chunk(self, decode_latency_s: float, chunk_latency_s: float) -> None:
        """A live chunk's result is ready: its sampling time and chunk end -> result time."""
        self.decode_latency.observe(decode_latency_s)
        self.live_chunk_latency.observe(chunk_latency_s)

    def observe_file_query(self, e2e_s: float, pipeline_s: float) -> None:
        """A file query finished: received -> last result, and first decode -> last result."""
        self.files_processed.inc()
        self.e2e_latest.set(e2e_s)
        self.pipeline_latest.set(pipeline_s)

    def observe_stream_delete(self, total_s: float, drain_s: float) -> None:
        self.stream_delete_latency.observe(total_s)
        self.stream_delete_drain_latency.observe(drain_s)

    def observe_download(self, source: str, ok: bool, seconds: float, nbytes: int) -> None:
        status = "ok" if ok else "error"
        self.download_requests.labels(source, status).inc()
        self.download_duration.labels(source, status).observe(seconds)
        if nbytes:
            self.download_bytes.labels(source, status).inc(nbytes)
