"""Jobs turn an input into a stream of ChunkResults: plan chunks -> sample frames -> batched model.

Decoding runs in a bounded thread pool and is prefetched one chunk ahead, so chunk i+1 decodes while
chunk i is in the model. Closing the async iterator (client gone, request cancelled) stops decoding
promptly and closes the decoder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rtvi.engine.batcher import InferenceBatcher
from rtvi.engine.results import ChunkResult
from rtvi.media.chunks import plan_file_chunks, plan_image_chunk
from rtvi.media.probe import probe
from rtvi.media.sampler import FileFrameSampler, load_image
from rtvi.media.types import ChunkSpec, SampledChunk


@dataclass(frozen=True, slots=True)
class ChunkingParams:
    chunk_duration: float = 0
    overlap: float = 0
    start_offset: float = 0
    end_offset: float | None = None


def plan_video(
    path: Path, params: ChunkingParams, duration_s: float | None = None, fps: float | None = None
) -> list[ChunkSpec]:
    """Chunks for a video file; raises ValueError for impossible parameters (overlap >= duration, ...)."""
    if duration_s is None or fps is None:
        info = probe(path)
        duration_s, fps = info.duration_s, info.fps
    return plan_file_chunks(
        duration_s, fps, params.chunk_duration, params.overlap, params.start_offset, params.end_offset
    )


class FileEmbeddingJob:
    """Embeddings for one video file (many chunks) or a set of images (one chunk)."""

    def __init__(
        self,
        *,
        batcher: InferenceBatcher,
        decode_pool: ThreadPoolExecutor,
        video: Path | None = None,
        chunks: list[ChunkSpec] | None = None,
        images: list[Path] | None = None,
        received_at: float | None = None,
    ) -> None:
        if (video is None) == (not images):
            raise ValueError("a job needs either a video or images")
        self.batcher = batcher
        self.decode_pool = decode_pool
        self.video = video
        self.chunks = chunks or []
        self.images = images or []
        self.received_at = received_at if received_at is not None else time.time()

    def _sampled(self) -> Generator[SampledChunk, None, None]:
        embedder = self.batcher.embedder
        if self.video is not None:
            with FileFrameSampler(self.video, embedder.frames_per_chunk, embedder.input_size) as sampler:
                yield from sampler.sample(self.chunks)
        else:
            start = time.perf_counter()
            frames = [load_image(p, embedder.input_size) for p in self.images]
            yield SampledChunk(plan_image_chunk(), frames, [0.0] * len(frames), time.perf_counter() - start)

    async def results(self) -> AsyncIterator[ChunkResult]:
        loop = asyncio.get_running_loop()
        it = self._sampled()
        nxt = loop.run_in_executor(self.decode_pool, next, it, None)
        try:
            while True:
                decode_started = time.time()
                sampled = await nxt
                if sampled is None:
                    return
                nxt = loop.run_in_executor(self.decode_pool, next, it, None)
                vector, infer_s = await self.batcher.embed_clip(sampled.frames)
                done = time.time()
                yield ChunkResult(
                    index=sampled.chunk.index,
                    start_s=sampled.chunk.start_s,
                    end_s=sampled.chunk.end_s,
                    vector=vector,
                    frame_count=len(sampled.frames),
                    decode_latency_s=sampled.decode_latency_s,
                    inference_latency_s=infer_s,
                    queue_time_s=max(0.0, decode_started - self.received_at),
                    chunk_latency_s=done - decode_started,
                )
        finally:
            # Let an in-flight decode finish before closing the generator from this thread.
            if not nxt.done():
                await asyncio.wait([nxt])
            await loop.run_in_executor(self.decode_pool, it.close)
