"""Live jobs: a stream's shared decoder -> wall-clock chunks -> the model stage -> every subscriber.

One job per stream and processor key (a second generate call with the same model re-attaches to it,
spec §4.1); jobs of different processors on one stream share its one decoder. A job has SSE
subscribers and the core's chunk listeners (pipeline/events.py: the results bus, the search index):
`persistent` jobs (auto-started CV inference) outlive their SSE readers; the others stop when their last
reader leaves, unless a listener takes live chunks now (the results bus does while it is switched on).

Bounded everywhere: the decoder thread hands chunks over with call_soon_threadsafe (a few per chunk
duration), chunks waiting for the model sit in a bounded queue, and each subscriber has a bounded result
queue. A full queue drops its oldest entry; every drop is counted (live_dropped_total{reason}) and
logged, so a slow model or reader never grows memory and never stalls the other subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rtvi.core.assets.registry import Asset
from rtvi.core.credentials import with_credentials
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.rtsp import (
    LiveChunker,
    LiveDecoder,
    LiveEnd,
    LiveEvent,
    LiveGap,
    PickedFrame,
    RtspOptions,
)
from rtvi.core.media.times import MediaClock
from rtvi.core.media.types import SampledChunk
from rtvi.core.pipeline.events import ChunkDone, ChunkListener, notify
from rtvi.core.pipeline.results import ChunkProcessor, ChunkResult, middle
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import LiveSettings

log = logging.getLogger(__name__)

ErrorHook = Callable[[str, str], None]  # (stream id, message): the error bus (spec §6.5)
T = TypeVar("T")
Out = TypeVar("Out")


LIVE_CLOCK = MediaClock(live=True)  # live chunk times are Unix seconds


class LiveStreamError(Exception):
    """A live job ended with an error (reconnection window exhausted, model failure)."""


@dataclass(frozen=True, slots=True)
class _Stopped:
    error: str | None


def rtsp_options(settings: LiveSettings) -> RtspOptions:
    return RtspOptions(
        transport=settings.rtsp_transport,
        open_timeout_s=settings.rtsp_open_timeout_s,
        read_timeout_s=settings.rtsp_timeout_ms / 1000,
        reconnect_interval_s=settings.rtsp_reconnection_interval_s,
        reconnect_window_s=settings.rtsp_reconnection_window_s,
        reconnect_max_attempts=settings.rtsp_reconnection_max_attempts,
    )


def stream_url(asset: Asset) -> str:
    """The URL to connect to: the stored URL (without credentials) plus the stored credentials."""
    return with_credentials(asset.path, asset.meta.get("username", ""), asset.meta.get("password", ""))


class DropOldestQueue(Generic[T]):
    """A bounded asyncio queue whose put never waits: when full, the oldest item is dropped and counted."""

    def __init__(self, maxsize: int, on_drop: Callable[[], None]) -> None:
        self._q: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._on_drop = on_drop

    def put(self, item: T) -> None:
        if self._q.full():
            self._q.get_nowait()
            self._on_drop()
        self._q.put_nowait(item)

    async def get(self) -> T:
        return await self._q.get()


class Subscription(Generic[Out]):
    """One SSE reader of a live job."""

    def __init__(self, job: LiveJob[Out], maxsize: int) -> None:
        self.job = job
        self._queue: DropOldestQueue[ChunkResult[Out] | _Stopped] = DropOldestQueue(
            maxsize, lambda: job.dropped("slow_consumer")
        )

    def offer(self, item: ChunkResult[Out] | _Stopped) -> None:
        self._queue.put(item)

    async def results(self) -> AsyncIterator[ChunkResult[Out]]:
        """Results until the job stops; raises LiveStreamError when it stopped with an error. Leaving
        the iteration (client gone) unsubscribes."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _Stopped):
                    if item.error:
                        raise LiveStreamError(item.error)
                    return
                yield item
        finally:
            self.job.unsubscribe(self)


