"""The search index as a part of the service (RTVI_SEARCH_INDEX, docs/search.md): opened by the model
stage once it knows its vectors, fed every finished chunk (a ChunkListener), emptied of an asset's chunks
when the asset goes, and asked by the search route for a query's vector."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rtvi.core.credentials import public_url
from rtvi.core.index import open_chunk_index
from rtvi.core.index.base import IndexedChunk
from rtvi.core.index.writer import ChunkIndexer, EmbedTexts, PendingChunk, Retention
from rtvi.core.pipeline.events import ChunkDone
from rtvi.core.telemetry.metrics import Metrics
from rtvi.settings import IndexSettings

log = logging.getLogger(__name__)

# A chunk's output -> what the index keeps of it: its vector and caption. A caption without a vector is
# embedded by the index's caption encoder (see SearchIndexing.open); neither: not indexed.
IndexEntryOf = Callable[[Any], tuple["npt.NDArray[np.float32] | None", str | None]]
# A search's query (text, or an image as a data: URI) -> its vector, in the index's space.
QueryVector = Callable[[str | None, str | None], Awaitable["npt.NDArray[np.float32]"]]


class SearchIndexing:
    """Does nothing until `open`; with RTVI_SEARCH_INDEX off, never opens."""

    def __init__(self, settings: IndexSettings, root: Path, metrics: Metrics) -> None:
        self.settings = settings
        self.root = root  # the SQLite index's folder
        self.metrics = metrics
        self.indexer: ChunkIndexer | None = None
        # What the asset storage cap leaves the index (AssetStore.room_for_index; None: no cap).
        self.room: Callable[[], int | None] | None = None
        self.query_vector: QueryVector | None = None
        self._entry_of: IndexEntryOf | None = None

    async def open(
        self,
        model_id: str,
        dim: int,
        entry_of: IndexEntryOf,
        query_vector: QueryVector,
        embed_captions: EmbedTexts | None = None,
    ) -> None:
        """Index every chunk from now on, in the collection of `model_id` and `dim` (`embed_captions`:
        how chunks that carry only a caption get their vector, on the index's thread). Loading the
        collection's vectors reads them all from disk: in a thread, not on the event loop."""
        if not self.settings.search_index or self.indexer is not None:
            return
        index = await asyncio.to_thread(open_chunk_index, self.root, model_id, dim, self.settings)
        self.indexer = ChunkIndexer(
            index,
            self.metrics,
            embed_captions=embed_captions,
            retention=retention_of(self.settings),
            room=self.room,
        ).start()
        self._entry_of = entry_of
        self.query_vector = query_vector
        uri = self.settings.milvus_uri
        where = f"on Milvus {public_url(uri)}" if uri else "in SQLite"
        log.info("search index %s: %d chunk(s) of %s (%d-d)", where, len(index), model_id, dim)

    # --- ChunkListener ------------------------------------------------------------------------
    def keeps_live_jobs(self, stream_id: str) -> bool:
        return False  # indexing alone is no reason to keep decoding a camera nobody reads

    def chunk_done(self, event: ChunkDone) -> None:
        if self.indexer is None or self._entry_of is None or not event.indexable:
            return
        r, asset = event.result, event.asset
        vector, caption = self._entry_of(r.output)
        if vector is None and not caption:
            return
        origin = event.clock.origin_ts
        chunk = IndexedChunk(
            owner_id=asset.id,
            # A live chunk is known by its (wall-clock) start; a file's by its span.
            key=f"{r.start_s:.3f}" if event.live else f"{r.start_s:.3f}-{r.end_s:.3f}",
            live=event.live,
            source=asset.filename,
            chunk_idx=r.index,
            start_s=r.start_s,
            end_s=r.end_s,
            abs_start=None if origin is None else origin + r.start_s,
            abs_end=None if origin is None else origin + r.end_s,
            start_time=event.clock.time(r.start_s),
            end_time=event.clock.time(r.end_s),
            vector=vector,
            caption=caption,
        )
        width, height = asset.meta.get("width"), asset.meta.get("height")
        aspect = width / height if isinstance(width, int) and isinstance(height, int) and height > 0 else None
        self.indexer.offer(PendingChunk(chunk, r.thumbnail, aspect))

    # --- the asset store's removal hook --------------------------------------------------------
    def owner_removed(self, asset_id: str) -> None:
        if self.indexer is not None:
            self.indexer.remove_owner(asset_id)

    # --- the asset store's IndexSpace: the index's share of MAX_ASSET_STORAGE_SIZE_GB -----------
    # A failing index never fails an upload: it counts as holding nothing it could give.
    def disk_bytes(self) -> int:
        try:
            return (self.indexer.index.footprint().disk_bytes or 0) if self.indexer is not None else 0
        except Exception:
            log.exception("search index: its size for the storage cap")
            return 0

    def free_disk(self, nbytes: int) -> int:
        try:
            return self.indexer.free_disk(nbytes) if self.indexer is not None else 0
        except Exception:
            log.exception("search index: making room for an upload")
            return 0

    async def close(self) -> None:
        if self.indexer is not None:
            await asyncio.to_thread(self.indexer.close)


def retention_of(settings: IndexSettings) -> Retention:
    return Retention(
        max_age_s=settings.index_retention_hours * 3600,
        by_stream={stream: hours * 3600 for stream, hours in settings.index_retention_by_stream.items()},
        thumbnail_age_s=settings.index_thumbnail_retention_hours * 3600,
        max_disk_bytes=int(settings.index_max_gb * 2**30),
        interval_s=settings.index_retention_interval_s,
    )
