"""The benchmark clip of the issues (60 s, 1280x720, 30 fps, ~4 Mbit/s textured H.264, cached) and the
measurements the benches share."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from tests.media_factory import make_clip, textured_source  # noqa: E402


def textured_clip(gop: int) -> Path:
    path = OUT / f"tex_gop{gop}.mp4"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        make_clip(
            tmp,
            seconds=60,
            fps=30,
            width=1280,
            height=720,
            gop=gop,
            bit_rate=4_000_000,
            frames=textured_source(1280, 720),
        )
        tmp.rename(path)
    return path


def decode_all_fps(path: Path) -> float:
    """Frames per second of wall time that PyAV decodes when it decodes every frame of `path` (its
    default threading, nothing converted): the ceiling of any reader that decodes everything."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = time.perf_counter()
        frames = sum(1 for _ in container.decode(stream))
        return frames / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
