"""Small typed values shared by the media layer and its users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

# One RGB frame, HxWx3 uint8.
Frame = npt.NDArray[np.uint8]
MediaKind = Literal["video", "image"]


class MediaError(Exception):
    """The input is not decodable media (or not of the expected kind)."""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    kind: MediaKind
    container: str
    codec: str
    width: int
    height: int
    duration_s: float  # 0 for images
    fps: float  # 0 for images


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """One time window of an input, in seconds of media time (PTS) for files."""

    index: int
    start_s: float
    end_s: float
    is_last: bool = False


@dataclass(frozen=True, slots=True)
class SampledChunk:
    chunk: ChunkSpec
    frames: list[Frame]
    frame_pts_s: list[float]
    decode_latency_s: float
    audio: bytes | None = None  # 16 kHz mono WAV of the chunk, when asked for
