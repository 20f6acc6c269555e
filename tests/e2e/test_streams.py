"""Live RTSP streams end to end: a real gst-rtsp-server camera and a real `rtvi serve embed`.

The camera is small (320x180) and chunks are 2 s, so the whole file runs in about a minute.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import upload
from tests.metrics_scrape import Scrape
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import RtviServer, free_port
from tests.sse_client import END, SseReader

pytestmark = pytest.mark.skipif(not gst_available(), reason="gst-rtsp-server missing: run `make rtsp-deps`")

CHUNK_S = 2
WINDOW_S = 5
LIVE_ENV = {
    "RTVI_RTSP_RECONNECTION_INTERVAL": "1",
    "RTVI_RTSP_RECONNECTION_WINDOW": str(WINDOW_S),
    "RTVI_RTSP_OPEN_TIMEOUT_SEC": "5",
}


def ts(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC).timestamp()


def chunk_times(event: dict[str, Any]) -> tuple[float, float]:
    c = event["chunk_responses"][0]
    return ts(c["start_time"].replace("Z", "+0000")), ts(c["end_time"].replace("Z", "+0000"))


def metric(client: httpx.Client, name: str) -> float:
    """A metric's value, summed over its labels."""
    return Scrape(str(client.base_url).rstrip("/")).total(name)


def live_check(client: httpx.Client) -> dict[str, Any]:
    return dict(client.get("/v1/ready", params={"detailed": "true"}).json()["checks"]["live"])


