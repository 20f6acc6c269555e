"""Text embeddings, the OpenAI-compatible /v1/embeddings, and the health/info routes over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import httpx
import numpy as np
import openai

import rtvi
from tests.servers import RtviServer


def test_text_embeddings_single_and_list(client: httpx.Client, model_id: str) -> None:
    one = client.post("/v1/generate_text_embeddings", json={"text_input": "a forklift", "model": model_id})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"] == model_id and [d["text_input"] for d in body["data"]] == ["a forklift"]
    many = client.post(
        "/v1/generate_text_embeddings", json={"text_input": ["a cat", "a forklift"], "model": model_id}
    ).json()
    assert [d["text_input"] for d in many["data"]] == ["a cat", "a forklift"]
    # The same text gives the same vector whether sent alone or in a batch.
    np.testing.assert_allclose(body["data"][0]["embeddings"], many["data"][1]["embeddings"], atol=1e-5)
    assert abs(np.linalg.norm(many["data"][0]["embeddings"]) - 1) < 1e-4


def test_text_limits(client: httpx.Client, model_id: str) -> None:
    def post(text: object, model: str = model_id) -> httpx.Response:
        return client.post("/v1/generate_text_embeddings", json={"text_input": text, "model": model})

    assert post("").json()["code"] == "BadParameters"
    assert post([]).json()["code"] == "BadParameters"
    assert post(["ok", "  "]).status_code == 400
    assert post("x" * 1001).status_code == 422
    assert post(["x"] * 101).status_code == 422
    assert post("a cat", "other-model").json() == {
        "code": "BadParameters",
        "message": f"No such model 'other-model'; this service serves '{model_id}' (GET /v1/models)",
    }
    assert client.post("/v1/generate_text_embeddings", json={"text_input": "a"}).status_code == 422


def test_openai_sdk_embeddings(server: RtviServer, model_id: str, client: httpx.Client) -> None:
    sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    res = sdk.embeddings.create(model=model_id, input=["a cat", "a rocket"])  # base64 by default
    assert [d.index for d in res.data] == [0, 1]
    ours = client.post(
        "/v1/generate_text_embeddings", json={"text_input": ["a cat"], "model": model_id}
    ).json()
    np.testing.assert_allclose(res.data[0].embedding, ours["data"][0]["embeddings"], atol=1e-5)
    floats = sdk.embeddings.create(model=model_id, input="a cat", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, res.data[0].embedding, atol=1e-6)


def test_embeddings_bulk_video_data_uri(
    server: RtviServer, model_id: str, media, client: httpx.Client
) -> None:  # type: ignore[no-untyped-def]
    uri = "data:image/jpeg;base64," + base64.b64encode(media["cat_jpg"].read_bytes()).decode()
    r = client.post(
        "/v1/embeddings",
        json={"input": [uri], "model": model_id, "request_type": "bulk_video", "encoding_format": "float"},
    )
    assert r.status_code == 200, r.text
    vec = r.json()["data"][0]["embedding"]
    assert abs(np.linalg.norm(vec) - 1) < 1e-4
    bad = client.post(
        "/v1/embeddings",
        json={"input": ["data:video/mp4;base64,@@@"], "model": model_id, "request_type": "bulk_video"},
    )
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidDataUrl"


def test_health_and_info(client: httpx.Client, model_id: str) -> None:
    ready = client.get("/v1/ready")
    assert ready.status_code == 200 and ready.text == "Service is healthy"
    detailed = client.get("/v1/ready", params={"detailed": "true"}).json()
    assert detailed["healthy"] is True and detailed["checks"]["model"]["id"] == model_id
    assert detailed["uptime_seconds"] > 0
    assert detailed["checks"]["search_index"]["healthy"] is True
    assert client.get("/v1/live").status_code == 200
    assert "ready" in client.get("/v1/startup").text
    assert client.get("/v1/manifest").json()["model"] == model_id
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and len(models["data"]) == 1 and models["audio_support"] is False
    metrics = client.get("/v1/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "system_uptime_seconds" in metrics.text
    assert client.get("/docs").status_code == 200
    assert "/v1/generate_video_embeddings" in client.get("/openapi.json").json()["paths"]
    stats = client.get("/v1/assets/stats").json()
    assert {"asset_count", "max_storage_usage_gb", "oldest_asset_age_hours"} <= set(stats)


def test_the_log_says_what_the_model_load_is_doing(server: RtviServer, model_id: str) -> None:
    """A newcomer watching `make run` sees what the ~10 s start-up is spent on, and when it is over."""
    log = server.log_path.read_text(errors="replace")
    loading = log.index(f"loading the bundled model {model_id}: EfficientNet-Lite0")
    assert "SSDLite person detector" in log[loading : loading + 300]
    assert log.index(f"bundled model {model_id} loaded in ") > loading


def test_models_has_exactly_the_reference_shape(client: httpx.Client, model_id: str) -> None:
    """A client generated from the reference's OpenAPI reads /v1/models: nothing more, nothing less; the
    model's other facts (dimension, ...) are in /v1/metadata."""
    models = client.get("/v1/models").json()
    assert set(models) == {"object", "data", "audio_support"}
    card = models["data"][0]
    assert set(card) == {"id", "created", "object", "owned_by", "api_type"}
    assert (card["id"], card["object"], card["api_type"]) == (model_id, "model", "embedding")
    assert isinstance(card["created"], int) and re.fullmatch(r"[A-Za-z0-9_.\-]+", card["owned_by"])
    model = client.get("/v1/metadata").json()["model"]
    assert model["id"] == model_id and model["api_type"] == "embedding" and model["dimension"] > 0


