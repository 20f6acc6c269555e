"""The index writer's retention (core/index/writer.py): the size cap, applied by the writer thread
between writes, keeps a real SQLite index under RTVI_INDEX_MAX_GB's bytes, oldest live chunks first,
and never touches a file's chunks. (The age limit runs end to end in tests/e2e/test_search.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from rtvi.core.assets.store import AssetStore, NewFile
from rtvi.core.index.base import IndexedChunk
from rtvi.core.index.sqlite import SqliteChunkIndex
from rtvi.core.index.writer import ChunkIndexer, PendingChunk, Retention, thumbnail_jpeg
from rtvi.core.indexing import SearchIndexing
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import Settings


def _chunk(owner: str, i: int, live: bool) -> IndexedChunk:
    return IndexedChunk(
        owner_id=owner,
        key=str(i),
        live=live,
        source=owner,
        chunk_idx=i,
        start_s=1e9 + i if live else float(i),
        end_s=1e9 + i + 1 if live else float(i + 1),
        abs_start=None,
        abs_end=None,
        start_time=str(i),
        end_time=str(i + 1),
        vector=np.random.default_rng(i).standard_normal(16).astype(np.float32),
    )


def test_the_size_cap_keeps_the_newest_live_chunks(tmp_path: Path) -> None:
    index = SqliteChunkIndex(tmp_path, "model-cap", 16)
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)  # noise: big JPEGs
    metrics = Metrics()
    # Room for a handful of thumbnails besides the database's own pages.
    cap = index.footprint().disk_bytes or 0
    writer = ChunkIndexer(index, metrics, retention=Retention(max_disk_bytes=cap + 200_000, interval_s=0.05))
    writer.start()
    try:
        for i in range(5):
            writer.offer(PendingChunk(_chunk("file", i, live=False)))  # rows only
        for i in range(40):
            writer.offer(PendingChunk(_chunk("cam", i, live=True), frame))
            time.sleep(0.01)

        def expired() -> float | None:
            return metrics.registry.get_sample_value("rtvi_index_chunks_expired_total", {"reason": "size"})

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kept = [h.chunk_idx for h in index.latest("cam", 100)]
            # (the counter follows a removal: a sweep in progress may have removed and not yet counted)
            settled = kept and kept[-1] == 39 and expired() == 40 - len(kept)
            if settled and (index.footprint().disk_bytes or 0) <= cap + 200_000:
                break
            time.sleep(0.05)
        footprint = index.footprint()
        assert footprint.disk_bytes is not None and footprint.disk_bytes <= cap + 200_000
        assert kept and kept == list(range(40 - len(kept), 40)) and len(kept) < 40  # the newest, in a run
        assert len(index.latest("file", 100)) == 5  # files are never evicted by the cap
        assert expired() == 40 - len(kept)
        # Never more than the cap needs: without the last one removed, the index was over it.
        jpeg = len(thumbnail_jpeg(frame, None))
        assert footprint.disk_bytes + jpeg + 4 * 16 + 256 > cap + 200_000 or kept[0] == 0
    finally:
        writer.close()


def test_the_asset_storage_cap_counts_the_index_and_live_chunks_give_way_first(tmp_path: Path) -> None:
    """MAX_ASSET_STORAGE_SIZE_GB bounds the assets and the search index together: the index's writer keeps
    it within what the assets leave, and an upload that needs room takes it from the index's oldest live
    chunks before it evicts an asset. /v1/assets/stats shows the index's share."""
    from tests.media_factory import make_clip, textured_source
    from tests.unit.test_assets import _upload

    # ~375 KB: an upload needs the room of several thumbnails.
    clip = make_clip(
        tmp_path / "clip.mp4",
        3,
        fps=10,
        width=320,
        height=240,
        bit_rate=1_000_000,
        frames=textured_source(320, 240),
    )
    size = clip.stat().st_size
    room = 400_000  # for the index beside two uploads
    settings = Settings(  # type: ignore[call-arg]
        ASSET_STORAGE_DIR=str(tmp_path / "store"),
        MAX_ASSET_STORAGE_SIZE_GB=repr((2 * size + room) / 2**30),
        RTVI_INDEX_RETENTION_INTERVAL_S="0.05",
    )
    metrics = Metrics()
    indexing = SearchIndexing(settings.index, tmp_path / "store" / "index", metrics)
    store = AssetStore(settings.storage, settings.ingest, on_removed=indexing.owner_removed, index=indexing)
    indexing.room = store.room_for_index

    async def no_query(text: str | None, image: str | None) -> np.ndarray:
        raise AssertionError("not searched")

    asyncio.run(indexing.open("model-cap", 16, lambda out: (out, None), no_query))
    assert indexing.indexer is not None
    first = _upload(store, clip, "a.mp4", NewFile("video"))
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)  # ~30 KB JPEGs
    try:
        for i in range(60):
            indexing.indexer.offer(PendingChunk(_chunk("cam", i, live=True), frame))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the writer keeps the index within what the asset leaves
            within = indexing.disk_bytes() <= size + room  # first: chunks may go, none are coming
            live = [h.chunk_idx for h in indexing.indexer.index.latest("cam", 100)]
            if within and live and live[-1] == 59:
                break
            time.sleep(0.05)
        assert live[-1] == 59 and len(live) < 60 and indexing.disk_bytes() <= size + room
        stats = store.stats()
        assert stats["index_storage_usage_bytes"] == indexing.disk_bytes() > 0

        # Another upload: the room comes out of the index's oldest live chunks, not the first upload.
        _upload(store, clip, "b.mp4", NewFile("video"))
        assert Path(store.get_file(first.id).path).is_file()
        after = [h.chunk_idx for h in indexing.indexer.index.latest("cam", 100)]
        assert after and after == list(range(60 - len(after), 60)) and len(after) < len(live)
        assert store.registry.stored_bytes() + indexing.disk_bytes() <= 2 * size + room
    finally:
        asyncio.run(indexing.close())
