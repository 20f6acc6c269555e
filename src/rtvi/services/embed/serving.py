"""The embedding service's logic: video, image, live and text requests -> vectors, without HTTP.

`EmbedServing` is the service's model stage (what the core holds once the model has loaded); routes
call it and render what it returns. `VideoRequest` is one accepted generate_video_embeddings request:
its assets, its job (file or live) and the formatting of its chunks.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import NewFile
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.probe import probe
from rtvi.core.media.times import chunk_time, parse_iso, unix_to_iso
from rtvi.core.media.types import Frame, MediaError
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.file_job import FileJob
from rtvi.core.pipeline.live import LiveJob
from rtvi.core.pipeline.results import ChunkResult, FrameSampling
from rtvi.core.service import ServiceCore
from rtvi.errors import (
    InternalError,
    InvalidMedia,
    InvalidParameters,
    MalformedRequest,
    RtviError,
)
from rtvi.http.protocol import MediaInfoOffset, MediaInfoTimestamp
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
    TextEmbedding,
    TextEmbeddingsCompletionResponse,
    TextEmbeddingsQuery,
    VideoEmbeddingsQuery,
)

log = logging.getLogger(__name__)

VIDEO_FAILED = "Failed to generate video embeddings."
VIDEO_REQUEST_TYPES = {"bulk_video", "video", "image"}


@dataclass(frozen=True, slots=True)
class ClipProcessor:
    """The embedder as a chunk processor: a chunk's frames -> one vector, batched across requests."""

    batcher: EmbeddingBatcher
    key: str
    sampling: FrameSampling

    async def process(self, frames: Sequence[Frame]) -> tuple[Vector, float]:
        return await self.batcher.embed_clip(frames)


class EmbedServing:
    def __init__(self, core: ServiceCore, embedder: Embedder, max_batch: int) -> None:
        self.core = core
        self.embedder = embedder
        self.batcher = EmbeddingBatcher(embedder, max_batch, on_batch=core.metrics.inference_latency.observe)
        self.processor = ClipProcessor(
            self.batcher,
            key=f"embed:{embedder.id}",
            sampling=FrameSampling(embedder.frames_per_chunk, embedder.input_size),
        )
        self.model = ModelInfo(
            id=embedder.id,
            owned_by=embedder.owned_by,
            api_type="embedding",
            details={"dimension": embedder.dim},
        )

    # --- ModelStage ---------------------------------------------------------------------------
    def live_processor(self) -> ClipProcessor:
        return self.processor

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    # --- requests -----------------------------------------------------------------------------
    def check_model(self, requested: str | None) -> None:
        if requested is not None and requested != self.embedder.id:
            raise InvalidParameters(f"No such model '{requested}'")

    async def video_request(self, query: VideoEmbeddingsQuery) -> VideoRequest:
        """Validate and plan a generate_video_embeddings request (errors before any response starts).
        A `url` input becomes the request's own asset, removed when the request ends."""
        self.check_model(query.model)
        received_at = time.time()
        own: Asset | None = None
        if query.url is not None:
            new = NewFile(query.media_type, creation_time=query.creation_time)
            own = await self.core.store.add_request_asset(query.url, query.ids, new, query.url_headers)
        try:
            req = VideoRequest(self, query, received_at, own)
            await req.prepare()
        except BaseException:
            if own is not None:
                self.core.store.discard(own.id)
            raise
        return req

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


