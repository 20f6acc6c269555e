"""Service-level behaviour that needs its own server: restart persistence, the production model backends
loaded through MODEL_PATH, the `remote` backend against a second instance, and bearer-token auth."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import upload
from tests.model_factory import build_tiny_clip, build_tiny_siglip
from tests.servers import RtviServer


def _model(srv: RtviServer) -> dict:  # type: ignore[type-arg]
    """The loaded model as /v1/metadata describes it (id, owned_by, api_type, dimension)."""
    return httpx.get(srv.url + "/v1/metadata").json()["model"]  # type: ignore[no-any-return]


def test_files_survive_a_restart(tmp_path: Path, media: dict[str, Path]) -> None:
    srv = RtviServer(tmp_path / "assets").start()
    try:
        with srv.client() as c:
            fid = upload(c, media["clip35"], sensor_name="cam-1").json()["id"]
    finally:
        srv.stop()
    again = RtviServer(tmp_path / "assets").start()
    try:
        with again.client() as c:
            assert c.get(f"/v1/files/{fid}").json()["sensor_name"] == "cam-1"
            r = c.post(
                "/v1/generate_video_embeddings",
                json={"id": fid, "model": _model(again)["id"], "chunk_duration": 10},
            )
            assert r.status_code == 200 and len(r.json()["chunk_responses"]) == 4
    finally:
        again.stop()


@pytest.mark.parametrize("builder", [build_tiny_clip, build_tiny_siglip], ids=["clip", "siglip"])
def test_transformers_checkpoint_via_model_path(builder, tmp_path: Path, media: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    model_dir = builder(tmp_path / "tiny-model")
    srv = RtviServer(tmp_path / "assets", env={"MODEL_PATH": str(model_dir)}).start()
    try:
        card = _model(srv)
        assert card["id"] == "tiny-model"
        with srv.client() as c:
            fid = upload(c, media["clip35"]).json()["id"]
            r = c.post(
                "/v1/generate_video_embeddings", json={"id": fid, "model": card["id"], "chunk_duration": 10}
            )
            assert r.status_code == 200, r.text
            vecs = np.array([ch["embeddings"] for ch in r.json()["chunk_responses"]])
            assert vecs.shape == (4, card["dimension"])
            np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
            t = c.post(
                "/v1/generate_text_embeddings", json={"text_input": ["a cat"], "model": card["id"]}
            ).json()
            assert len(t["data"][0]["embeddings"]) == card["dimension"]
    finally:
        srv.stop()


def test_remote_backend_against_a_second_instance(
    server: RtviServer, model_id: str, tmp_path: Path, media
) -> None:  # type: ignore[no-untyped-def]
    front = RtviServer(
        tmp_path / "assets",
        env={"REMOTE_EMBED_ENDPOINT": server.url, "REMOTE_EMBED_ENDPOINT_MODEL_NAME": model_id},
    ).start()
    try:
        assert _model(front)["id"] == model_id
        with front.client() as fc, server.client() as bc:
            texts = {"text_input": ["a cat", "a forklift"], "model": model_id}
            via_remote = fc.post("/v1/generate_text_embeddings", json=texts).json()["data"]
            direct = bc.post("/v1/generate_text_embeddings", json=texts).json()["data"]
            for a, b in zip(via_remote, direct, strict=True):
                np.testing.assert_allclose(a["embeddings"], b["embeddings"], atol=1e-5)
            fid = upload(fc, media["cat_rocket"]).json()["id"]
            r = fc.post(
                "/v1/generate_video_embeddings", json={"id": fid, "model": model_id, "chunk_duration": 10}
            )
            assert r.status_code == 200, r.text
            chunks = r.json()["chunk_responses"]
            assert len(chunks) == 2
            cat = np.array(via_remote[0]["embeddings"])
            assert cat @ np.array(chunks[0]["embeddings"]) > cat @ np.array(chunks[1]["embeddings"])
    finally:
        front.stop()


def test_bearer_token_is_enforced(tmp_path: Path) -> None:
    srv = RtviServer(tmp_path / "assets", env={"RTVI_API_KEY": "s3cret"}).start()
    try:
        assert httpx.get(srv.url + "/v1/ready").status_code == 200  # probes stay open
        r = httpx.get(srv.url + "/v1/models")
        assert r.status_code == 401 and r.json()["code"] == "Unauthorized"
        assert httpx.get(srv.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(srv.url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
    finally:
        srv.stop()
