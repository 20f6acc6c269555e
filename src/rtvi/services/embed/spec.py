"""The embedding service as `rtvi serve embed` runs it."""

from __future__ import annotations

from rtvi.core.bus.publisher import BusTopics
from rtvi.core.service import CoreConfig, ServiceCore
from rtvi.http.routes import alerts, search
from rtvi.http.spec import ServiceSpec
from rtvi.services.embed import routes
from rtvi.services.embed.messages import build_vision_llm, read_vision_llm
from rtvi.services.embed.models.registry import load_embedder
from rtvi.services.embed.protocol import EmbedStreamMetadata
from rtvi.services.embed.serving import VIDEO_FAILED, EmbedServing

CORE = CoreConfig(
    name="embed",
    topics=BusTopics("mdx-embed", "mdx-embed-errors"),
    build_result=build_vision_llm,
    read_result=read_vision_llm,
    stream_metadata=EmbedStreamMetadata,
    failure_message=VIDEO_FAILED.rstrip("."),
)


def load_stage(core: ServiceCore) -> EmbedServing:
    """The configured embedder (see models.registry), batched across requests."""
    model = core.settings.model
    return EmbedServing(core, load_embedder(model), model.auto_batch_size)


SPEC = ServiceSpec(
    core=CORE,
    title="RTVI Embed Microservice API",
    load_stage=load_stage,
    routers=[routes.router, search.router, alerts.router],
)
