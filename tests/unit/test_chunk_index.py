"""The chunk index on its own, on SQLite (the default) and on a real Milvus server (MILVUS_URI): cosine
ranking, dedup by key, collections kept apart, a reopen keeps the entries, removing an owner removes its
rows and thumbnails, filters hold against hostile owner ids, timelines come in time order."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rtvi.core.index import open_chunk_index
from rtvi.core.index.base import ChunkIndex, IndexedChunk, SearchFilter, owner_key
from rtvi.core.index.sqlite import SqliteChunkIndex
from rtvi.settings import IndexSettings

OpenIndex = Callable[[str, int], ChunkIndex]


@pytest.fixture(params=["sqlite", "milvus"])
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenIndex]:
    """Opens one collection (model id, dimension) of a fresh index on either backend."""
    uri = request.getfixturevalue("milvus").uri if request.param == "milvus" else ""
    run = uuid.uuid4().hex[:8]  # the Milvus server is shared by the session: collections of this test
    index = IndexSettings(search_index=True, milvus_uri=uri, milvus_token="")

    def open_(model: str, dim: int) -> ChunkIndex:
        return open_chunk_index(tmp_path, f"{model}-{run}", dim, index)

    yield open_


def chunk(owner: str, i: int, vector: np.ndarray, *, live: bool = False, thumb: bool = True) -> IndexedChunk:
    return IndexedChunk(
        owner_id=owner,
        key=f"{i}",
        live=live,
        source=f"{owner}.mp4",
        chunk_idx=i,
        start_s=10.0 * i,
        end_s=10.0 * i + 10,
        abs_start=1e9 + 10 * i if live else None,
        abs_end=1e9 + 10 * i + 10 if live else None,
        start_time=str(10.0 * i),
        end_time=str(10.0 * i + 10),
        vector=vector.astype(np.float32),
        thumbnail_jpeg=b"\xff\xd8jpeg-" + f"{owner}-{i}".encode() if thumb else None,
    )


def test_ranking_dedup_collections_reopen_and_removal(open_index: OpenIndex) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    index = open_index("model-a", 8)
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
    assert index.search(vectors[3], 1)[0].score < 0.99  # the old vector is gone
    assert {h.owner_id for h in index.search(vectors[3], 20, SearchFilter(stream_ids=["b"]))} == {"b"}
    assert {h.owner_id for h in index.search(vectors[3], 20, SearchFilter(asset_ids=["b"]))} == set()
    assert index.search(vectors[3], 5, SearchFilter(offset_from=25, offset_to=35))[0].chunk_idx in (2, 3)
    window = index.search(vectors[3], 20, SearchFilter(abs_from=1e9 + 25, abs_to=1e9 + 45))
    assert {(h.owner_id, h.chunk_idx) for h in window} == {("b", 2), ("b", 3), ("b", 4)}
    assert index.thumbnail(hits[0].entry_id) == b"\xff\xd8jpeg-a-3"
    # A timeline: the latest chunks of one owner, in time order.
    assert [h.chunk_idx for h in index.latest("b", 4)] == [6, 7, 8, 9]
    index.close()

    # Another model's collection sees none of it; a reopen sees all of it.
    other = open_index("model-b", 8)
    assert len(other) == 0 and other.search(vectors[3], 5) == []
    other.close()
    again = open_index("model-a", 8)
    assert len(again) == 20
    assert again.remove_owner("a") == 10
    assert len(again) == 10 and {h.owner_id for h in again.search(vectors[3], 20)} == {"b"}
    # Each remaining vector is still found as itself (the SQLite index moves them within its matrix).
    for i in range(10):
        best = again.search(vectors[10 + i], 1)[0]
        assert (best.owner_id, best.chunk_idx) == ("b", i) and abs(best.score - 1) < 1e-5
    assert again.thumbnail(hits[0].entry_id) is None
    again.close()


def test_hostile_owner_ids_select_only_themselves(open_index: OpenIndex) -> None:
    """Stream ids are client-chosen: one made to look like a filter must match nothing but itself."""
    rng = np.random.default_rng(1)
    hostile = ['x" or live == true or owner_id == "', "x') OR 1=1 --", 'back\\slash "quote"', "é\nü"]
    index = open_index("model-h", 4)
    index.upsert([chunk("plain", 0, rng.standard_normal(4), live=True)])
    index.upsert([chunk(owner, 0, rng.standard_normal(4), live=True) for owner in hostile])
    for owner in hostile:
        hits = index.search(rng.standard_normal(4).astype(np.float32), 10, SearchFilter(stream_ids=[owner]))
        assert [h.owner_id for h in hits] == [owner]
        assert [h.owner_id for h in index.latest(owner, 10)] == [owner]
    assert index.remove_owner(hostile[0]) == 1
    assert len(index) == len(hostile)
    index.close()


def test_sqlite_removal_deletes_thumbnail_files(tmp_path: Path) -> None:
    index = SqliteChunkIndex(tmp_path, "model-t", 4)
    index.upsert([chunk("a", 0, np.ones(4))])
    files = list((tmp_path / "thumbnails").rglob("*.jpg"))
    # thumbnails/<owner digest>/<first two hex digits of the entry>/<entry>.jpg: no folder of millions.
    entry = index.latest("a", 1)[0].entry_id
    assert files == [tmp_path / "thumbnails" / owner_key("a") / entry[:2] / f"{entry}.jpg"]
    index.remove_owner("a")
    assert not any(f.exists() for f in files)
    index.close()


def test_thumbnails_of_an_earlier_layout_are_fanned_out_on_open(tmp_path: Path) -> None:
    """A folder an earlier release wrote (thumbnails/<owner digest>/<entry>.jpg) is moved into the
    fanned-out layout once, and its thumbnails are still served and removed."""
    index = SqliteChunkIndex(tmp_path, "model-l", 4)
    index.upsert([chunk("a", i, np.ones(4)) for i in range(3)])
    entries = [h.entry_id for h in index.latest("a", 3)]
    index.close()
    root = tmp_path / "thumbnails"
    for f in list(root.rglob("*.jpg")):  # as the earlier release laid them out
        f.rename(root / owner_key("a") / f.name)
        f.parent.rmdir()
    (root / "LAYOUT").unlink()
    reopened = SqliteChunkIndex(tmp_path, "model-l", 4)
    assert sorted(root.rglob("*.jpg")) == sorted(root / owner_key("a") / e[:2] / f"{e}.jpg" for e in entries)
    assert reopened.thumbnail(entries[0]) == b"\xff\xd8jpeg-a-0"
    assert reopened.remove_owner("a") == 3 and not list(root.rglob("*.jpg"))
    reopened.close()


def test_retention_removes_the_oldest_live_chunks_only(open_index: OpenIndex) -> None:
    """expire_live: live chunks that started before the cutoff go, in bounded batches, with their
    thumbnails; files' chunks stay; a search never returns a removed entry; a reopen keeps the bound."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    index = open_index("model-r", 8)
    index.upsert([chunk("file", i, vectors[i]) for i in range(10)])  # media times 0..90 s: not live
    index.upsert([chunk("cam", i, vectors[10 + i], live=True) for i in range(20)])  # start_s 0..190
    gone = [h.entry_id for h in index.latest("cam", 20)[:12]]
    before = index.footprint()
    assert before.entries == 30

    assert index.expire_live(120.0, 5) == 5  # bounded: 12 are older than 120 s
    assert index.expire_live(120.0, 100) == 7
    assert index.expire_live(120.0, 100) == 0
    assert [h.chunk_idx for h in index.latest("cam", 20)] == list(range(12, 20))
    assert len(index.latest("file", 20)) == 10  # a file's chunks follow their asset, not the clock
    found = {h.entry_id for h in index.search(vectors[10], 30)}
    assert found.isdisjoint(gone) and len(found) == 18
    assert all(index.thumbnail(e) is None for e in gone)
    assert index.footprint().entries == 18
    index.close()

    again = open_index("model-r", 8)
    assert len(again) == 18 and again.expire_live(120.0, 100) == 0
    again.close()


