"""Always on (issue 25): N live cameras for an hour against a search index with a retention limit, and
whether the service's state stays flat once the limit is reached.

Setup (all real, all on 127.0.0.1): Debian's gst-rtsp-server serves a live test pattern (320x180, 30 fps,
x264) as a camera, one session per client; `rtvi serve embed` with the bundled model and the retention
given (RTVI_INDEX_MAX_GB and/or RTVI_INDEX_RETENTION_HOURS; the writer sweeps every 10 s); N streams
registered with /v1/streams/add, each embedded over SSE for the whole run.

Every SAMPLE_S it records the service's resident memory (VmRSS), open file descriptors and threads
(/proc), the storage folder's bytes on disk (a walk), and /v1/search/stats (entries, footprint, chunks
expired). At the end it reports:
  * RSS at 1/6 of the run (10 min of an hour) and at the end, and the growth between (goal < 5 %);
  * fds and threads, first and last sample;
  * the index's footprint once retention holds (every sample after the first expiry): median and max
    against the limit (goal: within 10 %), and how many times over the limit's worth of chunks went
    through the index;
  * chunks delivered per stream against the chunks that ended during the run, and the chunks dropped
    (live queues, the index's queue).

The default run is both of the issue's: three cameras at 10 s chunks (the soak) and one at 1 s chunks (a
time-compressed year: ten times the chunks, so the 2 MB limit is reached within minutes and many times
over), for an hour.

Run: .venv/bin/python bench/soak_bench.py [--chunks 10,10,10,1] [--minutes 60] [--max-gb 0.002]
     [--retention-hours 0]. Needs `make rtsp-deps`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.rtsp_server import RtspServer, gst_available  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402
from tests.sse_client import SseReader  # noqa: E402

SAMPLE_S = 30
SWEEP_S = 10  # RTVI_INDEX_RETENTION_INTERVAL_S for the run


def metric_total(client: httpx.Client, name: str) -> float:
    """The sum of a counter's samples (all labels) in /v1/metrics."""
    total = 0.0
    for line in client.get("/v1/metrics").text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


DROPS = ("live_dropped_total", "rtvi_index_chunks_dropped_total")


def proc_status(pid: int) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def folder_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def sample(srv: RtviServer, client: httpx.Client, readers: list[SseReader], t0: float) -> dict[str, Any]:
    assert srv.proc is not None
    stats = client.get("/v1/search/stats").json()
    return {
        "t_s": round(time.time() - t0, 1),
        **proc_status(srv.proc.pid),
        "folder_mib": folder_bytes(srv.storage) / 2**20,
        "index_entries": stats["entries"],
        "index_disk_mib": (stats["disk_bytes"] or 0) / 2**20,
        "expired": sum(stats["expired"].values()),
        "delivered": [sum(1 for _, e in r.arrivals if isinstance(e, dict) and e.get("chunk_responses"))
                      for r in readers],
    }  # fmt: skip


