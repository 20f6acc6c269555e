"""What a model stage produces per chunk, whatever the input (file, images, live), and the interface of
the stage itself. The pipeline is generic over the stage's output: an embedding, a caption, ..."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from rtvi.core.media.types import Frame

Out = TypeVar("Out")
Out_co = TypeVar("Out_co", covariant=True)


@dataclass(frozen=True, slots=True)
class ChunkResult(Generic[Out]):
    index: int
    start_s: float  # media time (files) or Unix time (live) of the chunk's start
    end_s: float
    output: Out  # what the model stage made of the chunk's frames
    frame_count: int
    decode_latency_s: float
    inference_latency_s: float
    queue_time_s: float  # from the request's arrival to the start of this chunk's decode
    chunk_latency_s: float  # decode start -> result ready
    thumbnail: Frame | None = None  # one of the chunk's sampled frames (the middle one), for the index
    frame_pts_s: tuple[float, ...] = ()  # the sampled frames' times, on start_s's clock (message frames[])


def middle(frames: Sequence[Frame]) -> Frame | None:
    return frames[len(frames) // 2] if frames else None


@dataclass(frozen=True, slots=True)
class FrameSampling:
    """Which frames a chunk hands the model: how many, and resized to (width, height) or as decoded.

    `early`, when set, is called on the event loop with each frame of a live chunk as soon as it is
    picked (see pipeline/early.py); the same frame object reaches `process` later in its chunk.
    `audio`: files also hand `process` the chunk's sound (media/audio.py).
    """

    frames_per_chunk: int
    size: tuple[int, int] | None = None
    early: Callable[[Frame], None] | None = None
    audio: bool = False


class ChunkProcessor(Protocol[Out_co]):
    """The model stage of a job: a chunk's sampled frames -> its output.

    `key` names what the processor computes: live jobs on one stream with equal keys are one job (a
    second reader re-attaches to it); different keys are separate jobs that share the stream's decoder.
    """

    @property
    def key(self) -> str: ...

    @property
    def sampling(self) -> FrameSampling: ...

    async def process(self, frames: Sequence[Frame], audio: bytes | None = None) -> tuple[Out_co, float]:
        """-> (the chunk's output, seconds the model call took). `audio`: the chunk's WAV when
        `sampling.audio` asked for it and the file has sound."""
        ...
