"""One generation over a service's media: a generate request of either service (generate_video_embeddings,
generate_captions) or a chat with media. It takes a small typed plan and yields the chunks' results; the
web layer renders them (http/generation.py).

`open_generation` does everything that can fail before a response starts: it looks the assets up (a `url`
input becomes a new asset), checks that they go together, chooses the job (a file's chunks planned, a
live stream's job started or re-attached, or a cluster-run stream read from the results topic) and makes
the request's processor once the request's id and assets are known. `GenerationJob.results` then yields
the chunks; each finished file chunk goes to the core's chunk listeners (results bus, search index);
live jobs do that themselves.

A `url` input becomes an asset the client owns (docs/api-behaviour.md): it stays after the request (the
client deletes it, or the storage cap and ASSET_MAX_AGE_HOURS evict it), and the request's id is the
asset's id, so the response names it. A request refused before it starts removes it. A chat's media URL
is `temporary`: removed when the answer ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, Protocol, TypeVar

from opentelemetry import trace

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import NewFile
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.times import MediaClock
from rtvi.core.pipeline.events import ChunkDone
from rtvi.core.pipeline.file_job import FileJob
from rtvi.core.pipeline.live_jobs import LiveJob
from rtvi.core.pipeline.results import ChunkProcessor, ChunkResult
from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters, MalformedRequest, RtviError

Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class MediaInput:
    """What a generation processes: registered assets or live streams by id, or one `url` to fetch."""

    ids: tuple[str, ...]
    url: str | None = None
    url_headers: Mapping[str, str] | None = None
    media_type: Literal["video", "image"] = "video"  # of the url's media
    creation_time: str | None = None  # overrides the assets' own


@dataclass(frozen=True, slots=True)
class Chunking:
    """The request's chunking as sent, checked (ChunkParams) where it applies: a video file, a live stream;
    images are one chunk whatever it says."""

    chunk_duration: float = 0
    overlap: float = 0
    start_offset: float = 0
    end_offset: float | None = None

    def params(self) -> ChunkParams:
        """InvalidParameters (400) when they cannot make chunks."""
        return ChunkParams(self.chunk_duration, self.overlap, self.start_offset, self.end_offset)


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """A validated request, as the core needs it."""

    media: MediaInput
    chunking: Chunking = field(default_factory=Chunking)
    requested_model: str | None = None  # as the client named it (bus messages carry it; None: the model's id)
    streaming: bool = False  # live streams answer only streaming requests
    failure_message: str = "Failed to process the request."  # what the error bus says first
    temporary: bool = False  # a url input is removed when the generation ends (chat)


class OffsetRange(Protocol):
    @property
    def start_offset(self) -> int: ...

    @property
    def end_offset(self) -> int: ...


class GenerateFields(Protocol):
    """The fields every generate request body has (VideoEmbeddingsQuery, VlmQuery); read-only."""

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
    def chunk_duration(self) -> int: ...

    @property
    def chunk_overlap_duration(self) -> int: ...

    @property
    def media_info(self) -> OffsetRange | None: ...


def plan_of(query: GenerateFields, failure_message: str) -> GenerationPlan:
    """A generate request body as a plan (its chunking is checked where it applies: open_generation)."""
    mi = query.media_info
    return GenerationPlan(
        media=MediaInput(
            ids=tuple(query.ids),
            url=query.url,
            url_headers=query.url_headers,
            media_type=query.media_type,
            creation_time=query.creation_time,
        ),
        chunking=Chunking(
            chunk_duration=query.chunk_duration,
            overlap=query.chunk_overlap_duration,
            start_offset=mi.start_offset if mi else 0,
            end_offset=mi.end_offset if mi else None,
        ),
        requested_model=query.model,
        streaming=query.stream,
        failure_message=failure_message,
    )


@dataclass(frozen=True, slots=True)
class GenerationTarget:
    """What a processor factory knows: the request's id as opened and what it processes (re-attaching to
    a running live job, or reading a cluster-run stream, gives the request that job's id instead)."""

    request_id: str
    asset: Asset  # the (first) asset
    is_live: bool


