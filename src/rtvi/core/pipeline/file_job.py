"""File jobs turn a video file (many chunks) or a set of images (one chunk) into ChunkResults:
plan chunks -> sample frames -> the model stage.

Decoding runs in a bounded thread pool and is prefetched one chunk ahead, so chunk i+1 decodes while
chunk i is in the model. Closing the async iterator (client gone, request cancelled) stops decoding
promptly and closes the decoder.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar

from av.codec.hwaccel import HWAccel
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Tracer

from rtvi.core.media.audio import FileAudio
from rtvi.core.media.chunks import ChunkParams, plan_chunks, plan_image_chunk
from rtvi.core.media.probe import probe
from rtvi.core.media.sampler import FileFrameSampler, load_image
from rtvi.core.media.types import ChunkSpec, MediaError, SampledChunk
from rtvi.core.pipeline.results import ChunkProcessor, ChunkResult, middle
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import InvalidMedia

Out = TypeVar("Out")
# Chunks handed to the model stage before the oldest result is taken (see FileJob._results).
LOOKAHEAD = 2


class FileJob(Generic[Out]):
    """One file request: a video (with its chunking) or images, through one processor."""

    def __init__(
        self,
        *,
        processor: ChunkProcessor[Out],
        decode_pool: ThreadPoolExecutor,
        metrics: Metrics,
        video: Path | None = None,
        params: ChunkParams | None = None,
        duration_s: float | None = None,
        fps: float | None = None,
        images: list[Path] | None = None,
        received_at: float | None = None,
        tracer: Tracer | None = None,
        span_attributes: Mapping[str, str] | None = None,
        hwaccel: HWAccel | None = None,
    ) -> None:
        if (video is None) == (not images):
            raise ValueError("a job needs either a video or images")
        self.processor = processor
        self.decode_pool = decode_pool
        self.metrics = metrics
        self.video = video
        self.params = params or ChunkParams()
        self._duration_s = duration_s
        self._fps = fps
        self.images = images or []
        self.hwaccel = hwaccel
        self.received_at = received_at if received_at is not None else time.time()
        self.chunks: list[ChunkSpec] = [] if video is not None else [plan_image_chunk()]
        # Each chunk's decode and inference become child spans of the caller's (the request's) span.
        self.tracer = tracer or trace.NoOpTracer()
        self.span_attributes = dict(span_attributes or {})

    async def plan(self) -> list[ChunkSpec]:
        """Cut the video into chunks (probing it if its duration is not known). Raises InvalidParameters
        for chunking that does not fit the file, InvalidMedia for a file that cannot be read."""
        if self.video is not None and not self.chunks:
            with self.tracer.start_as_current_span("plan", attributes=self.span_attributes) as span:
                self.chunks = await asyncio.to_thread(self._plan, self.video)
                span.set_attribute("rtvi.chunks", len(self.chunks))
        return self.chunks

    def _plan(self, video: Path) -> list[ChunkSpec]:
        duration_s, fps = self._duration_s, self._fps
        if duration_s is None or fps is None:
            try:
                info = probe(video)
            except MediaError as exc:
                raise InvalidMedia() from exc
            duration_s, fps = info.duration_s, info.fps
        return plan_chunks(duration_s, fps, self.params)

    @property
    def time_range(self) -> tuple[float, float]:
        if not self.chunks:
            return 0.0, 0.0
        return self.chunks[0].start_s, max(c.end_s for c in self.chunks)

    def _sampled(self) -> Generator[SampledChunk, None, None]:
        sampling = self.processor.sampling
        if self.video is not None:
            with (
                FileFrameSampler(
                    self.video, sampling.frames_per_chunk, sampling.size, hwaccel=self.hwaccel
                ) as sampler,
                FileAudio(self.video) if sampling.audio else nullcontext(None) as audio,
            ):
                for sampled in sampler.sample(self.chunks):
                    if audio is not None:
                        c = sampled.chunk
                        sampled = replace(sampled, audio=audio.window(c.start_s, c.end_s))
                    yield sampled
        else:
            start = time.perf_counter()
            frames = [load_image(p, sampling.size) for p in self.images]
            yield SampledChunk(self.chunks[0], frames, [0.0] * len(frames), time.perf_counter() - start)

    async def results(self) -> AsyncIterator[ChunkResult[Out]]:
        await self.plan()
        self.metrics.files_pending.inc()
        started = time.time()
        try:
            # aclosing: a consumer that stops early (client gone) closes the decoder now, not at GC.
            async with aclosing(self._results()) as results:
                async for r in results:
                    yield r
            done = time.time()
            self.metrics.observe_file_query(e2e_s=done - self.received_at, pipeline_s=done - started)
        finally:
            self.metrics.files_pending.dec()

    async def _results(self) -> AsyncGenerator[ChunkResult[Out], None]:
        """Decode runs one chunk ahead, and the model stage gets the next chunk while it still works on
        this one (LOOKAHEAD chunks in flight): a stage that prepares its input (frames -> JPEG for an
        endpoint) or batches (the embedder) overlaps that with the running call. Results stay in order."""
        it = self._sampled()
        nxt: asyncio.Future[SampledChunk | None] | None = self._decode_next(it)
        inflight: deque[tuple[SampledChunk, float, asyncio.Task[tuple[Out, float]]]] = deque()
        try:
            while True:
                while nxt is not None and len(inflight) < LOOKAHEAD:
                    decode_started = time.time()
                    sampled = await nxt
                    if sampled is None:
                        nxt = None
                        break
                    nxt = self._decode_next(it)
                    task = asyncio.ensure_future(self._infer(sampled))
                    inflight.append((sampled, decode_started, task))
                if not inflight:
                    return
                sampled, decode_started, task = inflight.popleft()
                output, infer_s = await task
                done = time.time()
                result = ChunkResult(
                    index=sampled.chunk.index,
                    start_s=sampled.chunk.start_s,
                    end_s=sampled.chunk.end_s,
                    output=output,
                    frame_count=len(sampled.frames),
                    decode_latency_s=sampled.decode_latency_s,
                    inference_latency_s=infer_s,
                    queue_time_s=max(0.0, decode_started - self.received_at),
                    chunk_latency_s=done - decode_started,
                    thumbnail=middle(sampled.frames),
                    frame_pts_s=tuple(sampled.frame_pts_s),
                )
                self.metrics.observe_chunk(result.decode_latency_s, result.chunk_latency_s)
                yield result
        finally:
            for _, _, pending in inflight:
                pending.cancel()
            await asyncio.gather(*(t for _, _, t in inflight), return_exceptions=True)
            # Let an in-flight decode finish before closing the generator from this thread.
            if nxt is not None and not nxt.done():
                await asyncio.wait([nxt])
            await asyncio.get_running_loop().run_in_executor(self.decode_pool, it.close)

    def _decode_next(self, it: Generator[SampledChunk, None, None]) -> asyncio.Future[SampledChunk | None]:
        """The next chunk's frames, sampled in the decode pool. Its span (a child of the current one,
        from launch to done) is recorded when the chunk comes, not for the end of the iteration."""
        parent, launched = otel_context.get_current(), time.time_ns()
        future = asyncio.get_running_loop().run_in_executor(self.decode_pool, next, it, None)

        def record(f: asyncio.Future[SampledChunk | None]) -> None:
            sampled = None if f.cancelled() or f.exception() else f.result()
            if sampled is not None:
                attributes = self._chunk_span_attributes(sampled)
                span = self.tracer.start_span("decode", parent, attributes=attributes, start_time=launched)
                span.end()

        future.add_done_callback(record)
        return future

    async def _infer(self, sampled: SampledChunk) -> tuple[Out, float]:
        with self.tracer.start_as_current_span("inference", attributes=self._chunk_span_attributes(sampled)):
            return await self.processor.process(sampled.frames, sampled.audio)

    def _chunk_span_attributes(self, sampled: SampledChunk) -> dict[str, str | int | float]:
        c = sampled.chunk
        return {
            **self.span_attributes,
            "rtvi.chunk.index": c.index,
            "rtvi.chunk.start_s": c.start_s,
            "rtvi.chunk.frames": len(sampled.frames),
        }
