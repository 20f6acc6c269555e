"""The message builder against a schema compiled independently from spec §6.2, the error JSON, the
reproducibility of the generated protobuf modules, and bus routing from settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from rtvi.core.bus.messages import ChunkContext, error_json
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.bus.schema import _generate
from rtvi.core.telemetry.metrics import Metrics
from rtvi.services.embed.messages import build_vision_llm, text_context
from rtvi.settings import Settings

# Written from the spec's field table, not from our .proto: a consumer's view of the wire format.
REFERENCE_PROTO = """
syntax = "proto3";
package ref;
import "google/protobuf/timestamp.proto";
message Location { double lat = 1; double lon = 2; double alt = 3; }
message Coordinate { double x = 1; double y = 2; double z = 3; }
message Sensor {
  string id = 1; string type = 2; string description = 3; Location location = 4; Coordinate coordinate = 5;
  map<string, string> info = 6;
}
message Embedding { repeated float vector = 1; map<string, string> info = 2; }
message Query {
  string id = 1; map<string, string> params = 2; map<string, string> prompts = 3; string response = 4;
  repeated Embedding embeddings = 5;
}
message LLM {
  map<string, string> info = 1; repeated Query queries = 2; repeated Embedding visionEmbeddings = 3;
}
message VisionLLM {
  string version = 1; google.protobuf.Timestamp timestamp = 2; google.protobuf.Timestamp end = 3;
  string startFrameId = 4; string endFrameId = 5; Sensor sensor = 6; LLM llm = 7;
  map<string, string> info = 8;
}
"""


@pytest.fixture(scope="module")
def reference_vision_llm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from importlib.resources import files

    from grpc_tools import protoc

    d = tmp_path_factory.mktemp("refproto")
    (d / "ref.proto").write_text(REFERENCE_PROTO)
    out = d / "ref.desc"
    well_known = str(files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{d}",
        f"-I{well_known}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        "ref.proto",
    ]
    assert protoc.main(args) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()  # separate from the default pool that holds our nv.*
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("ref.VisionLLM"))


def _ctx(**kw: Any) -> ChunkContext:
    base: dict[str, Any] = {
        "request_id": "req-1",
        "chunk_idx": 2,
        "stream_id": "asset-1",
        "sensor_type": "Video",
        "start_ts": 1717957951.123,
        "end_ts": 1717957961.123,
        "model_id": "bundled-model",
        "requested_model": "bundled-model",
        "sensor_name": "dock-cam",
        "description": "loading dock",
        "frame_count": 8,
        "decode_latency_s": 0.0125,
        "inference_latency_s": 0.5,
        "chunk_latency_s": 0.75,
        "queue_time_s": 0.001,
        "sensor_info": {"path": "/data/a.mp4", "videoFps": "10.00", "url": ""},
    }
    return ChunkContext(**{**base, **kw})


def test_vision_llm_decodes_with_a_reference_schema(reference_vision_llm: Any) -> None:
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    data = build_vision_llm(_ctx(), vector).SerializeToString()
    msg = reference_vision_llm.FromString(data)
    assert msg.version == "bundled-model"
    assert msg.timestamp.ToMilliseconds() == 1717957951123 and msg.end.ToMilliseconds() == 1717957961123
    assert (msg.startFrameId, msg.endFrameId) == ("2:start", "2:end")
    assert (msg.sensor.id, msg.sensor.type, msg.sensor.description) == ("dock-cam", "Video", "loading dock")
    assert dict(msg.sensor.info) == {"path": "/data/a.mp4", "videoFps": "10.00", "sensorName": "dock-cam"}
    assert np.array_equal(np.array(msg.llm.visionEmbeddings[0].vector, dtype=np.float32), vector)
    assert msg.llm.info["modelId"] == "bundled-model" and msg.llm.info["modelApiType"] == "embedding"
    q = msg.llm.queries[0]
    assert q.id == "req-1:2" and q.response == ""
    assert (
        q.params["chunkIdx"] == "2" and q.params["streamId"] == "asset-1" and q.params["requestId"] == "req-1"
    )
    info = dict(msg.info)
    assert info["chunkIdx"] == "2" and info["requestId"] == "req-1" and info["streamId"] == "asset-1"
    assert (
        info["frameCount"] == "8"
        and info["decodeLatencyMs"] == "12.500"
        and info["chunkLatencyMs"] == "750.000"
    )
    # The vector is packed: one length-delimited field of 4 bytes per float, not one tag per float.
    assert len(data) < 384 * 4 + 1024


def test_live_sensor_prefers_camera_id(reference_vision_llm: Any) -> None:
    ctx = _ctx(sensor_type="Camera", camera_id="cam-7", sensor_name="", stream_id="stream-1")
    msg = reference_vision_llm.FromString(build_vision_llm(ctx, [0.5]).SerializeToString())
    assert (msg.sensor.id, msg.sensor.type) == ("cam-7", "Camera")
    assert msg.info["cameraId"] == "cam-7" and msg.llm.queries[0].params["cameraId"] == "cam-7"
    assert ctx.key == b"req-1:2"


def test_text_message_carries_text_and_no_sensor(reference_vision_llm: Any) -> None:
    ctx = text_context("req-9", 1, "a cat", "m", "m", 1700000000.0)
    msg = reference_vision_llm.FromString(build_vision_llm(ctx, [1.0, 2.0]).SerializeToString())
    assert not msg.HasField("sensor")
    assert msg.llm.queries[0].prompts["text"] == "a cat"
    assert list(msg.llm.queries[0].embeddings[0].vector) == [1.0, 2.0]
    assert len(msg.llm.visionEmbeddings) == 0


def test_error_json_shape() -> None:
    body = json.loads(error_json("s1", "it broke", "critical", "host-1", now=1717957951.1234))
    assert body == {
        "streamId": "s1",
        "timestamp": "2024-06-09T18:32:31.123Z",
        "type": "critical",
        "source": "host-1",
        "event": "it broke",
    }


def test_generated_modules_are_reproducible(tmp_path: Path) -> None:
    for fresh in _generate.generate(tmp_path):
        committed = _generate.HERE / fresh.name
        assert committed.read_bytes() == fresh.read_bytes(), f"{fresh.name} is stale: run `make proto`"


@pytest.mark.parametrize(
    ("env", "results", "errors"),
    [
        ({}, None, None),
        ({"KAFKA_ENABLED": "true"}, "kafka", "kafka"),
        ({"MESSAGE_BUS": "Kafka", "ENABLE_REDIS_ERROR_MESSAGES": "true"}, "kafka", "redis"),
        ({"MESSAGE_BUS": "kafka", "KAFKA_BOOTSTRAP_SERVERS": ""}, None, None),
        ({"ERROR_BUS": "redis"}, None, "redis"),
        ({"MESSAGE_BUS": "redis", "ERROR_BUS": "kafka"}, "redis", "kafka"),
    ],
)
def test_bus_routing(env: dict[str, str], results: str | None, errors: str | None) -> None:
    # Sinks connect lazily and in the background: no broker is needed to build the routes.
    settings = Settings(**env)  # type: ignore[arg-type]
    pub = MessagePublisher("embed", settings, Metrics())
    try:
        assert (pub.results_bus, pub.error_bus) == (results, errors)
        assert pub.results_topic == "mdx-embed" and pub.error_topic == "mdx-embed-errors"
    finally:
        pub.close(timeout=0.5)


def test_legacy_topic_name() -> None:
    assert Settings(KAFKA_TOPIC="legacy").message_bus_topic == "legacy"  # type: ignore[call-arg]
    assert re.fullmatch("mdx-embed", MessagePublisher("embed", Settings(), Metrics()).results_topic)
