"""Failover time of live streams shared by replicas over Kafka (docs/scale-out.md).

Setup (all real, on 127.0.0.1): a tansu broker, PostgreSQL, one gst-rtsp-server camera registered as six
cameras (320x180, 30 fps), and three `rtvi serve embed` replicas in one cluster (session timeout 3 s,
chunks of 2 s, 8 frames, the bundled model). Each round kills -9 the replica that owns the most cameras
and measures the time from the kill to the moment every one of its cameras has delivered a chunk from a
survivor (received on the results topic), and the coverage gap: from the kill to the start of the first
chunk a survivor delivered for it (the moment from which the camera is watched again; the rest of the
failover is the chunk itself, which every chunk takes). Then it starts the replica again and waits until
every replica counts the three as members. It prints both p50 / p95 / max over the rounds, next to their
floor: the session timeout (a dead replica is noticed only then), and where the take-over of the camera
that came back last spent its time, from the survivor's log and the results topic.

Run: .venv/bin/python bench/cluster_bench.py [rounds] (default 10). Needs `make rtsp-deps` and
PostgreSQL (`make postgres-deps`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster_stack import (  # noqa: E402
    ResultsTail,
    add_cameras,
    cluster_env,
    spread,
    start_replicas,
    wait_for,
)
from tests.kafka_redis import TansuBroker  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.rtsp_server import RtspServer  # noqa: E402
from tests.servers import RtviServer, free_port  # noqa: E402

CAMERAS = [f"cam-{i}" for i in range(6)]
SESSION_TIMEOUT_MS = 3000
RESULTS = "bench-results"
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+ (.*)$")


def log_events(path: Path, since: float) -> list[tuple[float, str]]:
    """(Unix time, message) of a replica's log lines from `since` on (its asctime is local time)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if t >= since:
                out.append((t, m.group(2)))
    return out


def breakdown(
    replicas: list[RtviServer],
    victim_id: str,
    cam: str,
    killed: float,
    tail: ResultsTail,
) -> dict[str, float]:
    """Where the take-over of `cam` spent its time, from the survivors' logs and the results topic."""
    events = []
    for i, r in enumerate(replicas):
        if f"r{i}" != victim_id:
            events += [(t, f"r{i}", m) for t, m in log_events(r.log_path, killed)]
    run = next((t, r) for t, r, m in sorted(events) if m == f"cluster: stream {cam} runs here")
    owner = run[1]
    mine = sorted((t, m) for t, r, m in events if r == owner)
    # The survivor's first view without the victim ("cluster: members [...]", core/cluster.py).
    detected = next(t for t, m in mine if m.startswith("cluster: members [") and f"'{victim_id}'" not in m)
    connected = next(t for t, m in mine if m.startswith(f"stream {cam}: connected in"))
    keyed = next(t for t, m in mine if m.startswith(f"stream {cam}: first keyframe"))
    first = min(
        (c for c in tail.since(killed) if c.camera == cam and c.replica == owner), key=lambda c: c.received
    )
    return {
        "detect": detected - killed,
        "start": run[0] - detected,
        "open": connected - run[0],
        "keyframe": keyed - connected,
        "window": first.end - keyed,
        "model": first.received - first.end,
        "chunk_len": first.end - first.start,
        # How late chunks come in steady state (every camera before the kill): the model pass's share.
        "steady_late": float(
            np.median([c.received - c.end for c in tail.chunks if killed - 10 <= c.received < killed])
        ),
    }


