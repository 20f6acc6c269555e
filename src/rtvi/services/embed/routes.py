"""Embedding routes: /v1/generate_video_embeddings, /v1/generate_text_embeddings (spec §4.1-4.6), and the
OpenAI / Cosmos-Embed1-NIM style /v1/embeddings (the protocol our `remote` backend speaks).

Thin: validate (the protocol models), call EmbedServing, render JSON or SSE."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from rtvi.core.pipeline.live import LiveStreamError
from rtvi.core.pipeline.results import ChunkResult
from rtvi.core.service import ServiceCore
from rtvi.errors import InternalError, RtviError
from rtvi.http.deps import get_core
from rtvi.http.limits import unless_disconnected
from rtvi.http.sse import sse_response
from rtvi.services.embed.batching import Vector
from rtvi.services.embed.protocol import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    TextEmbeddingsCompletionResponse,
    TextEmbeddingsQuery,
    VideoEmbeddingsCompletionResponse,
    VideoEmbeddingsQuery,
)
from rtvi.services.embed.serving import VIDEO_FAILED, EmbedServing, VideoRequest

log = logging.getLogger(__name__)
router = APIRouter(tags=["Embeddings"])
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; never reaches anyone


def get_serving(core: ServiceCore = Depends(get_core)) -> EmbedServing:
    stage = core.require_stage()
    if not isinstance(stage, EmbedServing):
        raise TypeError(f"the embed routes need the embed stage, not {type(stage).__name__}")
    return stage


@router.post(
    "/v1/generate_video_embeddings",
    response_model=VideoEmbeddingsCompletionResponse,
    response_model_exclude_none=False,
)
async def generate_video_embeddings(
    query: VideoEmbeddingsQuery, request: Request, serving: EmbedServing = Depends(get_serving)
) -> Response:
    """Embeddings per chunk for a video file, one image or several images (one chunk); JSON or SSE."""
    req = await serving.video_request(query)
    if query.stream:
        # The request's own asset (a `url` input) goes when the response ends, even one never read.
        return sse_response(_stream_events(req), on_close=req.release)

    async def collect() -> list[ChunkResult[Vector]]:
        return [r async for r in req.results()]

    try:
        connected, results = await unless_disconnected(request, collect())
    except RtviError:
        raise
    except Exception as exc:
        log.exception("video embeddings failed for request %s", req.request_id)
        raise InternalError(VIDEO_FAILED) from exc
    finally:
        req.release()
    if not connected or results is None:
        log.info("request %s: the client went away; its work was stopped", req.request_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
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
async def stop_video_embeddings(stream_id: str, core: ServiceCore = Depends(get_core)) -> Response:
    """Stop embedding a live stream (spec §4.5): its readers get [DONE]; the stream stays registered."""
    await core.streams.stop_inference(stream_id)
    return Response(status_code=200)


@router.post("/v1/generate_text_embeddings", response_model=TextEmbeddingsCompletionResponse)
async def generate_text_embeddings(
    query: TextEmbeddingsQuery, request: Request, serving: EmbedServing = Depends(get_serving)
) -> TextEmbeddingsCompletionResponse | Response:
    connected, out = await unless_disconnected(request, serving.text_embeddings(query))
    return out if connected and out is not None else Response(status_code=CLIENT_CLOSED_REQUEST)


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, tags=["OpenAI compatible"])
async def embeddings(
    body: EmbeddingsRequest, request: Request, serving: EmbedServing = Depends(get_serving)
) -> EmbeddingsResponse | Response:
    """OpenAI / Cosmos-Embed1 NIM embeddings of texts, or of videos and images given as data: URIs."""
    connected, out = await unless_disconnected(request, serving.openai_embeddings(body))
    return out if connected and out is not None else Response(status_code=CLIENT_CLOSED_REQUEST)
