"""What the person detector adds to the bundled model, and what it costs (issue 11).

Prints, all measured in this run:
  1. the retrieval table: cosine similarity of text queries to real photos (scikit-image; the scenes
     with several people are generated from its two portraits, tests/media_factory.scene_photos),
     with the detector (RTVI_DETECT_PEOPLE=true, the default) and without;
  2. the per-frame cost: the classifier alone, the detector alone, both (ms/frame at batch 8 and 1), in
     ONNX Runtime (the CPU default) and in torch (RTVI_ONNX_RUNTIME=false), and the frame pass of the
     release before issue 11 when BASELINE_SRC is set (timed in a process that imports that release);
  3. file throughput: 1, 2 and 4 concurrent requests on the 60 s 1280x720 GOP-250 clip (e2e_bench's
     measurement) and the service's CPU seconds per video second, on services in turn (ROUNDS rounds);
  4. live cost: N RTSP cameras (live_bench's measurement, default 8): chunk end -> SSE latency, chunks
     delivered and the service's CPU, services in turn (ROUNDS rounds). Live capacity is CPU-bound, so
     the CPU ratio is the inverse of the capacity ratio.

Services compared: the detector on (default), off (RTVI_DETECT_PEOPLE=false) and, when BASELINE_SRC
names the `src` directory of a checkout of the release before issue 11 (git worktree add /tmp/pre
0a8e6ad), that release run from the same virtual environment.

Run: [BASELINE_SRC=/tmp/pre/src] [PARTS=retrieval,cost,files,live] .venv/bin/python bench/people_bench.py
[STREAMS]   (all parts with the baseline: ~25 min on 2 cores)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.media_factory import scene_photos  # noqa: E402
from tests.rtsp_server import RtspServer, gst_available  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402

from bench import e2e_bench, live_bench  # noqa: E402
from bench.clips import textured_clip  # noqa: E402

ROUNDS = 3
QUERIES = [
    "a person",
    "people",
    "a group of people",
    "A person walking in a warehouse",
    "an astronaut",
    "a cat",
    "a rocket",
    "a cup of coffee",
]


def median(values: list[float]) -> float:
    return statistics.median(values)


def services() -> dict[str, dict[str, str]]:
    """Name -> extra environment of each service compared (see the module docstring)."""
    out = {"detector on": {}, "detector off": {"RTVI_DETECT_PEOPLE": "false"}}
    if baseline := os.environ.get("BASELINE_SRC"):
        out["before issue 11"] = {"PYTHONPATH": baseline}
    return out


def retrieval_table() -> None:
    from rtvi.core.models.bundled import BundledEmbedder

    photos = scene_photos()
    for detect in (True, False):
        model = BundledEmbedder(detect_people=detect)
        scenes = model.embed_frames([[p] for p in photos.values()])
        texts = model.embed_texts(QUERIES)
        print(f"\n### Retrieval, person detector {'on (default)' if detect else 'off (before issue 11)'}\n")
        print("| query | " + " | ".join(photos) + " |")
        print("|---" * (len(photos) + 1) + "|")
        for query, row in zip(QUERIES, texts @ scenes.T, strict=True):
            best = int(np.argmax(row))
            cells = [f"**{v:.3f}**" if i == best else f"{v:.3f}" for i, v in enumerate(row)]
            print(f"| {query} | " + " | ".join(cells) + " |")


PASS = "both (the frame pass)"
BASELINE_PASS = "its frame pass (classifier, torch)"


def bench_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (300, 300, 3), dtype=np.uint8) for _ in range(8)]


def time_step(step: Any, frames: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """ms/frame of `step` over ROUNDS rounds: (at batch 8, at batch 1), after a warm-up call."""
    step(frames)
    batch8, batch1 = [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        step(frames)
        batch8.append((time.perf_counter() - start) / len(frames) * 1000)
        start = time.perf_counter()
        for frame in frames:
            step([frame])
        batch1.append((time.perf_counter() - start) / len(frames) * 1000)
    return batch8, batch1


def print_baseline_frame_pass() -> None:
    """Run under BASELINE_SRC (see baseline_frame_pass): the release's own frame pass, as JSON."""
    from rtvi.core.models.bundled import BundledEmbedder
    from rtvi.settings import Settings

    model = BundledEmbedder(cache_dir=Settings().model_cache_dir)
    print(json.dumps(time_step(model.frame_features, bench_frames())))


def baseline_frame_pass(src: str) -> tuple[list[float], list[float]]:
    """The frame pass of the release checked out at `src`, timed in a process that imports it."""
    code = "from bench.people_bench import print_baseline_frame_pass; print_baseline_frame_pass()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    batch8, batch1 = json.loads(out.stdout.strip().splitlines()[-1])
    return batch8, batch1


