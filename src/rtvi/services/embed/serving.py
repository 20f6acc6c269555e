"""The embedding service's logic: video, image, live and text requests -> vectors.

`EmbedServing` is the service's model stage (what the core holds once the model has loaded); routes
call it and render what it returns; `EmbedRendering` is how a generate request's chunks look (the request
itself is the core's GenerationJob, core/pipeline/generation.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rtvi.core.assets.registry import Asset
from rtvi.core.media.probe import probe
from rtvi.core.media.types import Frame, MediaError
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.file_job import FileJob
from rtvi.core.pipeline.generation import GenerationJob, Tally, chunk_timings, open_generation, plan_of
from rtvi.core.pipeline.results import ChunkResult, FrameSampling
from rtvi.core.service import ServiceCore
from rtvi.errors import (
    InternalError,
    InvalidMedia,
    InvalidParameters,
)
from rtvi.services.embed.batching import EmbeddingBatcher, Vector
from rtvi.services.embed.messages import text_context
from rtvi.services.embed.models.base import Embedder
from rtvi.services.embed.models.remote import decode_frames_item, is_frames_item
from rtvi.services.embed.protocol import (
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    ChunkResponse,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    EmbedStreamMetadata,
    TextEmbedding,
    TextEmbeddingsCompletionResponse,
    TextEmbeddingsQuery,
    VideoEmbeddingsQuery,
)

log = logging.getLogger(__name__)

VIDEO_FAILED = "Failed to generate video embeddings."
VIDEO_REQUEST_TYPES = {"bulk_video", "video", "image"}


@dataclass(frozen=True, slots=True)
class EmbeddingProcessor:
    """The embedder as a chunk processor: a chunk's frames -> one vector, batched across requests."""

    batcher: EmbeddingBatcher
    key: str
    sampling: FrameSampling

    async def process(self, frames: Sequence[Frame], audio: bytes | None = None) -> tuple[Vector, float]:
        return await self.batcher.embed_clip(frames)