# The request's model stage, or how to make it from the request's id and asset (its duration, say).
ProcessorFor = ChunkProcessor[Out] | Callable[[GenerationTarget], ChunkProcessor[Out]]


async def open_generation(
    core: ServiceCore, plan: GenerationPlan, processor: ProcessorFor[Out]
) -> GenerationJob[Out]:
    """Validate and start a generation (errors come before any response starts). A `url` input becomes a
    new asset, kept after the request unless `plan.temporary`; removed at once when refused here."""
    received_at = time.time()
    media = plan.media
    own: Asset | None = None
    if media.url is not None:
        new = NewFile(media.media_type, creation_time=media.creation_time)
        own = await core.store.add_request_asset(media.url, list(media.ids), new, media.url_headers)
    try:
        assets = [own] if own is not None else [_lookup(core, i) for i in media.ids]
        _check_assets(assets, plan)
        # The client's own chunking mistakes are refused here: its answer, not a service failure.
        params = _chunk_params(plan.chunking, assets[0])
        # A url request's id is its new asset's id: the response tells the client what to delete.
        request_id = own.id if own is not None else str(uuid.uuid4())
        is_live = assets[0].is_live
        made = (
            processor(GenerationTarget(request_id, assets[0], is_live)) if callable(processor) else processor
        )
        job: GenerationJob[Out] = GenerationJob(
            core, plan, made, assets, request_id, received_at, own, params
        )
        try:
            await job.start()
        except Exception as exc:
            job.report_failure(exc)
            raise
    except BaseException:
        if own is not None:
            core.store.discard(own.id)
        raise
    return job


def _chunk_params(chunking: Chunking, first: Asset) -> ChunkParams | None:
    if first.is_live:
        return chunking.params().require_live()
    return chunking.params() if first.media_type == "video" else None


def _lookup(core: ServiceCore, asset_id: str) -> Asset:
    asset = core.store.registry.get(asset_id)
    if asset is not None:
        return asset
    try:
        canonical = str(uuid.UUID(asset_id))
    except ValueError:
        # Not a UUID and not a live stream's id: the reference's schema rejects it (422).
        raise MalformedRequest.not_a_uuid(asset_id) from None
    return core.store.get_any(canonical)


def _check_assets(assets: Sequence[Asset], plan: GenerationPlan) -> None:
    if any(a.is_live for a in assets):
        if not plan.streaming:
            raise InvalidParameters("Only streaming output is supported for live-streams")
        if len(assets) > 1:
            raise InvalidParameters("Only one live stream per request is supported")
    if len(assets) > 1 and any(a.media_type != "image" for a in assets):
        raise InvalidParameters("Only image files supported")


