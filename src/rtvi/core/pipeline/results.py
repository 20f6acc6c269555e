"""What every model stage produces per chunk, whatever the input (file, images, live)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class ChunkResult:
    index: int
    start_s: float  # media time (files) or Unix time (live) of the chunk's start
    end_s: float
    vector: npt.NDArray[np.float32]
    frame_count: int
    decode_latency_s: float
    inference_latency_s: float
    queue_time_s: float  # from the request's arrival to the start of this chunk's decode
    chunk_latency_s: float  # decode start -> result ready
