"""Batches model work from concurrent requests into single model calls on one inference thread.

Each request submits one chunk (a list of frames) or a list of texts and awaits its vectors. A single
worker takes whatever is queued (up to `max_batch` chunks) and runs one `embed_frames` call, so N
concurrent requests cost about one model call per N chunks instead of N calls. The queue is bounded:
when inference falls behind, submitters wait (backpressure) instead of piling up frames in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from rtvi.media.types import Frame
from rtvi.models.base import Embedder, Vectors

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Work:
    clip: Sequence[Frame] | None
    texts: Sequence[str] | None
    future: asyncio.Future[tuple[Vectors, float]] = field(repr=False)


class InferenceBatcher:
    def __init__(self, embedder: Embedder, max_batch: int, max_texts: int = 256) -> None:
        self.embedder = embedder
        self.max_batch = max(1, max_batch)
        self.max_texts = max_texts
        self._queue: asyncio.Queue[_Work] = asyncio.Queue(maxsize=self.max_batch * 4)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0
        self.items_run = 0

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="inference-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed_clip(self, frames: Sequence[Frame]) -> tuple[Vectors, float]:
        """-> (vector of shape (dim,), seconds the model call took)."""
        vectors, latency = await self._submit(_Work(frames, None, asyncio.get_running_loop().create_future()))
        return vectors[0], latency

    async def embed_texts(self, texts: Sequence[str]) -> Vectors:
        vectors, _ = await self._submit(_Work(None, texts, asyncio.get_running_loop().create_future()))
        return vectors

    async def _submit(self, work: _Work) -> tuple[Vectors, float]:
        await self._queue.put(work)
        return await work.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [w for w in batch if not w.future.cancelled()]
            clips = [w for w in batch if w.clip is not None]
            texts = [w for w in batch if w.texts is not None]
            if clips:
                await self._call(
                    loop,
                    clips,
                    lambda ws: self.embedder.embed_frames([w.clip for w in ws if w.clip is not None]),
                )
            for group in _text_groups(texts, self.max_texts):
                await self._call(
                    loop, group, lambda ws: self.embedder.embed_texts([t for w in ws for t in w.texts or ()])
                )

    async def _call(
        self, loop: asyncio.AbstractEventLoop, works: list[_Work], fn: Callable[[list[_Work]], Vectors]
    ) -> None:
        start = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(self._executor, fn, works)
        except Exception as exc:
            log.exception("model call failed for a batch of %d", len(works))
            for w in works:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        latency = time.perf_counter() - start
        self.batches_run += 1
        self.items_run += len(works)
        offset = 0
        for w in works:
            n = 1 if w.clip is not None else len(w.texts or ())
            if not w.future.done():
                w.future.set_result((np.asarray(vectors[offset : offset + n], dtype=np.float32), latency))
            offset += n


def _text_groups(works: list[_Work], max_texts: int) -> list[list[_Work]]:
    groups: list[list[_Work]] = []
    current: list[_Work] = []
    count = 0
    for w in works:
        n = len(w.texts or ())
        if current and count + n > max_texts:
            groups.append(current)
            current, count = [], 0
        current.append(w)
        count += n
    if current:
        groups.append(current)
    return groups
