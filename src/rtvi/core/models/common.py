"""What model backends share: clip shaping, frame resizing, vector normalisation, checkpoint files.

Kept free of a module-level torch import so that the remote backend (HTTP only) stays light.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

from rtvi.core.assets.storage import atomic_write
from rtvi.core.media.types import Frame
from rtvi.errors import ModelLoadError

log = logging.getLogger(__name__)

T = TypeVar("T")
Vectors = npt.NDArray[np.float32]  # (n, dim), each row L2-normalised

# Below this norm a vector is treated as zero instead of being blown up to noise.
_EPS = 1e-12


def l2_normalize(x: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length, as contiguous float32 (the `Vectors` contract)."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return np.ascontiguousarray(arr / np.maximum(norms, _EPS), dtype=np.float32)


def empty_vectors(dim: int) -> Vectors:
    return np.zeros((0, dim), dtype=np.float32)


def check_clips(clips: Sequence[Sequence[Frame]]) -> None:
    """Reject clips the models cannot embed, with a message naming the clip."""
    for i, clip in enumerate(clips):
        if len(clip) == 0:
            raise ValueError(f"clip {i} has no frames")
        for frame in clip:
            if frame.ndim not in (2, 3) or frame.shape[0] == 0 or frame.shape[1] == 0:
                raise ValueError(f"clip {i} holds a frame of shape {frame.shape}; expected HxWx3")


def fit_clip(frames: Sequence[Frame], n: int) -> list[Frame]:
    """Exactly n frames: short clips (images, tails) repeat their last frame, as the reference does;
    long ones are subsampled uniformly so the whole chunk stays covered."""
    if not frames:
        raise ValueError("a clip needs at least one frame")
    if len(frames) >= n:
        idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
        return [frames[i] for i in idx]
    return [*frames, *([frames[-1]] * (n - len(frames)))]


def to_pil(frame: Frame) -> Image.Image:
    """RGB PIL image from an HxWx3 (or grayscale / RGBA) uint8 array."""
    img = Image.fromarray(np.ascontiguousarray(frame))
    return img if img.mode == "RGB" else img.convert("RGB")


def json_answer(content: str) -> Any:
    """A model's answer read as JSON (also inside a ```json fence, as some models write it), or None."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[4:] if text.lower().startswith("json") else text
    try:
        return json.loads(text)
    except ValueError:
        return None


def frame_data_url(frame: Frame, quality: int = 85) -> str:
    """A frame as a JPEG data: URL, as OpenAI-compatible chat endpoints take images."""
    buf = io.BytesIO()
    to_pil(frame).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def resize_frame(frame: Frame, size: tuple[int, int], *, crop: bool = False) -> Frame:
    """Frame as RGB at size=(width, height).

    crop=False stretches (what the sampler does with input_size, so content is never cut off);
    crop=True resizes the short side and centre-crops (classic ImageNet evaluation).
    Frames already at the size pass through untouched.
    """
    w, h = size
    if frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] == h and frame.shape[1] == w:
        return frame
    img = to_pil(frame)
    if crop:
        scale = max(w / img.width, h / img.height)
        rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
        img = img.resize((rw, rh), Image.Resampling.BICUBIC)
        left, top = (rw - w) // 2, (rh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    else:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@runtime_checkable
class PooledFrames(Protocol):
    """A model whose clip vector pools per-frame features, so they can be computed frame by frame (as
    live frames are sampled) and pooled when the clip is complete."""

    @property
    def dim(self) -> int: ...

    def frame_features(self, frames: Sequence[Frame]) -> npt.NDArray[np.float32]:
        """(n_frames, k) features, one row per frame."""
        ...

    def pool(self, features: Sequence[npt.NDArray[np.float32]]) -> Vectors:
        """One (m_i, k) array of frame features per clip -> one vector per clip."""
        ...


def embed_by_pooling(model: PooledFrames, clips: Sequence[Sequence[Frame]]) -> Vectors:
    """`embed_frames` of a PooledFrames model: the frames of all clips in one pass, pooled per clip."""
    check_clips(clips)
    if not clips:
        return empty_vectors(model.dim)
    features = model.frame_features([f for clip in clips for f in clip])
    return model.pool(np.split(features, np.cumsum([len(c) for c in clips])[:-1]))


def mean_pool(features: Sequence[npt.NDArray[np.float32]]) -> Vectors:
    """One vector per clip: the mean of its (already normalised) frame vectors, renormalised.

    Normalising each frame first gives every frame the same weight whatever its norm.
    """
    return l2_normalize(np.stack([f.mean(axis=0) for f in features]))


def model_id_for_dir(path: Path) -> str:
    """The spec's model id for a local checkpoint: the lowercased directory name."""
    return path.resolve().name.lower()


def read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file, or {} when it is absent; a broken file is a load error."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    return data


class CheckpointIdentity:
    """The `id` and `dim` of an Embedder loaded from a checkpoint, set by the backend's constructor."""

    _id: str
    _dim: int

    @property
    def id(self) -> str:
        return self._id

    @property
    def dim(self) -> int:
        return self._dim


def save_to_cache(path: Path, data: bytes) -> None:
    """Write a model-cache file via a temp file + rename, so a concurrent start never reads half a file.
    A read-only cache only costs the work again at the next start, so failures are logged, not raised."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        log.warning("cannot write %s to the model cache: %s", path, exc)
