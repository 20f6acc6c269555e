"""Shared state for replicas (docs/scale-out.md): the registry on a real PostgreSQL, asset blobs on a real
S3 server (moto) and the search index on a real Milvus server, with two `rtvi serve embed` processes
sharing them as replicas would."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.conftest import upload
from tests.e2e.test_search import search
from tests.media_factory import make_clip, make_image
from tests.milvus_server import MilvusServer
from tests.postgres_server import PASSWORD, PostgresServer
from tests.remote_servers import S3_ENV, MotoS3, SlowProxy
from tests.servers import RtviServer

BUCKET = "rtvi-assets"
PREFIX = "site-a/assets"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "dock.mp4", seconds=6, fps=10, width=96, height=64)


def _shared_env(database: str, s3_endpoint: str, **extra: str) -> dict[str, str]:
    return {
        **S3_ENV,
        "RTVI_DATABASE_URL": database,
        "RTVI_ASSET_STORE": f"s3://{BUCKET}/{PREFIX}",
        "S3_ENDPOINT_URL": s3_endpoint,
        "RTVI_SECRET_KEY": Fernet.generate_key().decode(),
        **extra,
    }


def _objects(s3: MotoS3) -> list[str]:
    return [o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def _listed(srv: RtviServer) -> list[dict[str, str]]:
    listed = httpx.get(srv.url + "/v1/files", params={"purpose": "vision"})
    files: list[dict[str, str]] = listed.json()["data"]
    return files


def _embed(srv: RtviServer, file_id: str) -> httpx.Response:
    model = httpx.get(srv.url + "/v1/models").json()["data"][0]["id"]
    body = {"id": file_id, "model": model, "chunk_duration": 2}
    return httpx.post(srv.url + "/v1/generate_video_embeddings", json=body, timeout=120)


def test_two_replicas_share_one_registry_one_bucket_and_one_index(
    tmp_path: Path, postgres: PostgresServer, s3: MotoS3, milvus: MilvusServer, clip: Path
) -> None:
    env = _shared_env(postgres.create_database("replicas"), s3.endpoint, MILVUS_URI=milvus.uri)
    a = RtviServer(tmp_path / "a-assets", env).start(wait_ready=False)
    b = RtviServer(tmp_path / "b-assets", env).start(wait_ready=False)
    try:
        a.wait("/v1/ready", 180), b.wait("/v1/ready", 180)  # the two load their models side by side
        with httpx.Client(base_url=a.url, timeout=60) as client:
            added = upload(client, clip)
        assert added.status_code == 200, added.text
        file_id = added.json()["id"]
        # The blob is in the bucket under its id, not on either replica's disk.
        assert _objects(s3) == [f"{PREFIX}/{file_id}/dock.mp4"]
        assert list((a.storage / "files").iterdir()) == []
        # The uploader kept its verified file as its cached copy: nothing to download back.
        assert (a.storage / "cache" / file_id / "dock.mp4").read_bytes() == clip.read_bytes()

        # The other replica lists it, embeds it (through its own cache) and serves its bytes.
        assert [f["id"] for f in _listed(b)] == [file_id]
        on_a, on_b = _embed(a, file_id), _embed(b, file_id)
        assert on_a.status_code == on_b.status_code == 200, on_b.text
        times_a, times_b = (
            [(c["start_time"], c["end_time"]) for c in r.json()["chunk_responses"]] for r in (on_a, on_b)
        )
        assert times_a == times_b and len(times_b) == 3

        # One index: the chunks both embedded are one entry each (same key), found from either replica,
        # with the thumbnail the other wrote.
        def indexed(srv: RtviServer) -> list[dict[str, str]]:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                return search(c, query="a loading dock", top_k=100, asset_ids=[file_id])

        deadline = time.monotonic() + 30
        while len(indexed(a)) < 3:
            assert time.monotonic() < deadline, "the chunks never reached the index"
            time.sleep(0.2)
        hits_a, hits_b = indexed(a), indexed(b)
        assert len(hits_b) == 3 and hits_a == hits_b
        thumbnail = httpx.get(b.url + hits_b[0]["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\xff\xd8")
        health = httpx.get(a.url + "/v1/ready?detailed=true").json()["checks"]["search_index"]
        assert health["backend"] == "milvus" and health["chunks"] >= 3
        assert httpx.get(f"{b.url}/v1/files/{file_id}/content").content == clip.read_bytes()
        assert (b.storage / "cache" / file_id / "dock.mp4").is_file()

        # Deleting on one replica removes the row and the object for both.
        assert httpx.delete(f"{b.url}/v1/files/{file_id}").status_code == 200
        assert httpx.get(f"{a.url}/v1/files/{file_id}").status_code == 400
        assert _objects(s3) == []
        assert indexed(a) == [] and httpx.get(a.url + hits_b[0]["thumbnail_url"]).status_code == 400
        for srv in (a, b):
            assert PASSWORD not in srv.log_tail(10**7), "the database password reached a log"
    finally:
        a.stop(), b.stop()


def test_kill_during_the_s3_upload_leaves_no_object_and_no_row(
    tmp_path: Path, postgres: PostgresServer, s3: MotoS3
) -> None:
    """The service is killed -9 while its upload to S3 is a third sent (a slow link, made by a proxy).
    Even once every byte it had written has reached S3: no object and no row. The parts S3 holds are
    aborted by the next start past the grace period."""
    big = make_clip(tmp_path / "big.mp4", seconds=4, fps=25, width=640, height=360)
    size = big.stat().st_size
    slow = SlowProxy(s3.port, rate=max(size // 4, 20_000))  # ~4 s for the whole file
    env = _shared_env(postgres.create_database("killed"), slow.endpoint)
    srv = RtviServer(tmp_path / "assets", env).start()
    file_id = str(uuid.uuid4())

    def add_and_be_cut_off() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.Client(base_url=srv.url, timeout=60) as client:
            upload(client, big, id=file_id)

    thread = threading.Thread(target=add_and_be_cut_off, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while slow.forwarded < size // 3:  # a third of the file is in S3's hands
            assert time.monotonic() < deadline, "the upload to S3 never started"
            time.sleep(0.05)
        assert srv.proc is not None
        srv.proc.kill()
        srv.proc.wait(10)
        sent = -1
        while sent != slow.forwarded:  # until what the dead process had written drained through the proxy
            sent = slow.forwarded
            time.sleep(1.0)
        assert _objects(s3) == []
        assert len(s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == 1
        srv.extra_env["RTVI_ASSET_ORPHAN_GRACE_SEC"] = "0"
        srv.start()
        assert s3.client().list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
        assert _listed(srv) == []
        assert httpx.get(f"{srv.url}/v1/files/{file_id}").status_code == 400
    finally:
        srv.stop()
        slow.close()


def test_objects_left_by_a_crash_are_swept_once_past_the_grace(
    tmp_path: Path, postgres: PostgresServer, s3: MotoS3, clip: Path
) -> None:
    """An object whose row never landed (a crash between the two) survives a start within the grace
    period (it may be another replica's upload in flight) and is removed by one after it."""
    orphan = f"{PREFIX}/{uuid.uuid4()}/dock.mp4"
    s3.client().upload_file(str(clip), BUCKET, orphan)
    database = postgres.create_database("swept")
    srv = RtviServer(tmp_path / "a-assets", _shared_env(database, s3.endpoint)).start(wait_ready=False)
    srv.stop()
    assert _objects(s3) == [orphan]
    env = _shared_env(database, s3.endpoint, RTVI_ASSET_ORPHAN_GRACE_SEC="0")
    srv = RtviServer(tmp_path / "b-assets", env).start(wait_ready=False)
    srv.stop()
    assert _objects(s3) == []


def test_a_slow_s3_delete_does_not_stall_the_service(tmp_path: Path, s3: MotoS3) -> None:
    """DELETE /v1/files on an asset in S3 over a slow link: the S3 calls (list, delete) take a second, and
    meanwhile the event loop keeps answering (a /v1/live probe stays fast), so SSE streams do not stall."""
    s3.client().create_bucket(Bucket="rtvi-lag")
    slow = SlowProxy(s3.port, rate=1500)  # a few hundred bytes per S3 request: ~0.5 s each
    env = {**S3_ENV, "RTVI_ASSET_STORE": "s3://rtvi-lag/assets", "S3_ENDPOINT_URL": slow.endpoint}
    srv = RtviServer(tmp_path / "assets", env).start()
    lags: list[float] = []
    deleting = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while deleting.is_set():
                start = time.perf_counter()
                c.get("/v1/live")
                lags.append(time.perf_counter() - start)
                time.sleep(0.02)

    try:
        image = make_image(tmp_path / "tiny.jpg", width=32, height=24)
        with srv.client() as c:
            fid = upload(c, image, media_type="image").json()["id"]
            deleting.set()
            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            time.sleep(0.1)
            start = time.perf_counter()
            r = c.delete(f"/v1/files/{fid}")
            took = time.perf_counter() - start
            deleting.clear()
            prober.join(30)
            assert r.status_code == 200, r.text
            assert c.delete(f"/v1/files/{fid}").status_code == 400  # deleted once, then unknown
        worst = max(lags)
        print(f"delete took {took:.3f} s; /v1/live probe: worst {worst:.3f} s over {len(lags)} probes")
        assert took > 0.5, "the slow link did not slow the delete: the test measures nothing"
        assert worst < took / 4, f"the event loop stalled {worst:.2f} s during a {took:.2f} s delete"
        assert s3.client().list_objects_v2(Bucket="rtvi-lag").get("KeyCount", 0) == 0
    finally:
        deleting.clear()
        srv.stop()
        slow.close()
