"""Results on Kafka as nv.VisionLLM and errors on Redis (spec §6), against a running `rtvi serve embed`,
a real tansu broker and a real redis-server."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.bus.schema import schema_pb2 as nv
from rtvi.core.media.times import unix_to_iso
from rtvi.core.telemetry.metrics import Metrics
from rtvi.services.embed.messages import build_vision_llm, text_context
from rtvi.settings import Settings
from tests.conftest import CREATION_TIME, upload
from tests.kafka_redis import RedisServer, TansuBroker, consume
from tests.metrics_scrape import Scrape
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import RtviServer, free_port
from tests.sse_client import SseReader

pytestmark = pytest.mark.slow
TOPIC = "mdx-embed"
ERROR_CHANNEL = "mdx-embed-errors"
CREATION_TS = datetime(2024, 6, 9, 18, 32, 11, 123000, tzinfo=UTC).timestamp()


def _bus_env(broker: TansuBroker, redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {
        "KAFKA_ENABLED": "true",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        # Default producer settings (idempotence on): tansu's memory storage forgets producer ids on
        # restart, and the producer recovers from that by itself (see the outage test).
        "ENABLE_REDIS_ERROR_MESSAGES": "true",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        **extra,
    }


@pytest.fixture(scope="module")
def bus_server(
    tmp_path_factory: pytest.TempPathFactory, broker: TansuBroker, redis_server: RedisServer
) -> Iterator[RtviServer]:
    base = tmp_path_factory.mktemp("bus-server")
    files = base / "files"
    files.mkdir()
    env = _bus_env(
        broker, redis_server, FILE_URL_ALLOWED_DIRS=str(files), VSS_SKIP_INPUT_MEDIA_VERIFICATION="1"
    )
    srv = RtviServer(base / "assets", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture()
def bus_client(bus_server: RtviServer) -> Iterator[httpx.Client]:
    with bus_server.client() as c:
        yield c


@pytest.fixture(scope="module")
def bus_model(bus_server: RtviServer) -> str:
    return str(httpx.get(bus_server.url + "/v1/models").json()["data"][0]["id"])


def _embed(client: httpx.Client, fid: str, model: str, **kw: object) -> httpx.Response:
    body = {"id": fid, "model": model, "chunk_duration": 10, **kw}
    return client.post("/v1/generate_video_embeddings", json=body)


def _decode(msgs: list) -> list[nv.VisionLLM]:  # type: ignore[type-arg]
    out = []
    for m in msgs:
        v = nv.VisionLLM()
        v.ParseFromString(m.value())
        out.append(v)
    return sorted(out, key=lambda v: int(v.info["chunkIdx"]))


def test_file_chunks_arrive_as_vision_llm(
    bus_server: RtviServer,
    bus_client: httpx.Client,
    broker: TansuBroker,
    media: dict[str, Path],
    bus_model: str,
) -> None:
    fid = upload(bus_client, media["clip35"], creation_time=CREATION_TIME, sensor_name="dock-cam").json()[
        "id"
    ]
    r = _embed(bus_client, fid, bus_model)
    assert r.status_code == 200, r.text
    body = r.json()
    chunks = body["chunk_responses"]
    assert len(chunks) == 4
    request_id = body["id"]
    msgs = consume(broker.bootstrap, TOPIC, want=4, key_prefix=f"{request_id}:".encode())
    assert sorted(m.key() for m in msgs) == [f"{request_id}:{i}".encode() for i in range(4)]
    # The reference's message_type header, and which replica wrote it (hostname-pid unless RTVI_REPLICA_ID).
    assert all([k for k, _ in m.headers() or []] == ["message_type", "rtvi-replica"] for m in msgs)
    assert all(dict(m.headers() or [])["message_type"] == b"vision_llm" for m in msgs)
    assert bus_server.proc is not None
    assert all(dict(m.headers() or [])["rtvi-replica"].endswith(b"-%d" % bus_server.proc.pid) for m in msgs)
    decoded = _decode(msgs)
    for i, (v, chunk) in enumerate(zip(decoded, chunks, strict=True)):
        assert v.version == bus_model
        assert v.sensor.type == "Video" and v.sensor.id == "dock-cam"
        assert v.sensor.info["sensorName"] == "dock-cam"
        vector = list(v.llm.visionEmbeddings[0].vector)
        assert len(vector) == len(chunk["embeddings"])
        assert vector == pytest.approx(chunk["embeddings"], abs=1e-6)
        assert v.timestamp.ToMilliseconds() / 1000 == pytest.approx(CREATION_TS + 10 * i)
        assert v.end.ToMilliseconds() / 1000 == pytest.approx(CREATION_TS + min(10 * (i + 1), 35))
        assert v.info["requestId"] == request_id and v.info["streamId"] == fid
        assert int(v.info["frameCount"]) == chunk["frame_count"]
        assert v.llm.queries[0].id == f"{request_id}:{i}"
        # One nv.Frame per sampled frame, inside the chunk; the frame ids bound the chunk.
        frames = [f.id for f in v.frames]
        assert frames == [f"{i}:{k}" for k in range(chunk["frame_count"])]
        assert (v.startFrameId, v.endFrameId) == (frames[0], frames[-1])
        assert all(
            v.timestamp.ToNanoseconds() <= f.timestamp.ToNanoseconds() <= v.end.ToNanoseconds()
            for f in v.frames
        )
        # The reference's sensor.info and query params (spec §6.3).
        info, params = v.sensor.info, v.llm.queries[0].params
        assert (info["assetDir"], info["url"]) == (str(Path(info["path"]).parent), "")
        ntp = (unix_to_iso(v.timestamp.ToMicroseconds() / 1e6), unix_to_iso(v.end.ToMicroseconds() / 1e6))
        assert (params["startNtp"], params["endNtp"]) == ntp

    # The SSE path publishes through the same place.
    with bus_client.stream(
        "POST",
        "/v1/generate_video_embeddings",
        json={"id": fid, "model": bus_model, "chunk_duration": 10, "stream": True},
    ) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    sse_id = events[0]["id"]
    assert len(consume(broker.bootstrap, TOPIC, want=4, key_prefix=f"{sse_id}:".encode())) == 4
    bus_client.delete(f"/v1/files/{fid}")


def test_broker_outage_loses_nothing(
    bus_client: httpx.Client,
    bus_server: RtviServer,
    broker: TansuBroker,
    media: dict[str, Path],
    bus_model: str,
) -> None:
    fid = upload(bus_client, media["clip35"]).json()["id"]
    broker.stop()
    try:
        ready = bus_client.get("/v1/ready", params={"detailed": "true"})
        # The broker is shown as down, but the service stays ready (results wait in the queue).
        assert ready.status_code == 200
        assert ready.json()["checks"]["kafka"]["connected"] is False
        start = time.monotonic()
        r = _embed(bus_client, fid, bus_model)
        assert r.status_code == 200, r.text
        assert time.monotonic() - start < 30  # never waits for the broker
        time.sleep(2)  # messages sit in the producer's queue while the broker is away
    finally:
        broker.start()  # same port; memory storage: the topic is auto-created again on the first produce
    request_id = r.json()["id"]
    msgs = consume(broker.bootstrap, TOPIC, want=4, timeout=60, key_prefix=f"{request_id}:".encode())
    assert sorted(m.key() for m in msgs) == [f"{request_id}:{i}".encode() for i in range(4)]
    ready = bus_client.get("/v1/ready", params={"detailed": "true"}).json()
    assert ready["checks"]["kafka"]["connected"] is True and ready["checks"]["redis"]["connected"] is True
    m = Scrape(bus_server.url)

    def results(what: str) -> float:
        return m.value(f"rtvi_bus_messages_{what}_total", bus="kafka", kind="result")

    assert results("failed") == 0 and results("dropped") == 0
    assert results("published") >= 4
    # The restarted broker forgot the idempotent producer's id: the producer was rebuilt, nothing lost.
    assert m.value("rtvi_bus_producer_rebuilds_total", bus="kafka") >= 1
    bus_client.delete(f"/v1/files/{fid}")


@pytest.fixture()
def error_subscriber(redis_server: RedisServer) -> Iterator[redis.client.PubSub]:
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(ERROR_CHANNEL)
    yield pubsub
    pubsub.close()
    client.close()


def _next_error(
    pubsub: redis.client.PubSub, stream_id: str, timeout: float = 15, event_has: str = ""
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg is not None:
            body: dict[str, str] = json.loads(msg["data"])
            if body["streamId"] == stream_id and event_has in body["event"]:
                return body
    raise AssertionError(f"no error message for {stream_id!r} within {timeout} s")


def _assert_error_shape(body: dict[str, str]) -> None:
    assert set(body) == {"streamId", "timestamp", "type", "source", "event"}
    assert body["type"] == "functional" and body["source"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])


def test_failed_generation_publishes_error_on_redis(
    bus_client: httpx.Client,
    bus_server: RtviServer,
    media: dict[str, Path],
    bus_model: str,
    error_subscriber: redis.client.PubSub,
) -> None:
    files = bus_server.storage.parent / "files"
    # A registered file that disappears from disk under the service.
    gone = shutil.copy(media["clip35"], files / "gone.mp4")
    r = bus_client.post("/v1/files", data={"purpose": "vision", "media_type": "video", "filename": str(gone)})
    assert r.status_code == 200, r.text
    fid = r.json()["id"]
    Path(gone).unlink()
    assert _embed(bus_client, fid, bus_model).status_code >= 400
    body = _next_error(error_subscriber, fid)
    _assert_error_shape(body)
    assert "Failed to generate video embeddings" in body["event"]

    # A corrupt file, accepted because media verification is skipped.
    corrupt = shutil.copy(media["truncated"], files / "corrupt.mp4")
    r = bus_client.post(
        "/v1/files", data={"purpose": "vision", "media_type": "video", "filename": str(corrupt)}
    )
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    assert _embed(bus_client, cid, bus_model).status_code >= 400
    _assert_error_shape(_next_error(error_subscriber, cid))


def test_text_embeddings_are_not_published_by_default(
    bus_client: httpx.Client, broker: TansuBroker, bus_model: str
) -> None:
    r = bus_client.post(
        "/v1/generate_text_embeddings", json={"text_input": ["a forklift"], "model": bus_model}
    )
    assert r.status_code == 200
    assert consume(broker.bootstrap, TOPIC, want=1, timeout=3, key_prefix=f"{r.json()['id']}:".encode()) == []


def test_text_embeddings_published_when_enabled(
    tmp_path: Path, broker: TansuBroker, redis_server: RedisServer
) -> None:
    env = _bus_env(
        broker, redis_server, ENABLE_KAFKA_MESSAGES_FOR_TEXT_INPUT="true", MESSAGE_BUS_TOPIC="texts"
    )
    srv = RtviServer(tmp_path / "assets", env=env).start()
    try:
        with srv.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            r = c.post(
                "/v1/generate_text_embeddings", json={"text_input": ["a cat", "a rocket"], "model": model}
            )
            assert r.status_code == 200
            data = r.json()
    finally:
        srv.stop()  # shutdown flushes the producer
    msgs = consume(broker.bootstrap, "texts", want=2, key_prefix=f"{data['id']}:".encode())
    decoded = _decode(msgs)
    assert [v.llm.queries[0].prompts["text"] for v in decoded] == ["a cat", "a rocket"]
    for v, d in zip(decoded, data["data"], strict=True):
        assert list(v.llm.queries[0].embeddings[0].vector) == pytest.approx(d["embeddings"], abs=1e-6)


def test_unreachable_rtsp_url_publishes_error_on_redis(
    tmp_path: Path, broker: TansuBroker, redis_server: RedisServer, error_subscriber: redis.client.PubSub
) -> None:
    # Its own server: the module's server skips media verification, so it would accept any URL.
    srv = RtviServer(tmp_path / "assets", env=_bus_env(broker, redis_server)).start()
    try:
        url = f"rtsp://127.0.0.1:{free_port()}/nobody-home"
        with srv.client() as c:
            r = c.post("/v1/streams/add", json={"streams": [{"liveStreamUrl": url, "description": "gone"}]})
        assert r.status_code >= 400 or r.json().get("errors"), r.text
        body = _next_error(error_subscriber, "", event_has=url)
    finally:
        srv.stop()
    _assert_error_shape(body)
    assert "Failed to add live stream" in body["event"]


def test_config_switches_topic_at_runtime(
    bus_client: httpx.Client, broker: TansuBroker, media: dict[str, Path], bus_model: str
) -> None:
    def body(change: str = "config", path_topic: str = "switched") -> dict[str, object]:
        md = {"messagingbus": "kafka", "topic-prefix": path_topic, "create-topic": True, "topic-partition": 2}
        return {
            "alert_type": "config",
            "txn_id": "t1",
            "source": "test",
            "created_at": "now",
            "event": {"change": change, "metadata": md},
        }

    assert bus_client.post("/v1/config", json=body(change="camera_add")).status_code == 400
    r = bus_client.post("/api/v1/config", json=body())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "txn_id": "t1",
        "status": "updated",
        "messagingbus": "kafka",
        "topic": "switched",
        "source": "test",
        "created_at": "now",
    }
    try:
        fid = upload(bus_client, media["cat_jpg"], media_type="image").json()["id"]
        rid = bus_client.post("/v1/generate_video_embeddings", json={"id": fid, "model": bus_model}).json()[
            "id"
        ]
        assert len(consume(broker.bootstrap, "switched", want=1, key_prefix=f"{rid}:".encode())) == 1
    finally:
        assert bus_client.post("/v1/config", json=body(path_topic=TOPIC)).status_code == 200


def test_results_on_a_redis_stream(redis_server: RedisServer) -> None:
    env = {"MESSAGE_BUS": "redis", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": redis_server.port}
    settings = Settings(**env)  # type: ignore[arg-type]
    pub = MessagePublisher("embed", settings.bus, Metrics(), build_result=build_vision_llm).start()
    ctx = text_context("rs-1", 0, "a cat", "m", "m", 1.7e9)
    assert pub.publish_chunk(ctx, [0.25, 0.5])
    pub.close(timeout=10)
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    entries = client.xrange(TOPIC)
    client.close()
    v = nv.VisionLLM.FromString(entries[-1][1][b"metadata"])
    assert v.llm.queries[0].id == "rs-1:0" and list(v.llm.queries[0].embeddings[0].vector) == [0.25, 0.5]


@pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server is not installed (make rtsp-deps)")
def test_live_chunks_arrive_as_camera_messages(
    tmp_path: Path, bus_client: httpx.Client, broker: TansuBroker, bus_model: str
) -> None:
    """Live chunks publish once per chunk (not per reader), as sensor type Camera with wall-clock times."""
    camera = RtspServer(free_port(), tmp_path).start()
    try:
        r = bus_client.post(
            "/v1/streams/add", json={"streams": [{"liveStreamUrl": camera.url, "description": "Dock camera"}]}
        )
        stream_id = r.json()["results"][0]["id"]
        body = {"id": stream_id, "model": bus_model, "stream": True, "chunk_duration": 2}
        reader = SseReader(str(bus_client.base_url), body)
        try:
            events = reader.chunks(2, timeout=30)
        finally:
            reader.stop()
        request_id = events[0]["id"]
        msgs = _decode(consume(broker.bootstrap, TOPIC, want=2, key_prefix=f"{request_id}:".encode()))
        assert len(msgs) >= 2
        first = msgs[0]
        assert first.sensor.type == "Camera" and first.sensor.description == "Dock camera"
        assert abs(first.timestamp.ToMilliseconds() / 1000 - time.time()) < 60
        assert first.info["streamId"] == stream_id
        bus_client.delete(f"/v1/generate_video_embeddings/{stream_id}")
        bus_client.delete(f"/v1/streams/delete/{stream_id}")
    finally:
        camera.kill()


@pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server is not installed (make rtsp-deps)")
def test_a_bus_switched_on_at_run_time_publishes_live_chunks(tmp_path: Path, broker: TansuBroker) -> None:
    """A service started without a bus, switched to Kafka by POST /v1/config: live chunks are published
    like file chunks, also those of a job that was already running before the switch."""
    env = {"KAFKA_ENABLED": "false", "MESSAGE_BUS": "", "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap}
    srv = RtviServer(tmp_path / "assets", env=env).start()
    camera = RtspServer(free_port(), tmp_path).start()
    reader: SseReader | None = None
    try:
        with srv.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            r = c.post(
                "/v1/streams/add", json={"streams": [{"liveStreamUrl": camera.url, "description": "d"}]}
            )
            stream_id = r.json()["results"][0]["id"]
            body = {"id": stream_id, "model": model, "stream": True, "chunk_duration": 1}
            reader = SseReader(srv.url, body)
            request_id = reader.chunks(1, timeout=30)[0]["id"]  # the job runs before the switch
            md = {"messagingbus": "kafka", "topic-prefix": "switched-live"}
            switch = {"alert_type": "config", "event": {"change": "config", "metadata": md}}
            assert c.post("/v1/config", json=switch).status_code == 200
            reader.chunks(2, timeout=30)  # chunks made after the switch
        msgs = consume(
            broker.bootstrap, "switched-live", want=1, timeout=10, key_prefix=f"{request_id}:".encode()
        )
        assert len(msgs) == 1, "no live chunk reached the bus switched on at run time"
    finally:
        if reader is not None:
            reader.stop()
        camera.kill()
        srv.stop()
