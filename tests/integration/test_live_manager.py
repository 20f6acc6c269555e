"""The live manager against a real RTSP camera, with model stages of two kinds: jobs of different
processors on one stream share its one decoder, a second start with the same processor re-attaches, and
stopping the stream ends every job and closes the decoder."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rtvi.core.assets.registry import Asset
from rtvi.core.media.chunks import ChunkParams
from rtvi.core.media.types import Frame
from rtvi.core.pipeline.live_jobs import LiveManager
from rtvi.core.pipeline.results import ChunkResult, FrameSampling
from rtvi.core.telemetry.metrics import Metrics
from rtvi.errors import InvalidParameters
from rtvi.settings import Settings
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import free_port

pytestmark = pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server missing: run `make rtsp-deps`")


@dataclass
class MeanBrightness:
    """A model stage with a float output: the mean pixel value of the chunk."""

    key: str = "brightness"
    sampling: FrameSampling = field(default_factory=lambda: FrameSampling(4, (32, 24)))
    calls: int = 0

    async def process(self, frames: Sequence[Frame], audio: bytes | None = None) -> tuple[float, float]:
        self.calls += 1
        return float(sum(f.mean() for f in frames) / len(frames)), 0.0


@dataclass
class FrameShapes:
    """A model stage with a different output type and sampling: the sampled frames' shapes."""

    key: str = "shapes"
    sampling: FrameSampling = field(default_factory=lambda: FrameSampling(2, (16, 16)))
    seen: list[tuple[int, ...]] = field(default_factory=list)

    async def process(
        self, frames: Sequence[Frame], audio: bytes | None = None
    ) -> tuple[list[tuple[int, ...]], float]:
        shapes = [tuple(f.shape) for f in frames]
        self.seen.extend(shapes)
        return shapes, 0.0


@dataclass
class EarlyFrames:
    """A model stage that starts per-frame work as frames are picked (FrameSampling.early): its output
    says whether every frame of the chunk was handed to `early` before the chunk reached `process`."""

    key: str = "early"
    announced: set[int] = field(default_factory=set)
    sampling: FrameSampling = field(init=False)

    def __post_init__(self) -> None:
        self.sampling = FrameSampling(3, (16, 16), early=lambda frame: self.announced.add(id(frame)))

    async def process(self, frames: Sequence[Frame], audio: bytes | None = None) -> tuple[bool, float]:
        return all(id(f) in self.announced for f in frames), 0.0


def test_two_processors_share_one_decoder(tmp_path: Path) -> None:
    cam = RtspServer(free_port(), tmp_path, width=320, height=180).start()
    asset = Asset(id="cam-1", kind="live", media_type="video", filename="cam", path=cam.url, owns_dir=False)
    errors: list[tuple[str, str]] = []

    async def run() -> tuple[list[ChunkResult[float]], list[ChunkResult[list[tuple[int, ...]]]], int]:
        manager = LiveManager(Settings().live, Metrics(), lambda s, m: errors.append((s, m)))
        brightness, shapes = MeanBrightness(), FrameShapes()
        # Persistent (as auto-started streams are): the jobs outlive their readers below.
        a = manager.start(asset, ChunkParams(1), brightness, persistent=True)
        b = manager.start(asset, ChunkParams(1), shapes, persistent=True)
        c = manager.start(asset, ChunkParams(1), EarlyFrames(), persistent=True)
        assert a is not b and len(manager.jobs()) == 3
        assert len(manager.decoders()) == 1, "one stream, one decoder, whatever the processors"
        assert manager.start(asset, ChunkParams(1), MeanBrightness()) is a  # same key: re-attach
        with pytest.raises(InvalidParameters):
            manager.start(asset, ChunkParams(0), MeanBrightness(key="other"))

        async def first(job: object, n: int) -> list[ChunkResult[object]]:
            out: list[ChunkResult[object]] = []
            async for r in job.subscribe().results():  # type: ignore[attr-defined]
                out.append(r)
                if len(out) == n:
                    break
            return out

        got_a, got_b, got_c = await asyncio.wait_for(
            asyncio.gather(first(a, 2), first(b, 2), first(c, 2)), 30
        )
        assert [r.output for r in got_c] == [True, True]  # each frame was announced before its chunk
        decoders_running = len(manager.decoders())
        assert len(manager.jobs()) == 3
        await manager.stop(asset.id, 5)
        assert manager.jobs() == [] and manager.decoders() == {}
        await manager.shutdown()
        return got_a, got_b, decoders_running  # type: ignore[return-value]

    try:
        got_a, got_b, decoders = asyncio.run(run())
    finally:
        cam.kill()
    assert decoders == 1
    assert all(isinstance(r.output, float) and r.frame_count == 4 for r in got_a)
    assert all(r.output == [(16, 16, 3), (16, 16, 3)] for r in got_b)
    assert got_a[1].start_s > got_a[0].start_s
    assert errors == []
