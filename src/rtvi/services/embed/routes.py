"""Embedding routes: /v1/generate_video_embeddings, /v1/generate_text_embeddings (spec §4.1-4.6), and the
OpenAI / Cosmos-Embed1-NIM style /v1/embeddings (the protocol our `remote` backend speaks).

Thin: validate (the protocol models), call EmbedServing, render JSON or SSE."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from rtvi.core.service import ServiceCore
from rtvi.http.deps import get_core, stage_of
from rtvi.http.generation import CLIENT_CLOSED_REQUEST, generation_response
from rtvi.http.limits import unless_disconnected
from rtvi.services.embed.protocol import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    TextEmbeddingsCompletionResponse,
    TextEmbeddingsQuery,
    VideoEmbeddingsCompletionResponse,
    VideoEmbeddingsQuery,
)
from rtvi.services.embed.serving import EmbedServing

log = logging.getLogger(__name__)
router = APIRouter(tags=["Embeddings"])


def get_serving(core: ServiceCore = Depends(get_core)) -> EmbedServing:
    return stage_of(core, EmbedServing)


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
    return await generation_response(
        request, req, serving.rendering, VideoEmbeddingsCompletionResponse, query.stream_options
    )


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
