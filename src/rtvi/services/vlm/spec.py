"""The VLM service as `rtvi serve vlm` runs it."""

from __future__ import annotations

from rtvi.core.bus.publisher import BusTopics
from rtvi.core.models.bundled import load_caption_encoder
from rtvi.core.service import CoreConfig, ServiceCore
from rtvi.http.routes import search
from rtvi.http.spec import ServiceSpec
from rtvi.services.vlm import routes
from rtvi.services.vlm.messages import build_incident, build_vision_llm, read_vision_llm
from rtvi.services.vlm.models.registry import load_vlm
from rtvi.services.vlm.protocol import VlmStreamMetadata
from rtvi.services.vlm.serving import CAPTIONS_FAILED, VlmServing

CORE = CoreConfig(
    name="vlm",
    topics=BusTopics("mdx-vlm-captions", "mdx-vlm-errors", kafka_by_default=True),
    build_result=build_vision_llm,
    build_incident=build_incident,
    read_result=read_vision_llm,
    stream_metadata=VlmStreamMetadata,
    failure_message=CAPTIONS_FAILED.rstrip("."),
)


def load_stage(core: ServiceCore) -> VlmServing:
    """The configured VLM backend (see models.registry), and the text encoder its captions are indexed
    with when the search index is on."""
    settings = core.settings
    captions = load_caption_encoder(settings.model) if settings.search_index else None
    return VlmServing(core, settings.vlm, load_vlm(settings.model), captions)


SPEC = ServiceSpec(core=CORE, title="RTVI API", load_stage=load_stage, routers=[routes.router, search.router])
