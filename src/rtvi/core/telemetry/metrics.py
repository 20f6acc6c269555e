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
        # The spec's name; it times every model call (embedding or caption batch).
        self.inference_latency = Histogram(
            "embedding_latency_seconds", "Model call time per batch", registry=r
        )
        self.chunk_latency = Histogram(
            "chunk_latency_seconds", "Decode start -> result per chunk", registry=r
        )
        self.uptime = Gauge("system_uptime_seconds", "Seconds since start", registry=r)
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
        # Live streams: reader threads running (one per stream, however many jobs share it), queue drops
        # (the bounded-queue policy), reconnection attempts, and chunk end -> result latency.
        self.live_decoders_open = Gauge(
            "live_decoders_open", "RTSP reader/decoder threads running", registry=r
        )
        self.live_dropped = Counter(
            "live_dropped", "Live chunks or results dropped by a full queue", ["reason"], registry=r
        )
        self.decode_retry = Counter("rtvi_decode_retry", "RTSP reconnection attempts", ["reason"], registry=r)
        self.live_chunk_latency = Histogram(
            "live_stream_chunk_latency_seconds", "Live chunk end (wall clock) -> result ready", registry=r
        )
        self.stream_delete_latency = Histogram(
            "rtvi_stream_delete_latency_seconds", "Time to delete a live stream", registry=r
        )

    def observe_chunk(self, decode_latency_s: float, chunk_latency_s: float) -> None:
        """One chunk done (file or live): its frame sampling time and its decode start -> result time."""
        self.decode_latency.observe(decode_latency_s)
        self.chunk_latency.observe(chunk_latency_s)
