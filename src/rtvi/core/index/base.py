"""The chunk index's interface, whatever holds it: every embedded chunk, searchable by vector with filters
(issue 12).

`ChunkIndex` is one collection (one model id and dimension: vectors of two models never mix). Two
implementations: `sqlite.SqliteChunkIndex` (one machine, exact, next to the asset registry) and
`milvus.MilvusChunkIndex` (MILVUS_URI, shared by every replica); `open_chunk_index` (the package) picks
one. What both need is here once: the entry id, the owner digest, the hit builder, the unit vectors and the
filter's terms (owners, overlapping time windows), which each backend renders in its own query language.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """One chunk to index. `key` identifies it within its owner (the chunking and the chunk), so the same
    chunk indexed twice is one entry."""

    owner_id: str
    key: str
    live: bool
    source: str
    chunk_idx: int
    start_s: float
    end_s: float
    abs_start: float | None
    abs_end: float | None
    start_time: str
    end_time: str
    vector: npt.NDArray[np.float32] | None  # None: the writer embeds the caption
    caption: str | None = None
    thumbnail_jpeg: bytes | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """Chunks whose [`start`, `end`) overlaps the window (`lo`, `hi`), either bound optional, among the
    chunks that have such times: those whose wall-clock time is known, or file chunks. The names are
    fields of an entry in every backend."""

    among: Literal["wall_clock_known", "files"]
    start: str
    end: str
    lo: float | None
    hi: float | None


@dataclass(frozen=True, slots=True)
class SearchFilter:
    asset_ids: Sequence[str] = ()
    stream_ids: Sequence[str] = ()
    # Unix seconds (matches chunks whose wall-clock time is known) ...
    abs_from: float | None = None
    abs_to: float | None = None
    # ... or seconds into a file (matches file chunks).
    offset_from: float | None = None
    offset_to: float | None = None

    def owners(self) -> list[tuple[bool, Sequence[str]]]:
        """(live, ids) for each kind of owner the filter names; a chunk matches when any selects it."""
        return [(live, ids) for live, ids in ((False, self.asset_ids), (True, self.stream_ids)) if ids]

    def windows(self) -> list[Window]:
        """The time windows a chunk must overlap (all of them)."""
        bounds = (
            Window("wall_clock_known", "abs_start", "abs_end", self.abs_from, self.abs_to),
            Window("files", "start_s", "end_s", self.offset_from, self.offset_to),
        )
        return [w for w in bounds if w.lo is not None or w.hi is not None]


@dataclass(frozen=True, slots=True)
class Hit:
    entry_id: str
    owner_id: str
    live: bool
    source: str
    chunk_idx: int
    start_s: float  # media seconds (files) or Unix seconds (live)
    end_s: float
    start_time: str
    end_time: str
    caption: str | None
    has_thumbnail: bool
    score: float


# The fields of an entry a hit is built from (besides its id), by the same names in every backend.
HIT_FIELDS = (
    "owner_id",
    "live",
    "source",
    "chunk_idx",
    "start_s",
    "end_s",
    "start_time",
    "end_time",
    "caption",
    "has_thumbnail",
)


def hit_of(entry: str, row: Mapping[str, Any], score: float) -> Hit:
    """A hit from an entry's HIT_FIELDS as a backend returns them."""
    caption = row.get("caption")
    return Hit(
        entry_id=entry,
        owner_id=str(row["owner_id"]),
        live=bool(row["live"]),
        source=str(row["source"]),
        chunk_idx=int(row["chunk_idx"]),
        start_s=float(row["start_s"]),
        end_s=float(row["end_s"]),
        start_time=str(row["start_time"]),
        end_time=str(row["end_time"]),
        caption=None if caption is None else str(caption),
        has_thumbnail=bool(row["has_thumbnail"]),
        score=score,
    )


class ChunkIndex(Protocol):
    """One collection (model id + dimension) of the index, whatever holds it. Thread-safe."""

    collection: str

    def __len__(self) -> int: ...

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Add chunks, replacing an entry with the same owner and key."""
        ...

    def remove_owner(self, owner_id: str) -> int:
        """Forget every chunk of a file or stream (all collections) and its thumbnails. -> entries removed."""
        ...

    def search(
        self, query: npt.NDArray[np.float32], top_k: int, where: SearchFilter | None = None
    ) -> list[Hit]:
        """The `top_k` chunks closest to `query` (cosine), best first, among those `where` selects."""
        ...

    def latest(self, owner_id: str, limit: int) -> list[Hit]:
        """The `limit` latest chunks of a file or stream, in time order (a timeline; score 0)."""
        ...

    def thumbnail(self, entry: str) -> bytes | None:
        """The JPEG of an entry, or None (unknown entry, or indexed without one)."""
        ...

    def expire_live(
        self,
        before: float | None,
        limit: int,
        owners: Sequence[str] | None = None,
        excluding: Sequence[str] = (),
        max_bytes: int | None = None,
    ) -> int:
        """Remove up to `limit` live chunks, oldest first, that started before `before` (Unix seconds;
        None: whatever their age), with their thumbnails; of the streams `owners` only (None: any) and
        none of `excluding`; and no more than it takes to free `max_bytes` of the footprint on this disk
        (None: no such bound). Files' chunks are never touched. -> removed."""
        ...

    def drop_thumbnails(self, before: float, limit: int) -> int:
        """Delete the thumbnails of up to `limit` live chunks, oldest first, that started before `before`;
        their entries stay searchable (has_thumbnail false). -> thumbnails dropped."""
        ...

    def footprint(self) -> Footprint: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Footprint:
    """What an index holds and costs here: entries, bytes on this machine's disk (rows, vectors and
    thumbnails; None when a server keeps them) and bytes of vectors in this process's memory."""

    entries: int
    disk_bytes: int | None
    memory_bytes: int


def collection_of(model_id: str, dim: int) -> str:
    return f"{model_id}:{dim}"


def entry_id(collection: str, owner_id: str, key: str) -> str:
    """An entry's public id (it names the thumbnail): the same chunk gets the same id on any replica."""
    return hashlib.sha256(f"{collection}\n{owner_id}\n{key}".encode()).hexdigest()[:32]


def owner_key(owner_id: str) -> str:
    """The digest of an owner id (hex): owner ids are client-chosen (stream ids), so file names and filter
    expressions use this instead."""
    return hashlib.sha256(owner_id.encode()).hexdigest()[:32]


def unit_vector(vector: npt.NDArray[np.float32], dim: int) -> npt.NDArray[np.float32]:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"a {v.shape[0]}-d vector for a {dim}-d index")
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def chunk_vector(chunk: IndexedChunk, dim: int) -> npt.NDArray[np.float32]:
    """The unit vector a chunk is written with; ValueError when it has none yet."""
    if chunk.vector is None:
        raise ValueError("every chunk needs its vector before it is written")
    return unit_vector(chunk.vector, dim)
