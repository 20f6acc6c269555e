"""The shared live decoder against a real RTSP camera: one connection feeds subscribers with different
chunkings, and a subscriber added later joins the running decoder."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rtvi.core.media.rtsp import (
    LIVE_ANALYZE_S,
    LiveChunker,
    LiveDecoder,
    LiveEnd,
    LiveEvent,
    RtspOptions,
    open_rtsp,
    probe_rtsp,
)
from rtvi.core.media.types import SampledChunk
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import free_port

pytestmark = pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server missing: run `make rtsp-deps`")


class Collector:
    def __init__(self) -> None:
        self.chunks: list[SampledChunk] = []
        self.ends: list[LiveEnd] = []
        self.lock = threading.Lock()

    def __call__(self, event: LiveEvent) -> None:
        with self.lock:
            if isinstance(event, SampledChunk):
                self.chunks.append(event)
            elif isinstance(event, LiveEnd):
                self.ends.append(event)


def test_one_decoder_feeds_two_chunkings(tmp_path: Path) -> None:
    cam = RtspServer(free_port(), tmp_path, width=320, height=180).start()
    decoder = LiveDecoder("shared", cam.url, RtspOptions(reconnect_interval_s=1, reconnect_window_s=3))
    short, long_ = Collector(), Collector()
    decoder.add(LiveChunker(1, 0, 4, (64, 48), short))
    decoder.start()
    try:
        time.sleep(2)
        decoder.add(LiveChunker(2, 1, 8, None, long_))  # joins the running decoder
        deadline = time.monotonic() + 15
        while (len(short.chunks) < 5 or len(long_.chunks) < 2) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(short.chunks) >= 5 and len(long_.chunks) >= 2
        assert decoder.connections == 1
        assert all(len(c.frames) == 4 and c.frames[0].shape == (48, 64, 3) for c in short.chunks)
        assert all(len(c.frames) == 8 and c.frames[0].shape == (180, 320, 3) for c in long_.chunks)
        # Overlap 1 s: windows step by 1 s; times are wall clock, near now.
        starts = [c.chunk.start_s for c in long_.chunks]
        assert starts[1] - starts[0] == pytest.approx(1, abs=1e-6)
        assert abs(time.time() - long_.chunks[-1].chunk.end_s) < 3
        # The camera goes away for good: every subscriber is told once the window is exhausted.
        cam.kill()
        deadline = time.monotonic() + 15
        while not (short.ends and long_.ends) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert short.ends and long_.ends and "gave up" in (short.ends[0].error or "")
        decoder.join(5)
        assert not decoder.alive
    finally:
        decoder.stop()
        cam.kill()


def test_the_live_readers_short_analysis_still_knows_the_stream(tmp_path: Path) -> None:
    """The live reader skips FFmpeg's frame-rate estimate (bench/rtsp_open_bench.py: it connects 3-5x
    sooner); the codec parameters still come with the open, frames decode at the camera's size, and the
    registration probe keeps the full analysis, so it reports the camera's frame rate."""
    cam = RtspServer(free_port(), tmp_path, width=320, height=180, fps=15).start()
    try:
        container = open_rtsp(cam.url, RtspOptions(), analyze_s=LIVE_ANALYZE_S)
        try:
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.width, stream.codec_context.height) == (
                "h264",
                320,
                180,
            )
            frame = next(container.decode(stream))
            assert frame.to_ndarray(format="rgb24").shape == (180, 320, 3)
        finally:
            container.close()
        probe = probe_rtsp(cam.url, RtspOptions())
        assert (probe.codec, probe.width, probe.height, probe.fps) == ("h264", 320, 180, 15.0)
    finally:
        cam.kill()
