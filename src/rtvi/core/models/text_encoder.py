"""Sentence embeddings from a sentence-transformers model, run in ONNX Runtime on the CPU.

For a model that is a transformer followed by mean pooling and L2 normalisation (all-MiniLM-L6-v2, the
bundled model's text half), those three steps are one exported graph: token ids and mask in, unit vectors
out. A short text then runs about 3x as fast as in torch on 2 cores (torch's per-op overhead dominates at
batch 1); a batch of 64 is compute-bound and gains nothing (bench/text_bench.py prints both in-process). Other
models, a GPU, `onnx_runtime=False` and a failed export run `SentenceTransformer.encode` as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from rtvi.core.models.common import batched
from rtvi.core.models.cpu_runtime import Run, on_cpu, onnx_run

_AXES = {0: "batch", 1: "sequence"}
# Export and check inputs: two texts of different lengths, so that padding and the mask are exercised.
_EXAMPLE_TEXTS = ("a forklift carrying a pallet past the loading dock at night", "a person")


class _MeanPooled(torch.nn.Module):
    """Token ids and attention mask (n, length) -> the L2-normalised mean of the token states under the
    mask (n, dim): sentence-transformers' Transformer -> Pooling(mean) -> Normalize."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=-1)


class SentenceEncoder:
    """Texts -> unit vectors, as `SentenceTransformer(model_dir).encode(..., normalize_embeddings=True)`."""

    def __init__(
        self,
        model_dir: Path,
        device: torch.device,
        *,
        name: str,
        batch_size: int,
        cache_dir: Path | None,
        onnx_runtime: bool = True,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(
            str(model_dir), device=str(device), local_files_only=True, trust_remote_code=False
        )
        self._batch_size = batch_size
        self.dim = int(self._model.get_sentence_embedding_dimension())
        self._run: Run | None = None
        transformer = self._model[0].auto_model.eval()
        if onnx_runtime and on_cpu(transformer) and _is_mean_pooled(self._model):
            self._run = onnx_run(
                _MeanPooled(transformer).eval(),
                self._tokens(_EXAMPLE_TEXTS),
                {"input_ids": _AXES, "attention_mask": _AXES},
                name,
                cache_dir,
            )

    @property
    def in_onnx_runtime(self) -> bool:
        return self._run is not None

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """(len(texts), dim) float32 unit vectors."""
        if self._run is None:
            with torch.inference_mode():
                out = self._model.encode(
                    list(texts),
                    batch_size=self._batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            return np.asarray(out, dtype=np.float32)
        # Longest first and batched, as encode() does: texts of similar length share little padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self._model.get_embedding_dimension()), dtype=np.float32)
        for group in batched(order, self._batch_size):
            (vectors,) = self._run(self._tokens([texts[i] for i in group]))
            out[list(group)] = vectors.numpy()
        return out

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self._model.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._model.max_seq_length,
            return_tensors="pt",
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}


def _is_mean_pooled(model: Any) -> bool:
    """Whether `model` is exactly Transformer -> Pooling(mean) -> Normalize, what _MeanPooled computes."""
    from sentence_transformers.models import Normalize, Pooling, Transformer

    modules = list(model)
    return (
        len(modules) == 3
        and isinstance(modules[0], Transformer)
        and isinstance(modules[1], Pooling)
        and modules[1].get_config_dict().get("pooling_mode") == "mean"
        and isinstance(modules[2], Normalize)
    )
