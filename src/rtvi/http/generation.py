"""The response of a generate request of either service (generate_video_embeddings, generate_captions):
the JSON body of every chunk, or SSE events as chunks complete, around the core's GenerationJob
(core/pipeline/generation.py) and the service's Rendering of one chunk and of the usage. A client that
leaves stops the work (http/limits.unless_disconnected; SSE: sse_response)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from rtvi.core.pipeline.generation import GenerationJob, Tally
from rtvi.core.pipeline.live_jobs import LiveStreamError
from rtvi.core.pipeline.results import ChunkResult
from rtvi.errors import InternalError, RtviError
from rtvi.http.limits import unless_disconnected
from rtvi.http.protocol import StreamOptions
from rtvi.http.sse import sse_response

log = logging.getLogger(__name__)
Out = TypeVar("Out")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; never reaches anyone


class Rendering(Protocol[Out]):
    """How a service shows its chunks: one chunk item, a chunk's token counts, and the usage so far."""

    model_id: str
    usage_on_every_event: bool  # rt-embed: every SSE event carries usage (when asked); rt-vlm: only the last
    exclude_none: bool  # rt-vlm's chunk items omit null fields

    def chunk(self, req: GenerationJob[Out], r: ChunkResult[Out]) -> BaseModel: ...

    def tokens(self, r: ChunkResult[Out]) -> tuple[int, int]:
        """-> (input tokens, output tokens) of one chunk."""
        ...

    def usage(self, req: GenerationJob[Out], tally: Tally) -> BaseModel: ...


def tally_of(rendering: Rendering[Out], results: Sequence[ChunkResult[Out]]) -> Tally:
    tally = Tally()
    for r in results:
        tally.add(rendering.tokens(r))
    return tally


async def generation_response(
    request: Request,
    req: GenerationJob[Out],
    rendering: Rendering[Out],
    response_model: type[BaseModel],
    stream_options: StreamOptions | None,
) -> Response:
    """The JSON body of every chunk, or SSE events as chunks complete (spec §4.1, §4.4, §4.7)."""
    if req.plan.streaming:
        include_usage = bool(stream_options and stream_options.include_usage)
        return sse_response(_events(req, rendering, include_usage), on_close=req.release)

    async def collect() -> list[ChunkResult[Out]]:
        return [r async for r in req.results()]

    try:
        connected, results = await unless_disconnected(request, collect())
    except RtviError:
        raise
    except Exception as exc:
        log.exception("generation failed for request %s", req.request_id)
        raise InternalError(req.plan.failure_message) from exc
    finally:
        req.release()
    if not connected or results is None:
        log.info("request %s: the client went away; its work was stopped", req.request_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    body = response_model(
        **header(req, rendering.model_id),
        media_info=req.clock.media_info(*req.range()),
        usage=rendering.usage(req, tally_of(rendering, results)),
        chunk_responses=[rendering.chunk(req, r) for r in results],
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=rendering.exclude_none))


def header(req: GenerationJob[Any], model_id: str) -> dict[str, Any]:
    return {"id": req.request_id, "model": model_id, "created": int(req.received_at)}


async def _events(
    req: GenerationJob[Out], rendering: Rendering[Out], include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    head = header(req, rendering.model_id)
    tally = Tally()
    try:
        async for r in req.results():
            tally.add(rendering.tokens(r))
            usage = rendering.usage(req, tally) if include_usage and rendering.usage_on_every_event else None
            yield {
                **head,
                "media_info": req.clock.media_info(r.start_s, r.end_s),
                "chunk_responses": [
                    rendering.chunk(req, r).model_dump(mode="json", exclude_none=rendering.exclude_none)
                ],
                "usage": usage.model_dump() if usage is not None else None,
            }
    except LiveStreamError as exc:
        log.warning("live request %s ended with an error: %s", req.request_id, exc)
        yield {**head, "usage": None}
        return
    except Exception:
        log.exception("generation failed for request %s", req.request_id)
        yield {**head, "usage": None}
        return
    if include_usage:
        yield {**head, "media_info": None, "usage": rendering.usage(req, tally).model_dump()}