class LiveJob(Generic[Out]):
    def __init__(
        self,
        *,
        manager: LiveManager,
        asset: Asset,
        params: ChunkParams,
        processor: ChunkProcessor[Out],
        persistent: bool,
        request_id: str | None = None,
        epoch_grid: bool = False,
    ) -> None:
        self.manager = manager
        self.asset = asset
        self.stream_id = asset.id
        self.params = params.require_live()
        self.processor = processor
        self.persistent = persistent
        self.request_id = request_id or str(uuid.uuid4())
        self.created = time.time()
        self.subscribers: list[Subscription[Out]] = []
        self.chunks_done = 0
        self.ended = False
        self.error: str | None = None
        self._loop = asyncio.get_running_loop()
        self._pending: DropOldestQueue[SampledChunk] = DropOldestQueue(
            manager.settings.live_pending_chunks, lambda: self.dropped("inference_behind")
        )
        sampling = processor.sampling
        self.chunker = LiveChunker(
            params.chunk_duration,
            params.overlap,
            sampling.frames_per_chunk,
            sampling.size,
            self._emit_threadsafe,
            manager.settings.live_frame_pick,
            announce_picks=sampling.early is not None,
            epoch_grid=epoch_grid,
        )
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, decoder: LiveDecoder) -> None:
        self._task = asyncio.create_task(self._run(), name=f"live-{self.stream_id}")
        decoder.add(self.chunker)

    def stop(self, error: str | None = None) -> None:
        """End the job now: readers get their remaining results, then the end (or the error)."""
        if self.ended:
            return
        self.ended = True
        self.error = error
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        for sub in list(self.subscribers):
            sub.offer(_Stopped(error))
        self.manager._job_ended(self)
        if error:
            self.manager.on_error(self.stream_id, error)

    async def wait(self, timeout: float | None) -> None:
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=timeout)

    # --- readers ------------------------------------------------------------------------------
    def subscribe(self) -> Subscription[Out]:
        sub: Subscription[Out] = Subscription(self, self.manager.settings.live_subscriber_queue)
        if self.ended:
            sub.offer(_Stopped(self.error))
        else:
            self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription[Out]) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        if not self._has_consumers():
            log.info("live job %s on stream %s: last reader left; stopping", self.request_id, self.stream_id)
            self.stop()

    def _has_consumers(self) -> bool:
        return (
            self.persistent
            or bool(self.subscribers)
            or any(li.keeps_live_jobs(self.stream_id) for li in self.manager.listeners)
        )

    def dropped(self, reason: str) -> None:
        self.manager.metrics.live_dropped.labels(reason=reason).inc()
        log.warning("stream %s: queue full, dropped the oldest entry (%s)", self.stream_id, reason)

    # --- the pipeline -------------------------------------------------------------------------
    def _emit_threadsafe(self, event: LiveEvent) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: the service is shutting down
            self._loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: LiveEvent) -> None:
        if self.ended:
            return
        if isinstance(event, SampledChunk):
            self._pending.put(event)
        elif isinstance(event, PickedFrame):
            if self.processor.sampling.early is not None:
                self.processor.sampling.early(event.frame)
        elif isinstance(event, LiveGap):
            log.info("stream %s: %s", self.stream_id, event.reason)
        elif isinstance(event, LiveEnd):
            self.stop(event.error)

    async def _run(self) -> None:
        metrics = self.manager.metrics
        while True:
            sampled = await self._pending.get()
            infer_start = time.time()
            try:
                output, infer_s = await self.processor.process(sampled.frames)
            except Exception as exc:
                log.exception("stream %s: model call failed", self.stream_id)
                self.stop(f"{self.manager.failure_message}: {exc}")
                return
            done = time.time()
            chunk = sampled.chunk
            result = ChunkResult(
                index=self.chunks_done,
                start_s=chunk.start_s,
                end_s=chunk.end_s,
                output=output,
                frame_count=len(sampled.frames),
                decode_latency_s=sampled.decode_latency_s,
                inference_latency_s=infer_s,
                queue_time_s=max(0.0, infer_start - chunk.end_s),
                chunk_latency_s=max(0.0, done - chunk.end_s),
                thumbnail=middle(sampled.frames),
                frame_pts_s=tuple(sampled.frame_pts_s),
            )
            self.chunks_done += 1
            metrics.observe_live_chunk(result.decode_latency_s, result.chunk_latency_s)
            for sub in list(self.subscribers):
                sub.offer(result)
            notify(
                self.manager.listeners,
                ChunkDone(
                    self.asset,
                    self.request_id,
                    result,
                    LIVE_CLOCK,
                    self.created,
                    frames=tuple(sampled.frames),
                ),
            )
            metrics.live_delivery_latency.observe(max(0.0, time.time() - chunk.end_s))
            if not self._has_consumers():
                # A reader that never started (the response was never sent) must not leak the job.
                self.stop()
                return


