"""/v1/generate_video_embeddings over real HTTP with the bundled model: chunking, times, SSE, semantics."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import CREATION_TIME, upload
from tests.media_factory import make_image, scene_photos
from tests.metrics_scrape import SPEC_METRICS, Scrape, exported_families


@pytest.fixture(scope="module")
def clip35(server, media: dict[str, Path]) -> Iterator[str]:  # type: ignore[no-untyped-def]
    with server.client() as c:
        fid = upload(c, media["clip35"]).json()["id"]
        yield fid
        c.delete(f"/v1/files/{fid}")


def embed(client: httpx.Client, ids: str | list[str], model: str, **kw: object) -> httpx.Response:
    return client.post("/v1/generate_video_embeddings", json={"id": ids, "model": model, **kw})


def times(body: dict) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(c["start_time"], c["end_time"]) for c in body["chunk_responses"]]


def test_chunks_of_ten_seconds(client: httpx.Client, clip35: str, model_id: str) -> None:
    r = embed(client, clip35, model_id, chunk_duration=10, chunk_overlap_duration=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert times(body) == [("0.0", "10.0"), ("10.0", "20.0"), ("20.0", "30.0"), ("30.0", "35.0")]
    assert body["model"] == model_id and uuid.UUID(body["id"])
    assert body["media_info"] == {"type": "offset", "start_offset": 0, "end_offset": 35}
    assert body["usage"]["total_chunks_processed"] == 4
    dim = client.get("/v1/metadata").json()["model"]["dimension"]
    for c in body["chunk_responses"]:
        v = np.asarray(c["embeddings"])
        assert v.shape == (dim,) and abs(np.linalg.norm(v) - 1) < 1e-4
        assert c["frame_count"] == 8 and c["inference_latency_ms"] >= 0


def test_overlap_offsets_and_single_chunk(client: httpx.Client, clip35: str, model_id: str) -> None:
    overlap = embed(client, clip35, model_id, chunk_duration=10, chunk_overlap_duration=5).json()
    assert [s for s, _ in times(overlap)] == ["0.0", "5.0", "10.0", "15.0", "20.0", "25.0"]
    assert times(overlap)[-1] == ("25.0", "35.0")
    window = embed(
        client,
        clip35,
        model_id,
        chunk_duration=10,
        media_info={"type": "offset", "start_offset": 5, "end_offset": 25},
    ).json()
    assert times(window) == [("5.0", "15.0"), ("15.0", "25.0")]
    assert window["media_info"] == {"type": "offset", "start_offset": 5, "end_offset": 25}
    whole = embed(client, clip35, model_id, chunk_duration=0).json()
    assert times(whole) == [("0.0", "35.0")]


def test_creation_time_gives_iso_times(client: httpx.Client, media: dict[str, Path], model_id: str) -> None:
    fid = upload(client, media["clip35"], creation_time=CREATION_TIME).json()["id"]
    body = embed(client, fid, model_id, chunk_duration=10).json()
    assert times(body)[0] == ("2024-06-09T18:32:11.123Z", "2024-06-09T18:32:21.123Z")
    assert times(body)[-1] == ("2024-06-09T18:32:41.123Z", "2024-06-09T18:32:46.123Z")
    assert body["media_info"] == {
        "type": "timestamp",
        "start_timestamp": "2024-06-09T18:32:11.123Z",
        "end_timestamp": "2024-06-09T18:32:46.123Z",
    }
    client.delete(f"/v1/files/{fid}")


def _cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _text(client: httpx.Client, model_id: str, texts: list[str]) -> list[list[float]]:
    r = client.post("/v1/generate_text_embeddings", json={"text_input": texts, "model": model_id})
    assert r.status_code == 200, r.text
    return [d["embeddings"] for d in r.json()["data"]]


def test_search_finds_the_cat_and_the_rocket(
    client: httpx.Client, media: dict[str, Path], model_id: str
) -> None:
    """A clip of a real cat photo (0-10 s) then a real rocket photo (10-20 s): text search ranks right."""
    fid = upload(client, media["cat_rocket"]).json()["id"]
    chunks = embed(client, fid, model_id, chunk_duration=10).json()["chunk_responses"]
    assert len(chunks) == 2
    cat, rocket = _text(client, model_id, ["a cat", "a rocket"])
    assert _cos(cat, chunks[0]["embeddings"]) > _cos(cat, chunks[1]["embeddings"])
    assert _cos(rocket, chunks[1]["embeddings"]) > _cos(rocket, chunks[0]["embeddings"])
    client.delete(f"/v1/files/{fid}")


PEOPLE_SCENES = ("astronaut", "camera", "two people", "four people")


def test_people_rank_above_other_scenes_and_objects_still_find_theirs(
    client: httpx.Client, tmp_path: Path, model_id: str
) -> None:
    """Issue 11: the bundled model sees people (the person detector's concepts), and what ImageNet
    found before (cat, rocket, coffee) it still finds."""
    scenes: dict[str, list[float]] = {}
    for i, (name, photo) in enumerate(scene_photos().items()):
        fid = upload(client, make_image(tmp_path / f"scene{i}.png", fmt="PNG", picture=photo), "image")
        body = embed(client, fid.json()["id"], model_id).json()
        scenes[name] = body["chunk_responses"][0]["embeddings"]
        client.delete(f"/v1/files/{fid.json()['id']}")
    queries = ["a person", "people", "a cat", "a rocket", "a cup of coffee"]
    sims = {
        q: {s: _cos(t, v) for s, v in scenes.items()}
        for q, t in zip(queries, _text(client, model_id, queries), strict=True)
    }
    for query in ("a person", "people"):
        people = min(sims[query][s] for s in PEOPLE_SCENES)
        others = max(v for s, v in sims[query].items() if s not in PEOPLE_SCENES)
        assert people > others + 0.1, (query, sims[query])
    for query, scene in (("a cat", "cat"), ("a rocket", "rocket"), ("a cup of coffee", "coffee")):
        assert max(sims[query], key=sims[query].__getitem__) == scene, (query, sims[query])
    # the scene with two people is closer to "people" than the portraits of one person are
    assert sims["people"]["two people"] > max(sims["people"]["astronaut"], sims["people"]["camera"])


def test_images_single_and_several(client: httpx.Client, media: dict[str, Path], model_id: str) -> None:
    cat = upload(client, media["cat_jpg"], "image").json()["id"]
    rocket = upload(client, media["rocket_png"], "image").json()["id"]
    one = embed(client, cat, model_id).json()
    assert times(one) == [("0.0", "0.0")] and one["chunk_responses"][0]["frame_count"] == 1
    both = embed(client, [cat, rocket], model_id).json()
    assert len(both["chunk_responses"]) == 1 and both["chunk_responses"][0]["frame_count"] == 2
    (cat_text,) = _text(client, model_id, ["a cat"])
    rocket_only = embed(client, rocket, model_id).json()["chunk_responses"][0]["embeddings"]
    assert _cos(cat_text, one["chunk_responses"][0]["embeddings"]) > _cos(cat_text, rocket_only)
    for fid in (cat, rocket):
        client.delete(f"/v1/files/{fid}")


def _sse(client: httpx.Client, payload: dict) -> list[object]:  # type: ignore[type-arg]
    events: list[object] = []
    with client.stream("POST", "/v1/generate_video_embeddings", json=payload) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_sse_stream_with_usage(client: httpx.Client, clip35: str, model_id: str) -> None:
    payload = {
        "id": clip35,
        "model": model_id,
        "stream": True,
        "chunk_duration": 10,
        "stream_options": {"include_usage": True},
    }
    events = _sse(client, payload)
    assert events[-1] == "[DONE]"
    chunks, final = events[:-2], events[-2]
    assert [e["chunk_responses"][0]["start_time"] for e in chunks] == ["0.0", "10.0", "20.0", "30.0"]  # type: ignore[index]
    assert all(e["usage"]["total_chunks_processed"] == i + 1 for i, e in enumerate(chunks))  # type: ignore[index]
    assert chunks[1]["media_info"] == {"type": "offset", "start_offset": 10, "end_offset": 20}  # type: ignore[index]
    assert final["media_info"] is None and final["usage"]["total_chunks_processed"] == 4  # type: ignore[index]
    plain = _sse(client, {**payload, "stream_options": None})
    assert len(plain) == 5 and all(e["usage"] is None for e in plain[:-1])  # type: ignore[index]


def test_bad_requests(client: httpx.Client, clip35: str, model_id: str, media: dict[str, Path]) -> None:
    def expect(r: httpx.Response, status: int, code: str) -> None:
        assert r.status_code == status, r.text
        assert r.json()["code"] == code

    expect(embed(client, str(uuid.uuid4()), model_id), 400, "BadParameter")
    expect(embed(client, "not-a-uuid", model_id), 422, "InvalidParameters")
    expect(client.post("/v1/generate_video_embeddings", json={"id": clip35}), 422, "InvalidParameters")
    expect(embed(client, clip35, "no-such-model"), 400, "BadParameters")
    expect(
        embed(client, clip35, model_id, chunk_duration=10, chunk_overlap_duration=10), 400, "BadParameters"
    )
    expect(embed(client, clip35, model_id, chunk_duration=10, unknown_field=1), 422, "InvalidParameters")
    image = upload(client, media["cat_jpg"], "image").json()["id"]
    expect(embed(client, [clip35, image], model_id), 400, "BadParameters")
    client.delete(f"/v1/files/{image}")


def _samples(client: httpx.Client) -> dict[str, float]:
    return {n: v for n, labels, v in Scrape(str(client.base_url).rstrip("/")).samples if not labels}


def test_metrics_follow_a_file_request(client: httpx.Client, clip35: str, model_id: str) -> None:
    before = _samples(client)
    r = embed(client, clip35, model_id, chunk_duration=10)
    assert r.status_code == 200, r.text
    after = _samples(client)

    def delta(name: str) -> float:
        return after[name] - before[name]

    assert delta("video_file_queries_processed") == 1
    assert after["video_file_queries_pending"] == 0
    assert delta("decode_latency_seconds_count") == 4 and delta("decode_latency_seconds_sum") > 0
    assert delta("chunk_latency_seconds_count") == 4 and delta("chunk_latency_seconds_sum") > 0
    assert 1 <= delta("vlm_latency_seconds_count") <= 4  # chunks may share model calls
    # The latest-value gauges describe this request: its chunks are inside its end-to-end time.
    e2e = after["e2e_latency_seconds_latest"]
    assert 0 < after["vlm_pipeline_latency_seconds_latest"] <= e2e < 60
    assert 0 < after["chunk_latency_seconds_latest"] <= e2e
    assert 0 < after["decode_latency_seconds_latest"] < e2e  # prefetched: it may exceed a chunk's latency
    assert 0 < after["avg_chunk_latency_seconds"] < 60
    assert 0 < after["vlm_latency_seconds_latest"] <= e2e


def test_every_spec_metric_is_exported_at_both_paths(client: httpx.Client) -> None:
    for path in ("/v1/metrics", "/metrics"):
        r = client.get(path)
        assert r.status_code == 200
        # The Prometheus text exposition format (its version parameter is the client library's).
        media_type, *params = [p.strip() for p in r.headers["content-type"].split(";")]
        assert media_type == "text/plain" and "charset=utf-8" in params
        assert any(p.startswith("version=") for p in params)
        missing = [n for n in SPEC_METRICS if n not in exported_families(r.text)]
        assert not missing, f"{path} lacks {missing}"
