"""OpenTelemetry traces: the service's tracer, exported over OTLP. The pipeline's steps are its spans,
children of the HTTP request's span (the web layer instruments the app with this tracer's provider:
http/tracing.py).

Configured by the standard OTEL_* variables (endpoint, protocol, headers, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*). Tracing is on when ENABLE_OTEL_MONITORING=true, or when it is unset
and an OTLP endpoint variable is set; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off.
When off, the pipeline's spans go to the API's no-op tracer (no cost beyond a call).

Each service's tracer provider is its own (not the global one), so several apps in one process (tests)
export to their own endpoints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

TRACER_NAME = "rtvi"
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_enabled(enable_otel_monitoring: bool | None, env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    if enable_otel_monitoring is not None:
        return enable_otel_monitoring
    return any(env.get(name, "").strip() for name in _ENDPOINT_VARS)


def otlp_exporter(env: Mapping[str, str] = os.environ) -> SpanExporter:
    """The OTLP span exporter for OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL: grpc, or http/protobuf (the
    OpenTelemetry default). Each reads its endpoint, headers and timeout from the OTEL_* variables."""
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip().lower() or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use grpc or http/protobuf")


class Tracing:
    """The service's tracer; `provider` is None when tracing is off."""

    def __init__(self, service_name: str, enable_otel_monitoring: bool | None) -> None:
        self.provider: TracerProvider | None = None
        self.tracer: Tracer = trace.NoOpTracer()
        if not tracing_enabled(enable_otel_monitoring):
            return
        # OTEL_SERVICE_NAME, when set, names the service instead (Resource.create reads it).
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.provider.add_span_processor(BatchSpanProcessor(otlp_exporter()))
        self.tracer = self.provider.get_tracer(TRACER_NAME)
        log.info("tracing: spans exported over OTLP")

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        if self.provider is not None:
            self.provider.shutdown()
