"""The chunk index (docs/search.md): `base` (the ChunkIndex interface, filters, hits), `sqlite` (one
machine; `ann` its approximate search for large collections), `milvus` (MILVUS_URI, shared by
replicas), `writer` (feeding it off the results path)."""

from __future__ import annotations

from pathlib import Path

from rtvi.core.index.ann import AnnPolicy
from rtvi.core.index.base import ChunkIndex
from rtvi.core.index.sqlite import SqliteChunkIndex
from rtvi.settings import IndexSettings


def open_chunk_index(root: Path, model_id: str, dim: int, settings: IndexSettings) -> ChunkIndex:
    """The collection of `model_id` and `dim`: on Milvus when MILVUS_URI is set, else in SQLite under
    `root`. Blocks (reads or connects): call it off the event loop."""
    if settings.milvus_uri:
        from rtvi.core.index.milvus import MilvusChunkIndex  # pymilvus is imported only when used

        return MilvusChunkIndex(settings.milvus_uri, model_id, dim, token=settings.milvus_token)
    policy = AnnPolicy(
        from_entries=settings.index_ann_from,
        nprobe=settings.index_ann_nprobe,
        candidates=settings.index_ann_candidates,
    )
    return SqliteChunkIndex(root, model_id, dim, policy)