class GenerationJob(Generic[Out]):
    """A started generation: its id, assets and clock, and its results. Build with `open_generation`."""

    def __init__(
        self,
        core: ServiceCore,
        plan: GenerationPlan,
        processor: ChunkProcessor[Out],
        assets: list[Asset],
        request_id: str,
        received_at: float,
        own: Asset | None,
        params: ChunkParams | None,
    ) -> None:
        self.core = core
        self.plan = plan
        self.processor = processor
        self.assets = assets
        self.request_id = request_id
        self.received_at = received_at
        self._own = own  # the asset made from the request's url
        self.params = params  # checked chunking (None: images)
        self._temporary = plan.temporary and own is not None  # ... removed when the generation ends
        self.is_video = assets[0].media_type == "video"
        self.clock = MediaClock(assets[0].is_live, plan.media.creation_time or assets[0].creation_time)
        self._file_job: FileJob[Out] | None = None
        self._live_job: LiveJob[Out] | None = None
        self._cluster_run = False  # a cluster-run stream: its chunks come from the results topic

    @property
    def is_live(self) -> bool:
        return self.clock.live

    async def start(self) -> None:
        """Plan a file's chunks, or start (or re-attach to) the live stream's job."""
        core = self.core
        if self.is_live:
            asset = self.assets[0]
            cluster_id = core.cluster.request_id_for(asset, self.processor)
            if cluster_id is not None:
                self._cluster_run, self.request_id = True, cluster_id
                return
            assert self.params is not None
            job = core.live.start(asset, self.params, self.processor, request_id=self.request_id)
            # Re-attached to a running job (same processor key): the request is that job's.
            self._live_job, self.request_id, self.received_at = job, job.request_id, job.created
            return
        ids = {"rtvi.request_id": self.request_id, "rtvi.asset_id": ",".join(a.id for a in self.assets)}
        trace.get_current_span().set_attributes(ids)  # the request's span
        # Once per asset, off the event loop: an S3 asset is fetched into the local cache here (the video
        # job's own media_path is then a cache hit).
        paths = [await core.store.local_media(a) for a in self.assets]
        if self.is_video:
            self._file_job = core.file_job(
                self.processor,
                video=self.assets[0],
                params=self.params,
                received_at=self.received_at,
                span_attributes=ids,
            )
        else:
            self._file_job = core.file_job(
                self.processor, images=paths, received_at=self.received_at, span_attributes=ids
            )
        await self._file_job.plan()

    # --- times --------------------------------------------------------------------------------
    def time(self, seconds: float) -> str:
        return self.clock.time(seconds)

    def range(self) -> tuple[float, float]:
        """The time range of a file's chunks (0, 0 for images and live streams)."""
        return self._file_job.time_range if self._file_job is not None else (0.0, 0.0)

    # --- results ------------------------------------------------------------------------------
    async def results(self) -> AsyncIterator[ChunkResult[Out]]:
        # Subscribing here, not when started, so a response that is never sent leaves no reader.
        if self._cluster_run:
            async for r in self.core.cluster.reader(self.assets[0], self.request_id).results():
                yield r
            return
        if self._live_job is not None:
            async for r in self._live_job.subscribe().results():
                yield r
            return
        assert self._file_job is not None, "start() first"
        try:
            with self.core.store.registry.using([a.id for a in self.assets]):
                async for r in self._file_job.results():
                    self._done(r)  # the index takes the chunk's thumbnail frame here
                    # ... and the response, which may collect every chunk, keeps the result without it.
                    yield replace(r, thumbnail=None)
        except Exception as exc:
            self.report_failure(exc)
            raise
        finally:
            self.release()

    def release(self) -> None:
        """The generation is over: remove a temporary asset it brought as a url (idempotent)."""
        if self._temporary and self._own is not None:
            self.core.store.discard(self._own.id)
            self._own = None

    def _done(self, r: ChunkResult[Out]) -> None:
        assert self._file_job is not None
        self.core.chunk_done(
            ChunkDone(
                asset=self.assets[0],
                request_id=self.request_id,
                result=r,
                clock=self.clock,
                received_at=self.received_at,
                requested_model=self.plan.requested_model,
                span_attributes=self._file_job.span_attributes,
                indexable=not self._temporary,
            )
        )

    def report_failure(self, exc: BaseException) -> None:
        """A failed generation on the error bus (spec §6.5), attributed to the (first) asset."""
        detail = exc.message if isinstance(exc, RtviError) else (str(exc) or type(exc).__name__)
        message = f"{self.plan.failure_message} Request {self.request_id}: {detail}"
        self.core.report_error(self.assets[0].id, message)


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


def chunk_timings(r: ChunkResult[Any]) -> dict[str, Any]:
    """A chunk's ChunkTimings fields (ms and s as the spec rounds them)."""
    return {
        "decode_latency_ms": round(r.decode_latency_s * 1000, 3),
        "chunk_latency_ms": round(r.chunk_latency_s * 1000, 3),
        "queue_time_s": round(r.queue_time_s, 6),
        "processing_latency_s": round(r.chunk_latency_s, 6),
        "frame_count": r.frame_count,
    }
