"""The message builders against a schema compiled independently from spec §6.2 (every field the
reference documents show, with its value), the error JSON, the reproducibility of the generated protobuf
modules, and bus routing from settings."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from rtvi.core.assets.registry import Asset
from rtvi.core.bus.incidents import place_slug
from rtvi.core.bus.messages import ChunkContext, chunk_context, error_json
from rtvi.core.bus.publisher import MessagePublisher
from rtvi.core.bus.schema import _generate
from rtvi.core.credentials import shown_url
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.results import ChunkResult
from rtvi.core.telemetry.metrics import Metrics
from rtvi.services.embed.messages import build_vision_llm, text_context
from rtvi.services.vlm import messages as vlm
from rtvi.services.vlm.answers import Answer
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
message Frame {
  string version = 1; string id = 2; google.protobuf.Timestamp timestamp = 3; string sensorId = 4;
  map<string, string> info = 12;
}
message VisionLLM {
  string version = 1; google.protobuf.Timestamp timestamp = 2; google.protobuf.Timestamp end = 3;
  string startFrameId = 4; string endFrameId = 5; Sensor sensor = 6; LLM llm = 7;
  map<string, string> info = 8; repeated Frame frames = 9;
}
message Place {
  string id = 1; string name = 2; string type = 3; Location location = 4; Coordinate coordinate = 5;
  map<string, string> info = 6;
}
message AnalyticsModule {
  string id = 1; string description = 2; string source = 3; string version = 4; map<string, string> info = 5;
}
message Incident {
  string sensorId = 1; google.protobuf.Timestamp timestamp = 2; google.protobuf.Timestamp end = 3;
  repeated string objectIds = 4; repeated string frameIds = 5; Place place = 6;
  AnalyticsModule analyticsModule = 7; string category = 8; repeated Embedding embeddings = 9;
  bool isAnomaly = 10; map<string, string> info = 11; LLM llm = 12;
}
"""


