"""The benchmark clip of the issues: 60 s, 1280x720, 30 fps, ~4 Mbit/s textured H.264, cached."""

from __future__ import annotations

import sys
from pathlib import Path

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
