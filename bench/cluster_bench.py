"""Failover time of live streams shared by replicas over Kafka (docs/scale-out.md).

Setup (all real, on 127.0.0.1): a tansu broker, PostgreSQL, one gst-rtsp-server camera registered as six
cameras (320x180, 30 fps), and three `rtvi serve embed` replicas in one cluster (session timeout 3 s,
chunks of 2 s, 8 frames, the bundled model). Each round kills -9 the replica that owns the most cameras
and measures the time from the kill to the moment every one of its cameras has delivered a chunk from a
survivor (received on the results topic); then it starts the replica again and waits for the group to
spread the partitions over the three. It prints the failover time p50 / p95 / max over the rounds, next
to its floor: the session timeout (the broker notices a dead member only then).

Run: .venv/bin/python bench/cluster_bench.py [rounds] (default 10). Needs `make rtsp-deps` and
PostgreSQL (`make postgres-deps`).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
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
        for n in range(rounds):
            time.sleep(6)  # steady state: every camera delivering from its owner
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
            back = max(
                min(c.received for c in tail.since(killed) if c.camera == cam and c.replica != victim_id)
                for cam in moved
            )
            failovers.append(back - killed)
            print(f"round {n + 1}: {victim_id} held {len(moved)} cameras; back after {back - killed:.1f} s")
            victim.start()
            wait_for(lambda: spread(replicas), 60, "partitions spread again")
        f = np.asarray(failovers)
        p50, p95, floor = np.percentile(f, 50), np.percentile(f, 95), SESSION_TIMEOUT_MS / 1000
        print(f"\nfailover over {rounds} kills (6 cameras, 3 replicas, chunk 2 s):")
        print(f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {f.max():.1f} s")
        print(f"floor (session timeout) {floor:.1f} s; p50 / floor {p50 / floor:.2f}")
    finally:
        if tail is not None:
            tail.close()
        for r in replicas:
            r.stop()
        camera.kill()
        pg.stop(), broker.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
