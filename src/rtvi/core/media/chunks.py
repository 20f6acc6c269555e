"""Split a file's time range into chunks, as the RTVI file splitter does (spec §5.1, "seek" mode).

Rules:
1. The range runs from ``start_offset`` to ``min(end_offset, duration)``.
2. ``chunk_duration == 0`` gives one chunk covering the whole range.
3. Chunk ``i`` starts at ``start + i * (chunk_duration - overlap)`` and ends at
   ``min(chunk start + chunk_duration, end)``; the last chunk can be shorter.
4. Tail sliver: if what remains after a chunk is shorter than two frame durations (``2 / fps``), no
   further chunk is made and that chunk is the last. (This drops container-duration padding.)
5. Iteration stops once a chunk's end reaches the end of the range.
6. A negative overlap leaves gaps between chunks (allowed by the schema).
7. ``overlap >= chunk_duration`` (a non-positive step) is rejected by ``ChunkParams``: the reference
   splitter has no guard and would never finish; the API reports it as 400 BadParameters.

Times are rounded to nanoseconds (the reference keeps chunk PTS in ns) so that steps such as 0.1 s
do not print as 0.30000000000000004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rtvi.errors import InvalidParameters

from .types import ChunkSpec

_NS_DIGITS = 9
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """How to cut an input into chunks; validated once, here, for files and live streams alike.

    Raises ValueError (InvalidParameters, which the API reports as 400 BadParameters) when the values
    cannot make chunks: see rules 2 and 7 above.
    """

    chunk_duration: float = 0
    overlap: float = 0
    start_offset: float = 0
    end_offset: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("chunk_duration", self.chunk_duration), ("overlap", self.overlap)):
            if not math.isfinite(value):
                raise InvalidParameters(f"{name} must be a finite number, got {value}")
        if self.chunk_duration < 0:
            raise InvalidParameters(f"chunk_duration must be >= 0, got {self.chunk_duration}")
        if self.start_offset < 0:
            raise InvalidParameters(f"start_offset must be >= 0, got {self.start_offset}")
        if self.end_offset is not None and self.end_offset < 0:
            raise InvalidParameters(f"end_offset must be >= 0, got {self.end_offset}")
        if self.chunk_duration > 0 and self.overlap >= self.chunk_duration:
            raise InvalidParameters(
                f"chunk_overlap_duration ({self.overlap:g}) must be smaller than chunk_duration "
                f"({self.chunk_duration:g})"
            )

    def require_live(self) -> ChunkParams:
        """Live streams have no end to cut at: a chunk needs a duration. -> self."""
        if self.chunk_duration <= 0:
            raise InvalidParameters("chunk_duration must be greater than 0 for live streams")
        return self


def plan_file_chunks(
    duration_s: float,
    fps: float,
    chunk_duration: float,
    overlap: float,
    start_offset: float = 0,
    end_offset: float | None = None,
) -> list[ChunkSpec]:
    """The chunks of a file of ``duration_s`` seconds at ``fps`` (0 if unknown: no sliver rule)."""
    return plan_chunks(duration_s, fps, ChunkParams(chunk_duration, overlap, start_offset, end_offset))


def plan_chunks(duration_s: float, fps: float, params: ChunkParams) -> list[ChunkSpec]:
    if not math.isfinite(duration_s):
        raise InvalidParameters(f"duration must be a finite number, got {duration_s}")
    chunk_duration, overlap = params.chunk_duration, params.overlap
    start_offset, end_offset = params.start_offset, params.end_offset
    start = float(start_offset)
    end = float(duration_s) if end_offset is None else min(float(end_offset), float(duration_s))
    if start >= end:
        raise InvalidParameters(f"start_offset ({start:g} s) must be before the end of the range ({end:g} s)")
    if chunk_duration == 0:
        return [ChunkSpec(index=0, start_s=_r(start), end_s=_r(end), is_last=True)]

    step = chunk_duration - overlap
    sliver = 2.0 / fps if fps > 0 else 0.0
    chunks: list[ChunkSpec] = []
    i = 0
    while True:
        # Multiply rather than accumulate, so float error does not grow with the chunk count.
        c_start = start + i * step
        c_end = min(c_start + chunk_duration, end)
        next_start = start + (i + 1) * step
        # Uncovered time after this chunk: from its end, or from the next start when overlap < 0 (gaps).
        remaining = end - max(c_end, next_start)
        last = end - c_end <= _EPS or remaining < sliver - _EPS or remaining <= _EPS
        chunks.append(ChunkSpec(index=i, start_s=_r(c_start), end_s=_r(c_end), is_last=last))
        if last:
            return chunks
        i += 1


def plan_image_chunk() -> ChunkSpec:
    """An image is one chunk with start = end = 0 (spec §4.3)."""
    return ChunkSpec(index=0, start_s=0.0, end_s=0.0, is_last=True)


def _r(t: float) -> float:
    return round(t, _NS_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0
