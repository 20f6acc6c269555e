"""The `rtvi` client commands, run as a user runs them (a child process) against a running service with
an API key: upload shows progress and prints the id, embed and search find the moment, --json parses,
reindex re-embeds every stored file, streams add|ls|rm manage a real RTSP camera, and every failure is one
`error:` line with exit status 1, never a traceback. `rtvi caption` is tested in test_vlm.py."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_search import wait_indexed
from tests.rtsp_server import RtspServer, gst_available
from tests.servers import RTVI, RtviServer, free_port

KEY = "cli-k3y"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtviServer]:
    srv = RtviServer(tmp_path_factory.mktemp("cli") / "assets", env={"RTVI_API_KEY": KEY}).start()
    yield srv
    srv.stop()


def rtvi(
    *args: str | Path, url: str, key: str | None = KEY, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`rtvi ARGS` with the service's URL and key in the environment (as the docs recommend)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTVI_")}
    env["RTVI_URL"] = url
    if key is not None:
        env["RTVI_API_KEY"] = key
    return subprocess.run(
        [str(RTVI), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """A failure the user caused: exit 1, one `error: ...` line on stderr, nothing on stdout."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def scenes(keyed: RtviServer, media: dict[str, Path]) -> dict[str, Any]:
    """three_scenes.mp4 embedded in 10 s chunks through the CLI (--json)."""
    return as_json(rtvi("embed", media["three_scenes"], "--chunk", "10", "--json", url=keyed.url))


@pytest.fixture(scope="module")
def api(keyed: RtviServer) -> Iterator[httpx.Client]:
    """Plain HTTP to the keyed service, for what the tests check behind the CLI's back."""
    with httpx.Client(base_url=keyed.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


def test_upload_shows_progress_and_prints_the_id(
    keyed: RtviServer, api: httpx.Client, media: dict[str, Path]
) -> None:
    clip = media["cat_rocket"]
    result = rtvi("upload", clip, url=keyed.url)
    file_id, name, size, unit = ok(result).split()
    assert (name, int(size), unit) == ("cat_rocket.mp4", clip.stat().st_size, "bytes")
    assert "uploading cat_rocket.mp4" in result.stderr and "100%" in result.stderr  # the bar's last frame
    listed = api.get("/v1/files", params={"purpose": "vision"})
    assert {"id": file_id, "filename": "cat_rocket.mp4"}.items() <= {
        f["id"]: f for f in listed.json()["data"]
    }[file_id].items()
    record = as_json(rtvi("upload", media["cat_jpg"], "--json", url=keyed.url))
    assert record["media_type"] == "image" and record["filename"] == "cat.jpg"  # told by the extension


@pytest.fixture(scope="module")
def model_dim(api: httpx.Client, scenes: dict[str, Any]) -> int:
    vector = api.post(
        "/v1/generate_text_embeddings", json={"text_input": ["a cat"], "model": scenes["model"]}
    )
    assert vector.status_code == 200, vector.text
    return len(vector.json()["data"][0]["embeddings"])


def test_embed_json_lists_every_chunk(scenes: dict[str, Any], model_dim: int) -> None:
    assert scenes["source"] == "three_scenes.mp4" and scenes["model"]
    chunks = scenes["chunks"]
    assert [(c["chunk_idx"], c["start_time"], c["end_time"]) for c in chunks] == [
        (0, "0.0", "10.0"),
        (1, "10.0", "20.0"),
        (2, "20.0", "30.0"),
    ]
    assert all(len(c["embeddings"]) == model_dim for c in chunks)


def test_search_prints_the_moment(keyed: RtviServer, api: httpx.Client, scenes: dict[str, Any]) -> None:
    wait_indexed(api, scenes["id"], 3)
    hits = as_json(rtvi("search", "a rocket", "--top", "2", "--asset", scenes["id"], "--json", url=keyed.url))
    assert len(hits) == 2
    assert (hits[0]["asset_id"], hits[0]["start_time"], hits[0]["end_time"]) == (scenes["id"], "10.0", "20.0")
    assert hits[0]["score"] >= hits[1]["score"]
    # The table a person reads: rank 1 is the coffee's moment in the file, by name.
    table = ok(rtvi("search", "a cup of coffee", "--top", "3", url=keyed.url))
    first = next(line for line in table.splitlines() if line.strip("│ ").startswith("1 "))
    assert "three_scenes.mp4" in first and "20.0-30.0" in first, table


def test_reindex_re_embeds_every_stored_file(
    keyed: RtviServer, api: httpx.Client, scenes: dict[str, Any]
) -> None:
    written_before = index_writes(api)
    result = as_json(rtvi("reindex", "--chunk", "10", "--json", url=keyed.url))
    files = {f["id"]: f for f in result["files"]}
    assert result["failed"] == [] and result["model"] == scenes["model"]
    assert files[scenes["id"]]["chunks"] == 3
    assert all(f["chunks"] == 1 for f in files.values() if f["media_type"] == "image")
    # Re-embedding the same file with the same chunking does not duplicate its hits (once the index has
    # written every re-embedded chunk: its writes are asynchronous).
    reembedded = sum(f["chunks"] for f in result["files"])
    deadline = time.monotonic() + 20
    while index_writes(api) < written_before + reembedded:
        assert time.monotonic() < deadline, "the index did not write the re-embedded chunks"
        time.sleep(0.1)
    hits = as_json(rtvi("search", "a cat", "--top", "100", "--asset", scenes["id"], "--json", url=keyed.url))
    assert sorted(h["chunk_idx"] for h in hits) == [0, 1, 2]


def index_writes(api: httpx.Client) -> float:
    """Chunks the search index has written so far (its counter on /v1/metrics)."""
    families = text_string_to_metric_families(api.get("/v1/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == "rtvi_index_chunks_written_total")


def test_failures_are_one_line_without_a_traceback(keyed: RtviServer, tmp_path: Path) -> None:
    assert "Unauthorized" in failed(rtvi("search", "a cat", url=keyed.url, key=None))
    assert "Unauthorized" in failed(rtvi("search", "a cat", url=keyed.url, key="wrong"))
    empty = failed(rtvi("search", "", url=keyed.url))
    assert "query" in empty.lower()
    nobody = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach" in failed(rtvi("streams", "ls", url=nobody))
    # A missing file is a usage error before anything is sent.
    missing = rtvi("upload", tmp_path / "nope.mp4", url=keyed.url)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    # The key never shows in what the CLI prints.
    noisy = rtvi("streams", "rm", "no-such-stream", url=keyed.url)
    assert noisy.returncode == 1 and KEY not in noisy.stderr + noisy.stdout


@pytest.mark.skipif(not gst_available(), reason="needs Debian's gst-rtsp-server (make rtsp-deps)")
def test_streams_add_ls_rm(keyed: RtviServer, tmp_path: Path) -> None:
    camera = RtspServer(free_port(), tmp_path).start()
    try:
        added = as_json(rtvi("streams", "add", camera.url, "--name", "dock 7", "--json", url=keyed.url))
        listed = as_json(rtvi("streams", "ls", "--json", url=keyed.url))
        (mine,) = [s for s in listed if s["id"] == added["id"]]
        assert mine["liveStreamUrl"] == camera.url and mine["description"] == "dock 7"
        assert added["id"] in ok(rtvi("streams", "ls", url=keyed.url))
        assert ok(rtvi("streams", "rm", added["id"], url=keyed.url)).strip() == f"removed {added['id']}"
        assert all(s["id"] != added["id"] for s in as_json(rtvi("streams", "ls", "--json", url=keyed.url)))
    finally:
        camera.kill()
