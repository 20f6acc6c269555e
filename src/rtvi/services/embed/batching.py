"""The embedder behind two batchers, clips (or frames) and texts, that share its one inference thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rtvi.core.media.types import Frame
from rtvi.core.models.common import PooledFrames
from rtvi.core.pipeline.batcher import Batcher, inference_executor
from rtvi.core.pipeline.early import FrameWork
from rtvi.services.embed.models.base import Embedder, Vectors

Clip = Sequence[Frame]
Vector = np.ndarray  # (dim,) float32, L2-normalised


class EmbeddingBatcher:
    """Chunks from concurrent requests share `embed_frames` calls (up to `max_batch` chunks each); texts
    share `embed_texts` calls (up to `max_texts` texts, a request's texts always in one call)."""

    def __init__(
        self,
        embedder: Embedder,
        max_batch: int,
        max_texts: int = 256,
        on_batch: Callable[[float], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self._max_batch = max_batch
        executor = self._executor = inference_executor()
        # A model that pools per-frame features computes them per frame, batched across streams and
        # requests, and for live chunks as soon as each frame is sampled (see core/pipeline/early.py);
        # any other model embeds whole clips, batched across requests.
        self.pooled = embedder if isinstance(embedder, PooledFrames) else None
        self.frame_features: FrameWork[Vector] | None = None
        self.clips: Batcher[Clip, Vector] | None = None
        visual: Batcher[Any, Vector]
        if self.pooled is not None:
            features = self.pooled.frame_features
            visual = Batcher(
                lambda frames: list(features(frames)),
                max_batch * embedder.frames_per_chunk,
                name="frames",
                executor=executor,
                on_batch=on_batch,
            )
            self.frame_features = FrameWork(visual.submit_many)
        else:
            visual = self.clips = Batcher(
                lambda clips: list(embedder.embed_frames(clips)),
                max_batch,
                name="clips",
                executor=executor,
                on_batch=on_batch,
            )
        self.texts: Batcher[str, Vector] = Batcher(
            lambda texts: list(embedder.embed_texts(texts)),
            max_texts,
            name="texts",
            executor=executor,
            on_batch=on_batch,
        )
        self._batchers: list[Batcher[Any, Vector]] = [visual, self.texts]

    @property
    def batches_run(self) -> int:
        return sum(b.batches_run for b in self._batchers)

    @property
    def early(self) -> Callable[[Frame], None] | None:
        """What starts a live frame's work as soon as it is sampled (None when the model cannot)."""
        return self.frame_features.start if self.frame_features is not None else None

    def start(self) -> None:
        for b in self._batchers:
            b.start()

    async def warm_up(self) -> None:
        """One call with the largest visual batch there will be, before serving. ONNX Runtime's memory
        arena grows to the largest input it has seen and keeps that size, so reaching it at start-up keeps
        the resident memory flat afterwards (an hour's soak showed a +120 MiB step the first time the live
        batches grew under load; with the bundled model on 2 cores, 857 MiB when ready and 1,826 MiB after
        a burst of 8 file requests without it, 1,557 and 1,836 MiB with it). RTVI_WARM_UP=false skips it.
        A model without a fixed input size is not warmed."""
        size = self.embedder.input_size
        if size is None:
            return
        blank = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        clip = [blank] * self.embedder.frames_per_chunk
        pooled, embedder, batch = self.pooled, self.embedder, self._max_batch

        def largest_batch() -> None:
            if pooled is not None:
                list(pooled.frame_features(clip * batch))
            else:
                list(embedder.embed_frames([clip] * batch))

        await asyncio.get_running_loop().run_in_executor(self._executor, largest_batch)

    async def stop(self) -> None:
        for b in self._batchers:
            await b.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed_clip(self, frames: Clip) -> tuple[Vector, float]:
        """-> (vector of shape (dim,), seconds the model call took)."""
        if self.clips is not None:
            return await self.clips.submit(frames)
        assert self.pooled is not None and self.frame_features is not None
        features, seconds = await self.frame_features.collect(frames)
        return self.pooled.pool([np.stack(features)])[0], seconds

    async def embed_texts(self, texts: Sequence[str]) -> Vectors:
        vectors, _ = await self.texts.submit_many(texts)
        return np.stack(vectors).astype(np.float32, copy=False)
