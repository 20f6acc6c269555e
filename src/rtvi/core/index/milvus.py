"""The chunk index on Milvus (MILVUS_URI, issue 13): one index that every replica writes and searches.

Same interface (base.py) and behaviour as the SQLite index (sqlite.py): one collection per model id and
dimension, entries keyed by owner and chunk, cosine on unit vectors (the inner product), filters by owner
and time window. Collections are created with Strong consistency: a chunk written by one replica is found
by a search on another as soon as the write returns.

The vector index is RTVI_MILVUS_INDEX (`INDEXES`): HNSW by default, IVF_FLAT, or FLAT (exact). A
collection keeps the index it was created with (an older one: FLAT), and searches use the parameters of
the index it has. A server that refuses the configured type fails the open with a message naming the
setting: no silent fallback to another cost per search.

Thumbnails are not in the entries: they are files or S3 objects (thumbnails.py; in the asset store's
bucket when RTVI_ASSET_STORE is s3://, so any replica serves any thumbnail), and an entry's `thumbnail`
field holds `ref:<key>`. Entries written before that hold the JPEG itself there (base64): still served.

Owner ids are client-chosen (stream ids), so filters never carry them: each entry also holds the SHA-256
of its owner (`owner_key`, hex), and filters compare hashes. A filter expression is thus built only from
hex digests, booleans and numbers, and cannot be bent by a hostile id.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pymilvus import DataType, MilvusClient

from rtvi.core.index.base import (
    HIT_FIELDS,
    Footprint,
    Hit,
    IndexedChunk,
    SearchFilter,
    chunk_vector,
    collection_of,
    entry_id,
    hit_of,
    owner_key,
    unit_vector,
)
from rtvi.core.index.thumbnails import ThumbnailStore, key_of_digest, thumbnail_key

log = logging.getLogger(__name__)

COLLECTION_PREFIX = "rtvi_chunks_"
# VARCHAR limits (bytes). The thumbnail field held a base64 JPEG before it held a reference: its limit
# stays that of the collections written then, so every collection has one schema.
_MAX_THUMBNAIL_FIELD = 65_535
_REF = "ref:"
_MAX_TEXT = 4_096  # sources and owner ids are cut to this many bytes
_MAX_CAPTION = 16_384  # captions are indexed up to 4,000 characters (4 bytes each at most)
_PAGE = 1_000  # rows per page when a timeline scans an owner's entries
# Every field of an entry (the schema's, as _row writes them): what rewriting one needs.
_FIELDS = (
    "entry_id", "vector", "owner_key", "owner_id", "live", "source", "chunk_idx", "start_s", "end_s",
    "abs_start", "abs_end", "start_time", "end_time", "caption", "has_thumbnail", "thumbnail",
)  # fmt: skip


IndexType = Literal["HNSW", "IVF_FLAT", "FLAT"]


@dataclass(frozen=True, slots=True)
class VectorIndex:
    """How a collection's vectors are indexed: Milvus's build parameters, and the search parameters for a
    `top_k` (tuned so the top 10 are the exact top 10 on the tests' data, tests/unit/test_chunk_index.py)."""

    build: dict[str, int]
    search_param: str = ""  # the search parameter that widens the search, if any
    search_value: int = 0

    def search_params(self, top_k: int) -> dict[str, int]:
        if not self.search_param:
            return {}
        # HNSW's ef must be at least top_k; nprobe is a number of cells, whatever top_k is.
        value = max(self.search_value, top_k) if self.search_param == "ef" else self.search_value
        return {self.search_param: value}


INDEXES: dict[str, VectorIndex] = {
    "HNSW": VectorIndex({"M": 16, "efConstruction": 200}, "ef", 128),
    "IVF_FLAT": VectorIndex({"nlist": 128}, "nprobe", 32),
    "FLAT": VectorIndex({}),
}


def collection_name(model_id: str, dim: int) -> str:
    """A Milvus collection name (letters, digits, underscores) for one model id and dimension."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", model_id)[:64]
    digest = hashlib.sha256(collection_of(model_id, dim).encode()).hexdigest()[:8]
    return f"{COLLECTION_PREFIX}{slug}_{dim}_{digest}"


_WINDOW_GUARD = {"wall_clock_known": "abs_start is not null", "files": "live == false"}


def _owner_expression(owner_id: str) -> str:
    return f'owner_key == "{owner_key(owner_id)}"'


def _keys(owner_ids: Sequence[str]) -> str:
    """Owner ids as the quoted digests a Milvus `in [...]` list takes."""
    return ", ".join(f'"{owner_key(i)}"' for i in owner_ids)


def filter_expression(where: SearchFilter) -> str:
    """A SearchFilter as a Milvus boolean expression (hex digests, booleans and numbers only)."""
    parts: list[str] = []
    owners: list[str] = []
    for live, ids in where.owners():
        owners.append(f"(live == {str(live).lower()} and owner_key in [{_keys(ids)}])")
    if owners:
        parts.append("(" + " or ".join(owners) + ")")
    for window in where.windows():  # a chunk matches when it overlaps the window
        parts.append(_WINDOW_GUARD[window.among])
        if window.lo is not None:
            parts.append(f"{window.end} > {float(window.lo)!r}")
        if window.hi is not None:
            parts.append(f"{window.start} < {float(window.hi)!r}")
    return " and ".join(parts)


class MilvusChunkIndex:
    """One collection (model id + dimension) on a Milvus server, or a Milvus Lite file. The methods are
    `base.ChunkIndex`'s."""

    def __init__(
        self,
        uri: str,
        model_id: str,
        dim: int,
        thumbnails: ThumbnailStore,
        token: str = "",
        index_type: IndexType = "HNSW",
    ) -> None:
        self.collection = collection_of(model_id, dim)
        self.dim = dim
        self.name = collection_name(model_id, dim)
        self.thumbnails = thumbnails
        # An entry rewritten without its thumbnail must not outlive a removal of its owner in between.
        self._rewriting = threading.Lock()
        self._client = MilvusClient(uri=uri, token=token)
        if self._client.has_collection(self.name):
            self._client.load_collection(self.name)
        else:
            self._create(index_type)
        self.index_type = self._vector_index_type()
        if self.index_type != index_type:
            log.warning(
                "search index: collection %s keeps its %s index (RTVI_MILVUS_INDEX=%s applies to new"
                " collections; docs/search.md says how to rebuild one)",
                self.name,
                self.index_type,
                index_type,
            )
        self._index = INDEXES.get(self.index_type, INDEXES["FLAT"])

    def _vector_index_type(self) -> str:
        described = self._client.describe_index(self.name, "vector")
        return str(described.get("index_type", "FLAT")) if described else "FLAT"

    def _create(self, index_type: IndexType) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("entry_id", DataType.VARCHAR, max_length=32, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("owner_key", DataType.VARCHAR, max_length=32)
        schema.add_field("owner_id", DataType.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("live", DataType.BOOL)
        schema.add_field("source", DataType.VARCHAR, max_length=_MAX_TEXT)
        schema.add_field("chunk_idx", DataType.INT64)
        schema.add_field("start_s", DataType.DOUBLE)
        schema.add_field("end_s", DataType.DOUBLE)
        schema.add_field("abs_start", DataType.DOUBLE, nullable=True)
        schema.add_field("abs_end", DataType.DOUBLE, nullable=True)
        schema.add_field("start_time", DataType.VARCHAR, max_length=64)
        schema.add_field("end_time", DataType.VARCHAR, max_length=64)
        schema.add_field("caption", DataType.VARCHAR, max_length=_MAX_CAPTION, nullable=True)
        schema.add_field("has_thumbnail", DataType.BOOL)
        schema.add_field("thumbnail", DataType.VARCHAR, max_length=_MAX_THUMBNAIL_FIELD)
        index = self._client.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type="IP", params=INDEXES[index_type].build)
        index.add_index("owner_key", index_type="INVERTED")  # timelines and deletes select by owner
        try:
            self._client.create_collection(
                self.name, schema=schema, index_params=index, consistency_level="Strong"
            )
        except Exception as exc:
            # The collection may be made before its index is refused: gone again, so the next open tries
            # afresh (with another RTVI_MILVUS_INDEX) instead of finding a collection it cannot load.
            with contextlib.suppress(Exception):
                self._client.drop_collection(self.name)
            raise RuntimeError(
                f"Milvus refused a {index_type} index (RTVI_MILVUS_INDEX; HNSW, IVF_FLAT or FLAT): {exc}"
            ) from exc
        log.info("search index: collection %s created on Milvus (%s index)", self.name, index_type)

    def close(self) -> None:
        self._client.close()

    def __len__(self) -> int:
        rows = self._client.query(self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    # --- writes -------------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Add chunks, replacing an entry with the same owner and key (one upsert request)."""
        if not chunks:
            return
        rows = []
        for c in chunks:
            entry = entry_id(self.collection, c.owner_id, c.key)
            thumbnail = ""
            if c.thumbnail_jpeg is not None:  # the thumbnail first: an entry never names a missing one
                key = thumbnail_key(c.owner_id, entry)
                self.thumbnails.put(key, c.thumbnail_jpeg)
                thumbnail = _REF + key
            rows.append(self._row(c, entry, thumbnail))
        self._client.upsert(self.name, rows)

    def _row(self, c: IndexedChunk, entry: str, thumbnail: str) -> dict[str, Any]:
        return {
            "entry_id": entry,
            "vector": chunk_vector(c, self.dim).tolist(),
            "owner_key": owner_key(c.owner_id),
            "owner_id": _cut(c.owner_id, _MAX_TEXT),
            "live": c.live,
            "source": _cut(c.source, _MAX_TEXT),
            "chunk_idx": c.chunk_idx,
            "start_s": c.start_s,
            "end_s": c.end_s,
            "abs_start": c.abs_start,
            "abs_end": c.abs_end,
            "start_time": c.start_time,
            "end_time": c.end_time,
            "caption": None if c.caption is None else _cut(c.caption, _MAX_CAPTION),
            "has_thumbnail": bool(thumbnail),
            "thumbnail": thumbnail,
        }

    def remove_owner(self, owner_id: str) -> int:
        """Forget every chunk of a file or stream, in every rtvi collection, then its thumbnails (one
        folder or prefix for all collections). -> entries removed."""
        removed = 0
        expression = _owner_expression(owner_id)
        with self._rewriting:
            for name in self._client.list_collections():
                if name.startswith(COLLECTION_PREFIX):
                    result = self._client.delete(name, filter=expression)
                    # A Milvus server answers {"delete_count": n}; Milvus Lite the deleted ids.
                    removed += int(result["delete_count"]) if isinstance(result, dict) else len(result)
        self.thumbnails.delete_owner(owner_id)
        return removed

    # --- reads --------------------------------------------------------------------------------------
    def search(
        self, query: npt.NDArray[np.float32], top_k: int, where: SearchFilter | None = None
    ) -> list[Hit]:
        found = self._client.search(
            self.name,
            [unit_vector(query, self.dim).tolist()],
            limit=top_k,
            filter=filter_expression(where) if where is not None else "",
            output_fields=list(HIT_FIELDS),
            search_params={"metric_type": "IP", "params": self._index.search_params(top_k)},
        )
        return [hit_of(str(h["entry_id"]), h["entity"], float(h["distance"])) for h in found[0]]

    def latest(self, owner_id: str, limit: int) -> list[Hit]:
        """The `limit` latest chunks of a file or stream, in time order (a timeline; score 0). Milvus
        queries have no ORDER BY: the owner's (id, time) pairs are scanned page by page, keeping the
        newest `limit`, and only those rows are read in full."""
        pages = self._client.query_iterator(
            self.name,
            batch_size=_PAGE,
            filter=_owner_expression(owner_id),
            output_fields=["entry_id", "start_s", "chunk_idx"],
        )
        newest: list[tuple[float, int, str]] = []
        try:
            while page := pages.next():
                for row in page:
                    item = (float(row["start_s"]), int(row["chunk_idx"]), str(row["entry_id"]))
                    if len(newest) < limit:
                        heapq.heappush(newest, item)
                    elif item > newest[0]:
                        heapq.heapreplace(newest, item)
        finally:
            pages.close()
        if not newest:
            return []
        rows = self._client.get(self.name, ids=[e for _, _, e in newest], output_fields=list(HIT_FIELDS))
        by_id = {str(r["entry_id"]): r for r in rows}
        return [hit_of(e, by_id[e], 0.0) for _, _, e in sorted(newest) if e in by_id]

    def thumbnail(self, entry: str) -> bytes | None:
        rows = self._client.get(self.name, ids=[entry], output_fields=["thumbnail"])
        held = str(rows[0]["thumbnail"]) if rows else ""
        if held.startswith(_REF):
            return self.thumbnails.get(held[len(_REF) :])
        return base64.b64decode(held) if held else None  # an entry written before references

    # --- retention ----------------------------------------------------------------------------------
    def expire_live(
        self,
        before: float | None,
        limit: int,
        owners: Sequence[str] | None = None,
        excluding: Sequence[str] = (),
        max_bytes: int | None = None,
    ) -> int:
        """By age only: Milvus queries have no ORDER BY, so any `limit` of the live chunks older than
        `before` go (all of them, batch by batch). The server's disk is the server's: no size cap here
        (`footprint` has no disk bytes), so `before=None` removes nothing and `max_bytes` is not used."""
        if before is None:
            return 0
        expression = f"live == true and start_s < {float(before)!r}"
        if owners is not None:
            expression += f" and owner_key in [{_keys(owners)}]"
        if excluding:
            expression += f" and owner_key not in [{_keys(excluding)}]"
        rows = self._client.query(
            self.name,
            filter=expression,
            output_fields=["entry_id", "owner_key", "has_thumbnail"],
            limit=limit,
        )
        ids = [str(r["entry_id"]) for r in rows]
        if ids:
            self._client.delete(self.name, ids=ids)
            # After the rows. The keys from the entries' fields, not their `thumbnail` (an entry written
            # before references holds a JPEG there; its key names nothing, which deletes nothing).
            self.thumbnails.delete(
                [key_of_digest(str(r["owner_key"]), str(r["entry_id"])) for r in rows if r["has_thumbnail"]]
            )
        return len(ids)

    def drop_thumbnails(self, before: float, limit: int) -> int:
        """Rewrites the entries without their reference (an upsert needs every field), then deletes the
        thumbnails; any `limit` of those older than `before`, as expire_live. Under the lock that removals
        take, so a rewrite never brings back an entry removed here in between (one removed by another
        replica meanwhile can come back, in a window of one request: retention removes it again)."""
        with self._rewriting:
            rows = self._client.query(
                self.name,
                filter=f"live == true and has_thumbnail == true and start_s < {float(before)!r}",
                output_fields=list(_FIELDS),
                limit=limit,
            )
            if not rows:
                return 0
            kept = [{**{f: r[f] for f in _FIELDS}, "has_thumbnail": False, "thumbnail": ""} for r in rows]
            self._client.upsert(self.name, kept)
        self.thumbnails.delete([key_of_digest(str(r["owner_key"]), str(r["entry_id"])) for r in rows])
        return len(rows)

    def footprint(self) -> Footprint:
        """The server keeps the rows: nothing on this machine's disk or in this process's memory."""
        return Footprint(entries=len(self), disk_bytes=None, memory_bytes=0)


def _cut(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, on a character boundary."""
    return text.encode()[:max_bytes].decode(errors="ignore")