class EmbedServing:
    def __init__(self, core: ServiceCore, embedder: Embedder, max_batch: int) -> None:
        self.core = core
        self.embedder = embedder
        self.batcher = EmbeddingBatcher(embedder, max_batch, on_batch=core.metrics.model_latency.observe)
        self.processor = EmbeddingProcessor(
            self.batcher,
            key=f"embed:{embedder.id}",
            sampling=FrameSampling(embedder.frames_per_chunk, embedder.input_size, self.batcher.early),
        )
        self.rendering = EmbedRendering(embedder.id)
        self.model = ModelInfo(
            id=embedder.id,
            owned_by=embedder.owned_by,
            api_type="embedding",
            details={"dimension": embedder.dim},
        )

    # --- ModelStage ---------------------------------------------------------------------------
    def live_processor(self, asset: Asset, metadata: EmbedStreamMetadata) -> EmbeddingProcessor | None:
        """CV metadata.model equal to the loaded model starts embedding (spec §3.4)."""
        return self.processor if metadata.model == self.embedder.id else None

    async def start(self) -> None:
        self.batcher.start()
        if self.core.settings.model.warm_up:
            await self.batcher.warm_up()
        await self.core.indexing.open(
            self.embedder.id, self.embedder.dim, lambda vector: (vector, None), self.query_vector
        )
        await self.core.alerts.open(
            self.model, lambda vector: vector, self.query_vector, self.embedder.match_floor
        )

    async def query_vector(self, text: str | None, image: str | None) -> Vector:
        """A search query in the embedding space: a text, or an image (data: URI) embedded as one chunk."""
        if image is not None:
            return await self._embed_media_uri(image)
        return (await self.batcher.embed_texts([text or ""]))[0]

    async def stop(self) -> None:
        await self.batcher.stop()

    # --- requests -----------------------------------------------------------------------------
    def check_model(self, requested: str | None) -> None:
        if requested is not None and requested != self.embedder.id:
            raise InvalidParameters.no_such_model(requested, self.embedder.id)

    async def video_request(self, query: VideoEmbeddingsQuery) -> GenerationJob[Vector]:
        """Validate and start a generate_video_embeddings request (errors before any response starts)."""
        self.check_model(query.model)
        return await open_generation(self.core, plan_of(query, VIDEO_FAILED), self.processor)

    async def text_embeddings(self, query: TextEmbeddingsQuery) -> TextEmbeddingsCompletionResponse:
        self.check_model(query.model)
        texts = query.texts
        _check_texts(texts, "Text input must not be empty")
        created = int(time.time())
        try:
            vectors = await self.batcher.embed_texts(texts)
        except Exception as exc:
            log.exception("text embeddings failed")
            raise InternalError("Failed to generate text embeddings.", "TextEmbeddingsError") from exc
        response_id = uuid.uuid4()
        publisher = self.core.publisher
        if publisher is not None and publisher.text_enabled:
            model_id, now = self.embedder.id, time.time()
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True)):
                ctx = text_context(str(response_id), i, t, model_id, query.model or "", now)
                publisher.publish_chunk(ctx, v)
        return TextEmbeddingsCompletionResponse(
            id=response_id,
            created=created,
            model=self.embedder.id,
            data=[
                TextEmbedding(text_input=t, embeddings=v.tolist())
                for t, v in zip(texts, vectors, strict=True)
            ],
        )

    async def openai_embeddings(self, body: EmbeddingsRequest) -> EmbeddingsResponse:
        """OpenAI / Cosmos-Embed1 NIM embeddings: texts (`query`, `bulk_text`) or videos and images given
        as `data:` URIs (`bulk_video`); each video is embedded as one chunk."""
        self.check_model(body.model)
        inputs = [body.input] if isinstance(body.input, str) else body.input
        is_media = body.request_type in VIDEO_REQUEST_TYPES
        if is_media or (body.request_type is None and inputs[0].startswith("data:")):
            if any(not s.strip() for s in inputs):
                raise InvalidParameters("Input must not be empty")
            vectors = [await self._embed_media_uri(uri) for uri in inputs]
            matrix = np.stack(vectors) if vectors else np.zeros((0, self.embedder.dim), np.float32)
        else:
            _check_texts(inputs, "Input must not be empty")
            matrix = await self.batcher.embed_texts(inputs)
        items = [
            EmbeddingItem(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(matrix)
        ]
        tokens = sum(len(s.split()) for s in inputs) if not is_media else 0
        return EmbeddingsResponse(
            data=items, model=self.embedder.id, usage={"prompt_tokens": tokens, "total_tokens": tokens}
        )

    async def _embed_media_uri(self, uri: str) -> Vector:
        if is_frames_item(uri):  # the NIM's frames form, which our `remote` backend sends: one chunk each
            try:
                frames = await asyncio.to_thread(decode_frames_item, uri)
            except ValueError as exc:
                raise InvalidParameters(str(exc), "InvalidDataUrl") from exc
            vector, _ = await self.batcher.embed_clip(frames)
            return vector
        if not uri.startswith("data:"):
            raise InvalidParameters("Video and image inputs must be data: URLs", "InvalidDataUrl")
        core = self.core
        with core.store.staging() as tmp:
            path = (await core.store.fetcher.fetch(uri, tmp)).path
            try:
                info = await asyncio.to_thread(probe, path)
            except MediaError as exc:
                raise InvalidMedia() from exc
            job: FileJob[Vector]
            if info.kind == "image":
                job = core.file_job(self.processor, images=[path])
            else:
                job = core.file_job(self.processor, video=path, probed=info)
            results = [r async for r in job.results()]
            return results[0].output


def _check_texts(texts: Sequence[str], empty_message: str) -> None:
    """The text limits of every route that takes text (spec §9.2)."""
    if not texts or any(not t.strip() for t in texts):
        raise InvalidParameters(empty_message)
    if len(texts) > MAX_TEXTS:
        raise InvalidParameters(f"At most {MAX_TEXTS} texts per request, got {len(texts)}")
    if any(len(t) > MAX_TEXT_CHARS for t in texts):
        raise InvalidParameters(f"Text input is too long: at most {MAX_TEXT_CHARS} characters")


def _encode(v: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # the openai client's default: little-endian float32
        return base64.b64encode(v.astype("<f4").tobytes()).decode()
    return [float(x) for x in v]


class EmbedRendering:
    """The embedding service's chunk items and usage (spec §4.1)."""

    usage_on_every_event = True
    exclude_none = False

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def chunk(self, req: GenerationJob[Vector], r: ChunkResult[Vector]) -> ChunkResponse:
        return ChunkResponse(
            start_time=req.time(r.start_s),
            end_time=req.time(r.end_s),
            embeddings=r.output.tolist(),
            inference_latency_ms=round(r.inference_latency_s * 1000, 3),
            **chunk_timings(r),
        )

    def tokens(self, r: ChunkResult[Vector]) -> tuple[int, int]:
        return (0, 0)

    def usage(self, req: GenerationJob[Vector], tally: Tally) -> EmbeddingsUsage:
        return EmbeddingsUsage(
            query_processing_time=round(time.time() - req.received_at), total_chunks_processed=tally.chunks
        )