def at(samples: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The first sample taken at or after `seconds`."""
    return next((s for s in samples if s["t_s"] >= seconds), samples[-1])


def report(
    samples: list[dict[str, Any]], args: argparse.Namespace, chunks: list[float], drops: dict[str, float]
) -> None:
    duration = args.minutes * 60
    early, last = at(samples, duration / 6), samples[-1]
    growth = (last["rss_mib"] - early["rss_mib"]) / early["rss_mib"] * 100
    print(
        f"{len(chunks)} camera(s), chunks of {args.chunks} s, {args.minutes:g} min, limit"
        f" RTVI_INDEX_MAX_GB={args.max_gb:g} RTVI_INDEX_RETENTION_HOURS={args.retention_hours:g},"
        f" {os.cpu_count()} cores"
    )
    peak = max(s["rss_mib"] for s in samples)
    print(
        f"RSS: {early['rss_mib']:.0f} MiB at {early['t_s'] / 60:.0f} min, {last['rss_mib']:.0f} MiB at"
        f" {last['t_s'] / 60:.0f} min: growth {growth:+.1f} %; peak {peak:.0f} MiB"
    )
    print(
        f"fds {samples[0]['fds']} -> {last['fds']} (max {max(s['fds'] for s in samples)}); threads"
        f" {samples[0]['threads']} -> {last['threads']} (max {max(s['threads'] for s in samples)})"
    )
    steady = [s for s in samples if s["expired"] > 0]
    if args.max_gb and steady:
        limit = args.max_gb * 1024
        disk = np.asarray([s["index_disk_mib"] for s in steady])
        written = last["index_entries"] + last["expired"]
        times_over = written / max(1, last["index_entries"])
        print(
            f"index at the limit from {steady[0]['t_s'] / 60:.1f} min: footprint median"
            f" {np.median(disk):.2f} MiB, max {disk.max():.2f} MiB, limit {limit:.2f} MiB"
            f" ({(np.median(disk) / limit - 1) * 100:+.1f} % / {(disk.max() / limit - 1) * 100:+.1f} %);"
            f" entries {min(s['index_entries'] for s in steady)}-{max(s['index_entries'] for s in steady)};"
            f" {written} chunks written = {times_over:.1f}x what the limit holds;"
            f" storage folder {steady[-1]['folder_mib']:.2f} MiB"
        )
    elif args.max_gb:
        print("the index never reached its limit: run longer or lower --max-gb")
    delivered = [
        f"{n} of ~{int((last['t_s'] - 3) // chunk)}"
        for n, chunk in zip(last["delivered"], chunks, strict=True)
    ]
    print(f"chunks delivered per stream (of those that ended): {', '.join(delivered)}; dropped: {drops}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chunks", default="10,10,10,1", help="one chunk duration (s) per camera")
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--max-gb", type=float, default=0.002)
    p.add_argument("--retention-hours", type=float, default=0)
    p.add_argument("--sample-s", type=float, default=SAMPLE_S)
    p.add_argument("--json", type=Path, help="write every sample here")
    args = p.parse_args()
    chunks = [float(c) for c in args.chunks.split(",")]
    if not gst_available():
        sys.exit("gst-rtsp-server is missing: run `make rtsp-deps`")
    env = {
        "RTVI_INDEX_MAX_GB": str(args.max_gb),
        "RTVI_INDEX_RETENTION_HOURS": str(args.retention_hours),
        "RTVI_INDEX_RETENTION_INTERVAL_S": str(SWEEP_S),
        "LOG_LEVEL": "WARNING",
    }
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        cam = RtspServer(free_port(), Path(tmp)).start()
        srv = RtviServer(Path(tmp) / "assets", env=env).start()
        readers: list[SseReader] = []
        try:
            with srv.client() as c:
                model = c.get("/v1/models").json()["data"][0]["id"]
                items = [{"liveStreamUrl": cam.url, "description": f"soak {i}", "id": f"soak-{i}"}
                         for i in range(len(chunks))]  # fmt: skip
                r = c.post("/v1/streams/add", json={"streams": items})
                assert not r.json()["errors"], r.text
                body = {"model": model, "stream": True}
                drops0, t0 = {m: metric_total(c, m) for m in DROPS}, time.time()
                readers = [
                    SseReader(srv.url, {**body, "id": x["id"], "chunk_duration": chunk})
                    for x, chunk in zip(r.json()["results"], chunks, strict=True)
                ]
                while time.time() - t0 < args.minutes * 60:
                    time.sleep(args.sample_s - (time.time() - t0) % args.sample_s)
                    samples.append(sample(srv, c, readers, t0))
                    print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                drops = {m: metric_total(c, m) - drops0[m] for m in DROPS}
        finally:
            for reader in readers:
                reader.stop()
            srv.stop()
            cam.kill()
    if args.json:
        args.json.write_text(json.dumps(samples))
    report(samples, args, chunks, drops)


if __name__ == "__main__":
    main()
