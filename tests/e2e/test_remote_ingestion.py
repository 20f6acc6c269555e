"""Remote ingestion over real servers (spec §2.3): http(s) with the SSRF rules, S3 (moto), data: and
file:// inputs for generate requests and /v1/files; a generate request's url input kept as an asset the
client deletes; the size limit while streaming; a download killed mid-way leaves nothing behind."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.media_factory import make_clip, make_image
from tests.metrics_scrape import Scrape
from tests.remote_servers import S3_ENV, FileServer, MotoS3, lan_address
from tests.servers import RtviServer

LAN = lan_address()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("served")
    make_clip(d / "clip.mp4", seconds=6, fps=10, width=96, height=64)
    make_image(d / "still.png", fmt="PNG")
    (d / "big.bin").write_bytes(b"\1" * (2 * 2**20))
    return d


@pytest.fixture(scope="module")
def loopback_http(served: Path) -> Iterator[FileServer]:
    srv = FileServer(served, "127.0.0.1").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def lan_http(served: Path) -> Iterator[FileServer]:
    if LAN is None:
        pytest.skip("this machine has no non-loopback address")
    srv = FileServer(served, LAN).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def lan_https(served: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    if LAN is None:
        pytest.skip("this machine has no non-loopback address")
    srv = FileServer(served, LAN, tls_dir=tmp_path_factory.mktemp("tls")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, served: Path) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    client = server.client()
    client.create_bucket(Bucket="cams")
    client.upload_file(str(served / "clip.mp4"), "cams", "dock/clip.mp4")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rtvi(tmp_path_factory: pytest.TempPathFactory, served: Path, s3: MotoS3) -> Iterator[RtviServer]:
    srv = RtviServer(
        tmp_path_factory.mktemp("remote") / "assets",
        env={
            **S3_ENV,
            "S3_ENDPOINT_URL": s3.endpoint,
            "FILE_URL_ALLOWED_DIRS": str(served),
            "ASSET_DOWNLOAD_ALLOWED_PRIVATE_HOSTS": LAN or "",
            "ASSET_DOWNLOAD_MAX_REDIRECTS": "2",
            # The https test server's certificate is self-signed.
            "ASSET_DOWNLOAD_SSL_SKIP_VERIFY_DOMAINS": LAN or "",
            "ASSET_DOWNLOAD_AUTH_TOKENS": f"{LAN}=Bearer from-settings",
            "ASSET_DOWNLOAD_MAX_FILE_SIZE_GB": str(1 / 1024),  # 1 MiB: big.bin (2 MiB) is over it
        },
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def model(rtvi: RtviServer) -> str:
    return str(httpx.get(rtvi.url + "/v1/models").json()["data"][0]["id"])


def _generate(rtvi: RtviServer, model: str, url: str, **kw: object) -> httpx.Response:
    body = {"id": kw.pop("id", str(uuid.uuid4())), "model": model, "url": url, "chunk_duration": 2, **kw}
    return httpx.post(rtvi.url + "/v1/generate_video_embeddings", json=body, timeout=120)


def _delete_input(rtvi: RtviServer, r: httpx.Response) -> None:
    """What a client does after a url request: delete the asset its input became (the request's id)."""
    asset_id = json.loads(r.request.content)["id"]
    deleted = httpx.delete(f"{rtvi.url}/v1/files/{asset_id}")
    assert deleted.json() == {"id": asset_id, "object": "file", "deleted": True}, deleted.text


def _no_assets_left(rtvi: RtviServer) -> None:
    listed = httpx.get(rtvi.url + "/v1/files", params={"purpose": "vision"}).json()["data"]
    assert listed == [] and list((rtvi.storage / "files").iterdir()) == []
    assert list((rtvi.storage / "tmp").iterdir()) == []


def test_http_from_an_allowed_private_host(rtvi: RtviServer, model: str, lan_http: FileServer) -> None:
    r = _generate(rtvi, model, lan_http.url("clip.mp4"))
    assert r.status_code == 200, r.text
    assert [c["start_time"] for c in r.json()["chunk_responses"]] == ["0.0", "2.0", "4.0"]
    _delete_input(rtvi, r)
    _no_assets_left(rtvi)
    added = httpx.post(
        rtvi.url + "/v1/files",
        data={"purpose": "vision", "media_type": "video", "url": lan_http.url("clip.mp4")},
    )
    assert added.status_code == 200, added.text
    fid = added.json()["id"]
    content = httpx.get(f"{rtvi.url}/v1/files/{fid}/content").content
    assert (
        content == (Path(lan_http.root) / "clip.mp4").read_bytes() and added.json()["filename"] == "clip.mp4"
    )
    httpx.delete(f"{rtvi.url}/v1/files/{fid}")


def test_https_carries_auth_headers_to_the_original_host_only(
    rtvi: RtviServer, model: str, lan_https: FileServer, lan_http: FileServer
) -> None:
    r = _generate(rtvi, model, lan_https.url("clip.mp4"))
    assert r.status_code == 200 and len(r.json()["chunk_responses"]) == 3, r.text
    assert lan_https.headers[-1]["authorization"] == "Bearer from-settings"  # ASSET_DOWNLOAD_AUTH_TOKENS
    given = _generate(rtvi, model, lan_https.url("clip.mp4"), url_headers={"Authorization": "Bearer given"})
    assert given.status_code == 200, given.text
    assert lan_https.headers[-1]["authorization"] == "Bearer given"  # url_headers win
    _delete_input(rtvi, r)
    _delete_input(rtvi, given)
    # Redirected to another origin (plain http): the credentials stay behind.
    hop = _generate(
        rtvi, model, lan_https.url("redirect?to=" + lan_http.url("clip.mp4")), url_headers={"x-api-key": "k"}
    )
    assert hop.status_code == 200, hop.text
    assert "x-api-key" not in lan_http.headers[-1] and "authorization" not in lan_http.headers[-1]
    _delete_input(rtvi, hop)
    _no_assets_left(rtvi)


def test_ssrf_targets_are_refused_without_a_request(
    rtvi: RtviServer, model: str, loopback_http: FileServer, lan_http: FileServer
) -> None:
    before = len(loopback_http.requests)
    for url in (
        loopback_http.url("clip.mp4"),
        lan_http.url("redirect?to=" + loopback_http.url("clip.mp4")),  # allowed host, then loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://localhost.example/clip.mp4",
        "http://[::1]/clip.mp4",
    ):
        r = _generate(rtvi, model, url)
        assert r.status_code == 422 and r.json()["code"] == "InvalidParameters", (url, r.text)
        assert "not allowed" in r.json()["message"]
    assert len(loopback_http.requests) == before, "the loopback server was never contacted"
    bad_scheme = _generate(rtvi, model, "ftp://example.com/clip.mp4")
    assert bad_scheme.status_code == 422
    _no_assets_left(rtvi)


def test_size_limit_while_streaming(rtvi: RtviServer, model: str, lan_http: FileServer) -> None:
    r = _generate(rtvi, model, lan_http.url("big.bin"))
    assert r.status_code == 413 and r.json()["code"] == "FileTooLarge", r.text
    _no_assets_left(rtvi)


def _downloads(rtvi: RtviServer) -> Scrape:
    return Scrape(rtvi.url, "/metrics")


def test_s3_inputs(rtvi: RtviServer, model: str, served: Path) -> None:
    before = _downloads(rtvi)
    ok = _generate(rtvi, model, "s3://cams/dock/clip.mp4")
    assert ok.status_code == 200 and len(ok.json()["chunk_responses"]) == 3, ok.text
    _delete_input(rtvi, ok)
    for url in ("s3://cams/dock/missing.mp4", "s3://no-such-bucket/clip.mp4", "s3://cams"):
        r = _generate(rtvi, model, url)
        assert r.status_code == 400 and r.json()["code"] == "InvalidParameters", (url, r.text)
    _no_assets_left(rtvi)
    after = _downloads(rtvi)

    def delta(name: str, status: str) -> float:
        return after.get(name, source="s3", status=status) - before.get(name, source="s3", status=status)

    assert delta("asset_download_requests_total", "ok") == 1
    assert delta("asset_download_requests_total", "error") == 3
    assert delta("asset_download_bytes_total", "ok") == (served / "clip.mp4").stat().st_size
    assert delta("asset_download_duration_seconds_count", "ok") == 1
    assert delta("asset_download_duration_seconds_sum", "ok") > 0


def test_data_and_file_urls(rtvi: RtviServer, model: str, served: Path, tmp_path: Path) -> None:
    data = "data:video/mp4;base64," + base64.b64encode((served / "clip.mp4").read_bytes()).decode()
    r = _generate(rtvi, model, data)
    assert r.status_code == 200 and len(r.json()["chunk_responses"]) == 3, r.text
    _delete_input(rtvi, r)
    png = "data:image/png;base64," + base64.b64encode((served / "still.png").read_bytes()).decode()
    image = _generate(rtvi, model, png, media_type="image")
    assert image.status_code == 200, image.text
    assert [(c["start_time"], c["end_time"]) for c in image.json()["chunk_responses"]] == [("0.0", "0.0")]
    _delete_input(rtvi, image)
    local = _generate(rtvi, model, f"file://{served / 'clip.mp4'}")
    assert local.status_code == 200 and len(local.json()["chunk_responses"]) == 3, local.text
    _delete_input(rtvi, local)
    assert (served / "clip.mp4").is_file(), "a file:// input is never deleted, only its registration"
    outside = tmp_path / "outside.mp4"
    shutil.copy(served / "clip.mp4", outside)
    refused = _generate(rtvi, model, f"file://{outside}")
    assert refused.status_code == 403 and refused.json()["code"] == "Forbidden"
    _no_assets_left(rtvi)


def test_a_streamed_url_request_frees_its_asset_when_the_reader_leaves(
    rtvi: RtviServer, model: str, served: Path
) -> None:
    """The reader leaves mid-stream: the work stops and the asset is no longer in use, so the client's
    DELETE succeeds (not 409 ResourceInUse); a second DELETE is 400 "No such file"."""
    body = {
        "id": str(uuid.uuid4()),
        "model": model,
        "url": f"file://{served / 'clip.mp4'}",
        "chunk_duration": 1,
        "stream": True,
    }
    with httpx.stream("POST", rtvi.url + "/v1/generate_video_embeddings", json=body, timeout=60) as r:
        assert r.status_code == 200
        first = next(line for line in r.iter_lines() if line.startswith("data:"))
        assert "chunk_responses" in first
    assert [
        f["id"] for f in httpx.get(rtvi.url + "/v1/files", params={"purpose": "vision"}).json()["data"]
    ] == [body["id"]]
    deadline = time.monotonic() + 10
    while (deleted := httpx.delete(f"{rtvi.url}/v1/files/{body['id']}")).status_code == 409:
        assert time.monotonic() < deadline, "the request kept its asset in use after its reader left"
        time.sleep(0.2)
    assert deleted.status_code == 200, deleted.text
    again = httpx.delete(f"{rtvi.url}/v1/files/{body['id']}")
    assert again.status_code == 400 and again.json()["message"] == f"No such file {body['id']}"
    _no_assets_left(rtvi)


def test_id_rules_with_a_url(rtvi: RtviServer, model: str, served: Path) -> None:
    url = f"file://{served / 'clip.mp4'}"
    two = _generate(rtvi, model, url, id=[str(uuid.uuid4()), str(uuid.uuid4())])
    assert two.status_code == 400 and two.json()["code"] == "BadParameters"
    kept = httpx.post(rtvi.url + "/v1/files", data={"purpose": "vision", "media_type": "video", "url": url})
    fid = kept.json()["id"]
    taken = _generate(rtvi, model, url, id=fid)
    assert taken.status_code == 400 and taken.json()["code"] == "AssetAlreadyExists"
    assert httpx.get(f"{rtvi.url}/v1/files/{fid}").status_code == 200, "the existing asset is untouched"
    httpx.delete(f"{rtvi.url}/v1/files/{fid}")


def test_cv_file_sensors(rtvi: RtviServer, served: Path, lan_http: FileServer) -> None:
    vios = {
        "alert_type": "camera_status_change",
        "created_at": "2024-06-09T18:32:11Z",
        "source": "vios",
        "event": {"camera_id": "dock-file-1", "camera_url": str(served / "clip.mp4"), "change": "camera_add"},
    }
    r = httpx.post(rtvi.url + "/v1/stream/add", json=vios)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "camera_id": "dock-file-1",
        "asset_id": "dock-file-1",
        "status": "added",
        "inference": False,
    }
    info = httpx.get(rtvi.url + "/v1/files/dock-file-1")  # not a UUID: the file route refuses the id form
    assert info.status_code == 422
    listed = {
        f["id"]: f for f in httpx.get(rtvi.url + "/v1/files", params={"purpose": "vision"}).json()["data"]
    }
    assert listed["dock-file-1"]["creation_time"] == "2024-06-09T18:32:11.000Z"
    again = httpx.post(rtvi.url + "/v1/stream/add", json=vios)
    assert again.status_code == 409 and again.json()["code"] == "DuplicateCameraId"
    # Over http: downloaded, and the url_headers (credentials) are not sent over plain http.
    cv = {
        "key": "sensor",
        "value": {"camera_id": "dock-file-2", "camera_url": lan_http.url("clip.mp4"), "change": "add"},
        "headers": {"source": "cv", "url_headers": {"authorization": "Bearer t0ken"}},
    }
    r = httpx.post(rtvi.url + "/v1/stream/add", json=cv)
    assert r.status_code == 200 and r.json()["asset_id"] == "dock-file-2", r.text
    assert "authorization" not in lan_http.headers[-1]
    for camera_id, shape in (("dock-file-1", "vios"), ("dock-file-2", "cv")):
        body: dict[str, object]
        if shape == "vios":
            body = {**vios, "event": {"camera_id": camera_id, "change": "camera_remove"}}
        else:
            body = {"key": "sensor", "value": {"camera_id": camera_id, "change": "remove"}}
        gone = httpx.post(rtvi.url + "/v1/stream/remove", json=body)
        assert gone.status_code == 200 and gone.json()["asset_id"] == camera_id, gone.text
    assert (served / "clip.mp4").is_file()
    _no_assets_left(rtvi)


