"""The Milvus index's own choices, on a real Milvus server (Milvus Lite's gRPC server) and a real S3
server (moto): thumbnails are objects in the asset store's bucket and an entry holds only a reference to
its own; entries written with the JPEG inside are still served; an HNSW or IVF_FLAT collection answers
with the exact top 10, as FLAT did."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from rtvi.core.assets.s3blobs import S3Blobs
from rtvi.core.index import open_chunk_index
from rtvi.core.index.base import owner_key
from rtvi.core.index.milvus import MilvusChunkIndex
from rtvi.core.index.thumbnails import LocalThumbnails
from rtvi.settings import IndexSettings
from tests.milvus_server import MilvusServer
from tests.remote_servers import S3_ENV, MotoS3
from tests.unit.test_chunk_index import chunk

# Owners of this module only: the Milvus server is shared by the session, and removing an owner removes
# its entries from every rtvi collection on it.
CAM, FILE, OWNER = (f"milvus-test-{name}-{uuid.uuid4().hex[:6]}" for name in ("cam", "file", "owner"))
BUCKET = "rtvi-index"
PREFIX = "site-b/assets"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8  # what the writer stores: JPEG bytes


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture()
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)


def _objects(s3: MotoS3) -> list[str]:
    return sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _model() -> str:
    return f"model-{uuid.uuid4().hex[:8]}"  # the Milvus server is shared by the session


@pytest.mark.usefixtures("s3_env")
def test_milvus_entries_hold_a_reference_and_the_thumbnails_are_objects_in_the_asset_bucket(
    tmp_path: Path, milvus: MilvusServer, s3: MotoS3
) -> None:
    settings = IndexSettings(
        search_index=True,
        milvus_uri=milvus.uri,
        milvus_token="",
        asset_store=f"s3://{BUCKET}/{PREFIX}",
        s3_endpoint_url=s3.endpoint,
    )
    rng = np.random.default_rng(5)
    index = open_chunk_index(tmp_path, _model(), 8, settings)
    assert isinstance(index, MilvusChunkIndex)
    index.upsert(
        [replace(chunk(CAM, i, rng.standard_normal(8), live=True), thumbnail_jpeg=JPEG) for i in range(4)]
    )
    index.upsert([replace(chunk(FILE, i, rng.standard_normal(8)), thumbnail_jpeg=JPEG) for i in range(2)])
    cam = [h.entry_id for h in index.latest(CAM, 4)]
    files = [h.entry_id for h in index.latest(FILE, 2)]

    def key(owner: str, entry: str) -> str:
        return f"{PREFIX}/_thumbnails/{owner_key(owner)}/{entry[:2]}/{entry}.jpg"

    assert _objects(s3) == sorted([key(CAM, e) for e in cam] + [key(FILE, e) for e in files])
    # The entry, read straight from Milvus: a reference to that object, not the JPEG.
    raw = MilvusClient(uri=milvus.uri).get(
        index.name, ids=[cam[0]], output_fields=["thumbnail", "has_thumbnail"]
    )
    held = raw[0]["thumbnail"]
    assert raw[0]["has_thumbnail"] and held == f"ref:{owner_key(CAM)}/{cam[0][:2]}/{cam[0]}.jpg"
    assert base64.b64encode(JPEG[:30]).decode()[:20] not in held and len(held) < 100
    # Served through the index (any replica: the object is in the shared bucket).
    assert index.thumbnail(cam[0]) == JPEG
    assert index.search(rng.standard_normal(8).astype(np.float32), 10)[0].has_thumbnail
    # The asset store's sweep of orphaned objects leaves the thumbnails alone (they are no asset).
    blobs = S3Blobs(f"s3://{BUCKET}/{PREFIX}", s3.endpoint, tmp_path / "cache", 2**20, lambda _: False)
    assert blobs.sweep(known_ids=set(), grace_s=0) == 0 and len(_objects(s3)) == 6

    # Retention takes the entries, then their objects; removing an owner takes all of its objects.
    assert index.expire_live(1e12, 2) == 2
    gone = [e for e in cam if e not in {h.entry_id for h in index.latest(CAM, 4)}]
    assert len(gone) == 2 and all(index.thumbnail(e) is None for e in gone)
    assert len(_objects(s3)) == 4 and not {key(CAM, e) for e in gone} & set(_objects(s3))
    assert index.remove_owner(CAM) == 2
    assert _objects(s3) == sorted(key(FILE, e) for e in files)
    assert index.remove_owner(FILE) == 2 and _objects(s3) == []
    index.close()


def test_milvus_without_an_s3_asset_store_keeps_thumbnails_on_local_disk(
    tmp_path: Path, milvus: MilvusServer
) -> None:
    settings = IndexSettings(search_index=True, milvus_uri=milvus.uri, milvus_token="")
    index = open_chunk_index(tmp_path, _model(), 4, settings)
    assert isinstance(index, MilvusChunkIndex) and isinstance(index.thumbnails, LocalThumbnails)
    index.upsert([replace(chunk(OWNER, 0, np.ones(4)), thumbnail_jpeg=JPEG)])
    entry = index.latest(OWNER, 1)[0].entry_id
    assert (tmp_path / "thumbnails" / owner_key(OWNER) / entry[:2] / f"{entry}.jpg").read_bytes() == JPEG
    assert index.thumbnail(entry) == JPEG
    assert index.remove_owner(OWNER) == 1 and not list((tmp_path / "thumbnails").rglob("*.jpg"))
    index.close()


def test_milvus_collections_of_the_previous_release_are_still_served(
    tmp_path: Path, milvus: MilvusServer
) -> None:
    """A collection made with a FLAT index keeps it (searches use FLAT's parameters), and its entries that
    hold the JPEG itself (base64) serve it."""
    model = _model()
    thumbnails = LocalThumbnails(tmp_path / "thumbnails")
    old = MilvusChunkIndex(milvus.uri, model, 4, thumbnails, index_type="FLAT")
    old.upsert([chunk(OWNER, i, np.eye(4)[i]) for i in range(2)])
    entry = old.latest(OWNER, 1)[0].entry_id
    client = MilvusClient(uri=milvus.uri)
    (row,) = client.get(old.name, ids=[entry])
    client.upsert(old.name, [{**row, "thumbnail": base64.b64encode(JPEG).decode()}])  # as it was written
    old.close()

    again = MilvusChunkIndex(milvus.uri, model, 4, thumbnails)  # HNSW configured: for new collections
    assert again.index_type == "FLAT"
    assert again.thumbnail(entry) == JPEG
    assert [h.chunk_idx for h in again.search(np.eye(4, dtype=np.float32)[1], 2)] == [1, 0]
    assert again.expire_live(1e12, 10) == 0 and again.remove_owner(OWNER) == 2
    again.close()


@pytest.mark.parametrize("index_type", ["HNSW", "IVF_FLAT"])
def test_an_ann_collection_serves_the_exact_top_10(
    tmp_path: Path, milvus: MilvusServer, index_type: str
) -> None:
    """A few hundred vectors, flushed so that Milvus searches its sealed segment through the index (rows
    still in memory are searched exactly, index or not): the top 10 of each query, and their order, are
    numpy's exact top 10."""
    rng = np.random.default_rng(7)
    n, dim = 600, 64
    # Clustered, as embeddings are: 30 topics, each a direction with its chunks around it.
    centres = rng.standard_normal((30, dim))
    vectors = (centres[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32)
    settings = IndexSettings(
        search_index=True, milvus_uri=milvus.uri, milvus_token="", milvus_index=index_type
    )  # type: ignore[arg-type]
    index = open_chunk_index(tmp_path, _model(), dim, settings)
    assert isinstance(index, MilvusChunkIndex) and index.index_type == index_type
    for start in range(0, n, 200):
        index.upsert([chunk(OWNER, i, vectors[i], thumb=False) for i in range(start, start + 200)])
    client = MilvusClient(uri=milvus.uri)
    client.flush(index.name)
    described = client.describe_index(index.name, "vector")
    assert described["index_type"] == index_type and described["metric_type"] == "IP"
    assert int(described.get("indexed_rows", n)) == n

    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = (vectors[rng.integers(0, n, 25)] + 0.6 * rng.standard_normal((25, dim))).astype(np.float32)
    for q in queries:
        exact = np.argsort(-(unit @ (q / np.linalg.norm(q))), kind="stable")[:10]
        assert [h.chunk_idx for h in index.search(q, 10)] == list(exact)
    if index_type == "IVF_FLAT":  # the index is in use: with one cell of 128, most queries miss some
        narrow = client.search(
            index.name,
            queries.tolist(),
            limit=10,
            search_params={"metric_type": "IP", "params": {"nprobe": 1}},
        )
        exact_ids = [{h.entry_id for h in index.search(q, 10)} for q in queries]
        missed = sum(
            {h["entry_id"] for h in found} != ids for found, ids in zip(narrow, exact_ids, strict=True)
        )
        assert missed > len(queries) // 2
    index.close()
