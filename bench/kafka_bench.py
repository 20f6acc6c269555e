"""Message-bus cost and throughput against a real tansu broker.

1. Publishing overhead per chunk, in process: building + serialising the nv.VisionLLM message, and the
   caller's cost of KafkaSink.produce (what a request pays; delivery happens in librdkafka's threads),
   for 384-d (bundled model) and 768-d (Cosmos-Embed1) vectors; then the delivery rate of 10k messages.
2. The sustained message rate a running `rtvi serve embed` reaches: video chunks (1 s chunks of a small
   clip) and text embeddings (ENABLE_KAFKA_MESSAGES_FOR_TEXT_INPUT, 100 texts per request), counted on
   the broker, with the same workload's time with Kafka off for comparison.

Run: `make bench` (or .venv/bin/python bench/kafka_bench.py). Prints a markdown table.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kafka_redis import TansuBroker, consume  # noqa: E402
from tests.media_factory import make_clip  # noqa: E402
from tests.servers import RtviServer  # noqa: E402

from rtvi.core.bus.kafka import KafkaSink  # noqa: E402
from rtvi.core.bus.messages import ChunkContext  # noqa: E402
from rtvi.core.telemetry.metrics import Metrics  # noqa: E402
from rtvi.services.embed.messages import build_vision_llm  # noqa: E402

N = 10_000


def _ctx(i: int) -> ChunkContext:
    return ChunkContext(
        request_id="bench",
        chunk_idx=i,
        stream_id="asset",
        sensor_type="Video",
        start_ts=1.7e9 + 10 * i,
        end_ts=1.7e9 + 10 * (i + 1),
        model_id="model",
        sensor_name="cam",
        frame_count=8,
        sensor_info={"path": "/data/clip.mp4", "videoFps": "30.00"},
    )


def in_process(broker: TansuBroker, rows: list[tuple[str, str]]) -> None:
    for dim in (384, 768):
        vector = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
        ctxs = [_ctx(i) for i in range(N)]
        start = time.perf_counter()
        payloads = [build_vision_llm(c, vector).SerializeToString() for c in ctxs]
        build_us = (time.perf_counter() - start) / N * 1e6
        rows.append(
            (f"build + serialise VisionLLM, {dim}-d ({len(payloads[0])} B)", f"{build_us:.1f} µs/chunk")
        )

        metrics = Metrics()
        sink = KafkaSink(broker.bootstrap, metrics, queue_maxsize=N + 1, idempotence=False).start()
        topic = f"bench-{dim}"
        sink.produce(topic, b"warm-up", key=b"w")  # creates the topic and the connection before timing
        time.sleep(0.5)
        per_call: list[float] = []
        start = time.perf_counter()
        for c, p in zip(ctxs, payloads, strict=True):
            t = time.perf_counter()
            sink.produce(topic, p, key=c.key)
            per_call.append(time.perf_counter() - t)
        left = sink.close(60)
        total = time.perf_counter() - start
        delivered = metrics.registry.get_sample_value(
            "rtvi_bus_messages_published_total", {"bus": "kafka", "kind": "result"}
        )
        rows.append((f"produce() caller cost, {dim}-d: median / p99", _us(per_call)))
        rows.append((f"delivery, {N} x {dim}-d to tansu (acks=all)", f"{N / total:,.0f} msg/s ({left} left)"))
        assert delivered == N + 1, delivered


def _us(samples: list[float]) -> str:
    s = sorted(samples)
    return f"{statistics.median(s) * 1e6:.1f} / {s[int(len(s) * 0.99)] * 1e6:.1f} µs"


def service(broker: TansuBroker, tmp: Path, rows: list[tuple[str, str]]) -> None:
    clip = make_clip(tmp / "clip.mp4", seconds=60, fps=10, width=160, height=120, gop=10)
    texts = [f"a person walking past shelf {i}" for i in range(100)]
    timings: dict[str, float] = {}
    for kafka in (False, True):
        env = {"FILE_URL_ALLOWED_DIRS": str(tmp)}
        if kafka:
            env |= {
                "KAFKA_ENABLED": "true",
                "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "KAFKA_ENABLE_IDEMPOTENCE": "false",
                "ENABLE_KAFKA_MESSAGES_FOR_TEXT_INPUT": "true",
                "MESSAGE_BUS_TOPIC": "bench-service",
            }
        srv = RtviServer(tmp / f"assets-{kafka}", env=env).start()
        try:
            with srv.client(timeout=600) as c:
                model = c.get("/v1/models").json()["data"][0]["id"]
                fid = c.post(
                    "/v1/files", data={"purpose": "vision", "media_type": "video", "filename": str(clip)}
                ).json()["id"]
                body = {"id": fid, "model": model, "chunk_duration": 1}
                c.post("/v1/generate_video_embeddings", json=body)  # warm-up
                start = time.perf_counter()
                with ThreadPoolExecutor(2) as pool:
                    url = "/v1/generate_video_embeddings"
                    futures = [pool.submit(c.post, url, json=body) for _ in range(4)]
                    video_ids = [f.result().json()["id"] for f in futures]
                timings[f"video-{kafka}"] = time.perf_counter() - start
                start = time.perf_counter()
                text_ids = [
                    c.post("/v1/generate_text_embeddings", json={"text_input": texts, "model": model}).json()[
                        "id"
                    ]
                    for _ in range(20)
                ]
                timings[f"text-{kafka}"] = time.perf_counter() - start
        finally:
            srv.stop()
        if kafka:
            for ids, want in ((video_ids, 60), (text_ids, 100)):
                for rid in ids:
                    got = consume(
                        broker.bootstrap, "bench-service", want, timeout=30, key_prefix=f"{rid}:".encode()
                    )
                    assert len(got) == want, (rid, len(got))
    v_on, v_off, t_on, t_off = (timings[k] for k in ("video-True", "video-False", "text-True", "text-False"))
    rows.append(("service, video 1-s chunks (4 x 60, 2 concurrent): Kafka on", f"{240 / v_on:.0f} msg/s"))
    rows.append(("  same with Kafka off (chunks/s)", f"{240 / v_off:.0f} chunks/s"))
    rows.append(("service, text 20 x 100 per request: Kafka on", f"{2000 / t_on:.0f} msg/s"))
    rows.append(("  same with Kafka off (texts/s)", f"{2000 / t_off:.0f} texts/s"))


def main() -> None:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = TansuBroker(Path(tmp) / "tansu.log")
        broker.start()
        try:
            in_process(broker, rows)
            service(broker, Path(tmp), rows)
        finally:
            broker.stop()
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
