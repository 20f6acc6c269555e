"""POST /v1/search over real HTTP with the bundled model: every embedded chunk is indexed, a text finds its
scene, filters narrow the hits, thumbnails are JPEGs, deleting a file removes its hits, and repeating a
request does not duplicate them."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from rtvi.core.media.times import parse_iso
from tests.conftest import CREATION_TIME, upload
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import RtviServer, free_port
from tests.sse_client import SseReader

SCENES = {"a cat": ("0.0", "10.0"), "a rocket": ("10.0", "20.0"), "a cup of coffee": ("20.0", "30.0")}


@pytest.fixture(scope="module")
def search_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    """A service of its own: the hits are exactly what these tests indexed."""
    srv = RtviServer(tmp_path_factory.mktemp("search") / "assets").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sc(search_server: RtviServer) -> Iterator[httpx.Client]:
    with search_server.client() as c:
        yield c


def embed(c: httpx.Client, file_id: str) -> None:
    model = c.get("/v1/models").json()["data"][0]["id"]
    r = c.post("/v1/generate_video_embeddings", json={"id": file_id, "model": model, "chunk_duration": 10})
    assert r.status_code == 200, r.text


def search(c: httpx.Client, **body: object) -> list[dict]:  # type: ignore[type-arg]
    r = c.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "list"
    return r.json()["data"]  # type: ignore[no-any-return]


def wait_indexed(c: httpx.Client, asset_id: str, chunks: int) -> None:
    """Index writes are asynchronous (they never hold up results): wait for them, briefly."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if len(search(c, query="anything", top_k=100, asset_ids=[asset_id])) >= chunks:
            return
        time.sleep(0.1)
    raise AssertionError(f"{asset_id}: fewer than {chunks} chunks indexed")


@pytest.fixture(scope="module")
def scenes(sc: httpx.Client, media: dict[str, Path]) -> str:
    file_id = upload(sc, media["three_scenes"]).json()["id"]
    embed(sc, file_id)
    wait_indexed(sc, file_id, 3)
    return str(file_id)


def test_each_query_finds_its_scene_first(sc: httpx.Client, scenes: str) -> None:
    for query, (start, end) in SCENES.items():
        hits = search(sc, query=query, top_k=3)
        assert len(hits) == 3
        best = hits[0]
        assert (best["start_time"], best["end_time"]) == (start, end), (query, hits)
        assert best["asset_id"] == scenes and best["stream_id"] is None
        assert best["source"] == "three_scenes.mp4" and best["caption"] is None
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert best["chunk_idx"] == list(SCENES).index(query)