def test_a_download_killed_midway_leaves_nothing(tmp_path: Path, lan_http: FileServer, served: Path) -> None:
    srv = RtviServer(
        tmp_path / "assets", env={"ASSET_DOWNLOAD_ALLOWED_PRIVATE_HOSTS": LAN or "", "LOG_LEVEL": "INFO"}
    ).start()
    fid = str(uuid.uuid4())
    body = {"purpose": "vision", "media_type": "video", "url": lan_http.url("slow/x.mp4"), "id": fid}

    def add_and_be_cut_off() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server is killed under this request
            httpx.post(srv.url + "/v1/files", data=body, timeout=30)

    thread = threading.Thread(target=add_and_be_cut_off, daemon=True)
    try:
        thread.start()
        parts = srv.storage / "tmp"
        for _ in range(100):  # wait until bytes are on disk
            if any(p.stat().st_size > 0 for p in parts.rglob("*") if p.is_file()):
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the download never started")
        assert srv.proc is not None
        srv.proc.kill()
        srv.proc.wait(10)
        srv.start()
        assert list(parts.iterdir()) == [] and list((srv.storage / "files").iterdir()) == []
        with sqlite3.connect(srv.storage / "registry.sqlite3") as conn:
            assert conn.execute("SELECT count(*) FROM assets").fetchone() == (0,)
        assert httpx.get(f"{srv.url}/v1/files/{fid}").status_code == 400
    finally:
        srv.stop()
