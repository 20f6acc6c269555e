"""Tracing of the web layer: a server span per HTTP request (FastAPI instrumentation, which also continues
an incoming `traceparent`), exported by the service's tracer provider (core/telemetry/tracing.py)."""

from __future__ import annotations

from fastapi import FastAPI

from rtvi.core.telemetry.tracing import Tracing

# Probes and scrapes are not worth a trace each (a regular expression searched in the request's URL).
UNTRACED_URLS = r"/(v1/ready|v1/live|v1/startup|v1/metrics|metrics)(\?|$)"


def instrument_app(app: FastAPI, tracing: Tracing) -> None:
    """A server span per request, continuing the caller's `traceparent`; nothing when tracing is off."""
    if tracing.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracing.provider,
        excluded_urls=UNTRACED_URLS,
        exclude_spans=["receive", "send"],  # one span per ASGI message would drown the pipeline's
    )
