"""One accepted generate request of either service (generate_video_embeddings, generate_captions): its
assets, its job (file or live), its times, and the JSON / SSE response around the service's chunk items.

A service supplies the chunk processor and the rendering of one chunk and of the usage; everything
else (asset lookup, a `url` input as a new asset, chunking, live re-attach, publishing, error reporting,
client disconnects) is here, once.

A `url` input of a generate request becomes an asset the client owns (docs/api-behaviour.md): it stays
after the request (the client deletes it, or the storage cap and ASSET_MAX_AGE_HOURS evict it), and the
request's id is the asset's id, so the response names it. A request refused before it starts removes it.
A chat's media URL is `temporary`: removed when the answer ends.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from typing import Any, Generic, Literal, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from opentelemetry import trace
from pydantic import BaseModel

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import NewFile
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.times import chunk_time, parse_iso, unix_to_iso
from rtvi.core.pipeline.file_job import FileJob
from rtvi.core.pipeline.live import LiveJob, LiveStreamError
from rtvi.core.pipeline.results import ChunkProcessor, ChunkResult
from rtvi.core.service import ServiceCore
from rtvi.errors import InternalError, InvalidParameters, MalformedRequest, RtviError
from rtvi.http.limits import unless_disconnected
from rtvi.http.protocol import MediaInfoOffset, MediaInfoTimestamp, StreamOptions
from rtvi.http.sse import sse_response

log = logging.getLogger(__name__)
Out = TypeVar("Out")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left; never reaches anyone


class GenerateQuery(Protocol):
    """The fields every generate request has (VideoEmbeddingsQuery, VlmQuery); read-only."""

    @property
    def ids(self) -> list[str]: ...

    @property
    def url(self) -> str | None: ...

    @property
    def url_headers(self) -> dict[str, str] | None: ...

    @property
    def media_type(self) -> Literal["video", "image"]: ...

    @property
    def creation_time(self) -> str | None: ...

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    @property
    def stream_options(self) -> StreamOptions | None: ...

    @property
    def chunk_duration(self) -> int: ...

    @property
    def chunk_overlap_duration(self) -> int: ...

    @property
    def media_info(self) -> MediaInfoOffset | None: ...


# The request's model stage, or how to make it from the request (its asset's duration, say).
ProcessorFor = ChunkProcessor[Out] | Callable[["GenerationRequest[Out]"], ChunkProcessor[Out]]


class GenerationRequest(Generic[Out]):
    """Build with `open` (which validates and plans, so errors come before any response starts)."""

    def __init__(
        self,
        core: ServiceCore,
        query: GenerateQuery,
        processor: ProcessorFor[Out],
        failure_message: str,
        received_at: float,
        own: Asset | None = None,
        temporary: bool = False,
    ) -> None:
        self.core = core
        self.query = query
        self.failure_message = failure_message
        self.received_at = received_at
        # A url request's id is its new asset's id: the response tells the client what to delete.
        self.request_id = own.id if own is not None else str(uuid.uuid4())
        self.own = own  # the asset made from the request's url
        self.temporary = temporary and own is not None  # ... removed when the request ends (chat)
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
        self.file_job: FileJob[Out] | None = None
        self.live_job: LiveJob[Out] | None = None
        self.cluster_run = False  # a cluster-run stream: its chunks come from the results topic
        self.processor: ChunkProcessor[Out] = processor(self) if callable(processor) else processor

    @classmethod
    async def open(
        cls,
        core: ServiceCore,
        query: GenerateQuery,
        processor: ProcessorFor[Out],
        failure_message: str,
        temporary: bool = False,
    ) -> GenerationRequest[Out]:
        """Validate and plan a request. A `url` input becomes a new asset, kept after the request unless
        `temporary`; removed at once when the request is refused here."""
        received_at = time.time()
        own: Asset | None = None
        if query.url is not None:
            new = NewFile(query.media_type, creation_time=query.creation_time)
            own = await core.store.add_request_asset(query.url, query.ids, new, query.url_headers)
        try:
            req = cls(core, query, processor, failure_message, received_at, own, temporary)
            await req.prepare()
        except BaseException:
            if own is not None:
                core.store.discard(own.id)
            raise
        return req

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
        """Plan a file's chunks, or start (or re-attach to) the live stream's job."""
        try:
            await self._prepare()
        except Exception as exc:
            self.report_failure(exc)
            raise

    async def _prepare(self) -> None:
        if self.is_live:
            request_id = self.core.cluster_request_id(self.assets[0], self.processor)
            if request_id is not None:
                self.cluster_run, self.request_id = True, request_id
                return
            job = self.core.live.start(self.assets[0], self.chunk_params().require_live(), self.processor)
            self.live_job = job
            self.request_id = job.request_id
            self.received_at = job.created
            return
        ids = {"rtvi.request_id": self.request_id, "rtvi.asset_id": ",".join(a.id for a in self.assets)}
        trace.get_current_span().set_attributes(ids)  # the request's span
        # Once per asset, off the event loop: an S3 asset is fetched into the local cache here (the video
        # job's own media_path is then a cache hit).
        paths = [await self.core.store.local_media(a) for a in self.assets]
        if self.is_video:
            self.file_job = self.core.file_job(
                self.processor,
                video=self.assets[0],
                params=self.chunk_params(),
                received_at=self.received_at,
                span_attributes=ids,
            )
        else:
            self.file_job = self.core.file_job(
                self.processor, images=paths, received_at=self.received_at, span_attributes=ids
            )
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

    # --- times --------------------------------------------------------------------------------
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

    def header(self, model_id: str) -> dict[str, Any]:
        return {"id": self.request_id, "model": model_id, "created": int(self.received_at)}

    # --- results ------------------------------------------------------------------------------
    async def results(self) -> AsyncIterator[ChunkResult[Out]]:
        # Subscribing here, not in the route, so a response that is never sent leaves no reader.
        if self.cluster_run:
            async for r in self.core.cluster_reader(self.assets[0], self.request_id).results():
                yield r
            return
        if self.live_job is not None:
            async for r in self.live_job.subscribe().results():
                yield r
            return
        assert self.file_job is not None, "open() first"
        try:
            with self.core.store.registry.using([a.id for a in self.assets]):
                async for r in self.file_job.results():
                    self.publish(r)  # the index takes the chunk's thumbnail frame here
                    # ... and the response, which may collect every chunk, keeps the result without it.
                    yield replace(r, thumbnail=None)
        except Exception as exc:
            self.report_failure(exc)
            raise
        finally:
            self.release()

    def release(self) -> None:
        """The request is over: remove a temporary asset it brought as a url (idempotent)."""
        if self.temporary and self.own is not None:
            self.core.store.discard(self.own.id)
            self.own = None

    def publish(self, r: ChunkResult[Out]) -> None:
        """The chunk on the results bus (spec §6.3), for the JSON and SSE responses alike. Message times
        are absolute: creation time + PTS, else the request's arrival + PTS."""
        creation = parse_iso(self.creation_time).timestamp() if self.creation_time else None
        base = creation if creation is not None else self.received_at
        assert self.file_job is not None
        self.core.publish_result(
            self.assets[0], self.request_id, self.query.model, r, base, self.file_job.span_attributes
        )
        if not self.temporary:  # a temporary asset is gone after the request: not indexed
            self.core.index_file_chunk(self.assets[0], r, self.time, creation)

    def report_failure(self, exc: BaseException) -> None:
        """A failed generation on the error bus (spec §6.5), attributed to the (first) asset."""
        detail = exc.message if isinstance(exc, RtviError) else (str(exc) or type(exc).__name__)
        message = f"{self.failure_message} Request {self.request_id}: {detail}"
        self.core.report_error(self.assets[0].id, message)


