"""FrameWork: per-frame work started when a live frame is sampled, collected by its chunk."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from rtvi.core.media.types import Frame
from rtvi.core.pipeline.early import FrameWork


class Mean:
    """A per-frame computation that records every call it gets."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    async def __call__(self, frames: Sequence[Frame]) -> tuple[list[float], float]:
        self.calls.append(len(frames))
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("model down")
        return [float(f.mean()) for f in frames], 0.01


def frame(value: int) -> Frame:
    return np.full((2, 2, 3), value, dtype=np.uint8)


def test_started_frames_are_computed_once_and_the_rest_together() -> None:
    async def scenario() -> None:
        mean = Mean()
        work: FrameWork[float] = FrameWork(mean)
        a, b, c = frame(1), frame(2), frame(3)
        work.start(a)
        work.start(a)  # a frame picked by two parts of a chunk starts once
        work.start(b)
        await asyncio.sleep(0.05)
        assert mean.calls == [1, 1]
        values, seconds = await work.collect([a, b, c, a])
        assert values == [1.0, 2.0, 3.0, 1.0] and seconds == pytest.approx(0.01)
        assert mean.calls == [1, 1, 1]  # only c was computed at collection
        await work.collect([a])  # collected frames are forgotten: a later chunk computes its own
        assert mean.calls == [1, 1, 1, 1]

    asyncio.run(scenario())


def test_a_failure_reaches_the_chunk_that_collects_it() -> None:
    async def scenario() -> None:
        work: FrameWork[float] = FrameWork(Mean(fail=True))
        a = frame(1)
        work.start(a)
        with pytest.raises(RuntimeError, match="model down"):
            await work.collect([a])

    asyncio.run(scenario())


def test_frames_never_collected_are_forgotten_beyond_the_limit() -> None:
    async def scenario() -> None:
        mean = Mean()
        work: FrameWork[float] = FrameWork(mean, limit=2)
        frames = [frame(i) for i in range(3)]
        for f in frames:
            work.start(f)
        await asyncio.sleep(0.05)
        assert mean.calls == [1, 1]  # the oldest was dropped (cancelled before it ran)
        values, _ = await work.collect(frames)
        assert values == [0.0, 1.0, 2.0]
        assert mean.calls == [1, 1, 1]  # ... and computed when its chunk needed it

    asyncio.run(scenario())
