"""The protocols every model backend implements. The engine only talks to these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rtvi.core.media.types import Frame
from rtvi.core.models.common import Vectors


@runtime_checkable
class Embedder(Protocol):
    """Video chunks (lists of RGB frames) and texts -> vectors in one space."""

    @property
    def id(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def owned_by(self) -> str: ...
    @property
    def frames_per_chunk(self) -> int:
        """How many frames the sampler should take per chunk (Cosmos-Embed1: 8)."""
        ...

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) the sampler should resize frames to, or None to keep them as decoded."""
        ...

    @property
    def match_floor(self) -> float | None:
        """The text-to-chunk cosine below which this model's chunks do not show what a query says
        (measured per model, docs/alerts.md): the alert rules' absolute floor. None: not measured."""
        ...

    def embed_frames(self, clips: Sequence[Sequence[Frame]]) -> Vectors:
        """One vector per clip. Clips may hold fewer frames than frames_per_chunk (images, tails)."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Vectors: ...