class VideoRequest:
    """One accepted generate_video_embeddings request: its assets, job and response formatting."""

    def __init__(
        self, serving: EmbedServing, query: VideoEmbeddingsQuery, received_at: float, own: Asset | None = None
    ) -> None:
        self.serving = serving
        self.core = serving.core
        self.query = query
        self.received_at = received_at
        self.request_id = str(uuid.uuid4())
        self.own = own  # the asset made from the request's url: removed when the request ends
        self.assets: list[Asset] = [own] if own is not None else [self._lookup(i) for i in query.ids]
        self.is_live = any(a.is_live for a in self.assets)
        if self.is_live:
            if not query.stream:
                raise InvalidParameters("Only streaming output is supported for live-streams")
            if len(self.assets) > 1:
                raise InvalidParameters("Only one live stream per request is supported")
        if len(self.assets) > 1 and any(a.media_type != "image" for a in self.assets):
            raise InvalidParameters("Only image files supported")
        self.creation_time = query.creation_time or self.assets[0].creation_time
        self.is_video = self.assets[0].media_type == "video"
        self.file_job: FileJob[Vector] | None = None
        self.live_job: LiveJob[Vector] | None = None

    def _lookup(self, asset_id: str) -> Asset:
        asset = self.core.store.registry.get(asset_id)
        if asset is not None:
            return asset
        try:
            canonical = str(uuid.UUID(asset_id))
        except ValueError:
            # Not a UUID and not a live stream's id: the reference's schema rejects it (422).
            raise MalformedRequest.not_a_uuid(asset_id) from None
        return self.core.store.get_any(canonical)

    async def prepare(self) -> None:
        """Plan a file's chunks, or start (or re-attach to) the live stream's job (same request id)."""
        try:
            await self._prepare()
        except Exception as exc:
            self.report_failure(exc)
            raise

    async def _prepare(self) -> None:
        processor = self.serving.processor
        if self.is_live:
            job = self.core.live.start(self.assets[0], self.chunk_params().require_live(), processor)
            self.live_job = job
            self.request_id = job.request_id
            self.received_at = job.created
            return
        if self.is_video:
            self.file_job = self.core.file_job(
                processor, video=self.assets[0], params=self.chunk_params(), received_at=self.received_at
            )
        else:
            paths = [self.core.store.media_path(a) for a in self.assets]
            self.file_job = self.core.file_job(processor, images=paths, received_at=self.received_at)
        await self.file_job.plan()

    def chunk_params(self) -> ChunkParams:
        """The request's chunking (images have none: they are one chunk)."""
        q = self.query
        mi = q.media_info
        return ChunkParams(
            chunk_duration=q.chunk_duration,
            overlap=q.chunk_overlap_duration,
            start_offset=mi.start_offset if mi else 0,
            end_offset=mi.end_offset if mi else None,
        )

    def time(self, seconds: float) -> str:
        """A chunk time (spec §4.2): wall clock for live streams (Unix seconds), else media time."""
        return unix_to_iso(seconds) if self.is_live else chunk_time(seconds, self.creation_time)

    def media_info(self, start_s: float, end_s: float) -> MediaInfoOffset | MediaInfoTimestamp:
        if self.creation_time or self.is_live:
            return MediaInfoTimestamp(start_timestamp=self.time(start_s), end_timestamp=self.time(end_s))
        return MediaInfoOffset(start_offset=int(start_s), end_offset=math.ceil(end_s))

    def range(self) -> tuple[float, float]:
        """The time range of a file's chunks (0, 0 for images)."""
        return self.file_job.time_range if self.file_job is not None else (0.0, 0.0)

    def chunk_response(self, r: ChunkResult[Vector]) -> ChunkResponse:
        return ChunkResponse(
            start_time=self.time(r.start_s),
            end_time=self.time(r.end_s),
            embeddings=r.output.tolist(),
            decode_latency_ms=round(r.decode_latency_s * 1000, 3),
            inference_latency_ms=round(r.inference_latency_s * 1000, 3),
            chunk_latency_ms=round(r.chunk_latency_s * 1000, 3),
            queue_time_s=round(r.queue_time_s, 6),
            processing_latency_s=round(r.chunk_latency_s, 6),
            frame_count=r.frame_count,
        )

    def usage(self, chunks_done: int) -> EmbeddingsUsage:
        return EmbeddingsUsage(
            query_processing_time=round(time.time() - self.received_at), total_chunks_processed=chunks_done
        )

    def header(self) -> dict[str, Any]:
        return {"id": self.request_id, "model": self.serving.embedder.id, "created": int(self.received_at)}

    async def results(self) -> AsyncIterator[ChunkResult[Vector]]:
        if self.live_job is not None:
            # Subscribing here, not in the route, so a response that is never sent leaves no reader.
            async for r in self.live_job.subscribe().results():
                yield r
            return
        assert self.file_job is not None, "prepare() first"
        try:
            with self.core.store.registry.using([a.id for a in self.assets]):
                async for r in self.file_job.results():
                    self.publish(r)
                    yield r
        except Exception as exc:
            self.report_failure(exc)
            raise
        finally:
            self.release()

    def release(self) -> None:
        """The request is over: remove the asset it brought as a url (idempotent)."""
        if self.own is not None:
            self.core.store.discard(self.own.id)
            self.own = None

    def publish(self, r: ChunkResult[Vector]) -> None:
        """The chunk on the results bus (spec §6.3), for the JSON and SSE responses alike. Message times
        are absolute: creation time + PTS, else the request's arrival + PTS."""
        base = parse_iso(self.creation_time).timestamp() if self.creation_time else self.received_at
        self.core.publish_result(self.assets[0], self.request_id, self.query.model, r, base)

    def report_failure(self, exc: BaseException) -> None:
        """A failed generation on the error bus (spec §6.5), attributed to the (first) asset."""
        detail = exc.message if isinstance(exc, RtviError) else (str(exc) or type(exc).__name__)
        self.core.report_error(self.assets[0].id, f"{VIDEO_FAILED} Request {self.request_id}: {detail}")
