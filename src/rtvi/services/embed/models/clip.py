"""The `clip` backend: any transformers CLIP or SigLIP checkpoint in a local directory.

Each frame is embedded as an image; a chunk's vector is the mean of its (normalised) frame vectors,
renormalised. Texts go through the checkpoint's tokenizer and text tower.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtvi.core.media.types import Frame
from rtvi.core.models.common import (
    CheckpointIdentity,
    batched,
    embed_by_pooling,
    empty_vectors,
    l2_normalize,
    mean_pool,
    model_id_for_dir,
    read_json,
    to_pil,
)
from rtvi.core.models.device import inference_dtype, resolve_device
from rtvi.errors import ModelLoadError
from rtvi.services.embed.models.base import Vectors

log = logging.getLogger(__name__)

CLIP_MODEL_TYPES = frozenset({"clip", "siglip", "siglip2"})
# SigLIP was trained on texts padded to the full context and pools the last token, so its texts must
# be padded to max_length (and given no attention mask, as in the reference pipeline); CLIP pools the
# EOS token and takes dynamic padding with a mask.
_PAD_TO_MAX = frozenset({"siglip", "siglip2"})
_FRAMES_PER_FORWARD = 32
_TEXTS_PER_FORWARD = 64


def _input_size(processor: Any) -> tuple[int, int] | None:
    """(width, height) the image processor ends at: the crop when it centre-crops, else its resize."""
    size = getattr(processor, "size", None) or {}
    crop = getattr(processor, "crop_size", None) or {}
    if getattr(processor, "do_center_crop", False) and "height" in crop and "width" in crop:
        return int(crop["width"]), int(crop["height"])
    if "height" in size and "width" in size:
        return int(size["width"]), int(size["height"])
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        return edge, edge
    return None  # e.g. SigLIP2's NaFlex processor takes any aspect ratio


class ClipEmbedder(CheckpointIdentity):
    """A CLIP / SigLIP checkpoint directory loaded with transformers (no remote code)."""

    def __init__(self, model_dir: Path, *, device: str = "auto", model_id: str | None = None) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model_dir = Path(model_dir)
        config = read_json(model_dir / "config.json")
        self._model_type = str(config.get("model_type", "")).lower()
        if self._model_type not in CLIP_MODEL_TYPES:
            raise ModelLoadError(
                f"{model_dir} holds a {self._model_type or 'unknown'!r} model; the clip backend takes "
                f"{', '.join(sorted(CLIP_MODEL_TYPES))}"
            )
        self._id = model_id or model_id_for_dir(model_dir)
        self._device = resolve_device(device)
        self._dtype = inference_dtype(self._device)
        try:
            model = AutoModel.from_pretrained(model_dir, local_files_only=True)
            self._model: Any = model.to(self._device, dtype=self._dtype).eval()
            self._tokenizer: Any = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            # use_fast=False: the fast image processors need torchvision, which does not work here.
            self._processor: Any = AutoImageProcessor.from_pretrained(
                model_dir, local_files_only=True, use_fast=False
            )
        except Exception as exc:  # any loader failure (missing/corrupt files, LFS pointers) is a config error
            raise ModelLoadError(f"cannot load the CLIP/SigLIP checkpoint in {model_dir}: {exc}") from exc
        text_cfg = getattr(self._model.config, "text_config", None)
        self._max_text_len = int(getattr(text_cfg, "max_position_embeddings", 77))
        self._input_size = _input_size(self._processor)
        # Probing beats reading the config: CLIP's projection_dim, SigLIP's hidden sizes and derived
        # checkpoints disagree on which field holds the output size.
        self._dim = int(self._text_features(["dimension probe"]).shape[1])
        log.info("loaded %s (%s, dim %d) on %s", self._id, self._model_type, self._dim, self._device)

    @property
    def owned_by(self) -> str:
        return "huggingface"

    @property
    def frames_per_chunk(self) -> int:
        return 8

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._input_size

    @property
    def match_floor(self) -> float | None:
        return None  # not measured: the rules fall back to calibration.ABSOLUTE_FLOOR

    def embed_frames(self, clips: Sequence[Sequence[Frame]]) -> Vectors:
        return embed_by_pooling(self, clips)

    def frame_features(self, frames: Sequence[Frame]) -> Vectors:
        parts = [self._image_features(group) for group in batched(frames, _FRAMES_PER_FORWARD)]
        return l2_normalize(np.concatenate(parts))

    def pool(self, features: Sequence[Vectors]) -> Vectors:
        return mean_pool(features)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(self._dim)
        parts = [self._text_features(group) for group in batched(list(texts), _TEXTS_PER_FORWARD)]
        return l2_normalize(np.concatenate(parts))

    def _image_features(self, frames: Sequence[Frame]) -> np.ndarray:
        inputs = self._processor(images=[to_pil(f) for f in frames], return_tensors="pt")
        # Every processor output goes in: CLIP/SigLIP return pixel_values only, SigLIP2 adds its
        # patch mask and spatial shapes, which its get_image_features needs.
        kwargs = {
            k: v.to(self._device, dtype=self._dtype) if v.is_floating_point() else v.to(self._device)
            for k, v in inputs.items()
        }
        with torch.inference_mode():
            return self._model.get_image_features(**kwargs).float().cpu().numpy()

    def _text_features(self, texts: Sequence[str]) -> np.ndarray:
        pad_to_max = self._model_type in _PAD_TO_MAX
        tokens = self._tokenizer(
            list(texts),
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=self._max_text_len,
            return_tensors="pt",
        )
        kwargs = {"input_ids": tokens["input_ids"].to(self._device)}
        if not pad_to_max and "attention_mask" in tokens:
            kwargs["attention_mask"] = tokens["attention_mask"].to(self._device)
        with torch.inference_mode():
            return self._model.get_text_features(**kwargs).float().cpu().numpy()
