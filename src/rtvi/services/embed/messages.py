"""The embedding service's nv.VisionLLM: the shared envelope with the chunk's vector (spec §6.3), and the
message of a text embedding (ENABLE_KAFKA_MESSAGES_FOR_TEXT_INPUT)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from rtvi.core.bus.messages import ChunkContext, vision_llm_envelope
from rtvi.core.bus.schema import schema_pb2 as nv


def build_vision_llm(ctx: ChunkContext, vector: npt.NDArray[np.float32] | Sequence[float]) -> nv.VisionLLM:
    """The nv.VisionLLM message of one chunk; text inputs carry their vector in the query."""
    msg, query = vision_llm_envelope(ctx)
    floats = vector.tolist() if isinstance(vector, np.ndarray) else list(vector)
    if ctx.text is None:
        msg.llm.visionEmbeddings.add().vector.extend(floats)
    else:
        query.embeddings.add().vector.extend(floats)
    return msg


def text_context(
    request_id: str, index: int, text: str, model_id: str, requested_model: str, ts: float
) -> ChunkContext:
    """The context of one text embedding (ENABLE_KAFKA_MESSAGES_FOR_TEXT_INPUT): no sensor, one instant."""
    return ChunkContext(
        request_id=request_id,
        chunk_idx=index,
        stream_id="",
        sensor_type="Video",  # unused: text messages carry no sensor
        start_ts=ts,
        end_ts=ts,
        model_id=model_id,
        requested_model=requested_model,
        text=text,
    )


def read_vision_llm(msg: nv.VisionLLM) -> npt.NDArray[np.float32]:
    """A chunk's vector read back from its nv.VisionLLM (the results feed: SSE from any replica)."""
    return np.asarray(msg.llm.visionEmbeddings[0].vector, dtype=np.float32)
