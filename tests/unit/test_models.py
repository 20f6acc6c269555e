"""The model layer through its real loading code: the bundled label bridge on real photos, tiny CLIP /
SigLIP / Cosmos-Embed1-shaped checkpoints through registry + detection, MODEL_PATH sources, and the
remote backend against a real HTTP server."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from rtvi.core.media.types import Frame
from rtvi.core.models.bundled import MODEL_ID, BundledEmbedder
from rtvi.core.models.common import fit_clip
from rtvi.core.models.source import resolve_model_path
from rtvi.errors import ModelLoadError
from rtvi.services.embed.models.base import Embedder
from rtvi.services.embed.models.clip import ClipEmbedder
from rtvi.services.embed.models.cosmos import CosmosEmbed1Embedder
from rtvi.services.embed.models.registry import detect_embedder_kind, load_embedder
from rtvi.services.embed.models.remote import RemoteEmbedder, decode_frames_item, encode_frames_item
from rtvi.settings import ModelSettings, Settings
from tests import model_factory as mf

PHOTOS = {"a cat": skdata.chelsea(), "a rocket": skdata.rocket(), "a cup of coffee": skdata.coffee()}


def make_settings(cache: Path, **overrides: Any) -> ModelSettings:
    """Model settings pinned against the caller's environment (MODEL_PATH etc. may be set there)."""
    values: dict[str, Any] = {
        "MODEL_PATH": "",
        "VLM_MODEL_TO_USE": "custom",
        "REMOTE_EMBED_ENDPOINT": "",
        "NGC_MODEL_CACHE": str(cache),
        "RTVI_DEVICE": "cpu",
    }
    values.update(overrides)
    return Settings(**values).model


def random_frames(n: int, seed: int, shape: tuple[int, int] = (48, 64)) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def assert_unit_rows(v: np.ndarray, n: int, dim: int) -> None:
    assert v.shape == (n, dim)
    assert v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def cache_dir(model_cache: Path) -> Path:
    return model_cache


@pytest.fixture(scope="module")
def bundled(cache_dir: Path) -> BundledEmbedder:
    model = load_embedder(make_settings(cache_dir))
    assert isinstance(model, BundledEmbedder)
    return model


# --- bundled label bridge -----------------------------------------------------------------------------
def test_bundled_vectors_agree_in_onnx_runtime_and_torch(bundled: BundledEmbedder, cache_dir: Path) -> None:
    """Both image networks in ONNX Runtime (the CPU default) against torch, on real photos."""
    from tests.media_factory import scene_photos

    in_torch = BundledEmbedder(cache_dir=cache_dir, onnx_runtime=False)
    assert bundled._classifier.in_onnx_runtime and not in_torch._classifier.in_onnx_runtime
    photos = list(scene_photos().values())
    np.testing.assert_allclose(bundled.frame_features(photos), in_torch.frame_features(photos), atol=1e-3)
    clips = [[p] for p in photos]
    np.testing.assert_allclose(bundled.embed_frames(clips), in_torch.embed_frames(clips), atol=1e-3)


def test_bundled_is_the_default_and_describes_itself(bundled: BundledEmbedder, cache_dir: Path) -> None:
    assert isinstance(bundled, Embedder)
    assert (bundled.id, bundled.dim, bundled.frames_per_chunk, bundled.input_size) == (
        MODEL_ID,
        384,
        8,
        (300, 300),  # the person detector's input; the classifier scales down to 224
    )
    assert len(bundled.class_names) == 1000 and bundled.class_names[281].startswith("tabby")
    # the class-name embeddings and both networks' ONNX exports were cached for the next start
    assert list((cache_dir / "label-bridge").glob("classes-*.npy"))
    assert sorted(p.name.split("-")[0] for p in (cache_dir / "onnx").glob("*.onnx")) == [
        "efficientnet",
        "minilm",
        "ssdlite",
    ]


def test_bundled_matches_photos_and_texts(bundled: BundledEmbedder) -> None:
    texts = list(PHOTOS)
    images = bundled.embed_frames([[img] for img in PHOTOS.values()])
    queries = bundled.embed_texts(texts)
    assert_unit_rows(images, 3, 384)
    assert_unit_rows(queries, 3, 384)
    sims = queries @ images.T  # text x image
    assert list(sims.argmax(axis=1)) == [0, 1, 2], sims  # each text finds its photo
    assert list(sims.argmax(axis=0)) == [0, 1, 2], sims  # each photo finds its text


