"""The embedder behind two batchers, clips and texts, that share its one inference thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rtvi.core.media.types import Frame
from rtvi.core.pipeline.batcher import Batcher, inference_executor
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
        executor = self._executor = inference_executor()
        self.clips: Batcher[Clip, Vector] = Batcher(
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

    @property
    def batches_run(self) -> int:
        return self.clips.batches_run + self.texts.batches_run

    def start(self) -> None:
        self.clips.start()
        self.texts.start()

    async def stop(self) -> None:
        await self.clips.stop()
        await self.texts.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed_clip(self, frames: Clip) -> tuple[Vector, float]:
        """-> (vector of shape (dim,), seconds the model call took)."""
        return await self.clips.submit(frames)

    async def embed_texts(self, texts: Sequence[str]) -> Vectors:
        vectors, _ = await self.texts.submit_many(texts)
        return np.stack(vectors).astype(np.float32, copy=False)
