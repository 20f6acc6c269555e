"""The chunk index (docs/search.md): `base` (the ChunkIndex interface, filters, hits), `sqlite` (one
machine; `ann` its approximate search for large collections), `milvus` (MILVUS_URI, shared by
replicas), `thumbnails` (where thumbnails live), `writer` (feeding it off the results path)."""

from __future__ import annotations

import logging
from pathlib import Path

from rtvi.core.index.ann import AnnPolicy
from rtvi.core.index.base import ChunkIndex
from rtvi.core.index.sqlite import SqliteChunkIndex
from rtvi.core.index.thumbnails import ThumbnailStore, thumbnail_store
from rtvi.settings import IndexSettings

log = logging.getLogger(__name__)


def open_chunk_index(root: Path, model_id: str, dim: int, settings: IndexSettings) -> ChunkIndex:
    """The collection of `model_id` and `dim`: on Milvus when MILVUS_URI is set, else in SQLite under
    `root`. Blocks (reads or connects): call it off the event loop."""
    if settings.milvus_uri:
        from rtvi.core.index.milvus import MilvusChunkIndex  # pymilvus is imported only when used

        return MilvusChunkIndex(
            settings.milvus_uri,
            model_id,
            dim,
            milvus_thumbnails(root, settings),
            token=settings.milvus_token,
            index_type=settings.milvus_index,
        )
    policy = AnnPolicy(
        from_entries=settings.index_ann_from,
        nprobe=settings.index_ann_nprobe,
        candidates=settings.index_ann_candidates,
    )
    return SqliteChunkIndex(root, model_id, dim, policy)


def milvus_thumbnails(root: Path, settings: IndexSettings) -> ThumbnailStore:
    """Where the Milvus index's thumbnails go: the asset store's S3 bucket, shared by every replica; with
    no S3 asset store, this machine's disk under `root` (only this replica serves and removes them)."""
    if not settings.asset_store:
        log.warning(
            "search index: Milvus without an S3 asset store (RTVI_ASSET_STORE): thumbnails are kept on this"
            " replica's disk under %s, and only this replica serves them",
            root / "thumbnails",
        )
    return thumbnail_store(settings.asset_store, settings.s3_endpoint_url, root / "thumbnails")