def test_offline_vlm_alert_threshold_separates_matching_questions(bundled: BundledEmbedder) -> None:
    """The calibration docs/vlm.md quotes: on the scikit-image photos, a question about what the photo
    shows scores 0.36-0.48, any other at most 0.16, so ALERT_SIMILARITY (0.25) sits between them."""
    import asyncio
    import re

    from rtvi.services.vlm.models.base import Generation, generate
    from rtvi.services.vlm.models.offline import ALERT_SIMILARITY, OfflineLabelModel

    model = OfflineLabelModel(bundled)
    photos = {"cat": skdata.chelsea(), "rocket": skdata.rocket(), "coffee": skdata.coffee()}
    questions = {
        "cat": "Is there a cat in the frame?",
        "rocket": "Is a rocket launching?",
        "coffee": "Is anyone drinking coffee?",
        "forklift": "Is a forklift too close to a worker?",
        "dog": "Is there a dog?",
    }

    def score(photo: str, question: str) -> tuple[str, float]:
        prompt = f"{questions[question]} Answer: Anomaly Detected: Yes/No"
        out = asyncio.run(generate(model, Generation(prompt=prompt, frames=[photos[photo]])))
        m = re.search(
            r"^Anomaly Detected: (Yes|No)\n.*Similarity to the question: (-?\d+\.\d+)", out.text, re.S
        )
        assert m, out.text
        return m.group(1), float(m.group(2))

    for photo in photos:
        for question in questions:
            verdict, similarity = score(photo, question)
            if photo == question:
                assert 0.36 <= similarity <= 0.48 and verdict == "Yes", (photo, question, similarity)
            else:
                assert similarity <= 0.16 and verdict == "No", (photo, question, similarity)
    assert 0.16 < ALERT_SIMILARITY < 0.36


def test_bundled_clip_pooling_and_padding(bundled: BundledEmbedder) -> None:
    cat, rocket = PHOTOS["a cat"], PHOTOS["a rocket"]
    one, eight, mixed = bundled.embed_frames([[cat], [cat] * 8, [cat] * 4 + [rocket] * 4])
    np.testing.assert_allclose(one, eight, atol=1e-5)  # a short clip needs no padding
    texts = bundled.embed_texts(["a cat", "a rocket"])
    assert texts[0] @ mixed > 0.2 and texts[1] @ mixed > 0.2  # a mixed chunk is near both


def test_bundled_edge_inputs(bundled: BundledEmbedder) -> None:
    assert bundled.embed_frames([]).shape == (0, 384)
    assert bundled.embed_texts([]).shape == (0, 384)
    gray = np.full((10, 300), 128, dtype=np.uint8)  # grayscale, tiny, odd aspect
    assert_unit_rows(bundled.embed_frames([[gray]]), 1, 384)
    with pytest.raises(ValueError, match="clip 1"):
        bundled.embed_frames([[gray], []])


def test_fit_clip_pads_with_last_frame_and_subsamples() -> None:
    frames = random_frames(3, seed=1)
    padded = fit_clip(frames, 8)
    assert len(padded) == 8 and padded[:3] == frames and all(f is frames[-1] for f in padded[3:])
    many = random_frames(20, seed=2)
    picked = fit_clip(many, 8)
    assert len(picked) == 8 and picked[0] is many[0] and picked[-1] is many[-1]


# --- clip backend: tiny CLIP and SigLIP through the registry -----------------------------------------
@pytest.mark.parametrize(
    ("builder", "dim"), [(mf.build_tiny_clip, mf.CLIP_PROJECTION_DIM), (mf.build_tiny_siglip, mf.SIGLIP_DIM)]
)
def test_clip_backend_loads_tiny_checkpoints(tmp_path: Path, builder: Any, dim: int) -> None:
    model_dir = builder(tmp_path / "Tiny-Model")
    model = load_embedder(make_settings(tmp_path / "cache", MODEL_PATH=str(model_dir)))
    assert isinstance(model, ClipEmbedder) and isinstance(model, Embedder)
    assert (model.id, model.dim, model.input_size) == ("tiny-model", dim, (mf.IMAGE_SIZE, mf.IMAGE_SIZE))

    clips = [random_frames(3, seed=1), random_frames(1, seed=2), random_frames(8, seed=3, shape=(32, 32))]
    vectors = model.embed_frames(clips)
    assert_unit_rows(vectors, 3, dim)
    np.testing.assert_array_equal(vectors, model.embed_frames(clips))  # deterministic
    assert abs(float(vectors[0] @ vectors[1])) < 0.999  # different images, different vectors

    texts = model.embed_texts(["a cat", "a rocket on the launch pad " * 20])  # second one is truncated
    assert_unit_rows(texts, 2, dim)
    assert abs(float(texts[0] @ texts[1])) < 0.999
    assert model.embed_texts([]).shape == (0, dim)