class LiveManager:
    """Owns every live job and the one decoder per stream that its jobs share."""

    def __init__(
        self,
        settings: LiveSettings,
        metrics: Metrics,
        on_error: ErrorHook,
        failure_message: str = "Failed to process the live stream",
        listeners: Sequence[ChunkListener] = (),
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.on_error = on_error
        # How a job that dies of a model failure says so on the error bus and to its readers.
        self.failure_message = failure_message
        self._decoders: dict[str, LiveDecoder] = {}
        self._jobs: dict[tuple[str, str], LiveJob[Any]] = {}  # (stream id, processor key) -> job
        # Given every live chunk on the event loop, after the job's readers (the results bus, the index).
        self.listeners = tuple(listeners)

    @property
    def options(self) -> RtspOptions:
        return rtsp_options(self.settings)

    def job(self, stream_id: str) -> LiveJob[Any] | None:
        """The stream's (first) running job, if any."""
        return next((j for j in self.jobs() if j.stream_id == stream_id), None)

    def jobs(self) -> list[LiveJob[Any]]:
        return [j for j in self._jobs.values() if not j.ended]

    def decoders(self) -> dict[str, LiveDecoder]:
        return dict(self._decoders)

    def start(
        self,
        asset: Asset,
        params: ChunkParams,
        processor: ChunkProcessor[Out],
        persistent: bool = False,
        *,
        request_id: str | None = None,
        epoch_grid: bool = False,
    ) -> LiveJob[Out]:
        """Run `processor` on the stream, or re-attach to the job already running it (same key).
        `request_id` and `epoch_grid` make its chunk keys the same on whichever replica runs it."""
        key = (asset.id, processor.key)
        existing = self._jobs.get(key)
        if existing is not None and not existing.ended:
            existing.persistent = existing.persistent or persistent
            job: LiveJob[Out] = existing
            return job
        job = LiveJob(
            manager=self,
            asset=asset,
            params=params,
            processor=processor,
            persistent=persistent,
            request_id=request_id,
            epoch_grid=epoch_grid,
        )
        self._jobs[key] = job
        job.start(self._decoder(asset))
        self.metrics.active_live_streams.set(len(self.jobs()))
        log.info(
            "live job %s (%s) on stream %s: chunks of %s s (overlap %s s)",
            job.request_id,
            processor.key,
            asset.id,
            params.chunk_duration,
            params.overlap,
        )
        return job

    def _decoder(self, asset: Asset) -> LiveDecoder:
        decoder = self._decoders.get(asset.id)
        if decoder is None or decoder.failure is not None:
            decoder = LiveDecoder(
                asset.id,
                stream_url(asset),
                self.options,
                on_retry=lambda reason: self.metrics.decode_retry.labels(reason=reason).inc(),
                on_running=self.metrics.live_decoders_open.inc,
                on_fps=self.metrics.stream_fps.observe,
            )
            self._decoders[asset.id] = decoder
            decoder.start()
        return decoder

    def _job_ended(self, job: LiveJob[Any]) -> None:
        key = (job.stream_id, job.processor.key)
        if self._jobs.get(key) is job:
            del self._jobs[key]
        decoder = self._decoders.get(job.stream_id)
        if decoder is not None and decoder.remove(job.chunker) == 0:
            decoder.stop()
            del self._decoders[job.stream_id]
        self.metrics.active_live_streams.set(len(self.jobs()))

    async def stop(self, stream_id: str, timeout: float | None, request_id: str | None = None) -> bool:
        """Stop the stream's jobs, or its job of one request (their readers get [DONE]); wait up to
        `timeout` for them to wind down. -> whether a job was running."""
        jobs = [
            j
            for j in self.jobs()
            if j.stream_id == stream_id and (request_id is None or j.request_id == request_id)
        ]
        for job in jobs:
            job.stop()
        await asyncio.gather(*(j.wait(timeout) for j in jobs))
        return bool(jobs)

    async def shutdown(self) -> None:
        jobs = self.jobs()
        for job in jobs:
            job.stop()
        await asyncio.gather(*(j.wait(5) for j in jobs))
        for decoder in self._decoders.values():
            decoder.stop()
        self._decoders.clear()
