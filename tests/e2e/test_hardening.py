"""Regression tests for what a security probe found (issue 8), over real HTTP: containers that reference
other files, impossible dates, malformed camera URLs, a registered path swapped for a symlink, error
codes, request and text limits, work that outlives its client, credentials, auth and camera hosts."""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import upload
from tests.media_factory import make_clip
from tests.scripted_vlm import ScriptedVlmServer
from tests.servers import RtviServer, free_port

CODE = re.compile(r"^[A-Za-z]+$")


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video outside every allowed directory: what an attacker would like the service to read."""
    d = tmp_path_factory.mktemp("outside")
    return make_clip(d / "secret.ts", seconds=2, fps=10, width=64, height=48, container="mpegts")


def _playlists(outside: Path) -> dict[str, bytes]:
    return {
        "evil.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5.0,\n{outside}\n#EXT-X-ENDLIST\n".encode(),
        "evil.mp4": f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5.0,\n{outside}\n#EXT-X-ENDLIST\n".encode(),
        "evil.ffconcat": f"ffconcat version 1.0\nfile '{outside}'\n".encode(),
    }


def test_containers_that_reference_other_files_are_refused(
    client: httpx.Client, server: RtviServer, outside: Path, model_id: str, tmp_path: Path
) -> None:
    for name, body in _playlists(outside).items():
        r = client.post(
            "/v1/files",
            data={"purpose": "vision", "media_type": "video"},
            files={"file": (name, body, "application/octet-stream")},
        )
        assert r.status_code == 400 and r.json()["code"] == "InvalidFile", (name, r.text)
        # Registering a playlist that sits in an allowed directory is refused the same way.
        in_allowed = Path(server.extra_env["FILE_URL_ALLOWED_DIRS"]) / f"reg-{name}"
        in_allowed.write_bytes(body)
        try:
            r = client.post(
                "/v1/files", data={"purpose": "vision", "media_type": "video", "filename": str(in_allowed)}
            )
            assert r.status_code == 400 and r.json()["code"] == "InvalidFile", (name, r.text)
        finally:
            in_allowed.unlink()
    uri = (
        "data:application/vnd.apple.mpegurl;base64,"
        + base64.b64encode(_playlists(outside)["evil.m3u8"]).decode()
    )
    r = client.post("/v1/embeddings", json={"input": [uri], "model": model_id, "request_type": "video"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidFile", r.text
    assert list((server.storage / "tmp").iterdir()) == []


def test_impossible_dates_are_refused_at_the_edge(
    client: httpx.Client, media: dict[str, Path], model_id: str
) -> None:
    for bad in ("2024-13-45T25:61:61.000Z", "2024-02-30T10:00:00.000Z"):
        r = upload(client, media["cat_jpg"], "image", creation_time=bad)
        assert r.status_code == 422 and "not a valid date" in r.json()["message"], r.text
    fid = upload(client, media["cat_jpg"], "image").json()["id"]
    try:
        r = client.post(
            "/v1/generate_video_embeddings",
            json={"id": fid, "model": model_id, "creation_time": "2023-02-29T00:00:00.000Z"},
        )
        assert r.status_code == 422, r.text
    finally:
        client.delete(f"/v1/files/{fid}")


def test_malformed_camera_urls_are_per_item_errors(client: httpx.Client) -> None:
    r = client.post(
        "/v1/streams/add",
        json={"streams": [{"liveStreamUrl": "rtsp://[", "description": "broken"}]},
    )
    assert r.status_code == 200, r.text
    (err,) = r.json()["errors"]
    assert err["status_code"] == 400 and CODE.match(err["error_code"]) and "Invalid RTSP URL" in err["error"]
    cv = client.post(
        "/v1/stream/add",
        json={"key": "k", "value": {"camera_id": "cam-x", "camera_url": "rtsp://[", "change": "camera_add"}},
    )
    assert cv.status_code == 400 and "Invalid RTSP URL" in cv.json()["message"], cv.text


def test_a_registered_path_swapped_for_a_symlink_is_not_served(
    client: httpx.Client, server: RtviServer, media: dict[str, Path], outside: Path, model_id: str
) -> None:
    allowed = Path(server.extra_env["FILE_URL_ALLOWED_DIRS"])
    target = allowed / "swap.mp4"
    shutil.copy(media["clip35"], target)
    try:
        r = client.post(
            "/v1/files", data={"purpose": "vision", "media_type": "video", "filename": str(target)}
        )
        assert r.status_code == 200, r.text
        fid = r.json()["id"]
        assert client.get(f"/v1/files/{fid}/content").content == media["clip35"].read_bytes()
        target.unlink()
        target.symlink_to(outside)
        content = client.get(f"/v1/files/{fid}/content")
        assert content.status_code == 403 and content.json()["code"] == "Forbidden", content.text
        gen = client.post("/v1/generate_video_embeddings", json={"id": fid, "model": model_id})
        assert gen.status_code == 403, gen.text
        client.delete(f"/v1/files/{fid}")
    finally:
        target.unlink(missing_ok=True)


def test_error_codes_are_letters_only(client: httpx.Client) -> None:
    not_found = client.get("/v1/no-such-route")
    assert not_found.status_code == 404 and not_found.json()["code"] == "NotFound"
    method = client.put("/v1/files")
    assert method.status_code == 405 and method.json()["code"] == "MethodNotAllowed"
    many = "&".join(f"f{i}=x" for i in range(1001))
    fields = client.post(
        "/v1/files", content=many, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert fields.status_code == 400 and CODE.match(fields.json()["code"]), fields.text


def test_text_limits_hold_on_every_route(client: httpx.Client, model_id: str) -> None:
    too_many = client.post("/v1/embeddings", json={"input": ["a cat"] * 101, "model": model_id})
    assert too_many.status_code == 400 and "At most 100" in too_many.json()["message"]
    too_long = client.post("/v1/embeddings", json={"input": ["x" * 1001], "model": model_id})
    assert too_long.status_code == 400 and "too long" in too_long.json()["message"]
    ok = client.post("/v1/embeddings", json={"input": ["a cat"] * 100, "model": model_id})
    assert ok.status_code == 200 and len(ok.json()["data"]) == 100


def _leave_and_expect_release(
    srv: RtviServer, path: str, body: dict[str, object], fid: str, headers: dict[str, str] | None = None
) -> None:
    """A JSON (non-streaming) request whose client gives up after 0.5 s: the asset it uses is released
    within moments of the disconnect (DELETE stops answering 409 ResourceInUse), not when the work would
    have ended."""
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.Client(base_url=srv.url, timeout=0.5, headers=headers) as impatient,
    ):
        impatient.post(path, json=body)
    deadline = time.monotonic() + 3
    with httpx.Client(base_url=srv.url, timeout=30, headers=headers) as c:
        while True:
            r = c.delete(f"/v1/files/{fid}")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.json()["code"] == "ResourceInUse"
            time.sleep(0.1)
        assert r.status_code == 200, r.text


def test_a_client_that_leaves_stops_its_work(
    server: RtviServer, media: dict[str, Path], model_id: str
) -> None:
    with server.client() as c:
        fid = upload(c, media["clip35"]).json()["id"]
    body = {"id": fid, "model": model_id, "chunk_duration": 1}  # 35 chunks: seconds of work
    _leave_and_expect_release(server, "/v1/generate_video_embeddings", body, fid)


def test_credentials_never_reach_the_log(client: httpx.Client, server: RtviServer) -> None:
    url = f"rtsp://admin:Pa55-w0rd-x@127.0.0.1:{free_port()}/cam"
    r = client.post("/v1/streams/add", json={"streams": [{"liveStreamUrl": url, "description": "d"}]})
    (err,) = r.json()["errors"]
    assert "Pa55-w0rd-x" not in r.text and err["error_code"] == "InvalidFile"
    time.sleep(0.5)
    assert "Pa55-w0rd-x" not in server.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    """A service with an API key, a 1 MB body cap, a camera allowlist, and no camera probing."""
    srv = RtviServer(
        tmp_path_factory.mktemp("guarded") / "assets",
        env={
            "RTVI_API_KEY": "k3y",
            "RTVI_MAX_REQUEST_BODY_MB": "1",
            "RTVI_RTSP_ALLOWED_HOSTS": "127.0.0.1,cam.example",
            "VSS_SKIP_INPUT_MEDIA_VERIFICATION": "1",
        },
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def guarded_vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    """The VLM service with an API key, before an endpoint that takes 0.5 s per answer."""
    base = tmp_path_factory.mktemp("guarded-vlm")
    endpoint = ScriptedVlmServer(base, delay_s=0.5)
    endpoint.start()
    srv = RtviServer(
        base / "assets", env={"RTVI_API_KEY": "k3y", "VIA_VLM_ENDPOINT": endpoint.url}, service="vlm"
    ).start()
    yield srv
    srv.stop()
    endpoint.stop()


@pytest.mark.parametrize("path", ["/v1/generate_captions", "/v1/chat/completions"])
def test_a_client_that_leaves_stops_its_work_behind_auth(
    guarded_vlm: RtviServer, media: dict[str, Path], path: str
) -> None:
    """The auth check sits in front of every route: a disconnect still reaches the work behind it, for a
    caption request and for a chat on the same kind of file alike."""
    headers = {"Authorization": "Bearer k3y"}
    with httpx.Client(base_url=guarded_vlm.url, timeout=30, headers=headers) as c:
        fid = upload(c, media["clip35"]).json()["id"]
        model = c.get("/v1/models").json()["data"][0]["id"]
    common = {"id": fid, "model": model, "chunk_duration": 1}  # 35 answers of 0.5 s: seconds of work
    if path == "/v1/chat/completions":
        body = {**common, "messages": [{"role": "user", "content": "What happens?"}]}
    else:
        body = {**common, "prompt": "What happens?"}
    _leave_and_expect_release(guarded_vlm, path, body, fid, headers)


def test_bearer_auth_follows_rfc_7235(guarded: RtviServer) -> None:
    missing = httpx.get(guarded.url + "/v1/models")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert (
            httpx.get(guarded.url + "/v1/models", headers={"Authorization": f"{scheme} k3y"}).status_code
            == 200
        )
    assert httpx.get(guarded.url + "/v1/models", headers={"Authorization": "Basic k3y"}).status_code == 401
    doc = httpx.get(guarded.url + "/openapi.json").json()
    assert doc["components"]["securitySchemes"]["Token"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"Token": []}]


def test_request_bodies_are_capped(guarded: RtviServer) -> None:
    headers = {"Authorization": "Bearer k3y"}
    big = {"input": ["x" * 1000] * 1500, "model": "m"}  # about 1.5 MB of JSON
    r = httpx.post(guarded.url + "/v1/embeddings", json=big, headers=headers)
    assert r.status_code == 413 and CODE.match(r.json()["code"]), r.text

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield b'{"input": ["'
        for _ in range(300):
            yield b"x" * 4096
        yield b'"], "model": "m"}'

    r = httpx.post(
        guarded.url + "/v1/embeddings",
        content=chunked(),
        headers={**headers, "content-type": "application/json"},
    )
    assert r.status_code == 413, r.text


def test_camera_hosts_and_stored_credentials(guarded: RtviServer) -> None:
    headers = {"Authorization": "Bearer k3y"}
    streams = [
        {"liveStreamUrl": "rtsp://10.1.2.3/cam", "description": "not allowed"},
        {"liveStreamUrl": "rtsp://op:Secr3t-pw@127.0.0.1:8554/cam", "description": "allowed", "id": "dock-1"},
    ]
    r = httpx.post(guarded.url + "/v1/streams/add", json={"streams": streams}, headers=headers)
    body = r.json()
    assert [x["id"] for x in body["results"]] == ["dock-1"]
    (err,) = body["errors"]
    assert err["index"] == 0 and err["status_code"] == 403 and "RTVI_RTSP_ALLOWED_HOSTS" in err["error"]
    db = guarded.storage / "registry.sqlite3"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(guarded.storage.stat().st_mode) == 0o700
    assert stat.S_IMODE((guarded.storage / "secret.key").stat().st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        (meta,) = conn.execute("SELECT meta FROM assets WHERE id = 'dock-1'").fetchone()
    assert "Secr3t-pw" not in meta and "fernet:" in meta
    info = httpx.get(guarded.url + "/v1/streams/get-stream-info", headers=headers).text
    assert "Secr3t-pw" not in info and "127.0.0.1:8554" in info
    # After a restart the sealed credentials still open (the key file is reused).
    guarded.stop()
    guarded.start()
    assert httpx.get(guarded.url + "/v1/streams/get-stream-info", headers=headers).json()[0]["id"] == "dock-1"
