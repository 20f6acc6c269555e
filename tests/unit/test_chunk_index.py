"""The chunk index on its own: cosine ranking, dedup by key, collections kept apart, a restart keeps the
entries, removing an owner removes its rows and thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtvi.core.index.chunks import ChunkIndex, IndexedChunk, SearchFilter


def chunk(owner: str, i: int, vector: np.ndarray, *, live: bool = False, thumb: bool = True) -> IndexedChunk:
    return IndexedChunk(
        owner_id=owner,
        key=f"{i}",
        live=live,
        source=f"{owner}.mp4",
        chunk_idx=i,
        start_s=10.0 * i,
        end_s=10.0 * i + 10,
        abs_start=None,
        abs_end=None,
        start_time=str(10.0 * i),
        end_time=str(10.0 * i + 10),
        vector=vector.astype(np.float32),
        thumbnail_jpeg=b"\xff\xd8jpeg" if thumb else None,
    )


def test_ranking_dedup_collections_restart_and_removal(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    index = ChunkIndex(tmp_path, "model-a", 8)
    index.upsert([chunk("a", i, vectors[i]) for i in range(10)])
    index.upsert([chunk("b", i, vectors[10 + i], live=True) for i in range(10)])
    hits = index.search(vectors[3] * 5, 3)  # scale does not matter: cosine
    assert hits[0].owner_id == "a" and hits[0].chunk_idx == 3 and abs(hits[0].score - 1) < 1e-5
    expected = np.argsort(-(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ vectors[3])[:3]
    assert [(h.owner_id, h.chunk_idx) for h in hits] == [("a" if i < 10 else "b", i % 10) for i in expected]
    # The same key again replaces the entry.
    index.upsert([chunk("a", 3, vectors[15])])
    assert len(index) == 20
    assert {(h.owner_id, h.chunk_idx) for h in index.search(vectors[15], 2)} == {("a", 3), ("b", 5)}
    assert ("a", 3) not in {(h.owner_id, h.chunk_idx) for h in index.search(vectors[3], 1)}
    assert {h.owner_id for h in index.search(vectors[3], 20, SearchFilter(stream_ids=["b"]))} == {"b"}
    assert index.search(vectors[3], 5, SearchFilter(offset_from=25, offset_to=35))[0].chunk_idx in (2, 3)
    thumb = index.thumbnail(hits[0].entry_id)
    assert thumb is not None and thumb.read_bytes() == b"\xff\xd8jpeg"
    index.close()

    # Another model's collection in the same directory sees none of it; a reopen sees all of it.
    other = ChunkIndex(tmp_path, "model-b", 8)
    assert len(other) == 0 and other.search(vectors[3], 5) == []
    other.close()
    again = ChunkIndex(tmp_path, "model-a", 8)
    assert len(again) == 20
    assert again.remove_owner("a") == 10
    assert len(again) == 10 and {h.owner_id for h in again.search(vectors[3], 20)} == {"b"}
    # Removal moves vectors within the matrix: each remaining one is still found as itself.
    for i in range(10):
        best = again.search(vectors[10 + i], 1)[0]
        assert (best.owner_id, best.chunk_idx) == ("b", i) and abs(best.score - 1) < 1e-5
    assert again.thumbnail(hits[0].entry_id) is None and not thumb.exists()
    again.close()
