"""The bundled text encoder: MiniLM in ONNX Runtime gives sentence-transformers' own vectors, in the
texts' order, exported once into the model cache; models it does not describe stay in torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rtvi.core.models.bundled import minilm_dir
from rtvi.core.models.text_encoder import SentenceEncoder

CPU = torch.device("cpu")
# Mixed lengths (one past the 256-token limit), unicode and an empty text, more than one batch of 4.
TEXTS = [
    "a forklift carrying a pallet past the loading dock",
    "",
    "person",
    "Ein Gabelstapler fährt durch das Lager 🚜",
    "a truck " * 300,
    "two people talking near the shelves",
    "a cat",
    "an empty parking lot at night, lit by a single lamp",
    "smoke",
]


def encoder(
    cache: Path | None, model_dir: Path | None = None, *, onnx_runtime: bool = True
) -> SentenceEncoder:
    return SentenceEncoder(
        model_dir or minilm_dir(),
        CPU,
        name="minilm-test",
        batch_size=4,
        cache_dir=cache,
        onnx_runtime=onnx_runtime,
    )


def sentence_transformers_vectors(model_dir: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def test_onnx_runtime_gives_sentence_transformers_vectors_in_order(tmp_path: Path) -> None:
    fast = encoder(tmp_path)
    assert fast.in_onnx_runtime
    got = fast.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, sentence_transformers_vectors(minilm_dir(), TEXTS), atol=1e-5)
    # Each text's vector does not depend on the batch it shared (padding is masked out).
    np.testing.assert_allclose(fast.encode([TEXTS[2]])[0], got[2], atol=1e-5)
    assert fast.encode([]).shape == (0, 384)


def test_exported_once_then_loaded_from_the_cache(tmp_path: Path) -> None:
    encoder(tmp_path)
    files = sorted((tmp_path / "onnx").glob("minilm-test-*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    assert encoder(tmp_path).in_onnx_runtime
    assert [f.stat().st_mtime_ns for f in (tmp_path / "onnx").glob("*.onnx")] == [stamp]


def test_torch_when_asked(tmp_path: Path) -> None:
    slow = encoder(tmp_path, onnx_runtime=False)
    assert not slow.in_onnx_runtime and not (tmp_path / "onnx").exists()
    np.testing.assert_allclose(
        slow.encode(TEXTS[:3]), sentence_transformers_vectors(minilm_dir(), TEXTS[:3]), atol=1e-6
    )


def test_a_model_pooled_otherwise_stays_in_torch(tmp_path: Path) -> None:
    """CLS pooling is not what the exported graph computes: such a model runs encode() unchanged."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Transformer

    transformer = Transformer(str(minilm_dir()))
    model = SentenceTransformer(
        modules=[transformer, Pooling(384, pooling_mode="cls"), Normalize()], device="cpu"
    )
    model_dir = tmp_path / "cls-pooled"
    model.save(str(model_dir))
    cls = encoder(tmp_path / "cache", model_dir)
    assert not cls.in_onnx_runtime
    np.testing.assert_allclose(
        cls.encode(TEXTS[:3]), sentence_transformers_vectors(model_dir, TEXTS[:3]), atol=1e-6
    )
    # ... and differs from mean pooling, so the check above could tell them apart.
    assert not np.allclose(cls.encode(TEXTS[:1]), encoder(None).encode(TEXTS[:1]), atol=1e-2)


@pytest.mark.parametrize("onnx_runtime", [True, False])
def test_bundled_model_texts_match_in_both_runtimes(model_cache: Path, onnx_runtime: bool) -> None:
    from rtvi.core.models.bundled import BundledEmbedder

    model = BundledEmbedder(cache_dir=model_cache, detect_people=False, onnx_runtime=onnx_runtime)
    reference = sentence_transformers_vectors(minilm_dir(), TEXTS[:2])
    vectors = model.embed_texts(TEXTS[:2])
    # The bridge's text half: the MiniLM vector, centred on the class names, normalised.
    expected = reference - model._center
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
