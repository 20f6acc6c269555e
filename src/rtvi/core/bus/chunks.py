"""Finished chunks on the results bus (spec §6.3): the ChunkListener that turns a ChunkDone into the
service's nv.VisionLLM message (and nv.Incident, where the service raises one)."""

from __future__ import annotations

from opentelemetry.trace import Tracer

from rtvi.core.bus.messages import chunk_context
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.events import ChunkDone


class ChunkPublishing:
    """Publishes nothing until the bus is connected (`publisher`) and the model has loaded (`model`)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer
        self.publisher: MessagePublisher | None = None
        self.model: ModelInfo | None = None  # the served model, named in every message

    def keeps_live_jobs(self, stream_id: str) -> bool:
        # POST /v1/config may switch the results bus on or off at run time, running jobs included.
        return self.publisher is not None and self.publisher.results_bus is not None

    def chunk_done(self, event: ChunkDone) -> None:
        """Once per chunk (not once per SSE reader). A file request's chunk is traced as a `publish` span
        with the request's attributes; live chunks outlive the request that started them: not traced."""
        publisher, model = self.publisher, self.model
        if publisher is None or publisher.results_bus is None or model is None:
            return
        r = event.result
        requested = event.requested_model if event.requested_model is not None else model.id
        ctx = chunk_context(event.asset, event.request_id, model, requested, r, event.message_origin_ts)
        if event.span_attributes is None:
            publisher.publish_chunk(ctx, r.output)
            return
        with self.tracer.start_as_current_span(
            "publish", attributes={**event.span_attributes, "rtvi.chunk.index": r.index}
        ):
            publisher.publish_chunk(ctx, r.output)