def test_thumbnail_is_a_jpeg_of_the_scene(sc: httpx.Client, scenes: str) -> None:
    best = search(sc, query="a rocket", top_k=1)[0]
    r = sc.get(best["thumbnail_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "JPEG" and image.size == (320, 240)  # the source's 4:3, not the model's square
    assert sc.get("/v1/search/thumbnails/" + "0" * 32).status_code == 400
    assert sc.get("/v1/search/thumbnails/..%2f..%2fregistry.sqlite3").status_code in (400, 404)


def test_filters_by_file_and_time(sc: httpx.Client, scenes: str, media: dict[str, Path]) -> None:
    # Seconds into a file: only the chunks overlapping 12-18 s.
    hits = search(sc, query="a cat", top_k=10, start_time=12, end_time=18)
    assert [(h["start_time"], h["end_time"]) for h in hits] == [SCENES["a rocket"]]
    # Another file with a creation time: ISO-8601 windows select by wall clock.
    other = upload(sc, media["cat_rocket"], creation_time=CREATION_TIME).json()["id"]
    embed(sc, other)
    wait_indexed(sc, other, 2)
    assert {h["asset_id"] for h in search(sc, query="a cat", top_k=10)} == {scenes, other}
    only = search(sc, query="a cat", top_k=10, asset_ids=[other])
    assert {h["asset_id"] for h in only} == {other} and len(only) == 2
    late = search(
        sc, query="a cat", top_k=10, start_time="2024-06-09T18:32:25Z", end_time="2024-06-09T19:00:00Z"
    )
    assert [(h["asset_id"], h["start_time"]) for h in late] == [(other, "2024-06-09T18:32:21.123Z")]
    assert search(sc, query="a cat", stream_ids=["no-such-stream"]) == []
    # Deleting the file removes its hits (and thumbnails).
    thumb = only[0]["thumbnail_url"]
    assert sc.delete(f"/v1/files/{other}").status_code == 200
    assert {h["asset_id"] for h in search(sc, query="a cat", top_k=10)} == {scenes}
    assert sc.get(thumb).status_code == 400


def test_repeating_a_request_does_not_duplicate_hits(sc: httpx.Client, scenes: str) -> None:
    embed(sc, scenes)
    time.sleep(1)  # give the writer time to (wrongly) add a second copy
    hits = search(sc, query="a cat", top_k=100, asset_ids=[scenes])
    assert len(hits) == 3


def test_bad_searches_get_the_error_body(sc: httpx.Client, scenes: str) -> None:
    for body, status in [
        ({"query": ""}, 400),
        ({"query": "   "}, 400),
        ({}, 400),
        ({"query": "a cat", "image": "data:image/png;base64,AAAA"}, 400),
        ({"query": "a cat", "top_k": 0}, 422),
        ({"query": "a cat", "top_k": 101}, 422),
        ({"query": "a cat", "start_time": "yesterday"}, 400),
        ({"query": "a cat", "start_time": 5, "end_time": "2024-06-09T18:32:25Z"}, 400),
        ({"query": "a cat", "colour": "red"}, 422),
    ]:
        r = sc.post("/v1/search", json=body)
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"code", "message"}, r.text


def test_an_image_finds_its_scene(sc: httpx.Client, scenes: str, media: dict[str, Path]) -> None:
    import base64

    uri = "data:image/png;base64," + base64.b64encode(media["rocket_png"].read_bytes()).decode()
    best = search(sc, image=uri, top_k=1)[0]
    assert (best["start_time"], best["end_time"]) == SCENES["a rocket"]


def test_a_files_timeline_lists_its_chunks_in_order(sc: httpx.Client, scenes: str) -> None:
    r = sc.get("/v1/search/chunks", params={"asset_id": scenes})
    assert r.status_code == 200, r.text
    chunks = r.json()["data"]
    assert [(c["chunk_idx"], c["start_offset"], c["end_offset"]) for c in chunks] == [
        (0, 0.0, 10.0),
        (1, 10.0, 20.0),
        (2, 20.0, 30.0),
    ]
    assert all(c["asset_id"] == scenes and c["thumbnail_url"] for c in chunks)
    latest = sc.get("/v1/search/chunks", params={"asset_id": scenes, "limit": 1}).json()["data"]
    assert [c["chunk_idx"] for c in latest] == [2]
    assert sc.get("/v1/search/chunks", params={"stream_id": scenes}).json()["data"] == []  # a file
    for params in ({}, {"asset_id": scenes, "stream_id": "x"}, {"asset_id": scenes, "limit": 0}):
        r = sc.get("/v1/search/chunks", params=params)
        assert r.status_code in (400, 422) and set(r.json()) == {"code", "message"}, (params, r.text)


# --- the VLM service: captions are indexed and searched by their text -------------------------------
@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(tmp_path_factory.mktemp("search-vlm") / "assets", service="vlm").start()
    yield srv
    srv.stop()


def test_vlm_captions_are_searchable(vlm_server: RtviServer, media: dict[str, Path]) -> None:
    with vlm_server.client() as c:
        model = c.get("/v1/models").json()["data"][0]["id"]
        file_id = upload(c, media["cat_rocket"]).json()["id"]
        r = c.post(
            "/v1/generate_captions",
            json={"id": file_id, "model": model, "prompt": "Describe the scene", "chunk_duration": 10},
        )
        assert r.status_code == 200, r.text
        captions = [ch["content"] for ch in r.json()["chunk_responses"]]
        wait_indexed(c, file_id, 2)
        for query, start in (("a tabby cat", "0.0"), ("a rocket launch", "10.0")):
            best = search(c, query=query, top_k=2)[0]
            assert (best["asset_id"], best["start_time"]) == (file_id, start), (query, captions)
            assert best["caption"] == captions[int(float(start) // 10)]  # the chunk's own caption
            assert c.get(best["thumbnail_url"]).headers["content-type"] == "image/jpeg"
        image = "data:image/png;base64,AAAA"
        r = c.post("/v1/search", json={"image": image})
        assert r.status_code == 400 and "text" in r.json()["message"]


# --- live streams: their chunks become searchable while they run ------------------------------------
@pytest.mark.skipif(not gst_available(), reason="needs Debian's gst-rtsp-server (make rtsp-deps)")
def test_a_live_streams_chunks_are_searchable_while_it_runs(
    search_server: RtviServer, sc: httpx.Client, tmp_path: Path
) -> None:
    camera = RtspServer(free_port(), tmp_path).start()
    try:
        r = sc.post(
            "/v1/streams/add", json={"streams": [{"liveStreamUrl": camera.url, "description": "dock"}]}
        )
        stream_id = r.json()["results"][0]["id"]
        model = sc.get("/v1/models").json()["data"][0]["id"]
        body = {"id": stream_id, "model": model, "stream": True, "chunk_duration": 2}
        reader = SseReader(search_server.url, body)
        try:
            deadline = time.monotonic() + 60
            hits: list[dict] = []  # type: ignore[type-arg]
            while len(hits) < 2 and time.monotonic() < deadline:
                hits = search(sc, query="a test pattern", top_k=10, stream_ids=[stream_id])
                time.sleep(0.3)
            assert len(hits) >= 2, reader.status  # found while the stream runs
            assert all(h["stream_id"] == stream_id and h["source"] == "dock" for h in hits)
            assert all(h["start_time"].endswith("Z") and h["start_offset"] is None for h in hits)
            timeline = sc.get("/v1/search/chunks", params={"stream_id": stream_id}).json()["data"]
            assert len(timeline) >= 2 and timeline == sorted(timeline, key=lambda h: h["start_time"])
        finally:
            reader.stop()
        sc.delete(f"/v1/streams/delete/{stream_id}")
        assert search(sc, query="a test pattern", stream_ids=[stream_id]) == []  # gone with the stream
    finally:
        camera.kill()


@pytest.mark.skipif(not gst_available(), reason="needs Debian's gst-rtsp-server (make rtsp-deps)")
def test_retention_keeps_only_a_streams_recent_chunks(tmp_path: Path) -> None:
    """RTVI_INDEX_RETENTION_HOURS: a camera at 1 s chunks keeps about the last 4 s in the index (oldest
    removed first), while a stream with its own limit (RTVI_INDEX_RETENTION_BY_STREAM, 0 = keep) keeps
    everything; thumbnails go after 2 s (RTVI_INDEX_THUMBNAIL_RETENTION_HOURS), their entries stay. Once
    the cameras stop, nothing past a limit is left: no entry, no thumbnail file; a restart keeps it so.
    /v1/search/stats and the metrics show it."""
    retention_s, thumbnails_s = 4.0, 2.0
    env = {
        "RTVI_INDEX_RETENTION_HOURS": str(retention_s / 3600),
        "RTVI_INDEX_RETENTION_BY_STREAM": '{"kept": 0}',
        "RTVI_INDEX_THUMBNAIL_RETENTION_HOURS": str(thumbnails_s / 3600),
        "RTVI_INDEX_RETENTION_INTERVAL_S": "0.5",
    }
    storage = tmp_path / "assets"
    server = RtviServer(storage, env=env).start()
    camera = RtspServer(free_port(), tmp_path).start()

    def timeline(c: httpx.Client, stream_id: str) -> list[dict[str, object]]:
        hits = c.get("/v1/search/chunks", params={"stream_id": stream_id, "limit": 1000}).json()["data"]
        assert isinstance(hits, list)
        return hits

    try:
        with server.client() as c:
            streams = [
                {"liveStreamUrl": camera.url, "description": name, "id": name} for name in ("gate", "kept")
            ]
            assert not c.post("/v1/streams/add", json={"streams": streams}).json()["errors"]
            model = c.get("/v1/models").json()["data"][0]["id"]
            body = {"model": model, "stream": True, "chunk_duration": 1}
            readers = [SseReader(server.url, {**body, "id": name}) for name in ("gate", "kept")]
            try:
                deadline = time.monotonic() + 90
                expired = 0
                while time.monotonic() < deadline and expired < 4:
                    time.sleep(0.5)
                    expired = c.get("/v1/search/stats").json()["expired"]["age"]
                assert expired >= 4, [r.status for r in readers]  # several chunks have aged out by now
                gate = timeline(c, "gate")
                # Every chunk left started within the retention (plus a sweep interval and the index's
                # queue); the oldest went first, so what is left is one run of consecutive chunks. Those
                # older than the thumbnails' limit (and its slack) have lost their thumbnail only.
                now = time.time()
                ages = [now - parse_iso(str(h["start_time"])).timestamp() for h in gate]
                assert gate and all(age <= retention_s + 3.0 for age in ages), ages
                indices = [h["chunk_idx"] for h in gate]
                assert indices == list(range(int(indices[0]), int(indices[0]) + len(indices)))
                assert all(
                    h["thumbnail_url"] is None
                    for h, age in zip(gate, ages, strict=True)
                    if age > thumbnails_s + 3
                )
                kept = timeline(c, "kept")
                assert kept[0]["chunk_idx"] == 0 and len(kept) > len(gate)  # its own limit: none
                assert kept[0]["thumbnail_url"] is None  # ... but thumbnails go all the same
                # A search never returns a removed entry.
                found = c.post("/v1/search", json={"query": "a ball", "top_k": 100, "stream_ids": ["gate"]})
                now = time.time()
                ages = [now - parse_iso(h["start_time"]).timestamp() for h in found.json()["data"]]
                assert ages and all(age <= retention_s + 3.0 for age in ages), ages
            finally:
                for reader in readers:
                    reader.stop()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (timeline(c, "gate") or _thumbnail_files(storage)):
                time.sleep(0.5)
            assert timeline(c, "gate") == [] and _thumbnail_files(storage) == []
            kept_count = len(timeline(c, "kept"))
            stats = c.get("/v1/search/stats").json()
            assert stats["backend"] == "sqlite" and stats["retention_hours"] == pytest.approx(
                retention_s / 3600
            )
            assert stats["entries"] == kept_count and stats["disk_bytes"] > 0 and stats["memory_bytes"] > 0
            metrics = c.get("/metrics").text
            assert 'rtvi_index_chunks_expired_total{reason="age"}' in metrics
            assert "rtvi_index_thumbnails_dropped_total" in metrics
        server.stop()
        server = RtviServer(storage, env=env).start()
        with server.client() as c:
            kept = timeline(c, "kept")
            assert len(kept) == kept_count and kept[0]["chunk_idx"] == 0 and timeline(c, "gate") == []
            assert all(h["thumbnail_url"] is None for h in kept) and _thumbnail_files(storage) == []
    finally:
        camera.kill()
        server.stop()


def _thumbnail_files(storage: Path) -> list[Path]:
    return list((storage / "index" / "thumbnails").rglob("*.jpg"))
