"""Live RTSP capacity: how many concurrent 1280x720 30 fps camera streams one machine embeds in real time.

Setup (all real, all on 127.0.0.1): Debian's gst-rtsp-server serves the benchmark clip (60 s, 1280x720,
30 fps, ~4 Mbit/s textured H.264, GOP 30) as an RTSP camera, one real-time paced session per client
without re-encoding, so the camera costs almost no CPU; `rtvi serve embed` with the default model;
N streams registered with /v1/streams/add and embedded with SSE readers (chunk 10 s, 8 frames).

Per level N (1, 2, 4, ... until a level fails) it measures, for MEASURE_S seconds:
  * chunk-end -> SSE event latency: event receive time minus the chunk's end time (camera clock, from the
    RTCP sender reports, same machine), p50 / p95 / max;
  * chunks delivered per stream, chunks dropped by the bounded queues, CPU used by the service.
A level is "real time" when every stream delivered every chunk that ended in the window, nothing was
dropped, and p95 latency stayed under LAG_BOUND_S (lag bounded, not growing). Capacity is the largest
real-time level.

Run: `make bench` or .venv/bin/python bench/live_bench.py [levels...]. Needs `make rtsp-deps`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rtsp_server import RtspServer, gst_available  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402
from tests.sse_client import SseReader  # noqa: E402

from bench.clips import cpu_seconds, decode_all_fps, textured_clip  # noqa: E402

CHUNK = 10
MEASURE_S = 44  # the clip is 60 s: connect + 4 chunk ends (~11, 21, 31, 41 s) fit in one session
LAG_BOUND_S = 3.0
LEVELS = [1, 2, 4, 8, 12, 16, 24, 32]


def dropped(client: httpx.Client) -> float:
    total = 0.0
    for line in client.get("/v1/metrics").text.splitlines():
        if line.startswith("live_dropped_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def end_time(event: dict[str, Any]) -> float:
    iso = event["chunk_responses"][0]["end_time"].replace("Z", "+0000")
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def run_level(
    srv: RtviServer,
    url: str,
    model: str,
    n: int,
    path: str = "/v1/generate_video_embeddings",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """N streams, each with one SSE request on `path` (body: model, chunk, `extra`), for MEASURE_S."""
    assert srv.proc is not None
    with srv.client() as c:
        items = [
            {"liveStreamUrl": url, "description": f"bench {i}", "id": f"bench-{n}-{i}"} for i in range(n)
        ]
        r = c.post("/v1/streams/add", json={"streams": items})
        assert not r.json()["errors"], r.text
        ids = [x["id"] for x in r.json()["results"]]
        drops0, cpu0, t0 = dropped(c), cpu_seconds(srv.proc.pid), time.time()
        body = {"model": model, "stream": True, "chunk_duration": CHUNK, **(extra or {})}
        readers = [SseReader(srv.url, {**body, "id": sid}, path=path) for sid in ids]
        time.sleep(MEASURE_S)
        cpu = (cpu_seconds(srv.proc.pid) - cpu0) / (time.time() - t0)
        for reader in readers:
            reader.stop()
        drops = dropped(c) - drops0
        c.request("DELETE", "/v1/streams/delete-batch", json={"stream_ids": ids, "blocking": True})
    latencies: list[float] = []
    per_stream: list[int] = []
    for reader in readers:
        events = [(at, e) for at, e in reader.arrivals if isinstance(e, dict) and e.get("chunk_responses")]
        per_stream.append(len(events))
        latencies += [at - end_time(e) for at, e in events]
    # Chunks end every CHUNK s from the first frame (~1 s after the request): all that ended by the stop.
    expected = int((MEASURE_S - 1.5) // CHUNK)
    lat = np.asarray(latencies) if latencies else np.asarray([float("inf")])
    p95 = float(np.percentile(lat, 95))
    realtime = min(per_stream) >= expected and drops == 0 and p95 < LAG_BOUND_S
    return {
        "n": n,
        "p50": float(np.percentile(lat, 50)),
        "p95": p95,
        "max": float(lat.max()),
        "chunks": f"{min(per_stream)}-{max(per_stream)} (expected {expected})",
        "drops": int(drops),
        "cpu": cpu,
        "realtime": realtime,
    }


def run_levels(srv: RtviServer, url: str, model: str, levels: list[int], **kw: Any) -> list[dict[str, Any]]:
    """run_level for each level, up to the first that is not real time."""
    rows: list[dict[str, Any]] = []
    for n in levels:
        row = run_level(srv, url, model, n, **kw)
        rows.append(row)
        print(f"# {n} stream(s): {row}", file=sys.stderr, flush=True)
        if not row["realtime"]:
            break
    return rows


def print_decode_limit(clip: Path) -> None:
    """What decoding every frame would allow on this machine, measured in the same run (no camera,
    no service running)."""
    fps = decode_all_fps(clip)
    print(
        f"Decode limit: decoding every frame of the clip runs at {fps:.0f} frames/s here, "
        f"{fps / 30:.1f} streams of 30 fps with nothing else running"
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| streams | chunk end -> SSE p50 s | p95 s | max s | chunks/stream | drops | CPU | real time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | {r['chunks']} | {r['drops']} "
            f"| {r['cpu']:.2f} | {'yes' if r['realtime'] else 'no'} |"
        )


def main() -> None:
    if not gst_available():
        sys.exit("gst-rtsp-server is missing: run `make rtsp-deps`")
    levels = [int(a) for a in sys.argv[1:]] or LEVELS
    clip = textured_clip(gop=30)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cam = RtspServer(free_port(), Path(tmp), file=clip).start()
        srv = RtviServer(Path(tmp) / "assets").start()
        try:
            model = httpx.get(srv.url + "/v1/models").json()["data"][0]["id"]
            rows = run_levels(srv, cam.url, model, levels)
        finally:
            srv.stop()
            cam.kill()
    capacity = max((r["n"] for r in rows if r["realtime"]), default=0)
    print(f"Live capacity on {os.cpu_count()} cores: {capacity} concurrent 1280x720 30 fps streams")
    print(f"(chunk {CHUNK} s, 8 frames, default model; real time: all chunks, no drop, p95<{LAG_BOUND_S} s)")
    print_decode_limit(clip)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
