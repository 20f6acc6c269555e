"""VLM routes: /v1/generate_captions (spec §4.7), its DELETE (§4.5), the OpenAI-compatible
/v1/chat/completions (§4.8) and /v1/completions (§1.2).

Thin: validate (the protocol models), call VlmServing / ChatTurn, render JSON or SSE."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters
from rtvi.http.deps import get_core, stage_of
from rtvi.http.generation import CLIENT_CLOSED_REQUEST, generation_response
from rtvi.http.limits import unless_disconnected
from rtvi.http.sse import sse_response
from rtvi.services.vlm.chat import ChatTurn
from rtvi.services.vlm.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    VlmCaptionsCompletionResponse,
    VlmQuery,
)
from rtvi.services.vlm.serving import VlmServing

router = APIRouter(tags=["Captions"])
TEXT_COMPLETIONS_REFUSED = (
    "Text-only completions without video/image input are not supported on /v1/completions; "
    "use /v1/chat/completions"
)


def get_serving(core: ServiceCore = Depends(get_core)) -> VlmServing:
    return stage_of(core, VlmServing)


@router.post(
    "/v1/generate_captions",
    response_model=VlmCaptionsCompletionResponse,
    response_model_exclude_none=True,
)
async def generate_captions(
    query: VlmQuery, request: Request, serving: VlmServing = Depends(get_serving)
) -> Response:
    """Captions per chunk of a video file, one or several images (one chunk) or a live stream (SSE until
    stopped). Alert prompts raise incidents on Kafka (KAFKA_INCIDENT_TOPIC)."""
    req = await serving.caption_request(query)
    return await generation_response(
        request, req, serving.rendering, VlmCaptionsCompletionResponse, query.stream_options
    )


@router.delete("/v1/generate_captions/{stream_id}")
async def stop_captions(
    stream_id: str,
    request_id: str | None = Query(None, max_length=64),
    core: ServiceCore = Depends(get_core),
) -> Response:
    """Stop captioning a live stream: one request (request_id) or all of them; readers get [DONE] and
    the stream stays registered."""
    await core.streams.stop_inference(stream_id, request_id)
    return Response(status_code=200)


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, tags=["OpenAI compatible"])
async def chat_completions(
    body: ChatCompletionRequest, request: Request, serving: VlmServing = Depends(get_serving)
) -> Response:
    """OpenAI-compatible chat: media from `id`, a video_url / image_url (http(s), data:, file:), or none."""
    turn = await ChatTurn.open(serving, body)
    on_close = turn.request.release if turn.request is not None else None
    if body.stream:
        return sse_response(turn.events(), on_close=on_close)
    try:
        connected, answer = await unless_disconnected(request, turn.complete())
    finally:
        if on_close is not None:
            on_close()
    if not connected or answer is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    headers = {"X-Warning": turn.conv.warning} if turn.conv.warning else None
    return JSONResponse(answer, headers=headers)


@router.post("/v1/completions", tags=["OpenAI compatible"])
async def completions(body: CompletionRequest, serving: VlmServing = Depends(get_serving)) -> Response:
    """Validates the model, then refuses (spec §1.2): text completions go to /v1/chat/completions."""
    serving.check_model(body.model)
    raise InvalidParameters(TEXT_COMPLETIONS_REFUSED, "InvalidParameters")
