"""/v1/files over real HTTP: upload, register, list, info, content, delete, and every rejection."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.conftest import CREATION_TIME, upload
from tests.servers import RtviServer


def _store_is_clean(server: RtviServer) -> None:
    files = server.storage / "files"
    registered = {p.name for p in files.iterdir()}
    listed = {
        a["id"] for a in httpx.get(server.url + "/v1/files", params={"purpose": "vision"}).json()["data"]
    }
    # Every directory on disk belongs to a registered upload, and nothing is left in tmp/.
    assert registered <= listed
    assert list((server.storage / "tmp").iterdir()) == []


def test_upload_info_content_list_delete(
    client: httpx.Client, server: RtviServer, media: dict[str, Path]
) -> None:
    r = upload(client, media["clip35"], creation_time=CREATION_TIME, sensor_name="dock-cam")
    assert r.status_code == 200, r.text
    body = r.json()
    fid = body["id"]
    assert uuid.UUID(fid)
    assert body["bytes"] == media["clip35"].stat().st_size
    assert body["filename"] == "clip35.mp4"
    assert body["media_type"] == "video" and body["purpose"] == "vision"
    assert body["creation_time"] == CREATION_TIME and body["sensor_name"] == "dock-cam"

    info = client.get(f"/v1/files/{fid}").json()
    assert info["id"] == fid and info["bytes"] == body["bytes"] and "media_type" not in info
    raw = media["clip35"].read_bytes()
    whole = client.get(f"/v1/files/{fid}/content")
    assert whole.content == raw and whole.headers["accept-ranges"] == "bytes"
    # HTTP Range, so a browser's <video> can seek without downloading the whole file.
    part = client.get(f"/v1/files/{fid}/content", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == raw[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(raw)}"
    listed = client.get("/v1/files", params={"purpose": "vision"}).json()
    assert listed["object"] == "list" and fid in {f["id"] for f in listed["data"]}
    assert client.get("/v1/files", params={"purpose": "other"}).json() == {"data": [], "object": "list"}

    deleted = client.delete(f"/v1/files/{fid}")
    assert deleted.json() == {"id": fid, "object": "file", "deleted": True}
    assert not (server.storage / "files" / fid).exists()
    gone = client.get(f"/v1/files/{fid}")
    assert gone.status_code == 400 and gone.json()["code"] == "BadParameter"


def test_client_chosen_id_and_duplicate(client: httpx.Client, media: dict[str, Path]) -> None:
    fid = str(uuid.uuid4())
    assert upload(client, media["cat_jpg"], "image", id=fid).json()["id"] == fid
    dup = upload(client, media["cat_jpg"], "image", id=fid)
    assert dup.status_code == 409 and dup.json()["code"] == "DuplicateAssetId"
    client.delete(f"/v1/files/{fid}")


def test_register_server_path_multipart_and_urlencoded(client: httpx.Client, media: dict[str, Path]) -> None:
    for send in (
        lambda d: client.post("/v1/files", files={k: (None, v) for k, v in d.items()}),
        lambda d: client.post("/v1/files", data=d),
    ):
        r = send({"purpose": "vision", "media_type": "video", "filename": str(media["clip35"])})
        assert r.status_code == 200, r.text
        fid = r.json()["id"]
        assert r.json()["bytes"] == media["clip35"].stat().st_size
        client.delete(f"/v1/files/{fid}")
        assert media["clip35"].exists(), "deleting a registered path must not delete the user's file"


def test_path_traversal_is_refused(client: httpx.Client, server: RtviServer, media: dict[str, Path]) -> None:
    outside = f"{media['clip35'].parent}/../../../../etc/passwd"
    r = client.post("/v1/files", data={"purpose": "vision", "media_type": "video", "filename": outside})
    assert r.status_code == 403 and r.json()["code"] == "Forbidden"
    # A client-side filename with a path in it is refused too, and nothing is written.
    with open(media["clip35"], "rb") as f:
        r = client.post(
            "/v1/files",
            data={"purpose": "vision", "media_type": "video"},
            files={"file": ("../../escape.mp4", f, "video/mp4")},
        )
    assert r.status_code == 400 and r.json()["code"] == "BadParameters"
    assert not (server.storage.parent / "escape.mp4").exists()
    _store_is_clean(server)


def test_bad_uploads_leave_nothing_behind(
    client: httpx.Client, server: RtviServer, media: dict[str, Path]
) -> None:
    before = client.get("/v1/files", params={"purpose": "vision"}).json()["data"]
    for path, media_type in [
        (media["text"], "video"),
        (media["truncated"], "video"),
        (media["cat_jpg"], "video"),
    ]:
        r = upload(client, path, media_type)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["code"] == "InvalidFile"
    assert upload(client, media["clip35"], "image").json()["code"] == "InvalidFile"
    assert client.get("/v1/files", params={"purpose": "vision"}).json()["data"] == before
    _store_is_clean(server)


def test_form_validation(client: httpx.Client, media: dict[str, Path]) -> None:
    r = client.get("/v1/files")
    assert r.status_code == 422
    assert r.json() == {"code": "InvalidParameters", "message": "('query', 'purpose'): Field required"}
    r = upload(client, media["clip35"], "audio")
    assert r.status_code == 422 and r.json()["message"].startswith("('body', 'media_type')")
    r = upload(client, media["clip35"], creation_time="2024-06-09T18:32:11Z")
    assert r.status_code == 422 and "creation_time" in r.json()["message"]
    r = client.post("/v1/files", data={"purpose": "vision", "media_type": "video"})
    assert r.status_code == 422 and "Exactly one of 'file' or 'filename'" in r.json()["message"]
    assert client.get("/v1/files/not-a-uuid").status_code == 422
    unknown = str(uuid.uuid4())
    for resp in (
        client.get(f"/v1/files/{unknown}"),
        client.get(f"/v1/files/{unknown}/content"),
        client.delete(f"/v1/files/{unknown}"),
    ):
        assert resp.status_code == 400, resp.text


def test_oversized_forms(client: httpx.Client, server: RtviServer) -> None:
    many = "&".join(f"f{i}=x" for i in range(1001))
    r = client.post("/v1/files", content=many, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400
    # The server under test caps uploads at 0.01 GiB; a bigger file is refused while streaming.
    big = b"\0" * (11 * 2**20)
    r = client.post(
        "/v1/files",
        data={"purpose": "vision", "media_type": "video"},
        files={"file": ("big.mp4", big, "video/mp4")},
    )
    assert r.status_code == 413 and r.json()["code"] == "FileTooLarge"
    _store_is_clean(server)
