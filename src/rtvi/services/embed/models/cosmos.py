"""The `cosmos-embed1` backend: NVIDIA Cosmos-Embed1 (224p / 336p / 448p) through the model code that
ships with the checkpoint (transformers remote code), as its Hugging Face model card shows:

    processor(videos=uint8 array (B, T=8, C, H, W), return_tensors="pt")  -> {"videos": ...}
    model.get_video_embeddings(videos=...).visual_proj                    -> (B, dim)
    processor(text=[...], return_tensors="pt")  (pads/truncates to max_txt_len=128)
    model.get_text_embeddings(**batch).text_proj                          -> (B, dim)
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
    check_clips,
    empty_vectors,
    fit_clip,
    l2_normalize,
    model_id_for_dir,
    read_json,
    resize_frame,
)
from rtvi.core.models.device import inference_dtype, resolve_device
from rtvi.errors import ModelLoadError
from rtvi.services.embed.models.base import Vectors

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 448
DEFAULT_NUM_FRAMES = 8
# A 448p clip of 8 frames is ~1.2k visual tokens through a ViT-g; a few clips per forward keep GPU
# memory bounded whatever batch the engine hands over.
_CLIPS_PER_FORWARD = 8
_TEXTS_PER_FORWARD = 64


def _patch_transformers_compat() -> None:
    """Older remote code imports BERT helpers from transformers.modeling_utils; newer transformers keep
    them only in transformers.pytorch_utils. Alias them back (a no-op where they are present)."""
    from transformers import modeling_utils, pytorch_utils

    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(modeling_utils, name) and hasattr(pytorch_utils, name):
            setattr(modeling_utils, name, getattr(pytorch_utils, name))


class CosmosEmbed1Embedder(CheckpointIdentity):
    """A Cosmos-Embed1 checkpoint directory (config.json with auto_map + the embed1 model code)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        trust_remote_code: bool = True,
        model_id: str | None = None,
    ) -> None:
        from transformers import AutoModel, AutoProcessor

        model_dir = Path(model_dir)
        if not trust_remote_code:
            raise ModelLoadError(
                "Cosmos-Embed1 runs model code shipped with its checkpoint; set RTVI_TRUST_REMOTE_CODE=true "
                f"to allow it for {model_dir}"
            )
        config = read_json(model_dir / "config.json")
        proc_config = read_json(model_dir / "processor_config.json")
        self._resolution = int(
            proc_config.get("resolution") or config.get("resolution") or DEFAULT_RESOLUTION
        )
        self._num_frames = int(
            proc_config.get("num_video_frames") or config.get("num_video_frames") or DEFAULT_NUM_FRAMES
        )
        self._id = model_id or model_id_for_dir(model_dir)
        self._device = resolve_device(device)
        self._dtype = inference_dtype(self._device)
        _patch_transformers_compat()
        try:
            model = AutoModel.from_pretrained(model_dir, trust_remote_code=True, local_files_only=True)
            self._model: Any = model.to(self._device, dtype=self._dtype).eval()
            self._processor: Any = AutoProcessor.from_pretrained(
                model_dir, trust_remote_code=True, local_files_only=True
            )
        except Exception as exc:  # remote code can fail in any way; each is a config error for the operator
            raise ModelLoadError(f"cannot load Cosmos-Embed1 from {model_dir}: {exc}") from exc
        # The processor is the authority on the frame count when it says (it builds the video tensor).
        self._num_frames = int(getattr(self._processor, "num_video_frames", self._num_frames))
        embed_dim = getattr(self._model.config, "embed_dim", None)
        self._dim = int(embed_dim) if embed_dim else int(self._text_embeddings(["dimension probe"]).shape[1])
        log.info(
            "loaded %s (Cosmos-Embed1, %dp, %d frames, dim %d) on %s",
            self._id,
            self._resolution,
            self._num_frames,
            self._dim,
            self._device,
        )

    @property
    def owned_by(self) -> str:
        return "nvidia"

    @property
    def frames_per_chunk(self) -> int:
        return self._num_frames

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self._resolution, self._resolution)

    @property
    def match_floor(self) -> float | None:
        return None  # not measured: the rules fall back to calibration.ABSOLUTE_FLOOR

    def embed_frames(self, clips: Sequence[Sequence[Frame]]) -> Vectors:
        check_clips(clips)
        if not clips:
            return empty_vectors(self._dim)
        parts = [self._video_embeddings(group) for group in batched(clips, _CLIPS_PER_FORWARD)]
        return l2_normalize(np.concatenate(parts))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(self._dim)
        parts = [self._text_embeddings(group) for group in batched(list(texts), _TEXTS_PER_FORWARD)]
        return l2_normalize(np.concatenate(parts))

    def _video_embeddings(self, clips: Sequence[Sequence[Frame]]) -> np.ndarray:
        size = (self._resolution, self._resolution)
        # (B, T, C, H, W) uint8: every clip padded to T frames by repeating its last frame (the
        # reference's rule for images and short tails), every frame at one size so the batch stacks.
        videos = np.stack(
            [
                np.stack([resize_frame(f, size) for f in fit_clip(clip, self._num_frames)]).transpose(
                    0, 3, 1, 2
                )
                for clip in clips
            ]
        )
        batch = self._processor(videos=videos, return_tensors="pt")
        pixels = batch["videos"].to(self._device, dtype=self._dtype)
        with torch.inference_mode():
            out = self._model.get_video_embeddings(videos=pixels).visual_proj
        return _as_rows(out)

    def _text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        batch = self._processor(text=list(texts), return_tensors="pt").to(self._device)
        with torch.inference_mode():
            out = self._model.get_text_embeddings(**batch).text_proj
        return _as_rows(out)


def _as_rows(t: torch.Tensor) -> np.ndarray:
    # The output classes document (B, dim) or (B, n_query_tokens, dim); the latter is averaged over
    # its tokens so that every caller gets one vector per input.
    arr = t.float().cpu().numpy()
    return arr.mean(axis=1) if arr.ndim == 3 else arr