def wait_until(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(tmp_path_factory.mktemp("live") / "assets", env=LIVE_ENV)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def lc(live_server: RtviServer) -> Iterator[httpx.Client]:
    with live_server.client() as c:
        yield c
        # Every test leaves no streams behind.
        for s in c.get("/v1/streams/get-stream-info").json():
            c.delete(f"/v1/streams/delete/{s['id']}")


@pytest.fixture(scope="module")
def live_model(live_server: RtviServer) -> str:
    return str(httpx.get(live_server.url + "/v1/models").json()["data"][0]["id"])


@pytest.fixture()
def camera(tmp_path: Path) -> Iterator[RtspServer]:
    cam = RtspServer(free_port(), tmp_path).start()
    yield cam
    cam.kill()


def add(client: httpx.Client, url: str, **fields: Any) -> str:
    r = client.post(
        "/v1/streams/add", json={"streams": [{"liveStreamUrl": url, "description": "cam", **fields}]}
    )
    assert r.status_code == 200 and not r.json()["errors"], r.text
    return str(r.json()["results"][0]["id"])


def generate(server: RtviServer, sid: str, model: str, **kw: Any) -> SseReader:
    body = {"id": sid, "model": model, "stream": True, "chunk_duration": CHUNK_S, **kw}
    return SseReader(server.url, body)


def test_live_embeddings_survive_a_camera_restart(
    live_server: RtviServer, lc: httpx.Client, live_model: str, camera: RtspServer
) -> None:
    sid = add(lc, camera.url)
    reader = generate(live_server, sid, live_model)
    first = reader.chunks(3)
    starts = [chunk_times(e)[0] for e in first]
    assert starts == sorted(starts) and len(set(starts)) == 3
    for e in first:
        start, end = chunk_times(e)
        assert end - start == pytest.approx(CHUNK_S, abs=0.01)
        assert abs(time.time() - end) < 5  # wall-clock times, near now
        assert e["id"] == first[0]["id"] and e["chunk_responses"][0]["frame_count"] == 8
        assert e["media_info"]["type"] == "timestamp"
    assert lc.get("/v1/streams/get-stream-info").json()[0]["chunk_duration"] == CHUNK_S
    m = Scrape(live_server.url)
    live_chunks = m.value("live_stream_chunk_latency_seconds_count")
    assert live_chunks >= 3
    assert m.value("live_stream_captions_latency_seconds_count") >= 3
    assert 0 <= m.value("live_stream_avg_chunk_latency_seconds") < 5
    assert 0 <= m.value("live_stream_captions_latency_seconds_latest") < 5
    if live_chunks <= 100:  # the average is over the last 100 chunks: here, all of them
        mean = m.value("live_stream_chunk_latency_seconds_sum") / live_chunks
        assert m.value("live_stream_avg_chunk_latency_seconds") == pytest.approx(mean, abs=1e-6)
    assert m.value("active_live_streams") >= 1
    # The camera sends 30 frames/s; the reader measures it over 5 s windows of stream time.
    fps_windows = m.value("stream_fps_count")
    assert fps_windows >= 1
    assert m.value("stream_fps_sum") / fps_windows == pytest.approx(30, rel=0.15)

    camera.kill()
    time.sleep(1.5)
    camera.start()
    resumed = reader.chunks(2, timeout=20)
    assert chunk_times(resumed[0])[0] > chunk_times(first[-1])[1]
    assert abs(time.time() - chunk_times(resumed[-1])[1]) < 5
    assert metric(lc, "rtvi_decode_retry_total") >= 1

    assert lc.delete(f"/v1/generate_video_embeddings/{sid}").status_code == 200
    while (e := reader.next()) is not END:  # results already in flight, then [DONE]
        assert e.get("chunk_responses")
    assert lc.get("/v1/streams/get-stream-info").json()[0]["chunk_duration"] == 0
    deletes = metric(lc, "rtvi_stream_delete_latency_seconds_count")
    r = lc.delete(f"/v1/streams/delete/{sid}")
    assert r.status_code == 200 and r.content == b""
    assert lc.get("/v1/streams/get-stream-info").json() == []
    assert metric(lc, "rtvi_stream_delete_latency_seconds_count") == deletes + 1
    assert metric(lc, "rtvi_stream_delete_drain_latency_seconds_count") == deletes + 1


def test_exhausted_reconnection_window_ends_the_request_with_an_error(
    live_server: RtviServer, lc: httpx.Client, live_model: str, camera: RtspServer
) -> None:
    sid = add(lc, camera.url)
    reader = generate(live_server, sid, live_model)
    request_id = reader.chunks(1)[0]["id"]
    camera.kill()
    while True:
        event = reader.next(timeout=WINDOW_S + 15)
        if not event.get("chunk_responses"):
            break
    assert event == {"id": request_id, "model": live_model, "created": event["created"], "usage": None}
    assert reader.next() is END
    wait_until(lambda: live_check(lc)["active_jobs"] == 0 and live_check(lc)["decoders"] == 0)
    assert [s["id"] for s in lc.get("/v1/streams/get-stream-info").json()] == [sid]
    assert "gave up" in live_server.log_tail(20000)
    assert lc.delete(f"/v1/streams/delete/{sid}").status_code == 200


def test_add_validation_duplicates_and_credentials(
    live_server: RtviServer, lc: httpx.Client, camera: RtspServer
) -> None:
    host_url = camera.url
    with_creds = host_url.replace("rtsp://", "rtsp://admin:secret@")
    items = [
        {"liveStreamUrl": host_url, "description": "Dock camera", "id": "dock-cam.1", "place_lat": 45.5},
        {"liveStreamUrl": host_url, "description": "again", "id": "dock-cam.1"},
        {"liveStreamUrl": with_creds, "description": "c", "username": "u", "password": "p"},
        {"liveStreamUrl": host_url, "description": "half", "username": "only"},
        {"liveStreamUrl": f"rtsp://127.0.0.1:{free_port()}/none", "description": "nobody home"},
        {"liveStreamUrl": with_creds, "description": "creds"},
    ]
    r = lc.post("/v1/streams/add", json={"streams": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2 and body["results"][0] == {"id": "dock-cam.1"}, (
        f"{body}\nserver log:\n{live_server.log_tail(4000)}\ncamera log:\n{camera.log_tail()}"
    )
    errors = {e["index"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2, 3, 4]
    assert (errors[1]["error_code"], errors[1]["status_code"]) == ("DuplicateStreamId", 409)
    assert (errors[2]["error_code"], errors[2]["status_code"]) == ("InvalidParameters", 422)
    assert errors[2]["url"] == host_url  # credentials never echoed
    assert (errors[3]["error_code"], errors[3]["status_code"]) == ("InvalidParameters", 422)
    assert (errors[4]["error_code"], errors[4]["status_code"]) == ("InvalidFile", 400)
    assert "Could not connect to the RTSP URL" in errors[4]["error"]

    listed = {s["id"]: s for s in lc.get("/v1/streams/get-stream-info").json()}
    assert listed["dock-cam.1"]["place_lat"] == 45.5 and listed["dock-cam.1"]["description"] == "Dock camera"
    creds_id = body["results"][1]["id"]
    assert listed[creds_id]["liveStreamUrl"] == host_url  # moved out of the URL

    again = lc.post(
        "/v1/streams/add",
        json={"streams": [{"liveStreamUrl": host_url, "description": "x", "id": "dock-cam.1"}]},
    )
    assert again.json()["errors"][0]["error_code"] == "DuplicateStreamId"
    for bad in (
        {"streams": []},
        {"streams": [{"liveStreamUrl": "http://example.com/x", "description": "d"}]},
        {"streams": [{"liveStreamUrl": host_url, "description": "d", "extra": 1}]},
        {"streams": [{"liveStreamUrl": host_url, "description": "d"}] * 257},
    ):
        r = lc.post("/v1/streams/add", json=bad)
        assert (r.status_code, r.json()["code"]) == (422, "InvalidParameters"), r.text


def test_route_errors(lc: httpx.Client, live_model: str, camera: RtspServer, media: dict[str, Path]) -> None:
    sid = add(lc, camera.url, id="err-cam")
    r = lc.post("/v1/generate_video_embeddings", json={"id": sid, "model": live_model, "chunk_duration": 2})
    assert (r.status_code, r.json()["code"]) == (400, "BadParameters")
    r = lc.post("/v1/generate_video_embeddings", json={"id": sid, "model": live_model, "stream": True})
    assert (r.status_code, r.json()["code"]) == (400, "BadParameters")  # chunk_duration 0
    r = lc.post(
        "/v1/generate_video_embeddings", json={"id": "no-such-cam", "model": live_model, "stream": True}
    )
    assert (r.status_code, r.json()["code"]) == (422, "InvalidParameters")
    assert (lc.delete("/v1/streams/delete/no-such-cam").json()["code"]) == "BadParameter"
    fid = upload(lc, media["cat_jpg"], media_type="image").json()["id"]
    for path in (f"/v1/streams/delete/{fid}", f"/v1/generate_video_embeddings/{fid}"):
        r = lc.delete(path)
        assert (r.status_code, r.json()["code"]) == (400, "InvalidParameter"), path
    assert lc.delete(f"/v1/files/{fid}").status_code == 200


def test_batch_delete_reports_unknown_ids_in_input_order(lc: httpx.Client, camera: RtspServer) -> None:
    a, b = add(lc, camera.url, id="batch-a"), add(lc, camera.url, id="batch-b")
    r = lc.request(
        "DELETE", "/v1/streams/delete-batch", json={"stream_ids": [b, "nope", a], "drain_timeout_seconds": 5}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deleted"] == [b, a]
    assert body["errors"] == [
        {
            "stream_id": "nope",
            "error": "No such resource nope",
            "error_code": "BadParameter",
            "status_code": 400,
        }
    ]
    assert lc.get("/v1/streams/get-stream-info").json() == []
    r = lc.request("DELETE", "/v1/streams/delete-batch", json={"stream_ids": []})
    assert r.status_code == 422


def test_two_subscribers_share_one_job_and_one_decoder(
    live_server: RtviServer, lc: httpx.Client, live_model: str, camera: RtspServer
) -> None:
    sid = add(lc, camera.url)
    one = generate(live_server, sid, live_model)
    a = one.chunks(1)[0]
    two = generate(live_server, sid, live_model, chunk_duration=7)  # re-attaches: the running job's settings
    b = two.chunks(2)
    assert {e["id"] for e in b} == {a["id"]}  # the same request
    assert metric(lc, "live_decoders_open") == 1 and metric(lc, "active_live_streams") == 1
    assert live_check(lc) == {"healthy": True, "streams": 1, "active_jobs": 1, "decoders": 1}
    one.stop()  # one client leaves: the other still gets results
    assert two.chunks(1)[0]["id"] == a["id"]
    two.stop()  # the last one leaves: nobody else wants the results, so the job stops
    wait_until(lambda: live_check(lc)["active_jobs"] == 0 and metric(lc, "live_decoders_open") == 0)


def cv_body(camera_id: str, url: str, change: str = "camera_add", **extra: Any) -> dict[str, Any]:
    return {"key": "sensor", "value": {"camera_id": camera_id, "camera_url": url, "change": change, **extra}}


def vios_body(camera_id: str, url: str, change: str = "camera_add", **event: Any) -> dict[str, Any]:
    return {
        "alert_type": "camera_status_change",
        "created_at": "2025-01-01T00:00:00.000Z",
        "source": "vios",
        "unknown_top_level": True,
        "event": {"camera_id": camera_id, "camera_url": url, "change": change, "whatever": 1, **event},
    }


def test_cv_add_list_remove_and_auto_start(
    live_server: RtviServer, lc: httpx.Client, live_model: str, camera: RtspServer
) -> None:
    r = lc.post("/v1/stream/add", json=cv_body("cam-1", camera.url, camera_name="Gate"))
    assert r.json() == {"camera_id": "cam-1", "asset_id": "cam-1", "status": "added", "inference": False}
    assert lc.post("/v1/stream/add", json=cv_body("cam-1", camera.url)).json()["code"] == "DuplicateCameraId"
    md = {"model": live_model, "chunk_duration": CHUNK_S, "prompt_unknown_to_us": "x"}
    r = lc.post("/v1/stream/add", json=vios_body("cam-2", camera.url, metadata=md))
    assert r.json() == {"camera_id": "cam-2", "asset_id": "cam-2", "status": "processing", "inference": True}
    other = {"model": "some-other-model"}
    r = lc.post("/v1/stream/add", json=vios_body("cam-3", camera.url, metadata=other))
    assert r.json()["inference"] is False

    info = lc.get("/v1/stream/get-stream-info").json()
    assert info["status"] == "ok" and info["stream_count"] == 3
    by_id = {s["camera_id"]: s for s in info["stream_list"]}
    assert by_id["cam-1"]["camera_name"] == "Gate" and by_id["cam-1"]["inference_active"] is False
    assert by_id["cam-2"]["inference_active"] is True and by_id["cam-2"]["chunk_duration"] == CHUNK_S
    assert by_id["cam-2"]["camera_url"] == camera.url

    # Auto-started results go elsewhere: a reader that attaches and leaves does not stop the job.
    reader = generate(live_server, "cam-2", live_model)
    reader.chunks(1)
    reader.stop()
    time.sleep(1)
    assert live_check(lc)["active_jobs"] == 1

    assert lc.post("/v1/stream/add", json={**vios_body("x", camera.url), "alert_type": "nope"}).json()[
        "code"
    ] == ("BadRequest")
    assert lc.post("/v1/stream/add", json=cv_body("x", camera.url, change="bogus")).status_code == 400
    r = lc.post("/v1/stream/add", json=vios_body("cam-9", ""))
    assert r.json() == {"camera_id": "cam-9", "asset_id": "", "status": "added", "inference": False}
    assert lc.post("/v1/stream/add", json=cv_body("cam-9", "")).json()["code"] == "BadRequest"
    assert lc.post("/v1/stream/add", json={**cv_body("x", camera.url), "extra": 1}).status_code == 422

    r = lc.post("/v1/stream/remove", json=cv_body("nope", "", change="camera_remove"))
    assert (r.status_code, r.json()["code"]) == (404, "NotFound")
    r = lc.post("/v1/stream/remove", json=vios_body("nope", "", change="camera_remove"))
    assert r.json() == {"camera_id": "nope", "asset_id": "", "status": "removed"}
    for cam in ("cam-1", "cam-2", "cam-3"):
        r = lc.post("/v1/stream/remove", json=cv_body(cam, "", change="remove"))
        assert r.json() == {"camera_id": cam, "asset_id": cam, "status": "removed"}
    assert lc.get("/v1/stream/get-stream-info").json() == {
        "status": "ok",
        "stream_count": 0,
        "stream_list": [],
    }
    assert live_check(lc)["active_jobs"] == 0


def test_registrations_and_auto_started_inference_survive_a_restart(
    tmp_path: Path, camera: RtspServer
) -> None:
    srv = RtviServer(tmp_path / "assets", env=LIVE_ENV).start()
    try:
        with srv.client() as c:
            model = c.get("/v1/models").json()["data"][0]["id"]
            plain = add(c, camera.url, id="plain-cam", place_name="Dock")
            md = {"model": model, "chunk_duration": CHUNK_S}
            assert c.post("/v1/stream/add", json=cv_body("auto-cam", camera.url, metadata=md)).json()[
                "inference"
            ]
        srv.stop()
        srv.start()
        with srv.client() as c:
            listed = {s["id"]: s for s in c.get("/v1/streams/get-stream-info").json()}
            assert set(listed) == {plain, "auto-cam"} and listed[plain]["place_name"] == "Dock"
            assert listed["auto-cam"]["chunk_duration"] == CHUNK_S and listed[plain]["chunk_duration"] == 0
            reader = generate(srv, "auto-cam", model)
            assert abs(time.time() - chunk_times(reader.chunks(1)[0])[1]) < 5
            reader.stop()
            # Stopping it explicitly means it does not come back after the next restart.
            assert c.delete("/v1/generate_video_embeddings/auto-cam").status_code == 200
        srv.stop()
        srv.start()
        with srv.client() as c:
            assert all(s["chunk_duration"] == 0 for s in c.get("/v1/streams/get-stream-info").json())
    finally:
        srv.stop()
