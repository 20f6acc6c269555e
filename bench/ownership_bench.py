"""What stream ownership (core/cluster.py) costs a replica while nothing changes: the CPU of its thread
(heartbeats every tenth of the session timeout, the members topic read, a decision at most every 50 ms).

Setup: a tansu broker on 127.0.0.1 and N members in this process (no service, hooks that do nothing),
M announced streams. After a 5 s settle it measures this process's CPU time over a window and prints it
as a share of one core, in all and per member, with how the streams spread over the members.

Run: .venv/bin/python bench/ownership_bench.py [--members 3] [--streams 100] [--session-ms 3000]
[--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kafka_redis import TansuBroker  # noqa: E402

from rtvi.core.cluster import StreamOwnership  # noqa: E402
from rtvi.settings import ClusterSettings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--session-ms", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()
    broker = TansuBroker(Path(tempfile.mkdtemp(prefix="rtvi-ownership-bench-")) / "tansu.log")
    broker.start()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    members = [
        StreamOwnership(
            ClusterSettings(
                cluster_bootstrap=broker.bootstrap,
                cluster_topic=topic,
                cluster_partitions=12,
                cluster_session_timeout_ms=args.session_ms,
                replica_id=f"m{i}",
            ),
            "bench",
            start=lambda _: None,
            stop=lambda _: None,
        )
        for i in range(args.members)
    ]
    try:
        for m in members:
            m.start()
        for i in range(args.streams):
            members[0].announce(f"cam-{i}", run=True)
        time.sleep(5)
        wall, cpu = time.monotonic(), time.process_time()
        time.sleep(args.seconds)
        share = (time.process_time() - cpu) / (time.monotonic() - wall)
        print(
            f"{args.members} members, {args.streams} streams, session {args.session_ms} ms,"
            f" {args.seconds:.0f} s:"
            f" {100 * share:.2f} % of a core in all, {100 * share / args.members:.2f} % per member;"
            f" streams per member {sorted(len(m.owned()) for m in members)}"
        )
    finally:
        for m in members:
            m.close()
        broker.stop()


if __name__ == "__main__":
    main()
