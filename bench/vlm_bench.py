"""The VLM service around a model: its overhead per chunk, and how many live cameras it captions in real
time. The model is the scripted OpenAI-compatible server (tests/scripted_vlm.py) answering after a fixed
MODEL_S, so every second the service adds is measured against the model's own time in the same run.

1. Overhead (file): `rtvi serve vlm` (openai-compat backend, one model call at a time, Kafka results on a
   real tansu broker) captions the 60 s 1280x720 30 fps benchmark clip in 6 chunks of 10 s, 8 frames
   each. The model's own time is chunks x MODEL_S; the overhead is what the request took beyond that
   (decode, resize, JPEG + prompt building, HTTP to the model, answer reading, publishing):
   overhead ratio = wall time / model time - 1. Median of RUNS requests.
2. Live capacity: the clip served by gst-rtsp-server as N concurrent 1280x720 30 fps cameras, each with
   one generate_captions SSE request (chunk 10 s, 8 frames); levels as in live_bench.py (all chunks
   delivered, nothing dropped, p95 chunk-end -> SSE latency under 3 s). The scripted model takes
   MODEL_S per call, up to NUM_VLM_PROCS (16) calls at once, as a served VLM would.

Run: `make bench` or .venv/bin/python bench/vlm_bench.py [overhead | levels...]. Needs `make rtsp-deps`.
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kafka_redis import TansuBroker  # noqa: E402
from tests.rtsp_server import RtspServer, gst_available  # noqa: E402
from tests.scripted_vlm import MODEL, ScriptedVlmServer  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402
from tests.sse_client import END, SseReader  # noqa: E402

from bench.clips import textured_clip  # noqa: E402
from bench.live_bench import LAG_BOUND_S, print_decode_limit, print_table, run_levels  # noqa: E402

MODEL_S = 1.0  # a served 8-frame VLM answer; short enough to make the overhead show
CHUNK = 10
FRAMES = 8
RUNS = 3
LEVELS = [1, 4, 8, 12, 16, 20, 24]


def overhead(tmp: Path, clip: Path) -> dict[str, Any]:
    scripted = ScriptedVlmServer(tmp, delay_s=MODEL_S)
    broker = TansuBroker(tmp / "tansu.log")
    scripted.start()
    broker.start()
    env = {
        "VIA_VLM_ENDPOINT": scripted.url,
        "NUM_VLM_PROCS": "1",
        "MESSAGE_BUS": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
    }
    srv = RtviServer(tmp / "assets-overhead", env=env, service="vlm").start()
    try:
        with srv.client() as c, open(clip, "rb") as f:
            r = c.post(
                "/v1/files",
                data={"purpose": "vision", "media_type": "video"},
                files={"file": ("clip.mp4", f, "video/mp4")},
            )
            fid = r.json()["id"]
            body = {
                "id": fid,
                "model": MODEL,
                "prompt": "SAY:Anomaly Detected: No",
                "chunk_duration": CHUNK,
                "num_frames_per_second_or_fixed_frames_chunk": FRAMES,
            }
            ratios, walls, steady = [], [], []
            for _ in range(RUNS):
                start = time.perf_counter()
                reader = SseReader(srv.url, {**body, "stream": True}, path="/v1/generate_captions")
                while reader.next(120) is not END:
                    pass
                wall = time.perf_counter() - start
                arrivals = [
                    at for at, e in reader.arrivals if isinstance(e, dict) and e.get("chunk_responses")
                ]
                model_time = len(arrivals) * MODEL_S
                walls.append(wall)
                ratios.append(wall / model_time - 1)
                # Steady state: the interval between consecutive chunks, against one model call.
                steady.append(statistics.median(b - a for a, b in itertools.pairwise(arrivals)) / MODEL_S - 1)
        return {
            "chunks": len(arrivals),
            "wall": statistics.median(walls),
            "model": model_time,
            "ratio": statistics.median(ratios),
            "steady": statistics.median(steady),
        }
    finally:
        srv.stop()
        broker.stop()
        scripted.stop()


def capacity(tmp: Path, clip: Path, levels: list[int]) -> list[dict[str, Any]]:
    scripted = ScriptedVlmServer(tmp, delay_s=MODEL_S)
    scripted.start()
    cam = RtspServer(free_port(), tmp, file=clip).start()
    env = {"VIA_VLM_ENDPOINT": scripted.url, "NUM_VLM_PROCS": "16"}
    srv = RtviServer(tmp / "assets-live", env=env, service="vlm").start()
    try:
        extra = {"prompt": "SAY:A forklift passes.", "num_frames_per_second_or_fixed_frames_chunk": FRAMES}
        return run_levels(srv, cam.url, MODEL, levels, path="/v1/generate_captions", extra=extra)
    finally:
        srv.stop()
        cam.kill()
        scripted.stop()


def main() -> None:
    levels = [int(a) for a in sys.argv[1:] if a.isdigit()] or LEVELS
    clip = textured_clip(gop=30)
    with tempfile.TemporaryDirectory() as tmp:
        o = overhead(Path(tmp), clip)
        print(f"VLM service overhead on {os.cpu_count()} cores (scripted model, {MODEL_S:.1f} s per answer):")
        print(
            f"  {o['chunks']} chunks x {FRAMES} frames of 1280x720: {o['wall']:.2f} s wall vs "
            f"{o['model']:.2f} s of model time -> overhead {o['ratio'] * 100:.1f}% "
            f"(median of {RUNS}; goal < 10%)"
        )
        print(
            f"  steady state: {MODEL_S * (1 + o['steady']):.3f} s between chunks vs {MODEL_S:.1f} s per "
            f"model call -> overhead {o['steady'] * 100:.1f}% per chunk "
            "(the first chunk's decode + encode cannot overlap)"
        )
        if sys.argv[1:] == ["overhead"]:
            return
        if not gst_available():
            sys.exit("gst-rtsp-server is missing: run `make rtsp-deps`")
        rows = capacity(Path(tmp), clip, levels)
    best = max((r["n"] for r in rows if r["realtime"]), default=0)
    print()
    print(f"Live captioning capacity: {best} concurrent 1280x720 30 fps streams (goal >= 16)")
    print(f"(chunk {CHUNK} s, {FRAMES} frames, scripted model {MODEL_S:.1f} s/answer; real time: all chunks, "
          f"no drop, p95<{LAG_BOUND_S} s)")  # fmt: skip
    print_decode_limit(clip)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
