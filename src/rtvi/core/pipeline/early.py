"""Per-frame work started as soon as a live frame is sampled.

Every camera's chunks end on the same wall-clock grid, so work done at chunk end piles up: sixteen
streams' chunks wait for one another. A model stage whose chunk output is built from per-frame pieces
(per-frame features pooled into one vector, one JPEG per frame in a VLM request) computes those pieces
as the frames are picked, spread over the chunk's duration; at chunk end only the chunk-level step
remains. Files compute the pieces when the chunk is processed, through the same code.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from rtvi.core.media.types import Frame

T = TypeVar("T")

# Computes the pieces of several frames in one call. -> (pieces, seconds the model call took).
PieceBatch = Callable[[Sequence[Frame]], Awaitable[tuple[list[T], float]]]

# Frames started but not collected (their chunk was dropped) are forgotten after this many newer ones.
_STARTED_LIMIT = 1024


class FrameWork(Generic[T]):
    """One piece of work per frame, started early (`start`) and collected by the chunk (`collect`).

    Frames are known by identity: the live chunker hands each picked frame (one array object) to
    `start` and later the same object inside its chunk.
    """

    def __init__(self, compute: PieceBatch[T], limit: int = _STARTED_LIMIT) -> None:
        self._compute = compute
        self._limit = limit
        # id(frame) -> (frame, task): the frame reference keeps its id from being reused meanwhile.
        self._started: OrderedDict[int, tuple[Frame, asyncio.Task[tuple[list[T], float]]]] = OrderedDict()

    def start(self, frame: Frame) -> None:
        """Begin the work of one frame (on the event loop)."""
        if id(frame) in self._started:
            return
        task = asyncio.ensure_future(self._compute([frame]))
        task.add_done_callback(_retrieve)
        self._started[id(frame)] = (frame, task)
        while len(self._started) > self._limit:
            _, (_, dropped) = self._started.popitem(last=False)
            dropped.cancel()

    async def collect(self, frames: Sequence[Frame]) -> tuple[list[T], float]:
        """The pieces of `frames` (computing now those not started). -> (pieces, longest model call)."""
        by_id: dict[int, T] = {}
        seconds = 0.0
        started = {key: self._started.pop(key)[1] for key in {id(f) for f in frames} if key in self._started}
        for key, task in started.items():
            (piece,), took = await task
            by_id[key] = piece
            seconds = max(seconds, took)
        missing = list({id(f): f for f in frames if id(f) not in by_id}.values())
        if missing:
            pieces, took = await self._compute(missing)
            by_id.update(zip((id(f) for f in missing), pieces, strict=True))
            seconds = max(seconds, took)
        return [by_id[id(f)] for f in frames], seconds


def _retrieve(task: asyncio.Task[tuple[list[T], float]]) -> None:
    """A failure is raised to the chunk that collects it; one never collected must not be logged as lost."""
    if not task.cancelled():
        task.exception()