# --- cosmos-embed1 backend: a tiny checkpoint with its remote-code contract ---------------------------
def test_cosmos_backend_loads_remote_code_checkpoint(tmp_path: Path) -> None:
    model_dir = mf.build_tiny_cosmos_like(tmp_path / "Tiny-Cosmos-Embed1")
    assert detect_embedder_kind(model_dir) == "cosmos-embed1"
    model = load_embedder(make_settings(tmp_path / "cache", MODEL_PATH=str(model_dir)))
    assert isinstance(model, CosmosEmbed1Embedder)
    res = mf.TINY_COSMOS_RESOLUTION
    assert (model.id, model.dim, model.frames_per_chunk, model.input_size) == (
        "tiny-cosmos-embed1",
        mf.TINY_COSMOS_DIM,
        8,
        (res, res),
    )
    frames = random_frames(12, seed=4)
    # the model asserts (B, 8, 3, res, res): 1, 3 and 12 frames must all be fitted to 8
    vectors = model.embed_frames([frames[:1], [frames[0]] * 8, frames, frames[:3]])
    assert_unit_rows(vectors, 4, mf.TINY_COSMOS_DIM)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # 1 frame == last frame repeated to 8
    assert_unit_rows(model.embed_texts(["a cat", "word " * 200]), 2, mf.TINY_COSMOS_DIM)  # padded/truncated


def test_cosmos_backend_needs_trust_remote_code(tmp_path: Path) -> None:
    model_dir = mf.build_tiny_cosmos_like(tmp_path / "ce1")
    settings = make_settings(tmp_path / "cache", MODEL_PATH=str(model_dir), RTVI_TRUST_REMOTE_CODE="false")
    with pytest.raises(ModelLoadError, match="RTVI_TRUST_REMOTE_CODE"):
        load_embedder(settings)


# --- registry choices and errors -------------------------------------------------------------------------
def test_registry_rejects_unknown_checkpoints_and_settings(tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="supported: CLIP/SigLIP"):
        load_embedder(make_settings(tmp_path, MODEL_PATH=str(bert)))
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_embedder(make_settings(tmp_path, MODEL_PATH=str(tmp_path / "bert" / "..")))
    with pytest.raises(ModelLoadError, match="needs MODEL_PATH"):
        load_embedder(make_settings(tmp_path, VLM_MODEL_TO_USE="clip"))
    with pytest.raises(ModelLoadError, match="needs REMOTE_EMBED_ENDPOINT"):
        load_embedder(make_settings(tmp_path, VLM_MODEL_TO_USE="remote"))
    with pytest.raises(ModelLoadError, match="not an embedder"):
        load_embedder(make_settings(tmp_path, VLM_MODEL_TO_USE="cosmos-reason3"))


# --- MODEL_PATH sources -----------------------------------------------------------------------------------
def test_local_model_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_embedder(make_settings(tmp_path, MODEL_PATH=str(missing)))


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_model_path_clones_once(tmp_path: Path) -> None:
    repo = mf.build_tiny_clip(tmp_path / "Tiny-CLIP-Repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "tiny clip"], check=True)
    settings = make_settings(tmp_path / "cache", MODEL_PATH=f"git:file://{repo}")

    model = load_embedder(settings)
    assert isinstance(model, ClipEmbedder) and model.id == "tiny-clip-repo"
    cloned = resolve_model_path(settings).path
    assert cloned.is_relative_to((tmp_path / "cache").resolve()) and (cloned / "model.safetensors").is_file()
    stamp = (cloned / ".git").stat().st_mtime_ns
    shutil.rmtree(repo)  # a second resolve reuses the clone and needs no remote
    assert resolve_model_path(settings).path == cloned and (cloned / ".git").stat().st_mtime_ns == stamp


def test_git_model_path_refuses_command_transports(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ModelLoadError, match="unsupported URL"):
        resolve_model_path(make_settings(tmp_path, MODEL_PATH=f"git:ext::sh -c touch% {marker}"))
    assert not marker.exists()


def test_huggingface_offline_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = make_settings(
        tmp_path / "cache", MODEL_PATH="git:https://huggingface.co/nvidia/Cosmos-Embed1-448p"
    )
    with pytest.raises(ModelLoadError, match=r"nvidia/Cosmos-Embed1-448p is not available: HF_HUB_OFFLINE"):
        load_embedder(settings)


def test_ngc_needs_cli_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ngc CLI on this PATH
    settings = make_settings(
        tmp_path / "cache", MODEL_PATH="ngc:nvidia/tao/cosmos-embed1:1.0", NGC_API_KEY="k"
    )
    with pytest.raises(ModelLoadError, match=r"NGC CLI.*NGC_API_KEY"):
        load_embedder(settings)
    with pytest.raises(ModelLoadError, match="expected ngc:"):
        resolve_model_path(make_settings(tmp_path, MODEL_PATH="ngc:../../etc:1"))


# --- remote backend against a real HTTP server ------------------------------------------------------------
def test_frames_item_round_trip_and_rejects_garbage() -> None:
    item = encode_frames_item(random_frames(3, seed=5, shape=(40, 60)), size=(32, 24))
    assert item.startswith("data:video_frames/jpg;base64,{") and item.endswith("}")
    decoded = decode_frames_item(item)
    assert len(decoded) == 8 and all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in decoded)
    buf = io.BytesIO()
    Image.fromarray(random_frames(1, seed=6)[0]).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    assert decode_frames_item(f"data:video_frames/png;base64,{{{png}}}")[0].shape == (48, 64, 3)
    for bad in (
        "data:video/mp4;base64,AAAA",
        "data:video_frames/jpg;base64,AAAA",
        "data:video_frames/jpg;base64,{}",
        "data:video_frames/jpg;base64,{not-base64!}",
        "data:video_frames/jpg;base64,{QUJD}",  # base64, but not an image
    ):
        with pytest.raises(ValueError):
            decode_frames_item(bad)