def test_per_stream_retention_and_thumbnails_that_go_before_their_entries(open_index: OpenIndex) -> None:
    """expire_live for some streams only, or all but some (RTVI_INDEX_RETENTION_BY_STREAM); and
    drop_thumbnails: old live chunks lose their thumbnail but stay searchable, files keep theirs."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    index = open_index("model-s", 8)
    index.upsert([chunk("file", i, vectors[i]) for i in range(10)])
    index.upsert([chunk("cam", i, vectors[10 + i], live=True) for i in range(10)])  # start_s 0..90
    index.upsert([chunk("pinned", i, vectors[20 + i], live=True) for i in range(10)])

    assert index.expire_live(50.0, 100, excluding=["pinned"]) == 5  # cam 0-4
    assert index.expire_live(50.0, 100, excluding=["pinned"]) == 0
    assert index.expire_live(30.0, 100, owners=["pinned"]) == 3  # pinned 0-2
    assert index.expire_live(70.0, 1, excluding=["pinned"]) == 1  # cam 5 (the walk goes on from 50 s)
    assert index.expire_live(70.0, 100, excluding=["pinned"]) == 1  # cam 6
    index.upsert([chunk("cam", i, vectors[10 + i], live=True) for i in (5, 6)])  # back, for the rest
    assert [h.chunk_idx for h in index.latest("cam", 20)] == list(range(5, 10))
    assert [h.chunk_idx for h in index.latest("pinned", 20)] == list(range(3, 10))

    old = {h.entry_id for h in index.latest("cam", 20)[:2] + index.latest("pinned", 20)[:4]}  # < 70 s
    assert index.drop_thumbnails(70.0, 4) == 4  # bounded
    assert index.drop_thumbnails(70.0, 100) == 2
    assert index.drop_thumbnails(70.0, 100) == 0
    for owner in ("cam", "pinned"):
        for hit in index.latest(owner, 20):
            assert hit.has_thumbnail == (hit.entry_id not in old)
            assert (index.thumbnail(hit.entry_id) is None) == (hit.entry_id in old)
    assert all(h.has_thumbnail for h in index.latest("file", 20))  # files keep theirs
    best = index.search(vectors[16], 1)[0]  # cam 6 (start 60 s): still found, now without a thumbnail
    assert (best.owner_id, best.chunk_idx, best.has_thumbnail) == ("cam", 6, False)
    index.close()


def test_sqlite_footprint_counts_rows_and_thumbnails_and_the_cap_takes_the_oldest(tmp_path: Path) -> None:
    index = SqliteChunkIndex(tmp_path, "model-f", 64)
    rng = np.random.default_rng(3)
    empty = index.footprint()
    assert empty.entries == 0 and empty.disk_bytes is not None
    big = [
        replace(chunk("cam", i, rng.standard_normal(64), live=True), thumbnail_jpeg=bytes(20_000))
        for i in range(10)
    ]
    index.upsert(big)
    full = index.footprint()
    assert full.disk_bytes is not None and full.disk_bytes >= empty.disk_bytes + 10 * 20_000
    assert full.memory_bytes >= 10 * 64 * 4
    # Replacing an entry counts its new thumbnail, not both.
    index.upsert([replace(big[0], thumbnail_jpeg=bytes(5_000))])
    replaced = index.footprint()
    assert replaced.disk_bytes is not None and replaced.disk_bytes < full.disk_bytes - 10_000
    # Without an age, the oldest go first.
    assert index.expire_live(None, 3) == 3
    assert [h.chunk_idx for h in index.latest("cam", 10)] == list(range(3, 10))
    after = index.footprint()
    assert after.disk_bytes is not None and after.disk_bytes <= replaced.disk_bytes - 2 * 20_000
    thumbnails = list((tmp_path / "thumbnails").rglob("*.jpg"))
    assert len(thumbnails) == 7
    index.close()
    # A reopen counts the same thumbnails (from the rows, without walking the folder).
    reopened = SqliteChunkIndex(tmp_path, "model-f", 64)
    assert reopened.footprint().disk_bytes == after.disk_bytes
    reopened.close()


def test_an_index_written_before_thumbnail_sizes_were_kept_counts_its_files(tmp_path: Path) -> None:
    """The thumbnail_bytes column is added on open and filled from the files, once."""
    index = SqliteChunkIndex(tmp_path, "model-m", 4)
    index.upsert(
        [replace(chunk("cam", i, np.ones(4), live=True), thumbnail_jpeg=bytes(3_000)) for i in range(3)]
    )
    with_sizes = index.footprint().disk_bytes
    index.close()
    db = sqlite3.connect(tmp_path / "index.db")
    db.execute("DROP INDEX chunks_live_age")
    db.execute("ALTER TABLE chunks DROP COLUMN thumbnail_bytes")  # as the previous release wrote it
    db.commit()
    db.close()
    reopened = SqliteChunkIndex(tmp_path, "model-m", 4)
    assert reopened.footprint().disk_bytes == with_sizes
    assert reopened.expire_live(None, 1) == 1 and len(list((tmp_path / "thumbnails").rglob("*.jpg"))) == 2
    reopened.close()


def test_sqlite_memory_stops_growing_once_retention_holds_the_count(tmp_path: Path) -> None:
    """Removed rows free matrix slots that new chunks reuse: a steady count keeps a steady allocation."""
    index = SqliteChunkIndex(tmp_path, "model-s", 4)
    ones = np.ones(4)
    index.upsert([chunk("cam", i, ones, live=True, thumb=False) for i in range(1500)])
    allocated = index.footprint().memory_bytes
    for turn in range(1, 6):
        assert index.expire_live(None, 500) == 500
        index.upsert([chunk("cam", 1500 * turn + i, ones, live=True, thumb=False) for i in range(500)])
        assert index.footprint().entries == 1500
        assert index.footprint().memory_bytes == allocated
    index.close()


def test_filters_read_only_the_rows_they_select(tmp_path: Path) -> None:
    """An owner filter goes through the owner index and a "since" window through the end-time index, not
    a scan of every live row (rows carry their vectors: at millions of chunks a scan reads gigabytes)."""
    from rtvi.core.index.sqlite import filter_clause

    SqliteChunkIndex(tmp_path, "model-plan", 4).close()
    db = sqlite3.connect(tmp_path / "index.db")
    for where, index in (
        (SearchFilter(stream_ids=["cam"]), "chunks_owner_age"),
        (SearchFilter(asset_ids=["a", "b"]), "chunks_owner_age"),
        (SearchFilter(abs_from=1e9), "chunks_abs_end"),
    ):
        sql, args = filter_clause(where)
        plan = db.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM chunks WHERE collection = ? AND {sql}", ["c", *args]
        ).fetchall()
        assert f"USING INDEX {index} " in plan[0][3], (where, plan)


def test_retention_reads_only_what_it_removes(tmp_path: Path) -> None:
    """Expiry reads the oldest rows through an index, in time order (no sort of every row): the age index
    for all streams, the owner index for one stream's own limit; old thumbnails through the partial
    index of live rows that still have one."""
    from rtvi.core.index.sqlite import expiry_query, old_thumbnails_query

    SqliteChunkIndex(tmp_path, "model-plan", 4).close()
    db = sqlite3.connect(tmp_path / "index.db")
    for (before, owners, excluding), index in (
        ((1e9, None, ()), "chunks_live_age"),
        ((None, None, ["pinned"]), "chunks_live_age"),
        ((1e9, ["cam"], ()), "chunks_owner_age"),
    ):
        sql, args = expiry_query("c", before, 10, owners, excluding)
        plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert f"USING INDEX {index} " in plan and "TEMP B-TREE" not in plan, plan
    # All but the kept streams: the walk starts where the last one ended (the kept rows stay behind it).
    sql, args = expiry_query("c", 1e9, 10, None, ["kept"], since=5e8)
    plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    assert "chunks_live_age (collection=? AND live=? AND start_s>? AND start_s<?)" in plan, plan
    # Removing an owner (a deleted file or stream) seeks each collection's rows of it, no table scan.
    from rtvi.core.index.sqlite import _COLLECTIONS

    where = f"collection IN ({_COLLECTIONS}) AND owner_id = ?"
    plan = " | ".join(
        row[3] for row in db.execute(f"EXPLAIN QUERY PLAN DELETE FROM chunks WHERE {where}", ("x",))
    )
    assert (
        "USING INDEX chunks_owner_age (collection=? AND owner_id=?)" in plan and "SCAN chunks" not in plan
    ), plan
    sql, args = old_thumbnails_query("c", 1e9, 10)
    plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    assert "USING INDEX chunks_thumbnail_age " in plan and "TEMP B-TREE" not in plan, plan
