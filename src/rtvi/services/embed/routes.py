"""Embedding routes: /v1/generate_video_embeddings, /v1/generate_text_embeddings (spec §4.1-4.6), and the
OpenAI / Cosmos-Embed1-NIM style /v1/embeddings (the protocol our `remote` backend speaks)."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from rtvi.api.schemas import (
    ChunkResponse,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    MediaInfoOffset,
    MediaInfoTimestamp,
    TextEmbedding,
    TextEmbeddingsCompletionResponse,
    TextEmbeddingsQuery,
    VideoEmbeddingsCompletionResponse,
    VideoEmbeddingsQuery,
)
from rtvi.api.state import ServiceState, get_state
from rtvi.api.streams import get_live
from rtvi.assets.datauri import decode_data_uri
from rtvi.assets.registry import Asset
from rtvi.engine.jobs import ChunkingParams, FileEmbeddingJob, plan_video
from rtvi.engine.live import LiveEmbeddingJob, LiveParams, LiveStreamError
from rtvi.engine.results import ChunkResult
from rtvi.engine.times import chunk_time, parse_iso, unix_to_iso
from rtvi.errors import ApiError
from rtvi.media.probe import probe
from rtvi.media.types import ChunkSpec, MediaError
from rtvi.models.base import Embedder
from rtvi.models.embedders.remote import decode_frames_item, is_frames_item
from rtvi.sinks.messages import ChunkContext, text_context
from rtvi.sinks.sse import sse_response

log = logging.getLogger(__name__)
router = APIRouter(tags=["Embeddings"])

VIDEO_FAILED = "Failed to generate video embeddings."


class VideoRequest:
    """One accepted generate_video_embeddings request: its assets, plan and response formatting."""

    def __init__(self, state: ServiceState, query: VideoEmbeddingsQuery, received_at: float) -> None:
        self.state = state
        self.query = query
        self.received_at = received_at
        self.request_id = str(uuid.uuid4())
        self.batcher = state.require_batcher(query.model)
        if query.url is not None:
            raise ApiError(
                501, "NotImplemented", "Ingestion from 'url' is not supported yet; upload via /v1/files"
            )
        self.assets: list[Asset] = [_lookup(state, i) for i in query.ids]
        self.is_live = any(a.is_live for a in self.assets)
        self.live_job: LiveEmbeddingJob | None = None
        if self.is_live:
            if not query.stream:
                raise ApiError.bad_parameters("Only streaming output is supported for live-streams")
            if len(self.assets) > 1:
                raise ApiError.bad_parameters("Only one live stream per request is supported")
            if query.chunk_duration <= 0:
                raise ApiError.bad_parameters("chunk_duration must be greater than 0 for live streams")
            if query.chunk_overlap_duration >= query.chunk_duration:
                raise ApiError.bad_parameters("chunk_overlap_duration must be smaller than chunk_duration")
        if len(self.assets) > 1 and any(a.media_type != "image" for a in self.assets):
            raise ApiError.bad_parameters("Only image files supported")
        self.creation_time = query.creation_time or self.assets[0].creation_time
        self.is_video = self.assets[0].media_type == "video"
        self.chunks: list[ChunkSpec] = []

    def attach_live(self, persistent: bool = False) -> LiveEmbeddingJob:
        """Start embedding the live stream, or re-attach to its running job (same request id, §4.1)."""
        params = LiveParams(self.query.chunk_duration, self.query.chunk_overlap_duration)
        job = self.state.live.start_embedding(self.assets[0], params, self.batcher, persistent)
        self.live_job = job
        self.request_id = job.request_id
        self.received_at = job.created
        return job

    async def plan(self) -> None:
        if not self.is_video or self.is_live:
            return
        asset = self.assets[0]
        mi = self.query.media_info
        params = ChunkingParams(
            chunk_duration=self.query.chunk_duration,
            overlap=self.query.chunk_overlap_duration,
            start_offset=mi.start_offset if mi else 0,
            end_offset=mi.end_offset if mi else None,
        )
        meta = asset.meta
        try:
            self.chunks = await asyncio.to_thread(
                plan_video, Path(asset.path), params, meta.get("duration_s"), meta.get("fps")
            )
        except ValueError as exc:
            raise ApiError.bad_parameters(str(exc)) from exc
        except MediaError as exc:
            self.report_failure(exc)
            raise ApiError.invalid_file() from exc

    def job(self) -> FileEmbeddingJob:
        common = {
            "batcher": self.batcher,
            "decode_pool": self.state.decode_pool,
            "received_at": self.received_at,
        }
        if self.is_video:
            return FileEmbeddingJob(video=Path(self.assets[0].path), chunks=self.chunks, **common)  # type: ignore[arg-type]
        return FileEmbeddingJob(images=[Path(a.path) for a in self.assets], **common)  # type: ignore[arg-type]

    def time(self, seconds: float) -> str:
        """A chunk time (spec §4.2): wall clock for live streams (Unix seconds), else media time."""
        return unix_to_iso(seconds) if self.is_live else chunk_time(seconds, self.creation_time)

    def media_info(self, start_s: float, end_s: float) -> MediaInfoOffset | MediaInfoTimestamp:
        if self.creation_time or self.is_live:
            return MediaInfoTimestamp(start_timestamp=self.time(start_s), end_timestamp=self.time(end_s))
        return MediaInfoOffset(start_offset=int(start_s), end_offset=math.ceil(end_s))

    def chunk_response(self, r: ChunkResult) -> ChunkResponse:
        return ChunkResponse(
            start_time=self.time(r.start_s),
            end_time=self.time(r.end_s),
            embeddings=r.vector.tolist(),
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
        return {"id": self.request_id, "model": self.batcher.embedder.id, "created": int(self.received_at)}

    async def results(self) -> AsyncIterator[ChunkResult]:
        if self.live_job is not None:
            # Subscribing here, not in the route, so a response that is never sent leaves no reader.
            async for r in self.live_job.subscribe().results():
                yield r
            return
        ids = [a.id for a in self.assets]
        try:
            with self.state.store.registry.using(ids):
                async for r in self.job().results():
                    self.publish(r)
                    yield r
        except Exception as exc:
            self.report_failure(exc)
            raise

    def publish(self, r: ChunkResult) -> None:
        """The chunk on the results bus (spec §6.3), for the JSON and SSE responses alike."""
        publisher = self.state.publisher
        if publisher is not None and publisher.results_bus is not None:
            publisher.publish_chunk(self.chunk_context(r), r.vector)

    def chunk_context(self, r: ChunkResult) -> ChunkContext:
        # Message timestamps are absolute: creation time + PTS, else the request's arrival + PTS.
        base = parse_iso(self.creation_time).timestamp() if self.creation_time else self.received_at
        return chunk_context(
            self.assets[0], self.request_id, self.batcher.embedder, self.query.model, r, base
        )

    def report_failure(self, exc: BaseException) -> None:
        """A failed generation on the error bus (spec §6.5), attributed to the (first) asset."""
        detail = exc.message if isinstance(exc, ApiError) else (str(exc) or type(exc).__name__)
        self.state.report_error(self.assets[0].id, f"{VIDEO_FAILED} Request {self.request_id}: {detail}")

    def range(self) -> tuple[float, float]:
        if not self.chunks:
            return 0.0, 0.0
        return self.chunks[0].start_s, max(c.end_s for c in self.chunks)


def chunk_context(
    asset: Asset, request_id: str, embedder: Embedder, requested_model: str, r: ChunkResult, base_ts: float
) -> ChunkContext:
    """What the results bus needs of one chunk (spec §6.3), for files (base_ts + PTS) and live streams
    (chunk times are already Unix seconds: base_ts 0)."""
    fps = asset.meta.get("fps")
    return ChunkContext(
        request_id=request_id,
        chunk_idx=r.index,
        stream_id=asset.id,
        sensor_type="Camera" if asset.is_live else "Video",
        start_ts=base_ts + r.start_s,
        end_ts=base_ts + r.end_s,
        model_id=embedder.id,
        model_owned_by=embedder.owned_by,
        requested_model=requested_model,
        sensor_name=asset.sensor_name,
        camera_id=str(asset.meta.get("camera_id") or ""),
        description=str(asset.meta.get("description") or ""),
        frame_count=r.frame_count,
        decode_latency_s=r.decode_latency_s,
        inference_latency_s=r.inference_latency_s,
        chunk_latency_s=r.chunk_latency_s,
        queue_time_s=r.queue_time_s,
        sensor_info={"path": asset.path, "videoFps": f"{fps:.2f}" if fps else ""},
    )


def live_results_sink(state: ServiceState) -> Callable[[LiveEmbeddingJob, ChunkResult], None] | None:
    """Publishes every chunk of a live job once (not once per SSE reader); None when no bus is on."""
    publisher = state.publisher
    if publisher is None or publisher.results_bus is None:
        return None

    def publish(job: LiveEmbeddingJob, r: ChunkResult) -> None:
        ctx = chunk_context(job.asset, job.request_id, job.batcher.embedder, job.batcher.embedder.id, r, 0.0)
        publisher.publish_chunk(ctx, r.vector)

    return publish


@router.post(
    "/v1/generate_video_embeddings",
    response_model=VideoEmbeddingsCompletionResponse,
    response_model_exclude_none=False,
)
async def generate_video_embeddings(
    query: VideoEmbeddingsQuery, state: ServiceState = Depends(get_state)
) -> Response:
    """Embeddings per chunk for a video file, one image or several images (one chunk); JSON or SSE."""
    req = VideoRequest(state, query, time.time())
    await req.plan()
    if req.is_live:
        req.attach_live()
    if query.stream:
        return sse_response(_stream_events(req))
    results: list[ChunkResult] = []
    try:
        async for r in req.results():
            results.append(r)
    except ApiError:
        raise
    except Exception as exc:
        log.exception("video embeddings failed for request %s", req.request_id)
        raise ApiError(500, "InternalServerError", VIDEO_FAILED) from exc
    body = VideoEmbeddingsCompletionResponse(
        **req.header(),
        media_info=req.media_info(*req.range()),
        usage=req.usage(len(results)),
        chunk_responses=[req.chunk_response(r) for r in results],
    )
    return JSONResponse(body.model_dump(mode="json"))


async def _stream_events(req: VideoRequest) -> AsyncIterator[dict[str, Any]]:
    include_usage = bool(req.query.stream_options and req.query.stream_options.include_usage)
    done = 0
    try:
        async for r in req.results():
            done += 1
            yield {
                **req.header(),
                "media_info": req.media_info(r.start_s, r.end_s).model_dump(mode="json"),
                "chunk_responses": [req.chunk_response(r).model_dump(mode="json")],
                "usage": req.usage(done).model_dump() if include_usage else None,
            }
    except LiveStreamError as exc:
        log.warning("live request %s ended with an error: %s", req.request_id, exc)
        yield {**req.header(), "usage": None}
        return
    except Exception:
        log.exception("video embeddings failed for request %s", req.request_id)
        yield {**req.header(), "usage": None}
        return
    if include_usage:
        yield {**req.header(), "media_info": None, "usage": req.usage(done).model_dump()}


@router.delete("/v1/generate_video_embeddings/{stream_id}")
async def stop_video_embeddings(stream_id: str, state: ServiceState = Depends(get_state)) -> Response:
    """Stop embedding a live stream (spec §4.5): its readers get [DONE]; the stream stays registered."""
    asset = get_live(state, stream_id)
    await state.live.stop(asset.id, state.settings.stream_delete_drain_timeout_s)
    if asset.meta.pop("auto_start", None) is not None:
        state.store.registry.update_meta(asset.id, asset.meta)  # do not resume it after a restart
    return Response(status_code=200)


def _lookup(state: ServiceState, asset_id: str) -> Asset:
    asset = state.store.registry.get(asset_id)
    if asset is not None:
        return asset
    try:
        canonical = str(uuid.UUID(asset_id))
    except ValueError:
        # Not a UUID and not a live stream's id: the reference's schema rejects it (422).
        raise ApiError(
            422,
            "InvalidParameters",
            f"('body', 'id'): Input should be a valid UUID (input: \"{asset_id[:64]}\")",
        ) from None
    return state.store.get_any(canonical)


@router.post("/v1/generate_text_embeddings", response_model=TextEmbeddingsCompletionResponse)
async def generate_text_embeddings(
    query: TextEmbeddingsQuery, state: ServiceState = Depends(get_state)
) -> TextEmbeddingsCompletionResponse:
    batcher = state.require_batcher(query.model)
    texts = query.texts
    if not texts or any(not t.strip() for t in texts):
        raise ApiError.bad_parameters("Text input must not be empty")
    created = int(time.time())
    try:
        vectors = await batcher.embed_texts(texts)
        if len(vectors) != len(texts):
            raise RuntimeError(f"model returned {len(vectors)} vectors for {len(texts)} texts")
    except Exception as exc:
        log.exception("text embeddings failed")
        raise ApiError(500, "TextEmbeddingsError", "Failed to generate text embeddings.") from exc
    response_id = uuid.uuid4()
    publisher = state.publisher
    if publisher is not None and publisher.text_enabled:
        model_id, now = batcher.embedder.id, time.time()
        for i, (t, v) in enumerate(zip(texts, vectors, strict=True)):
            publisher.publish_chunk(text_context(str(response_id), i, t, model_id, query.model or "", now), v)
    return TextEmbeddingsCompletionResponse(
        id=response_id,
        created=created,
        model=batcher.embedder.id,
        data=[
            TextEmbedding(text_input=t, embeddings=v.tolist()) for t, v in zip(texts, vectors, strict=True)
        ],
    )


VIDEO_REQUEST_TYPES = {"bulk_video", "video", "image"}


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, tags=["OpenAI compatible"])
async def embeddings(body: EmbeddingsRequest, state: ServiceState = Depends(get_state)) -> EmbeddingsResponse:
    """OpenAI / Cosmos-Embed1 NIM embeddings: texts (`query`, `bulk_text`) or videos and images given as
    `data:` URIs (`bulk_video`); each video is embedded as one chunk."""
    batcher = state.require_batcher(body.model)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or any(not s.strip() for s in inputs):
        raise ApiError.bad_parameters("Input must not be empty")
    if body.request_type in VIDEO_REQUEST_TYPES or (
        body.request_type is None and inputs[0].startswith("data:")
    ):
        vectors = [await _embed_media_uri(state, uri) for uri in inputs]
        matrix = np.stack(vectors) if vectors else np.zeros((0, batcher.embedder.dim), np.float32)
    else:
        if any(len(s) > 100_000 for s in inputs):
            raise ApiError.bad_parameters("Text input is too long")
        matrix = await batcher.embed_texts(inputs)
    items = [EmbeddingItem(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(matrix)]
    tokens = sum(len(s.split()) for s in inputs) if body.request_type not in VIDEO_REQUEST_TYPES else 0
    return EmbeddingsResponse(
        data=items, model=batcher.embedder.id, usage={"prompt_tokens": tokens, "total_tokens": tokens}
    )


def _encode(v: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # the openai client's default: little-endian float32
        return base64.b64encode(v.astype("<f4").tobytes()).decode()
    return [float(x) for x in v]


async def _embed_media_uri(state: ServiceState, uri: str) -> np.ndarray:
    if is_frames_item(uri):  # the NIM's frames form, which our `remote` backend sends: one chunk per item
        try:
            frames = await asyncio.to_thread(decode_frames_item, uri)
        except ValueError as exc:
            raise ApiError(400, "InvalidDataUrl", str(exc)) from exc
        vector, _ = await state.require_batcher().embed_clip(frames)
        return vector
    if not uri.startswith("data:"):
        raise ApiError(400, "InvalidDataUrl", "Video and image inputs must be data: URLs")
    batcher = state.require_batcher()
    tmp = state.store.storage.new_tmp_dir()
    try:
        max_bytes = int(state.settings.asset_download_max_file_size_gb * 2**30)
        path, _ = await asyncio.to_thread(decode_data_uri, uri, tmp, "input", max_bytes)
        try:
            info = await asyncio.to_thread(probe, path)
        except MediaError as exc:
            raise ApiError.invalid_file() from exc
        if info.kind == "image":
            job = FileEmbeddingJob(batcher=batcher, decode_pool=state.decode_pool, images=[path])
        else:
            chunks = await asyncio.to_thread(plan_video, path, ChunkingParams(), info.duration_s, info.fps)
            job = FileEmbeddingJob(batcher=batcher, decode_pool=state.decode_pool, video=path, chunks=chunks)
        results = [r async for r in job.results()]
        return results[0].vector
    finally:
        state.store.storage.discard(tmp)