def test_versions_name_the_reference_release(client: httpx.Client, model_id: str) -> None:
    """Reference clients read these as the VSS release whose API is served; rtvi's own version is extra."""
    assert client.get("/v1/version").json() == {"release": rtvi.REFERENCE_RELEASE, "api": "3.1.0"}
    assert re.fullmatch(r"3\.2\.\d+", rtvi.REFERENCE_RELEASE)
    meta = client.get("/v1/metadata").json()
    assert (meta["version"], meta["rtvi_version"]) == (rtvi.REFERENCE_RELEASE, rtvi.__version__)
    assert "licenseInfo" not in meta
    assert client.get("/v1/manifest").json() == {"version": rtvi.REFERENCE_RELEASE, "model": model_id}


def test_license(client: httpx.Client) -> None:
    r = client.get("/v1/license")
    assert r.status_code == 200, r.text
    lic = r.json()
    assert set(lic) == {"name", "path", "sha", "size", "url", "type", "content"}
    assert lic["name"] == "Apache-2.0" and lic["type"] == "file"  # pyproject.toml's license
    assert "Apache License" in lic["content"] and lic["url"].startswith("https://")
    assert (
        lic["size"] == len(lic["content"]) and lic["sha"] == hashlib.sha1(lic["content"].encode()).hexdigest()
    )
    assert "/v1/license" in client.get("/openapi.json").json()["paths"]


def test_hidden_camera_aliases(client: httpx.Client, media: dict[str, Path]) -> None:
    """The CV / VIOS aliases of /v1/stream/add and /v1/stream/remove (spec §1.1), left out of OpenAPI. A
    file sensor (a camera_url that is a server path) needs no camera."""
    clip = str(media["clip35"])
    adds = [
        ("POST", "/v1/camera/add"),
        ("PUT", "/v1/camera/streaming"),
        ("POST", "/api/v1/camera/add"),
        ("PUT", "/api/v1/camera/streaming"),
    ]
    removes = [
        ("POST", "/v1/camera/remove"),
        ("DELETE", "/v1/camera/remove"),
        ("POST", "/api/v1/camera/remove"),
        ("DELETE", "/api/v1/camera/remove"),
    ]
    for i, ((add_method, add_path), (remove_method, remove_path)) in enumerate(
        zip(adds, removes, strict=True)
    ):
        cam = f"alias-cam-{i}"
        body = {"key": "sensor", "value": {"camera_id": cam, "camera_url": clip, "change": "camera_add"}}
        r = client.request(add_method, add_path, json=body)
        assert r.status_code == 200, (add_path, r.text)
        assert r.json() == {"camera_id": cam, "asset_id": cam, "status": "added", "inference": False}
        gone = {"key": "sensor", "value": {"camera_id": cam, "change": "camera_remove"}}
        r = client.request(remove_method, remove_path, json=gone)
        assert r.status_code == 200, (remove_path, r.text)
        assert r.json() == {"camera_id": cam, "asset_id": cam, "status": "removed"}
        again = client.request(remove_method, remove_path, json=gone)
        assert (again.status_code, again.json()["code"]) == (404, "NotFound")
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/stream/add" in paths and "/v1/stream/remove" in paths
    assert not [p for p in paths if p.startswith(("/v1/camera/", "/api/v1/"))]
    # /api/v1/config is the hidden alias of /v1/config: same validation, same answer.
    assert client.post("/api/v1/config", json={}).status_code == 422
