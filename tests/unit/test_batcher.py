"""The inference batcher with a real (tiny, randomly initialised) CLIP model: concurrent requests share
model calls, results match unbatched calls, and failures reach every waiter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from rtvi.services.embed.batching import EmbeddingBatcher
from rtvi.services.embed.models.clip import ClipEmbedder
from tests.model_factory import build_tiny_clip


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> ClipEmbedder:
    return ClipEmbedder(build_tiny_clip(tmp_path_factory.mktemp("m") / "tiny-clip"), device="cpu")


def _clips(n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    return [[rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)] for _ in range(n)]


def test_concurrent_chunks_share_model_calls(embedder: ClipEmbedder) -> None:
    clips = _clips(8)
    expected = embedder.embed_frames(clips)

    async def run() -> tuple[list[np.ndarray], int]:
        batcher = EmbeddingBatcher(embedder, max_batch=4)
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.embed_clip(c) for c in clips))
        finally:
            await batcher.stop()
        return [v for v, _ in results], batcher.batches_run

    vectors, batches = asyncio.run(run())
    assert batches < len(clips), "8 concurrent chunks should need fewer than 8 model calls"
    assert batches >= 2, "a batch never exceeds max_batch=4"
    np.testing.assert_allclose(np.stack(vectors), expected, atol=1e-5)


def test_texts_and_clips_mixed_keep_their_order(embedder: ClipEmbedder) -> None:
    async def run() -> list[np.ndarray]:
        batcher = EmbeddingBatcher(embedder, max_batch=8)
        batcher.start()
        try:
            a, b, (clip_vec, _) = await asyncio.gather(
                batcher.embed_texts(["a cat", "a dog"]),
                batcher.embed_texts(["a forklift"]),
                batcher.embed_clip(_clips(1)[0]),
            )
        finally:
            await batcher.stop()
        return [a, b, clip_vec]

    a, b, clip_vec = asyncio.run(run())
    np.testing.assert_allclose(a, embedder.embed_texts(["a cat", "a dog"]), atol=1e-5)
    np.testing.assert_allclose(b, embedder.embed_texts(["a forklift"]), atol=1e-5)
    assert clip_vec.shape == (embedder.dim,)


def test_a_failing_model_call_fails_its_waiters(embedder: ClipEmbedder, tmp_path: Path) -> None:
    async def run() -> None:
        batcher = EmbeddingBatcher(embedder, max_batch=4)
        batcher.start()
        try:
            with pytest.raises(ValueError):
                await batcher.embed_clip([])  # an empty clip is refused by the model
            # The worker survives and serves the next request.
            vec, _ = await batcher.embed_clip(_clips(1)[0])
            assert vec.shape == (embedder.dim,)
        finally:
            await batcher.stop()

    asyncio.run(run())
