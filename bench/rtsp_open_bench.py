"""How long connecting to a camera takes: FFmpeg's full stream analysis vs the live reader's short one.

Every connect, reconnect and cluster take-over opens the camera anew, and nothing is decoded until the open
returns. FFmpeg's default analysis reads about 30 frames to estimate the frame rate; the live reader
(`LiveDecoder`) asks for `LIVE_ANALYZE_S` instead. For a gst-rtsp-server camera (320x180, a keyframe a
second) at 30 and at 15 fps, each setting connects ROUNDS times, alternating, and the bench prints the
median and max time to the open's return and to the first keyframe packet, and their ratio. The
registration probe (/v1/streams/add) keeps the full analysis: the frame rate it reports is the camera's.

Run: .venv/bin/python bench/rtsp_open_bench.py [rounds] (default 10). Needs `make rtsp-deps`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rtsp_server import RtspServer  # noqa: E402
from tests.servers import free_port  # noqa: E402

from rtvi.core.media.rtsp import LIVE_ANALYZE_S, RtspOptions, open_rtsp  # noqa: E402

SETTINGS = {"full analysis (FFmpeg default)": None, f"live reader ({LIVE_ANALYZE_S} s)": LIVE_ANALYZE_S}


def connect(url: str, analyze_s: float | None) -> tuple[float, float]:
    """(seconds to the open's return, seconds to the first keyframe packet)."""
    start = time.monotonic()
    container = open_rtsp(url, RtspOptions(), analyze_s=analyze_s)
    try:
        opened = time.monotonic() - start
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.is_keyframe:
                return opened, time.monotonic() - start
        raise RuntimeError("the camera sent no keyframe")
    finally:
        container.close()


def main(rounds: int) -> None:
    print(f"{rounds} connects per setting, alternating; gst-rtsp-server 320x180, a keyframe a second")
    with tempfile.TemporaryDirectory() as tmp:
        for fps in (30, 15):
            cam = RtspServer(free_port(), Path(tmp), fps=fps).start()
            try:
                times: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
                for _ in range(rounds):
                    for name, analyze_s in SETTINGS.items():
                        times[name].append(connect(cam.url, analyze_s))
                        time.sleep(0.2)
                medians = {}
                for name, got in times.items():
                    opened, keyed = [t[0] for t in got], [t[1] for t in got]
                    medians[name] = statistics.median(keyed)
                    print(
                        f"  {fps} fps  {name:32s} open p50 {statistics.median(opened):.3f} s "
                        f"(max {max(opened):.3f})  first keyframe p50 {statistics.median(keyed):.3f} s "
                        f"(max {max(keyed):.3f})"
                    )
                full, live = medians.values()
                print(f"  {fps} fps  first keyframe {full / live:.1f}x sooner with the live analysis")
            finally:
                cam.kill()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