def chunk_timings(r: ChunkResult[Any]) -> dict[str, Any]:
    """A chunk's ChunkTimings fields (ms and s as the spec rounds them)."""
    return {
        "decode_latency_ms": round(r.decode_latency_s * 1000, 3),
        "chunk_latency_ms": round(r.chunk_latency_s * 1000, 3),
        "queue_time_s": round(r.queue_time_s, 6),
        "processing_latency_s": round(r.chunk_latency_s, 6),
        "frame_count": r.frame_count,
    }


class Tally:
    """Chunks done and tokens spent so far (constant memory, also for endless live requests)."""

    def __init__(self) -> None:
        self.chunks = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def add(self, tokens: tuple[int, int]) -> None:
        self.chunks += 1
        self.input_tokens += tokens[0]
        self.output_tokens += tokens[1]


class Rendering(Protocol[Out]):
    """How a service shows its chunks: one chunk item, a chunk's token counts, and the usage so far."""

    model_id: str
    usage_on_every_event: bool  # rt-embed: every SSE event carries usage (when asked); rt-vlm: only the last
    exclude_none: bool  # rt-vlm's chunk items omit null fields

    def chunk(self, req: GenerationRequest[Out], r: ChunkResult[Out]) -> BaseModel: ...

    def tokens(self, r: ChunkResult[Out]) -> tuple[int, int]:
        """-> (input tokens, output tokens) of one chunk."""
        ...

    def usage(self, req: GenerationRequest[Out], tally: Tally) -> BaseModel: ...


