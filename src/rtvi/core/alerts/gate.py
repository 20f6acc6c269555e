"""The alert rules' calibrated gate in front of a VLM (docs/alerts.md): the VLM service's own alert
prompts may ask (per request, `alert_gate`) to call the VLM only on chunks whose embedding stands out for
a query on that stream, with the same calibration as the rules (calibration.py). The chunks it keeps
from the VLM are counted: the calls saved."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rtvi.core.alerts.calibration import ScoreHistory, threshold
from rtvi.core.media.types import Frame

# A chunk's frames -> its embedding, in the query's space (blocking: run in a thread).
EmbedFrames = Callable[[Sequence[Frame]], "npt.NDArray[np.float32]"]


@dataclass(frozen=True, slots=True)
class GateDecision:
    passed: bool
    score: float
    threshold: float | None  # None: warming up (the chunk goes to the VLM: no distribution yet)


class EmbeddingGate:
    """One request's gate (one stream, or one file's chunks in order): its own score history."""

    def __init__(
        self,
        embed: EmbedFrames,
        query: npt.NDArray[np.float32],
        *,
        sensitivity: float,
        min_score: float | None,
        match_floor: float | None,
        window: int,
        warmup: int,
    ) -> None:
        self._embed = embed
        self._query = query.astype(np.float32)
        self.sensitivity, self.min_score, self.warmup = sensitivity, min_score, warmup
        self.match_floor = match_floor
        self.history = ScoreHistory(window)
        self.saved = 0  # chunks kept from the VLM
        # A file's chunks are processed concurrently: each is measured against the chunks before it, in
        # the order they arrive (asyncio.Lock is first come, first served), not in the order their
        # embeddings finish.
        self._in_order = asyncio.Lock()

    async def admits(self, frames: Sequence[Frame]) -> GateDecision:
        async with self._in_order:
            vector = await asyncio.to_thread(self._embed, frames)
            score = float(np.asarray(vector, dtype=np.float32) @ self._query)
            bar = threshold(self.history, self.sensitivity, self.min_score, self.warmup, self.match_floor)
            passed = bar.value is None or bar.passed(score)
            self.history.add(score, stood_out=bar.holds_out(score))
        if not passed:
            self.saved += 1
        return GateDecision(passed, score, bar.value)
