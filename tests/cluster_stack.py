"""Replicas sharing live streams over Kafka (docs/scale-out.md), for the cluster test and benchmark: their
settings, what each says it owns, and a reader of the results topic that records who wrote each chunk."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from cryptography.fernet import Fernet

from rtvi.core.bus.schema import schema_pb2 as nv
from tests.servers import RtviServer


def cluster_env(database: str, bootstrap: str, results_topic: str, session_timeout_ms: int) -> dict[str, str]:
    """Settings every replica of one service shares (add RTVI_REPLICA_ID per replica)."""
    return {
        "RTVI_DATABASE_URL": database,
        "RTVI_SECRET_KEY": Fernet.generate_key().decode(),
        "RTVI_CLUSTER_BOOTSTRAP": bootstrap,
        "RTVI_CLUSTER_TOPIC": f"streams-{uuid.uuid4().hex[:8]}",
        "RTVI_CLUSTER_PARTITIONS": "6",
        "RTVI_CLUSTER_SESSION_TIMEOUT_MS": str(session_timeout_ms),
        "MESSAGE_BUS": "kafka",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MESSAGE_BUS_TOPIC": results_topic,
        "RTVI_SEARCH_INDEX": "false",
    }


@dataclass(frozen=True, slots=True)
class Chunk:
    received: float
    camera: str
    index: int
    replica: str
    end: float = 0.0  # the chunk's end (Unix seconds): received - end is how late it came
    start: float = 0.0  # the chunk's start (Unix seconds)


class ResultsTail:
    """Every message of the results topic, from the start, read on a thread (assign: no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.chunks: list[Chunk] = []
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}"})
        deadline = time.monotonic() + 30
        while True:
            md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=5).topics.get(topic)
            if md is not None and md.error is None and md.partitions:
                break
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            time.sleep(0.2)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self._consumer.poll(0.2)
            if m is None or m.error() is not None:
                continue
            v = nv.VisionLLM()
            v.ParseFromString(m.value())
            headers = dict(m.headers() or [])
            index = int((m.key() or b"").decode().rsplit(":", 1)[1])
            replica = headers.get("rtvi-replica", b"").decode()
            end, start = v.end.ToMicroseconds() / 1e6, v.timestamp.ToMicroseconds() / 1e6
            self.chunks.append(Chunk(time.time(), v.sensor.id, index, replica, end, start))

    def since(self, t: float) -> list[Chunk]:
        return [c for c in list(self.chunks) if c.received >= t]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def cluster_state(srv: RtviServer) -> dict[str, list[str]]:
    checks: dict[str, dict[str, list[str]]] = httpx.get(srv.url + "/v1/live?detailed=true", timeout=5).json()[
        "checks"
    ]
    return checks["cluster"]


def spread(replicas: list[RtviServer]) -> bool:
    """Every replica counts every replica as a member: the cameras are shared over all of them."""
    ids = sorted(f"r{i}" for i in range(len(replicas)))
    return all(cluster_state(r)["members"] == ids for r in replicas)


def start_replicas(replicas: list[RtviServer], timeout: float = 300) -> str:
    """Start the replicas side by side; once every one is ready and the partitions have spread, -> the
    model id they serve."""
    for r in replicas:
        r.start(wait_ready=False)
    for r in replicas:
        r.wait("/v1/ready", timeout)
    wait_for(lambda: spread(replicas), 90, "every replica a member")
    model: str = httpx.get(replicas[0].url + "/v1/models").json()["data"][0]["id"]
    return model


def add_cameras(srv: RtviServer, camera_url: str, cameras: list[str], model: str, chunk_s: int) -> None:
    """CV registrations whose metadata starts embedding inference (spec §3.4): cluster-run streams."""
    for cam in cameras:
        body = {
            "key": "sensor",
            "value": {"camera_id": cam, "camera_url": camera_url, "change": "camera_add",
                      "metadata": {"model": model, "chunk_duration": chunk_s}},
        }  # fmt: skip
        assert httpx.post(srv.url + "/v1/stream/add", json=body, timeout=60).json()["inference"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.25)