def tally_of(rendering: Rendering[Out], results: Sequence[ChunkResult[Out]]) -> Tally:
    tally = Tally()
    for r in results:
        tally.add(rendering.tokens(r))
    return tally


async def generation_response(
    request: Request,
    req: GenerationRequest[Out],
    rendering: Rendering[Out],
    response_model: type[BaseModel],
) -> Response:
    """The JSON body of every chunk, or SSE events as chunks complete (spec §4.1, §4.4, §4.7)."""
    if req.query.stream:
        # A temporary asset (a chat's url input) goes when the response ends, even one never read.
        return sse_response(_events(req, rendering), on_close=req.release)

    async def collect() -> list[ChunkResult[Out]]:
        return [r async for r in req.results()]

    try:
        connected, results = await unless_disconnected(request, collect())
    except RtviError:
        raise
    except Exception as exc:
        log.exception("generation failed for request %s", req.request_id)
        raise InternalError(req.failure_message) from exc
    finally:
        req.release()
    if not connected or results is None:
        log.info("request %s: the client went away; its work was stopped", req.request_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    body = response_model(
        **req.header(rendering.model_id),
        media_info=req.media_info(*req.range()),
        usage=rendering.usage(req, tally_of(rendering, results)),
        chunk_responses=[rendering.chunk(req, r) for r in results],
    )
    return JSONResponse(body.model_dump(mode="json", exclude_none=rendering.exclude_none))


async def _events(req: GenerationRequest[Out], rendering: Rendering[Out]) -> AsyncIterator[dict[str, Any]]:
    include_usage = bool(req.query.stream_options and req.query.stream_options.include_usage)
    header = req.header(rendering.model_id)
    tally = Tally()
    try:
        async for r in req.results():
            tally.add(rendering.tokens(r))
            usage = rendering.usage(req, tally) if include_usage and rendering.usage_on_every_event else None
            yield {
                **header,
                "media_info": req.media_info(r.start_s, r.end_s).model_dump(mode="json"),
                "chunk_responses": [
                    rendering.chunk(req, r).model_dump(mode="json", exclude_none=rendering.exclude_none)
                ],
                "usage": usage.model_dump() if usage is not None else None,
            }
    except LiveStreamError as exc:
        log.warning("live request %s ended with an error: %s", req.request_id, exc)
        yield {**header, "usage": None}
        return
    except Exception:
        log.exception("generation failed for request %s", req.request_id)
        yield {**header, "usage": None}
        return
    if include_usage:
        yield {**header, "media_info": None, "usage": rendering.usage(req, tally).model_dump()}
