"""The embedding service's logic without HTTP: a ServiceCore with a real (tiny, random) CLIP stage plans,
embeds and counts file requests, refuses bad chunking and unknown models, and embeds texts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

from rtvi.core.service import ServiceCore
from rtvi.errors import InvalidParameters, NoSuchResource
from rtvi.services.embed.models.clip import ClipEmbedder
from rtvi.services.embed.protocol import TextEmbeddingsQuery, VideoEmbeddingsQuery
from rtvi.services.embed.serving import EmbedServing
from rtvi.services.embed.spec import SPEC
from rtvi.settings import Settings
from tests.media_factory import make_clip
from tests.model_factory import build_tiny_clip
from tests.serving_harness import upload, with_serving

T = TypeVar("T")


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> ClipEmbedder:
    return ClipEmbedder(build_tiny_clip(tmp_path_factory.mktemp("m") / "tiny-clip"), device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "c.mp4", seconds=12, fps=10, width=96, height=64)


def _with_serving(
    tmp_path: Path, embedder: ClipEmbedder, body: Callable[[ServiceCore, EmbedServing], Awaitable[T]]
) -> T:
    settings = Settings(ASSET_STORAGE_DIR=str(tmp_path / "store"))  # type: ignore[call-arg]
    return with_serving(
        SPEC.core, settings, lambda c: EmbedServing(c, embedder, max_batch=4), EmbedServing, body
    )


def test_a_file_request_is_planned_embedded_and_counted(
    tmp_path: Path, embedder: ClipEmbedder, clip: Path
) -> None:
    async def body(core: ServiceCore, serving: EmbedServing) -> None:
        asset_id = await upload(core, clip)
        query = VideoEmbeddingsQuery(
            id=asset_id, model=embedder.id, chunk_duration=5, chunk_overlap_duration=1
        )
        req = await serving.video_request(query)
        assert req.range() == (0.0, 12.0)
        results = [r async for r in req.results()]
        assert [(r.start_s, r.end_s) for r in results] == [(0, 5), (4, 9), (8, 12)]
        assert [serving.rendering.chunk(req, r).start_time for r in results] == ["0.0", "4.0", "8.0"]
        vectors = np.stack([r.output for r in results])
        assert vectors.shape == (3, embedder.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        sample = core.metrics.registry.get_sample_value
        assert sample("video_file_queries_processed") == 1
        assert sample("video_file_queries_pending") == 0
        assert sample("decode_latency_seconds_count") == 3 and sample("chunk_latency_seconds_count") == 3
        assert (sample("vlm_latency_seconds_count") or 0) >= 1

    _with_serving(tmp_path, embedder, body)


def test_bad_requests_fail_before_any_work(tmp_path: Path, embedder: ClipEmbedder, clip: Path) -> None:
    async def body(core: ServiceCore, serving: EmbedServing) -> None:
        asset_id = await upload(core, clip)
        with pytest.raises(InvalidParameters, match="must be smaller than chunk_duration"):
            await serving.video_request(
                VideoEmbeddingsQuery(
                    id=asset_id, model=embedder.id, chunk_duration=5, chunk_overlap_duration=5
                )
            )
        with pytest.raises(InvalidParameters, match="No such model"):
            await serving.video_request(VideoEmbeddingsQuery(id=asset_id, model="other"))
        with pytest.raises(NoSuchResource):
            await serving.video_request(
                VideoEmbeddingsQuery(id="5f0c3c1e-8f7e-4a53-9a3e-9d1f0f6a1b2c", model=embedder.id)
            )
        assert core.metrics.registry.get_sample_value("video_file_queries_processed") == 0

    _with_serving(tmp_path, embedder, body)


def test_texts_match_the_model(tmp_path: Path, embedder: ClipEmbedder) -> None:
    async def body(core: ServiceCore, serving: EmbedServing) -> None:
        out = await serving.text_embeddings(
            TextEmbeddingsQuery(text_input=["a cat", "a dog"], model=embedder.id)
        )
        got = np.array([d.embeddings for d in out.data], dtype=np.float32)
        np.testing.assert_allclose(got, embedder.embed_texts(["a cat", "a dog"]), atol=1e-5)
        with pytest.raises(InvalidParameters, match="empty"):
            await serving.text_embeddings(TextEmbeddingsQuery(text_input=" ", model=embedder.id))

    _with_serving(tmp_path, embedder, body)


def test_an_image_is_one_chunk_whatever_the_chunking_says(tmp_path: Path, embedder: ClipEmbedder) -> None:
    """Chunking is checked where it applies: an image request with unusable chunk values is still one
    chunk (as the reference takes it), not a 400."""
    image = tmp_path / "dock.jpg"
    Image.fromarray(np.full((64, 96, 3), 128, np.uint8)).save(image)

    async def body(core: ServiceCore, serving: EmbedServing) -> None:
        asset_id = await upload(core, image, "image")
        query = VideoEmbeddingsQuery(
            id=asset_id, model=embedder.id, chunk_duration=5, chunk_overlap_duration=5
        )
        req = await serving.video_request(query)
        results = [r async for r in req.results()]
        assert len(results) == 1 and results[0].output.shape == (embedder.dim,)

    _with_serving(tmp_path, embedder, body)
