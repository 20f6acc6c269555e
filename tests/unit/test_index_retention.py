"""The index writer's retention (core/index/writer.py): the size cap, applied by the writer thread
between writes, keeps a real SQLite index under RTVI_INDEX_MAX_GB's bytes, oldest live chunks first,
and never touches a file's chunks. (The age limit runs end to end in tests/e2e/test_search.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rtvi.core.index.base import IndexedChunk
from rtvi.core.index.sqlite import SqliteChunkIndex
from rtvi.core.index.writer import ChunkIndexer, PendingChunk, Retention
from rtvi.core.telemetry.metrics import Metrics


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
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            live = index.latest("cam", 100)
            if live and live[-1].chunk_idx == 39 and (index.footprint().disk_bytes or 0) <= cap + 200_000:
                break
            time.sleep(0.05)
        footprint = index.footprint()
        assert footprint.disk_bytes is not None and footprint.disk_bytes <= cap + 200_000
        kept = [h.chunk_idx for h in index.latest("cam", 100)]
        assert kept and kept == list(range(40 - len(kept), 40)) and len(kept) < 40  # the newest, in a run
        assert len(index.latest("file", 100)) == 5  # files are never evicted by the cap
        expired = metrics.registry.get_sample_value("rtvi_index_chunks_expired_total", {"reason": "size"})
        assert expired == 40 - len(kept)
    finally:
        writer.close()