@pytest.fixture(scope="module")
def embeddings_server(bundled: BundledEmbedder) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    import uvicorn
    from fastapi import FastAPI, Header, HTTPException

    seen: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/v1/embeddings")
    def embeddings(body: dict[str, Any], authorization: str | None = Header(None)) -> dict[str, Any]:
        if authorization != "Bearer secret":
            raise HTTPException(401, "bad token")
        seen.append(body)
        inputs, kind = body["input"], body["request_type"]
        if kind == "bulk_video":
            clips = [decode_frames_item(item) for item in inputs]
            if any(len(c) != 8 for c in clips):
                raise HTTPException(422, "video_frames needs exactly 8 frames")
            vectors = bundled.embed_frames(clips)
        elif kind in ("bulk_text", "query"):
            vectors = bundled.embed_texts(inputs)
        else:
            raise HTTPException(422, f"bad request_type {kind}")
        rows = [{"object": "embedding", "embedding": v.tolist(), "index": i} for i, v in enumerate(vectors)]
        return {"object": "list", "data": rows[::-1], "model": body["model"], "usage": {}}  # any order

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_remote_backend_speaks_the_nim_protocol(
    embeddings_server: tuple[str, list[dict[str, Any]]], bundled: BundledEmbedder, tmp_path: Path
) -> None:
    url, seen = embeddings_server
    settings = make_settings(
        tmp_path,
        REMOTE_EMBED_ENDPOINT=url,
        REMOTE_EMBED_ENDPOINT_API_KEY="secret",
        REMOTE_EMBED_ENDPOINT_MODEL_NAME="nvidia/cosmos-embed1",
        REMOTE_EMBED_ENDPOINT_BATCH_SIZE=2,
    )
    model = load_embedder(settings)
    assert isinstance(model, RemoteEmbedder)
    assert (model.id, model.owned_by, model.dim, model.frames_per_chunk) == (
        "nvidia/cosmos-embed1",
        "nvidia",
        384,
        8,
    )
    assert seen[-1] == {
        "input": ["dimension probe"],
        "request_type": "query",
        "encoding_format": "float",
        "model": "nvidia/cosmos-embed1",
    }

    texts = ["a cat", "a rocket", "a cup of coffee"]
    np.testing.assert_allclose(model.embed_texts(texts), bundled.embed_texts(texts), atol=1e-5)
    assert [b["request_type"] for b in seen[-2:]] == ["bulk_text", "query"]  # batches of 2: 2 + 1

    clips = [[img] for img in PHOTOS.values()]  # 1 frame each: padded to 8 on the wire
    images = model.embed_frames(clips)
    assert_unit_rows(images, 3, 384)
    assert list((bundled.embed_texts(texts) @ images.T).argmax(axis=1)) == [0, 1, 2]
    assert seen[-1]["request_type"] == "bulk_video"
    model.close()


def test_remote_backend_reports_auth_and_connection_failures(
    embeddings_server: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, _ = embeddings_server
    with pytest.raises(ModelLoadError, match="401"):
        load_embedder(
            make_settings(tmp_path, REMOTE_EMBED_ENDPOINT=url, REMOTE_EMBED_ENDPOINT_API_KEY="wrong")
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(ModelLoadError, match="failed its probe"):
        load_embedder(make_settings(tmp_path, REMOTE_EMBED_ENDPOINT=f"http://127.0.0.1:{closed}"))
