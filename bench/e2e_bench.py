"""End-to-end throughput through HTTP with the default (bundled) model.

Measures, in ROUNDS rounds (it prints the median and each round), each with its own limits:
  * video-seconds embedded per wall-second for a 60 s 1280x720 30 fps textured H.264 clip (chunk 10 s,
    GOP 250 unless given: `e2e_bench.py 30`), for 1 request and for 2 and 4 concurrent requests (the
    batcher merges their chunks into shared model calls);
  * the model-only limit for the same work (8 pre-decoded frames per chunk, in-process), so the ratio
    shows what decoding + HTTP + JSON cost on top of the model;
  * the decode-all limit: PyAV decoding every frame of the clip, nothing else running;
  * the ratios of one request to both limits, of 4 concurrent requests to one, and the service's CPU
    (cores: CPU seconds per wall second, from /proc) during the single request.
Text embeddings are measured against infinity-emb in bench/text_bench.py.

Run: `make bench` (or .venv/bin/python bench/e2e_bench.py [GOP]). Prints a markdown table.
"""

from __future__ import annotations

import functools
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import RtviServer  # noqa: E402

from bench.clips import cpu_seconds, decode_all_fps, textured_clip  # noqa: E402

CHUNK = 10
ROUNDS = 3
SECONDS = 60.0  # the clip's length


def main() -> None:
    gop = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    clip = textured_clip(gop=gop)
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        srv = RtviServer(Path(tmp) / "assets").start()
        try:
            for _ in range(ROUNDS):  # each round measures its limits too, so a ratio is within one round
                for name, value in [*run(srv, clip).items(), ("model", model_only_limit())]:
                    runs.setdefault(name, []).append(value)
                runs.setdefault("decode_all", []).append(decode_all_fps(clip) / 30)
        finally:
            srv.stop()
    for name in ("one", "model", "decode_all"):
        runs[f"one/{name}"] = [a / b for a, b in zip(runs["one"], runs[name], strict=True)]
    runs["four/one"] = [a / b for a, b in zip(runs["four"], runs["one"], strict=True)]
    print(f"GOP {gop}, chunk {CHUNK} s, {ROUNDS} rounds (median, then each round)\n")
    print("| measurement | median | rounds |\n|---|---|---|")
    for key, label, unit in ROWS:
        values = runs[key]
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {label} | {statistics.median(values):.2f}{unit} | {each} |")


ROWS = [
    ("one", "video, 1 request", "x realtime"),
    ("two", "video, 2 concurrent requests", "x realtime"),
    ("four", "video, 4 concurrent requests", "x realtime"),
    ("decode_all", "limit: PyAV decoding every frame", "x realtime"),
    ("model", "limit: the model alone on pre-decoded frames", "x realtime"),
    ("one/decode_all", "1 request / decoding every frame", "x"),
    ("one/model", "1 request / the model alone", "x"),
    ("four/one", "4 concurrent / 1 request", "x"),
    ("cpu", "service CPU during 1 request", " cores"),
]


def run(srv: RtviServer, clip: Path) -> dict[str, float]:
    """Realtime factors for 1, 2 and 4 concurrent requests, and the service's CPU during the single one."""
    assert srv.proc is not None
    out: dict[str, float] = {}
    with srv.client(timeout=600) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        with open(clip, "rb") as f:
            fid = c.post(
                "/v1/files", data={"purpose": "vision", "media_type": "video"}, files={"file": (clip.name, f)}
            ).json()["id"]
        body = {"id": fid, "model": model, "chunk_duration": CHUNK}

        def embed(_: int) -> httpx.Response:
            return c.post("/v1/generate_video_embeddings", json=body)

        embed(0)  # warm-up
        for n, key in ((1, "one"), (2, "two"), (4, "four")):
            cpu_before = cpu_seconds(srv.proc.pid)
            with ThreadPoolExecutor(n) as pool:
                start = time.perf_counter()
                replies = list(pool.map(embed, range(n)))
                took = time.perf_counter() - start
            assert all(r.status_code == 200 and len(r.json()["chunk_responses"]) == 6 for r in replies)
            out[key] = SECONDS * n / took
            if n == 1:
                out["cpu"] = (cpu_seconds(srv.proc.pid) - cpu_before) / took
        c.delete(f"/v1/files/{fid}")
    return out


@functools.cache
def _embedder() -> Any:
    from rtvi.services.embed.models.registry import load_embedder
    from rtvi.settings import Settings

    return load_embedder(Settings().model)


def model_only_limit() -> float:
    embedder = _embedder()
    w, h = embedder.input_size or (224, 224)
    rng = np.random.default_rng(0)
    clips = [[rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)] for _ in range(6)]
    embedder.embed_frames(clips[:1])
    start = time.perf_counter()
    for clip in clips:
        embedder.embed_frames([clip])
    seconds = time.perf_counter() - start
    return SECONDS / seconds


if __name__ == "__main__":
    main()