def main(rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="rtvi-cluster-bench-"))
    broker, pg = TansuBroker(work / "tansu.log"), PostgresServer(work / "postgres.log")
    broker.start(), pg.start()
    camera = RtspServer(free_port(), work).start()
    env = cluster_env(pg.create_database("bench"), broker.bootstrap, RESULTS, SESSION_TIMEOUT_MS)
    replicas = [RtviServer(work / f"r{i}" / "assets", {**env, "RTVI_REPLICA_ID": f"r{i}"}) for i in range(3)]
    for r in replicas:
        r.storage.parent.mkdir(parents=True)
    tail: ResultsTail | None = None
    try:
        model = start_replicas(replicas)
        add_cameras(replicas[0], camera.url, CAMERAS, model, 2)
        tail = ResultsTail(broker.bootstrap, RESULTS)
        wait_for(lambda: {c.camera for c in tail.chunks} == set(CAMERAS), 90, "first chunks")
        failovers: list[float] = []
        gaps: list[float] = []  # kill -> the start of the first chunk a survivor delivered
        phases: list[dict[str, float]] = []
        for n in range(rounds):
            time.sleep(6)  # steady state: every camera delivering from its owner
            # ... and caught up (on a busy machine the model pass may lag): every camera in the last 4 s.
            try:
                wait_for(
                    lambda: {c.camera for c in tail.since(time.time() - 4)} == set(CAMERAS), 180, "steady"
                )
            except AssertionError:  # the machine is shared: a round only starts from a steady state
                load = os.getloadavg()[0]
                print(f"round {n + 1}: skipped, the cameras did not all deliver for 180 s (load {load:.1f})")
                continue
            owners = {c.camera: c.replica for c in tail.since(time.time() - 4)}
            victim_id = Counter(owners.values()).most_common(1)[0][0]
            moved = {cam for cam, r in owners.items() if r == victim_id}
            victim = replicas[int(victim_id[1:])]
            assert victim.proc is not None
            victim.proc.kill()
            killed = time.time()

            def taken_over(
                moved: set[str] = moved, victim_id: str = victim_id, killed: float = killed
            ) -> bool:
                return moved <= {c.camera for c in tail.since(killed) if c.replica != victim_id}

            wait_for(taken_over, 120, "take-over")
            # Each moved camera's first chunk from a survivor: when it arrived, and from when it covers.
            firsts = {
                cam: min(
                    (c for c in tail.since(killed) if c.camera == cam and c.replica != victim_id),
                    key=lambda c: c.received,
                )
                for cam in moved
            }
            last = max(firsts, key=lambda cam: firsts[cam].received)
            back, watched = firsts[last].received, max(c.start for c in firsts.values())
            failovers.append(back - killed)
            gaps.append(watched - killed)
            load = os.getloadavg()[0]  # the machine is shared: what else ran shows here
            print(
                f"round {n + 1}: {victim_id} held {len(moved)} cameras; back after {back - killed:.1f} s,"
                f" watched again from {watched - killed:.1f} s (load {load:.1f})"
            )
            time.sleep(1)  # the logs are flushed
            try:
                b = breakdown(replicas, victim_id, last, killed, tail)
                phases.append(b)
                print("  last camera " + last + ": " + ", ".join(f"{k} {v:.2f}" for k, v in b.items()))
            except StopIteration:
                print("  (no breakdown: a log line is missing)")
            victim.start()
            wait_for(lambda: spread(replicas), 60, "the victim a member again")
        f = np.asarray(failovers)
        p50, p95, floor = np.percentile(f, 50), np.percentile(f, 95), SESSION_TIMEOUT_MS / 1000
        print(f"\nfailover over {rounds} kills (6 cameras, 3 replicas, chunk 2 s):")
        print(f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {f.max():.1f} s")
        print(f"floor (session timeout) {floor:.1f} s; p50 / floor {p50 / floor:.2f}")
        g = np.asarray(gaps)
        print(f"coverage gap (kill -> first frame of a survivor's chunk): p50 {np.percentile(g, 50):.1f} s,"
              f" p95 {np.percentile(g, 95):.1f} s, max {g.max():.1f} s")  # fmt: skip
        if phases:
            print("breakdown of the last camera's take-over, median (max) over the rounds, s:")
            print(", ".join(f"{k} {np.median([p[k] for p in phases]):.2f} ({max(p[k] for p in phases):.2f})"
                            for k in phases[0]))  # fmt: skip
    finally:
        if tail is not None:
            tail.close()
        for r in replicas:
            r.stop()
        camera.kill()
        pg.stop(), broker.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
