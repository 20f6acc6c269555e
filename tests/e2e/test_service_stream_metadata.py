"""A third service, defined here and nowhere else, with an auto-start field of its own (`threshold`): its
CV metadata model reaches `/v1/stream/add` validation, the registry, the restart resume and its stage's
`live_processor` without a line of rtvi.core or rtvi.http knowing it. Runs in process (build_app on the
test's ServiceSpec) against a real RTSP camera.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi.testclient import TestClient
from pydantic import Field

from rtvi.core.assets.registry import Asset
from rtvi.core.bus.messages import vision_llm_envelope
from rtvi.core.bus.publisher import BusTopics
from rtvi.core.media.types import Frame
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.results import FrameSampling
from rtvi.core.service import CoreConfig
from rtvi.core.streams import StreamMetadata
from rtvi.http.app import build_app
from rtvi.http.spec import ServiceSpec
from rtvi.settings import Settings
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import free_port

pytestmark = pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server missing: run `make rtsp-deps`")

CHUNK_S = 2
TWO_FRAMES = FrameSampling(2)


# --- the service ------------------------------------------------------------------------------------
class ThresholdMetadata(StreamMetadata):
    """Its CV metadata: a threshold starts its inference; nothing else of the contract is known."""

    threshold: Annotated[float, Field(ge=0, le=1)] | None = None

    def requests_inference(self) -> bool:
        return self.threshold is not None


@dataclass
class Seen:
    """What the stage was handed: the metadata of each processor it built, the chunks it processed."""

    metadata: list[ThresholdMetadata] = field(default_factory=list)
    chunks: list[tuple[str, float, int]] = field(default_factory=list)  # (stream, threshold, frames)


@dataclass(frozen=True)
class ThresholdProcessor:
    seen: Seen
    asset_id: str
    threshold: float
    key: str
    sampling: FrameSampling = TWO_FRAMES

    async def process(self, frames: Sequence[Frame], audio: bytes | None = None) -> tuple[float, float]:
        self.seen.chunks.append((self.asset_id, self.threshold, len(frames)))
        return self.threshold, 0.0


class ThresholdStage:
    model = ModelInfo(id="threshold-model", owned_by="tests", api_type="threshold")

    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def live_processor(self, asset: Asset, metadata: ThresholdMetadata) -> ThresholdProcessor | None:
        self.seen.metadata.append(metadata)
        assert metadata.threshold is not None  # requests_inference said so
        return ThresholdProcessor(self.seen, asset.id, metadata.threshold, key=f"threshold:{asset.id}")

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def threshold_spec(seen: Seen) -> ServiceSpec:
    core = CoreConfig(
        name="threshold",
        topics=BusTopics("threshold-results", "threshold-errors"),
        build_result=lambda ctx, output: vision_llm_envelope(ctx)[0],
        failure_message="Failed to compare",
        stream_metadata=ThresholdMetadata,
    )
    return ServiceSpec(core=core, title="Threshold", load_stage=lambda _: ThresholdStage(seen), routers=[])


# --- the test ---------------------------------------------------------------------------------------
@pytest.fixture()
def camera(tmp_path: Path) -> Iterator[RtspServer]:
    cam = RtspServer(free_port(), tmp_path).start()
    yield cam
    cam.kill()


def serve(storage: Path, seen: Seen) -> TestClient:
    settings = Settings(ASSET_STORAGE_DIR=str(storage), RTVI_RTSP_OPEN_TIMEOUT_SEC=5)  # type: ignore[call-arg]
    return TestClient(build_app(threshold_spec(seen), settings=settings))


def wait_until(cond: Callable[[], Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def cv_body(camera_id: str, url: str, metadata: dict[str, Any]) -> dict[str, Any]:
    value = {"camera_id": camera_id, "camera_url": url, "change": "camera_add", "metadata": metadata}
    return {"key": "sensor", "value": value}


def vios_body(camera_id: str, url: str, metadata: dict[str, Any]) -> dict[str, Any]:
    event = {"camera_id": camera_id, "camera_url": url, "change": "camera_add", "metadata": metadata}
    return {"alert_type": "camera_status_change", "event": event}


def test_a_services_own_auto_start_field_is_typed_from_request_to_stage(
    tmp_path: Path, camera: RtspServer
) -> None:
    seen = Seen()
    storage = tmp_path / "assets"
    with serve(storage, seen) as c:
        wait_until(lambda: c.get("/v1/ready").status_code == 200)

        # Its field is validated by its model: out of range, the wrong type, and the VLM's fields, which
        # this service does not know, are 422 in the usual {code, message} shape.
        for metadata, where in (
            ({"threshold": 2}, "'value', 'metadata', 'threshold'"),
            ({"threshold": "high"}, "'value', 'metadata', 'threshold'"),
            ({"threshold": 0.5, "prompt": "Describe"}, "'value', 'metadata', 'prompt'"),
        ):
            r = c.post("/v1/stream/add", json=cv_body("bad", camera.url, metadata))
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "InvalidParameters" and where in r.json()["message"], r.text
        r = c.post("/v1/stream/add", json=vios_body("bad", camera.url, {"threshold": -1}))
        assert r.status_code == 422 and "'event', 'metadata', 'threshold'" in r.json()["message"], r.text
        r = c.post("/v1/stream/add", json={"camera_id": "bad", "url": camera.url, "metadata": {"x": 1}})
        assert r.status_code == 422 and "'metadata', 'x'" in r.json()["message"], r.text
        assert c.get("/v1/stream/get-stream-info").json()["stream_count"] == 0
        assert seen.metadata == []

        # A valid one starts its inference at once: the stage gets its model, the field typed.
        r = c.post(
            "/v1/stream/add", json=cv_body("cam-a", camera.url, {"threshold": 0.25, "chunk_duration": 2})
        )
        assert r.json() == {
            "camera_id": "cam-a",
            "asset_id": "cam-a",
            "status": "processing",
            "inference": True,
        }
        # VIOS drops the keys the model does not know (the VLM's prompt here), and chunk_duration
        # defaults to 10.
        r = c.post("/v1/stream/add", json=vios_body("cam-b", camera.url, {"threshold": 1, "prompt": "x"}))
        assert r.json()["inference"] is True, r.text
        # Without its field, nothing asks for inference: registered only.
        r = c.post("/v1/stream/add", json=cv_body("cam-c", camera.url, {"chunk_duration": 2}))
        assert r.json()["inference"] is False, r.text

        assert [type(m) for m in seen.metadata] == [ThresholdMetadata, ThresholdMetadata]
        assert [(m.threshold, m.chunk_duration) for m in seen.metadata] == [(0.25, CHUNK_S), (1.0, 10)]
        listed = {s["camera_id"]: s for s in c.get("/v1/stream/get-stream-info").json()["stream_list"]}
        assert [listed[cam]["inference_active"] for cam in ("cam-a", "cam-b", "cam-c")] == [True, True, False]
        assert listed["cam-a"]["chunk_duration"] == CHUNK_S
        wait_until(lambda: any(stream == "cam-a" for stream, _, _ in seen.chunks))
        assert ("cam-a", 0.25, 2) in seen.chunks

    # After a restart the registry's copy is read back as the same model, and the inference resumes.
    resumed = Seen()
    with serve(storage, resumed) as c:
        wait_until(lambda: c.get("/v1/ready").status_code == 200)
        assert sorted((m.threshold, m.chunk_duration) for m in resumed.metadata) == [(0.25, 2), (1.0, 10)]
        assert all(type(m) is ThresholdMetadata for m in resumed.metadata)
        wait_until(lambda: ("cam-a", 0.25, 2) in resumed.chunks)
        for cam in ("cam-a", "cam-b", "cam-c"):
            assert c.delete(f"/v1/streams/delete/{cam}").status_code == 200