def per_frame_cost() -> None:
    import torch

    from rtvi.core.models.bundled import BundledEmbedder
    from rtvi.settings import Settings

    frames = bench_frames()
    cache = Settings().model_cache_dir  # the services' cache: ONNX exports made once
    print(f"\n### Per-frame cost (torch {torch.__version__}, {torch.get_num_threads()} threads)\n")
    print(
        "| runtime | step | ms/frame, batch 8 | ms/frame, batch 1 | rounds (batch 8) |\n|---|---|---|---|---|"
    )
    results: dict[tuple[str, str], float] = {}

    def row(runtime: str, name: str, batch8: list[float], batch1: list[float]) -> None:
        results[runtime, name] = median(batch8)
        each = ", ".join(f"{v:.1f}" for v in batch8)
        print(f"| {runtime} | {name} | {median(batch8):.1f} | {median(batch1):.1f} | {each} |")

    for runtime in ("ONNX Runtime", "torch"):
        model = BundledEmbedder(cache_dir=cache, onnx_runtime=runtime == "ONNX Runtime")
        assert model._detector is not None
        # An export that fell back to torch would make the speed-up read ~1.0x: refuse to print it.
        in_ort = (model._classifier.in_onnx_runtime, model._detector._net.in_onnx_runtime)
        assert in_ort == ((True, True) if runtime == "ONNX Runtime" else (False, False)), in_ort
        steps = {
            "classifier": model.class_probabilities,
            "detector": model._detector.detect,
            PASS: model.frame_features,
        }
        for name, step in steps.items():
            row(runtime, name, *time_step(step, frames))
    if baseline := os.environ.get("BASELINE_SRC"):
        row("before issue 11", BASELINE_PASS, *baseline_frame_pass(baseline))
    print(
        "\nClassifier = EfficientNet-Lite0 at 224 px, detector = SSDLite-MobileNetV2 at 300 px; the frame "
        "pass is what the pipeline runs per sampled frame (the default: both, in ONNX Runtime on the CPU).\n"
        f"ONNX Runtime speed-up on the frame pass: "
        f"{results['torch', PASS] / results['ONNX Runtime', PASS]:.2f}x."
    )
    if baseline:
        ratio = results["ONNX Runtime", PASS] / results["before issue 11", BASELINE_PASS]
        print(f"Frame pass, this release / the release before issue 11: {ratio:.2f}x.")


def file_throughput() -> None:
    clip = textured_clip(gop=250)
    runs: dict[str, dict[str, list[float]]] = {name: {} for name in services()}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            for i, (name, env) in enumerate(services().items()):
                srv = RtviServer(Path(tmp) / f"assets-{round_}-{i}", env=env).start()
                try:
                    for key, value in e2e_bench.run(srv, clip).items():
                        runs[name].setdefault(key, []).append(value)
                finally:
                    srv.stop()
    for r in runs.values():
        r["cpu_per_video_s"] = [cpu / one for cpu, one in zip(r["cpu"], r["one"], strict=True)]
    print("\n### Files: 60 s 1280x720 GOP-250 clip, chunk 10 s\n")
    print("| service | 1 request | 2 concurrent | 4 concurrent | CPU s per video s (1 request) |")
    print("|---|---|---|---|---|")
    for name, r in runs.items():
        cells = [
            f"{median(r[k]):.2f}x ({', '.join(f'{v:.1f}' for v in r[k])})" for k in ("one", "two", "four")
        ]
        cpu = r["cpu_per_video_s"]
        print(f"| {name} | {' | '.join(cells)} | {median(cpu):.3f} ({', '.join(f'{v:.3f}' for v in cpu)}) |")
    on = runs["detector on"]
    for name, r in runs.items():
        if name == "detector on":
            continue
        one = median([a / b for a, b in zip(on["one"], r["one"], strict=True)])
        four = median([a / b for a, b in zip(on["four"], r["four"], strict=True)])
        cpu = median([a / b for a, b in zip(on["cpu_per_video_s"], r["cpu_per_video_s"], strict=True)])
        print(
            f"\nDetector on / {name}: 1 request {one:.2f}x, 4 concurrent {four:.2f}x, "
            f"CPU per video second {cpu:.2f}x (medians of the per-round ratios)."
        )


def live_cost(streams: int) -> None:
    if not gst_available():
        print("\n(live part skipped: gst-rtsp-server is missing, run `make rtsp-deps`)")
        return
    clip = textured_clip(gop=30)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in services()}
    with tempfile.TemporaryDirectory() as tmp:
        cam = RtspServer(free_port(), Path(tmp), file=clip).start()
        try:
            for round_ in range(ROUNDS):
                for i, (name, env) in enumerate(services().items()):
                    # a fresh store per service and round: the services run different releases
                    srv = RtviServer(Path(tmp) / f"assets-{round_}-{i}", env=env).start()
                    try:
                        model = httpx.get(srv.url + "/v1/models").json()["data"][0]["id"]
                        rows[name].append(live_bench.run_level(srv, cam.url, model, streams))
                    finally:
                        srv.stop()
        finally:
            cam.kill()
    print(f"\n### Live: {streams} cameras 1280x720 30 fps, chunk {live_bench.CHUNK} s, 8 frames\n")
    print("| service | p50 s | p95 s | chunks/stream | drops | service CPU (rounds) | real time |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        cpu = [x["cpu"] for x in r]
        print(
            f"| {name} | {median([x['p50'] for x in r]):.2f} | {median([x['p95'] for x in r]):.2f} "
            f"| {', '.join(x['chunks'] for x in r)} | {sum(x['drops'] for x in r)} "
            f"| {median(cpu):.2f} ({', '.join(f'{v:.2f}' for v in cpu)}) "
            f"| {sum(x['realtime'] for x in r)} of {len(r)} |"
        )
    for name, r in rows.items():
        if name != "detector on":
            ratio = median([a["cpu"] / b["cpu"] for a, b in zip(rows["detector on"], r, strict=True)])
            print(f"\nService CPU, detector on / {name}: {ratio:.2f}x (median of the per-round ratios).")


def main() -> None:
    streams = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    parts = os.environ.get("PARTS", "retrieval,cost,files,live").split(",")
    if "retrieval" in parts:
        retrieval_table()
    if "cost" in parts:
        per_frame_cost()
    if "files" in parts:
        file_throughput()
    if "live" in parts:
        live_cost(streams)


if __name__ == "__main__":
    main()
