"""The cost of sharing cameras among replicas (docs/scale-out.md): the same six cameras held by 1, 2 and 3
`rtvi serve embed` replicas in one cluster, on this one machine.

Setup (all real, on 127.0.0.1): a tansu broker, PostgreSQL, one gst-rtsp-server camera registered as six
cameras (320x180, 30 fps, chunks of 2 s, 8 frames, the bundled model). For each replica count the
replicas start in a fresh cluster (database and stream topic), the cameras are registered, and after a
settling period the bench measures for WINDOW_S seconds: the chunks delivered per second (6 cameras at
2 s chunks: 3/s when every camera keeps up), how late they come (received on the results topic minus the
chunk's end), and the CPU seconds all replicas together spend per chunk (from /proc). The machine's 2
cores bound the cameras any number of replicas can hold here, so the point is the overhead: CPU per chunk
and lateness with N replicas as a ratio to one replica. Each run does N = 1, 2, 3; the ratios printed are
the medians over the runs of each run's ratio.

Run: .venv/bin/python bench/replicas_bench.py [runs] (default 3). Needs `make rtsp-deps` and PostgreSQL
(`make postgres-deps`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster_stack import ResultsTail, add_cameras, cluster_env, start_replicas, wait_for  # noqa: E402
from tests.kafka_redis import TansuBroker  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.rtsp_server import RtspServer  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402

CAMERAS = [f"cam-{i}" for i in range(6)]
CHUNK_S = 2
SETTLE_S = 10
WINDOW_S = 40
SESSION_TIMEOUT_MS = 6000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(
    n: int, work: Path, broker: TansuBroker, pg: PostgresServer, camera: RtspServer
) -> dict[str, float]:
    results = f"bench-results-{n}-{time.monotonic_ns()}"
    env = cluster_env(
        pg.create_database(f"r{n}x{time.monotonic_ns()}"), broker.bootstrap, results, SESSION_TIMEOUT_MS
    )
    run_dir = work / f"n{n}-{time.monotonic_ns()}"
    replicas = [
        RtviServer(run_dir / f"r{i}" / "assets", {**env, "RTVI_REPLICA_ID": f"r{i}"}) for i in range(n)
    ]
    tail: ResultsTail | None = None
    try:
        for r in replicas:
            r.storage.parent.mkdir(parents=True)
        model = start_replicas(replicas)
        add_cameras(replicas[0], camera.url, CAMERAS, model, CHUNK_S)
        tail = ResultsTail(broker.bootstrap, results)
        wait_for(lambda: {c.camera for c in tail.chunks} == set(CAMERAS), 120, "first chunks")
        time.sleep(SETTLE_S)
        pids = [r.proc.pid for r in replicas if r.proc is not None]
        cpu0, t0 = sum(map(cpu_seconds, pids)), time.time()
        time.sleep(WINDOW_S)
        cpu1, t1 = sum(map(cpu_seconds, pids)), time.time()
        chunks = [c for c in tail.since(t0) if c.received < t1]
        late = np.asarray([c.received - c.end for c in chunks])
        return {
            "chunks_per_s": len(chunks) / (t1 - t0),
            "cpu_per_chunk_s": (cpu1 - cpu0) / max(1, len(chunks)),
            "late_p50_s": float(np.percentile(late, 50)),
            "late_p95_s": float(np.percentile(late, 95)),
        }
    finally:
        if tail is not None:
            tail.close()
        for r in replicas:
            r.stop()


def main(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="rtvi-replicas-bench-"))
    broker, pg = TansuBroker(work / "tansu.log"), PostgresServer(work / "postgres.log")
    broker.start(), pg.start()
    camera = RtspServer(free_port(), work).start()
    ratios: dict[int, list[tuple[float, float]]] = {2: [], 3: []}
    try:
        for run in range(runs):
            by_n = {}
            for n in (1, 2, 3):
                m = by_n[n] = measure(n, work, broker, pg, camera)
                print(
                    f"run {run + 1}, {n} replica(s): {m['chunks_per_s']:.2f} chunks/s (of 3.00), "
                    f"CPU {m['cpu_per_chunk_s'] * 1000:.0f} ms/chunk, "
                    f"late p50 {m['late_p50_s']:.2f} s, p95 {m['late_p95_s']:.2f} s",
                    flush=True,
                )
            for n in (2, 3):
                ratios[n].append(
                    (
                        by_n[n]["cpu_per_chunk_s"] / by_n[1]["cpu_per_chunk_s"],
                        by_n[n]["late_p95_s"] / by_n[1]["late_p95_s"],
                    )
                )
        print(f"\n6 cameras, chunk {CHUNK_S} s, {WINDOW_S} s windows, {runs} run(s); ratios to one replica:")
        for n in (2, 3):
            cpu = [r[0] for r in ratios[n]]
            late = [r[1] for r in ratios[n]]
            print(
                f"{n} replicas: CPU per chunk x{np.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}), "
                f"late p95 x{np.median(late):.2f} ({min(late):.2f}-{max(late):.2f})  (medians, ranges)"
            )
    finally:
        camera.kill()
        pg.stop(), broker.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