@pytest.fixture(scope="module")
def reference_pool(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pool.DescriptorPool:
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
    return pool


@pytest.fixture(scope="module")
def reference_vision_llm(reference_pool: descriptor_pool.DescriptorPool) -> Any:
    return message_factory.GetMessageClass(reference_pool.FindMessageTypeByName("ref.VisionLLM"))


@pytest.fixture(scope="module")
def reference_incident(reference_pool: descriptor_pool.DescriptorPool) -> Any:
    return message_factory.GetMessageClass(reference_pool.FindMessageTypeByName("ref.Incident"))


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
    assert dict(msg.sensor.info) == {
        "path": "/data/a.mp4",
        "videoFps": "10.00",
        "sensorName": "dock-cam",
        "assetDir": "",  # the reference's keys are always there, "" when they do not apply
        "url": "",
    }
    assert len(msg.frames) == 0  # this context names no frame times: the fallback ids above
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


# --- every field the reference documents show (seeds: embedding "Message Structure", VLM "Incident
# Messages" and its example JSON), read through the reference schema ---------------------------------
CREATION_TS = datetime(2024, 6, 9, 18, 32, 11, 123000, tzinfo=UTC).timestamp()
# The reference example's incident: 2025-11-19T06:22:20Z to 06:22:32Z on a camera.
LIVE_START = datetime(2025, 11, 19, 6, 22, 20, tzinfo=UTC).timestamp()


def _at(node: Any, path: str) -> Any:
    """The value at a seed path such as "llm.queries.0.params.startNtp"; a map key must be there (reading
    a missing key of a protobuf map would only give "")."""
    for part in path.split("."):
        if part.isdigit():
            node = node[int(part)]
        elif hasattr(node, "DESCRIPTOR"):
            node = getattr(node, part)
        else:
            assert part in node, f"{path}: no key {part!r} in {dict(node)}"
            node = node[part]
    return node


def _assert_fields(msg: Any, expected: dict[str, Any]) -> None:
    wrong = {path: (_at(msg, path), want) for path, want in expected.items() if _at(msg, path) != want}
    assert not wrong, wrong  # path -> (got, wanted)


def _result(index: int, start_s: float, end_s: float, frames: int) -> ChunkResult[Any]:
    return ChunkResult(index, start_s, end_s, None, frames, 0.0125, 0.5, 0.001, 0.75)


FILE_ASSET = Asset(
    id="asset-9",
    kind="file",
    media_type="video",
    filename="a.mp4",
    path="/store/assets/asset-9/a.mp4",
    owns_dir=True,
    sensor_name="dock-cam",
    meta={"fps": 10.0, "description": "loading dock"},
)
EMBED_MODEL = ModelInfo("cosmos-embed1-448p", "nvidia", "embedding")


def test_file_chunk_carries_every_seed_field(reference_vision_llm: Any) -> None:
    ctx = chunk_context(FILE_ASSET, "req-7", EMBED_MODEL, "cosmos", _result(3, 30.0, 40.0, 4), CREATION_TS)
    msg = reference_vision_llm.FromString(build_vision_llm(ctx, [0.25, -0.5]).SerializeToString())
    _assert_fields(
        msg,
        {
            "version": "cosmos-embed1-448p",
            "startFrameId": "3:0",  # the first and last frame's ids
            "endFrameId": "3:3",
            "sensor.id": "dock-cam",
            "sensor.type": "Video",
            "sensor.description": "loading dock",
            "sensor.info.path": "/store/assets/asset-9/a.mp4",
            "sensor.info.assetDir": "/store/assets/asset-9",
            "sensor.info.url": "",  # an upload was made from no URL
            "sensor.info.videoFps": "10.00",
            "llm.info.modelId": "cosmos-embed1-448p",
            "llm.info.modelApiType": "embedding",
            "llm.info.modelOwnedBy": "nvidia",
            "llm.queries.0.id": "req-7:3",
            "llm.queries.0.params.chunkIdx": "3",
            "llm.queries.0.params.streamId": "asset-9",
            "llm.queries.0.params.requestId": "req-7",
            "llm.queries.0.params.startNtp": "2024-06-09T18:32:41.123Z",  # creation time + PTS
            "llm.queries.0.params.endNtp": "2024-06-09T18:32:51.123Z",
            "llm.queries.0.response": "",
            "info.requestId": "req-7",
            "info.chunkIdx": "3",
            "info.streamId": "asset-9",
            "info.frameCount": "4",
            "info.decodeLatencyMs": "12.500",
            "info.vlmLatencyMs": "500.000",
            "info.chunkLatencyMs": "750.000",
            "info.queueTimeS": "0.001000",
            "info.processingLatencyS": "0.750000",
            # Kept keys of ours, next to the reference's.
            "sensor.info.sensorName": "dock-cam",
            "llm.queries.0.params.sensorId": "dock-cam",
            "llm.info.requestedModel": "cosmos",
        },
    )
    assert msg.timestamp.ToJsonString() == "2024-06-09T18:32:41.123Z"
    assert msg.end.ToJsonString() == "2024-06-09T18:32:51.123Z"
    assert list(msg.llm.visionEmbeddings[0].vector) == [0.25, -0.5]
    # One Frame per sampled frame, at the sampler's targets (centres of 4 equal parts of 30-40 s).
    assert [f.id for f in msg.frames] == ["3:0", "3:1", "3:2", "3:3"]
    assert [f.timestamp.ToMicroseconds() for f in msg.frames] == [
        round((CREATION_TS + 30 + t) * 1e6) for t in (1.25, 3.75, 6.25, 8.75)
    ]
    assert all(f.sensorId == "dock-cam" for f in msg.frames)
    assert dict(msg.frames[2].info) == {"chunkIdx": "3", "frameIdx": "2", "timeSource": "planned"}


@dataclass(frozen=True, slots=True)
class _TimedResult(ChunkResult[Any]):
    frame_pts_s: tuple[float, ...] = ()  # what a result that keeps its frames' PTS carries


def test_frames_take_the_decoded_times_when_the_result_has_them(reference_vision_llm: Any) -> None:
    r = _TimedResult(0, 0.0, 10.0, None, 2, 0.0, 0.0, 0.0, 0.0, frame_pts_s=(2.4, 7.6))
    ctx = chunk_context(FILE_ASSET, "req-7", EMBED_MODEL, "", r, CREATION_TS)
    msg = reference_vision_llm.FromString(build_vision_llm(ctx, [1.0]).SerializeToString())
    assert [f.timestamp.ToMicroseconds() for f in msg.frames] == [
        round((CREATION_TS + t) * 1e6) for t in (2.4, 7.6)
    ]
    assert msg.frames[0].info["timeSource"] == "decoded"
    assert (msg.startFrameId, msg.endFrameId) == ("0:0", "0:1")


LIVE_ASSET = Asset(
    id="stream-1",
    kind="live",
    media_type="video",
    filename="Dock camera",
    path="rtsp://cam.local:8554/live?token=s3cret&channel=1",  # the registry keeps no user-info
    owns_dir=False,
    meta={
        "username": "admin",
        "password": "hunter2",
        "fps": 25.0,
        "camera_id": "camera-entrance-east-01",
        "description": "Dock camera",
    },
)


CONTENT = "Yes. Operator entered the loading area without a high-visibility vest."


def _caption(task: vlm.CaptionTask, alert: bool = True) -> vlm.Caption:
    answer = Answer(CONTENT, "The vest is missing.", "", alert, "Yes")
    return vlm.Caption(task, answer, input_tokens=1200, output_tokens=14)


def _task(**kw: Any) -> vlm.CaptionTask:
    settings = Settings().vlm
    base: dict[str, Any] = {
        "prompt": "Is anyone without a vest? Yes or No.",
        "system_prompt": "Answer Yes or No first.",
        "place": vlm.Place.of({}, settings),
        "module": vlm.AnalyticsModule.of(settings),
        "enable_reasoning": True,
        "alert_category": "safety_non_compliance",
    }
    return vlm.CaptionTask(**{**base, **kw})


def _live_messages(task: vlm.CaptionTask) -> tuple[bytes, bytes]:
    model = ModelInfo("nemotron-vl", "nvidia", "vlm")
    r = _result(5, LIVE_START, LIVE_START + 12, 2)
    ctx = chunk_context(LIVE_ASSET, "req_1234567890", model, "", r, 0.0)
    caption = _caption(task)
    vision = vlm.build_vision_llm(ctx, caption)
    incident = vlm.build_incident(ctx, caption, vision)
    assert incident is not None
    return vision.SerializeToString(), incident.SerializeToString()


def test_live_caption_names_the_camera_without_its_secrets(reference_vision_llm: Any) -> None:
    data, incident = _live_messages(_task())
    for secret in (b"hunter2", b"admin", b"s3cret"):
        assert secret not in data and secret not in incident
    msg = reference_vision_llm.FromString(data)
    shown = "rtsp://cam.local:8554/live?token=***&channel=1"
    _assert_fields(
        msg,
        {
            "sensor.id": "camera-entrance-east-01",
            "sensor.type": "Camera",
            "sensor.info.url": shown,
            "sensor.info.path": shown,
            "sensor.info.assetDir": "",  # a camera has no directory in the store
            "sensor.info.videoFps": "25.00",
            "llm.queries.0.params.startNtp": "2025-11-19T06:22:20.000Z",
            "llm.queries.0.params.endNtp": "2025-11-19T06:22:32.000Z",
            "llm.queries.0.prompts.user": "Is anyone without a vest? Yes or No.",
            "llm.info.modelApiType": "vlm",
            "info.incidentDetected": "true",
            "info.reasoning": "The vest is missing.",
            "info.reasoningDescription": "The vest is missing.",
            "info.inputTokens": "1200",
            "info.outputTokens": "14",
            "startFrameId": "5:0",
            "endFrameId": "5:1",
        },
    )
    assert [f.timestamp.ToJsonString() for f in msg.frames] == [
        "2025-11-19T06:22:23Z",
        "2025-11-19T06:22:29Z",
    ]


def test_incident_carries_the_reference_example_fields(reference_incident: Any) -> None:
    inc = reference_incident.FromString(_live_messages(_task())[1])
    _assert_fields(
        inc,
        {
            "sensorId": "camera-entrance-east-01",
            "place.id": "dock-entrance-east",  # from PLACE_NAME "Dock Entrance-East"
            "place.name": "Dock Entrance-East",
            "place.type": "warehouse-bay",
            "analyticsModule.id": "vlm-activity-detector",
            "analyticsModule.description": "RTVI Safety Compliance Detector",
            "analyticsModule.source": "rtvi-vlm",
            "analyticsModule.version": "nemotron-vl",
            "category": "safety_non_compliance",
            "isAnomaly": True,
            "info.priority": "high",
            "info.request_id": "req_1234567890",
            "info.chunk_idx": "5",
            "info.incident_detected": "true",
            "info.reasoning": "The vest is missing.",
            "info.reasoningDescription": "The vest is missing.",
            "llm.queries.0.response": CONTENT,
            # Kept camelCase keys of ours.
            "info.requestId": "req_1234567890",
            "info.chunkIdx": "5",
            "info.verdict": "confirmed",
        },
    )
    assert inc.timestamp.ToJsonString() == "2025-11-19T06:22:20Z"
    assert inc.end.ToJsonString() == "2025-11-19T06:22:32Z"
    assert list(inc.frameIds) == ["5:0", "5:1"]  # the VisionLLM message's first and last frame
    assert list(inc.objectIds) == ["stream-1"]


def test_incident_priority_and_place_id_are_settable(reference_incident: Any) -> None:
    s = Settings().vlm
    module = vlm.AnalyticsModule.of(
        SimpleNamespace(  # type: ignore[arg-type]  # a VlmSettings with INCIDENT_PRIORITY=medium
            analytics_module_id="forklift-watch",
            analytics_module_description="d",
            analytics_module_source="rtvi-vlm",
            incident_priority="medium",
        )
    )
    place = vlm.Place.of({"place_name": "Dock 7", "place_id": "bay-7"}, s)
    inc = reference_incident.FromString(_live_messages(_task(place=place, module=module))[1])
    assert (inc.info["priority"], inc.place.id, inc.place.name) == ("medium", "bay-7", "Dock 7")
    # A stream naming only its place gets the slug of the name.
    inc = reference_incident.FromString(
        _live_messages(_task(place=vlm.Place.of({"place_name": "Dock 7"}, s)))[1]
    )
    assert inc.place.id == "dock-7"


@pytest.mark.parametrize(
    ("name", "slug"),
    [("Dock Entrance-East", "dock-entrance-east"), ("Dock Entrance - East", "dock-entrance-east"), ("", "")],
)
def test_place_slug(name: str, slug: str) -> None:
    assert place_slug(name) == slug


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:hunter2@cam.local:554/live", "rtsp://cam.local:554/live"),
        (
            "https://u:p@bucket.example.com/v.mp4?X-Amz-Signature=abc&X-Amz-Credential=k&part=2",
            "https://bucket.example.com/v.mp4?X-Amz-Signature=***&X-Amz-Credential=***&part=2",
        ),
        ("s3://bucket/clips/v.mp4", "s3://bucket/clips/v.mp4"),
        ("data:video/mp4;base64,AAAA", ""),
        ("", ""),
    ],
)
def test_shown_url_drops_credentials(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_file_made_from_a_url_shows_it_redacted(reference_vision_llm: Any) -> None:
    meta = {**FILE_ASSET.meta, "source_url": "https://user:pw@example.com/v.mp4?token=t0k"}
    asset = replace(FILE_ASSET, meta=meta)
    ctx = chunk_context(asset, "req-7", EMBED_MODEL, "", _result(0, 0.0, 1.0, 1), CREATION_TS)
    msg = reference_vision_llm.FromString(build_vision_llm(ctx, [1.0]).SerializeToString())
    assert msg.sensor.info["url"] == "https://example.com/v.mp4?token=***"


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
    pub = MessagePublisher("embed", settings.bus, Metrics())
    try:
        assert (pub.results_bus, pub.error_bus) == (results, errors)
        assert pub.results_topic == "mdx-embed" and pub.error_topic == "mdx-embed-errors"
    finally:
        pub.close(timeout=0.5)


def test_legacy_topic_name() -> None:
    assert Settings(KAFKA_TOPIC="legacy").message_bus_topic == "legacy"  # type: ignore[call-arg]
    assert re.fullmatch("mdx-embed", MessagePublisher("embed", Settings().bus, Metrics()).results_topic)
