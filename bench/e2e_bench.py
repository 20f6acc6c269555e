"""End-to-end throughput through HTTP with the default (bundled) model.

Measures, in one run and against limits measured in the same run:
  * video-seconds embedded per wall-second for a 60 s 1280x720 30 fps textured H.264 clip (chunk 10 s,
    GOP 250 unless given: `e2e_bench.py 30`), for 1 request and for 2 and 4 concurrent requests (the
    batcher merges their chunks into shared model calls);
  * the model-only limit for the same work (8 pre-decoded frames per chunk, in-process), so the ratio
    shows what decoding + HTTP + JSON cost on top of the model;
  * the decode-all limit: PyAV decoding every frame of the clip, nothing else running.
Text embeddings are measured against infinity-emb in bench/text_bench.py.

Run: `make bench` (or .venv/bin/python bench/e2e_bench.py). Prints a markdown table.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import RtviServer  # noqa: E402

from bench.clips import decode_all_fps, textured_clip  # noqa: E402

CHUNK = 10


def main() -> None:
    gop = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    clip = textured_clip(gop=gop)
    with tempfile.TemporaryDirectory() as tmp:
        srv = RtviServer(Path(tmp) / "assets").start()
        try:
            rows = run(srv, clip)
        finally:
            srv.stop()
    rows.append(model_only_limit())
    rows.append(("limit: decode every frame (PyAV)", f"{decode_all_fps(clip) / 30:.1f}x realtime"))
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def run(srv: RtviServer, clip: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with srv.client(timeout=600) as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        with open(clip, "rb") as f:
            fid = c.post(
                "/v1/files", data={"purpose": "vision", "media_type": "video"}, files={"file": (clip.name, f)}
            ).json()["id"]
        body = {"id": fid, "model": model, "chunk_duration": CHUNK}
        c.post("/v1/generate_video_embeddings", json=body)  # warm-up
        start = time.perf_counter()
        r = c.post("/v1/generate_video_embeddings", json=body)
        one = time.perf_counter() - start
        assert r.status_code == 200 and len(r.json()["chunk_responses"]) == 6, r.text
        rows.append(("video, 1 request: video-seconds per wall-second", f"{60 / one:.1f}x realtime"))
        for n in (2, 4):
            with ThreadPoolExecutor(n) as pool:
                start = time.perf_counter()
                list(pool.map(lambda _: c.post("/v1/generate_video_embeddings", json=body), range(n)))
                took = time.perf_counter() - start
            rate = f"{60 * n / took:.1f}x realtime"
            rows.append((f"video, {n} concurrent requests: video-seconds per wall-second", rate))

    rows.append(("(1 request e2e time for the 60 s clip)", f"{one:.2f} s"))
    return rows


def model_only_limit() -> tuple[str, str]:
    from rtvi.services.embed.models.registry import load_embedder
    from rtvi.settings import Settings

    embedder = load_embedder(Settings())
    w, h = embedder.input_size or (224, 224)
    rng = np.random.default_rng(0)
    clips = [[rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)] for _ in range(6)]
    embedder.embed_frames(clips[:1])
    start = time.perf_counter()
    for clip in clips:
        embedder.embed_frames([clip])
    seconds = time.perf_counter() - start
    return ("limit: model only, 6 chunks x 8 frames in-process", f"{60 / seconds:.1f}x realtime")


if __name__ == "__main__":
    main()
