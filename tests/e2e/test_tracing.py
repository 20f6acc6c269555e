"""OpenTelemetry traces of a file request, exported over OTLP/gRPC to a real receiver: one span per
request, continuing the caller's `traceparent`, with children for plan, decode, inference and publish
(results on a real Redis stream) that carry the request and asset ids."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtvi.core.telemetry.tracing import otlp_exporter, tracing_enabled
from tests.conftest import upload
from tests.kafka_redis import RedisServer
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.servers import RtviServer

CHUNKS = 4  # clip35 (35 s) in 10 s chunks
STEPS = {"plan", "decode", "inference", "publish"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver, redis_server: RedisServer
) -> Iterator[RtviServer]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "MESSAGE_BUS": "redis",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
    }
    srv = RtviServer(tmp_path_factory.mktemp("traced") / "assets", env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def traced_video(traced: RtviServer, media: dict[str, Path]) -> tuple[str, str]:
    with traced.client() as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        return upload(c, media["clip35"]).json()["id"], model


def _traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def _check_tree(spans: list[ReceivedSpan], parent_id: str, request_id: str, asset_id: str) -> None:
    roots = [s for s in spans if s.parent_id == parent_id]
    assert [r.name for r in roots] == ["POST /v1/generate_video_embeddings"]
    root = roots[0]
    assert root.service == "rtvi-embed"
    assert root.attributes["rtvi.request_id"] == request_id and root.attributes["rtvi.asset_id"] == asset_id
    # The instrumentation also traces Starlette background tasks (a streamed request's cleanup).
    spans = [s for s in spans if not s.name.startswith("BackgroundTask ")]
    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        if s is not root:
            by_name.setdefault(s.name, []).append(s)
    assert set(by_name) == STEPS, sorted(by_name)
    assert len(by_name["plan"]) == 1
    for name in ("decode", "inference", "publish"):
        assert sorted(s.attributes["rtvi.chunk.index"] for s in by_name[name]) == list(range(CHUNKS)), name
    for s in spans:
        if s is root:
            continue
        assert s.parent_id == root.span_id, s.name  # every step is a child of the request's span
        assert s.attributes["rtvi.request_id"] == request_id and s.attributes["rtvi.asset_id"] == asset_id
        assert root.start_ns <= s.start_ns <= s.end_ns <= root.end_ns, s.name
        assert s.status_code != 2, s.name  # STATUS_CODE_ERROR
    assert by_name["plan"][0].attributes["rtvi.chunks"] == CHUNKS
    plan_end = by_name["plan"][0].end_ns
    decode = {s.attributes["rtvi.chunk.index"]: s for s in by_name["decode"]}
    inference = {s.attributes["rtvi.chunk.index"]: s for s in by_name["inference"]}
    for i, s in inference.items():
        d = decode[i]
        assert plan_end <= d.start_ns and d.end_ns <= s.start_ns  # a chunk's frames, then its model call
        assert d.attributes["rtvi.chunk.frames"] == s.attributes["rtvi.chunk.frames"] == 8
        assert d.attributes["rtvi.chunk.start_s"] == s.attributes["rtvi.chunk.start_s"] == 10.0 * i
        if i + 1 < CHUNKS:  # the next chunk is sampled while this one is in the model
            assert decode[i + 1].start_ns < s.end_ns


def test_a_file_request_is_one_trace_under_the_callers_span(
    traced: RtviServer, traced_video: tuple[str, str], receiver: OtlpReceiver
) -> None:
    fid, model = traced_video
    header, trace_id, parent_id = _traceparent()
    with traced.client() as c:
        r = c.post(
            "/v1/generate_video_embeddings",
            json={"id": fid, "model": model, "chunk_duration": 10},
            headers={"traceparent": header},
        )
    assert r.status_code == 200, r.text
    spans = receiver.wait_for(trace_id, STEPS | {"POST /v1/generate_video_embeddings"})
    _check_tree(spans, parent_id, r.json()["id"], fid)


def test_a_streamed_request_keeps_its_steps_under_its_span(
    traced: RtviServer, traced_video: tuple[str, str], receiver: OtlpReceiver
) -> None:
    fid, model = traced_video
    header, trace_id, parent_id = _traceparent()
    body = {"id": fid, "model": model, "chunk_duration": 10, "stream": True}
    with (
        traced.client() as c,
        c.stream("POST", "/v1/generate_video_embeddings", json=body, headers={"traceparent": header}) as r,
    ):
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    request_id = json.loads(events[0])["id"]
    spans = receiver.wait_for(trace_id, STEPS | {"POST /v1/generate_video_embeddings"})
    _check_tree(spans, parent_id, request_id, fid)


def test_probes_are_not_traced_and_other_requests_start_their_own_trace(
    traced: RtviServer, receiver: OtlpReceiver
) -> None:
    probes = ("/v1/metrics", "/metrics", "/v1/ready", "/v1/live", "/v1/startup")
    with traced.client() as c:
        for path in probes:
            assert c.get(path).status_code == 200
        models = c.get("/v1/models")
    assert models.status_code == 200
    deadline = time.monotonic() + 20
    while not (roots := [s for s in receiver.spans if s.name == "GET /v1/models"]):
        assert time.monotonic() < deadline, "no span for GET /v1/models"
        time.sleep(0.1)
    assert roots[-1].parent_id == ""  # no traceparent: a trace of its own
    assert not {s.name for s in receiver.spans} & {f"GET {p}" for p in probes}


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, False),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),  # the reference's switch
        (True, {}, True),
        (True, {"OTEL_SDK_DISABLED": "true"}, False),
        (True, {"OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_when_tracing_is_on(flag: bool | None, env: dict[str, str], expected: bool) -> None:
    assert tracing_enabled(flag, env) is expected


@pytest.mark.parametrize(
    ("env", "module"),
    [
        ({}, "http"),  # http/protobuf, the OpenTelemetry default
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            "http",
        ),
    ],
)
def test_the_protocol_picks_the_exporter(env: dict[str, str], module: str) -> None:
    exporter = otlp_exporter(env)
    assert type(exporter).__module__ == f"opentelemetry.exporter.otlp.proto.{module}.trace_exporter"
    exporter.shutdown()
    with pytest.raises(ValueError, match="use grpc or http/protobuf"):
        otlp_exporter({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})
