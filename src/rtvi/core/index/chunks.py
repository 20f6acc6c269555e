"""The chunk index: every embedded chunk, searchable by vector with filters (issue 12).

Rows live in SQLite next to the asset registry (metadata, the vector, the thumbnail's file name), so the
index survives a restart; the vectors of the open collection are also held in memory as one float32
matrix, and a search is exact: one BLAS matrix-vector product and a partial sort (bench/search_bench.py
measures it against numpy on a bare matrix). Filters select row ids in SQLite and only those rows are
scored. Vectors are unit-normalised on the way in, so the inner product is the cosine.

A collection is one model id and dimension: vectors of two models never mix, and a new MODEL_PATH starts
an empty collection (`rtvi reindex` fills it again). Why SQLite and not Milvus Lite on one machine:
docs/search.md. With MILVUS_URI the same interface (`ChunkIndex`) is served by a Milvus server that every
replica shares (milvus.py).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rtvi.core.assets.storage import atomic_write

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    entry_id TEXT NOT NULL UNIQUE,  -- public: names the thumbnail
    owner_id TEXT NOT NULL,         -- the file's asset id or the live stream's id
    live INTEGER NOT NULL,
    source TEXT NOT NULL,           -- file name or stream name
    chunk_idx INTEGER NOT NULL,
    start_s REAL NOT NULL,          -- media seconds (files) or Unix seconds (live)
    end_s REAL NOT NULL,
    abs_start REAL,                 -- Unix seconds when the chunk's wall-clock time is known
    abs_end REAL,
    start_time TEXT NOT NULL,       -- as the API reported them
    end_time TEXT NOT NULL,
    caption TEXT,
    thumbnail INTEGER NOT NULL DEFAULT 0,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_owner ON chunks (collection, owner_id);
"""


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
class SearchFilter:
    asset_ids: Sequence[str] = ()
    stream_ids: Sequence[str] = ()
    # Unix seconds (matches chunks whose wall-clock time is known) ...
    abs_from: float | None = None
    abs_to: float | None = None
    # ... or seconds into a file (matches file chunks).
    offset_from: float | None = None
    offset_to: float | None = None

    def clause(self) -> tuple[str, list[object]]:
        """SQL conditions (to AND with the collection) and their parameters."""
        parts: list[str] = []
        params: list[object] = []
        owners: list[str] = []
        if self.asset_ids:
            owners.append(f"(live = 0 AND owner_id IN ({','.join('?' * len(self.asset_ids))}))")
            params += self.asset_ids
        if self.stream_ids:
            owners.append(f"(live = 1 AND owner_id IN ({','.join('?' * len(self.stream_ids))}))")
            params += self.stream_ids
        if owners:
            parts.append("(" + " OR ".join(owners) + ")")
        time_sql, time_params = self._time_clause()
        if time_sql:
            parts.append(time_sql)
            params += time_params
        return " AND ".join(parts), params

    def _time_clause(self) -> tuple[str, list[object]]:
        # A chunk matches when it overlaps the window.
        parts: list[str] = []
        params: list[object] = []
        if self.abs_from is not None or self.abs_to is not None:
            parts.append("abs_start IS NOT NULL")
        if self.abs_from is not None:
            parts.append("abs_end > ?")
            params.append(self.abs_from)
        if self.abs_to is not None:
            parts.append("abs_start < ?")
            params.append(self.abs_to)
        if self.offset_from is not None or self.offset_to is not None:
            parts.append("live = 0")
        if self.offset_from is not None:
            parts.append("end_s > ?")
            params.append(self.offset_from)
        if self.offset_to is not None:
            parts.append("start_s < ?")
            params.append(self.offset_to)
        return " AND ".join(parts), params


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


_HIT_COLUMNS = (
    "entry_id, owner_id, live, source, chunk_idx, start_s, end_s, start_time, end_time, caption, thumbnail"
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

    def close(self) -> None: ...


def open_chunk_index(
    root: Path, model_id: str, dim: int, *, milvus_uri: str = "", milvus_token: str = ""
) -> ChunkIndex:
    """The collection of `model_id` and `dim`: on Milvus when `milvus_uri` is set, else in SQLite under
    `root`. Blocks (reads or connects): call it off the event loop."""
    if milvus_uri:
        from rtvi.core.index.milvus import MilvusChunkIndex  # pymilvus is imported only when used

        return MilvusChunkIndex(milvus_uri, model_id, dim, token=milvus_token)
    return SqliteChunkIndex(root, model_id, dim)


def entry_id(collection: str, owner_id: str, key: str) -> str:
    """An entry's public id (it names the thumbnail): the same chunk gets the same id on any replica."""
    return hashlib.sha256(f"{collection}\n{owner_id}\n{key}".encode()).hexdigest()[:32]


class _Vectors:
    """Unit vectors by row id, as one growing float32 matrix. Removal moves the last vector into the gap,
    so the first `len` rows are always the live ones."""

    def __init__(self, dim: int) -> None:
        self._matrix = np.empty((1024, dim), dtype=np.float32)
        self._ids = np.empty(1024, dtype=np.int64)
        self._position: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._position)

    def add(self, ids: Sequence[int], vectors: npt.NDArray[np.float32]) -> None:
        n, needed = len(self), len(self) + len(ids)
        if needed > len(self._ids):
            capacity = max(needed, 2 * len(self._ids))
            self._matrix = np.resize(self._matrix, (capacity, self._matrix.shape[1]))
            self._ids = np.resize(self._ids, capacity)
        self._matrix[n:needed] = vectors
        self._ids[n:needed] = ids
        self._position.update((row_id, n + i) for i, row_id in enumerate(ids))

    def remove(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            gap = self._position.pop(row_id, None)
            last = len(self)
            if gap is None or gap == last:
                continue
            self._matrix[gap] = self._matrix[last]
            moved = int(self._ids[last])
            self._ids[gap] = moved
            self._position[moved] = gap

    def top(
        self, query: npt.NDArray[np.float32], k: int, among: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """The k (row id, cosine) pairs closest to `query`, best first; among the given ids when given."""
        if among is None:
            matrix, ids = self._matrix[: len(self)], self._ids[: len(self)]
        else:
            rows = np.fromiter((self._position[i] for i in among if i in self._position), dtype=np.int64)
            matrix, ids = self._matrix[rows], self._ids[rows]
        if len(ids) == 0:
            return []
        scores = matrix @ query
        k = min(k, len(ids))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in best]


class SqliteChunkIndex:
    """One collection (model id + dimension) of the index in SQLite under `root`. Thread-safe."""

    def __init__(self, root: Path, model_id: str, dim: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.collection = f"{model_id}:{dim}"
        self.dim = dim
        self._lock = threading.RLock()
        self._db = sqlite3.connect(root / "index.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._vectors = _Vectors(dim)
        rows = self._db.execute("SELECT id, vector FROM chunks WHERE collection = ?", (self.collection,))
        while batch := rows.fetchmany(4096):
            self._vectors.add(
                [r[0] for r in batch], np.stack([np.frombuffer(r[1], np.float32) for r in batch])
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        return len(self._vectors)

    # --- writes -------------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Add chunks, replacing an entry with the same owner and key. All or nothing."""
        if not chunks:
            return
        if any(c.vector is None for c in chunks):
            raise ValueError("every chunk needs its vector before it is written")
        matrix = np.stack([unit_vector(c.vector, self.dim) for c in chunks if c.vector is not None])
        with self._lock:
            written: list[int] = []
            replaced: list[int] = []
            self._db.execute("BEGIN")
            try:
                for c, vector in zip(chunks, matrix, strict=True):
                    entry = entry_id(self.collection, c.owner_id, c.key)
                    old = self._db.execute("SELECT id FROM chunks WHERE entry_id = ?", (entry,)).fetchone()
                    if old is not None:
                        replaced.append(old[0])
                        self._db.execute("DELETE FROM chunks WHERE id = ?", (old[0],))
                    cur = self._db.execute(
                        "INSERT INTO chunks (collection, entry_id, owner_id, live, source, chunk_idx,"
                        " start_s, end_s, abs_start, abs_end, start_time, end_time, caption, thumbnail,"
                        " vector)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            self.collection,
                            entry,
                            c.owner_id,
                            int(c.live),
                            c.source,
                            c.chunk_idx,
                            c.start_s,
                            c.end_s,
                            c.abs_start,
                            c.abs_end,
                            c.start_time,
                            c.end_time,
                            c.caption,
                            int(c.thumbnail_jpeg is not None),
                            vector.tobytes(),
                        ),
                    )
                    assert cur.lastrowid is not None
                    written.append(cur.lastrowid)
                    if c.thumbnail_jpeg is not None:
                        atomic_write(self._thumbnail_file(c.owner_id, entry), c.thumbnail_jpeg)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._vectors.remove(replaced)
            self._vectors.add(written, matrix)

    def remove_owner(self, owner_id: str) -> int:
        """Forget every chunk of a file or stream (all collections) and its thumbnails. -> entries removed."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM chunks WHERE owner_id = ? AND collection = ?", (owner_id, self.collection)
                )
            ]
            removed = self._db.execute("DELETE FROM chunks WHERE owner_id = ?", (owner_id,)).rowcount
            self._vectors.remove(ids)
        owner_dir = self._owner_dir(owner_id)
        if owner_dir.is_dir():
            for f in owner_dir.iterdir():
                f.unlink(missing_ok=True)
            owner_dir.rmdir()
        return removed

    # --- reads --------------------------------------------------------------------------------------
    def search(
        self, query: npt.NDArray[np.float32], top_k: int, where: SearchFilter | None = None
    ) -> list[Hit]:
        """The `top_k` chunks closest to `query` (cosine), best first, among those `where` selects."""
        vector = unit_vector(query, self.dim)
        sql, args = where.clause() if where is not None else ("", [])
        with self._lock:
            among = None
            if sql:
                selected = self._db.execute(
                    f"SELECT id FROM chunks WHERE collection = ? AND {sql}", [self.collection, *args]
                )
                among = [r[0] for r in selected]
            found = self._vectors.top(vector, top_k, among)
            if not found:
                return []
            rows = {
                r[0]: r[1:]
                for r in self._db.execute(
                    f"SELECT id, {_HIT_COLUMNS} FROM chunks WHERE id IN ({','.join('?' * len(found))})",
                    [i for i, _ in found],
                )
            }
        return [_hit(rows[row_id], score) for row_id, score in found if row_id in rows]

    def latest(self, owner_id: str, limit: int) -> list[Hit]:
        """The `limit` latest chunks of a file or stream, in time order (a timeline; score 0)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_HIT_COLUMNS} FROM chunks WHERE collection = ? AND owner_id = ?"
                " ORDER BY start_s DESC, chunk_idx DESC LIMIT ?",
                (self.collection, owner_id, limit),
            ).fetchall()
        return [_hit(row, 0.0) for row in reversed(rows)]

    def thumbnail(self, entry: str) -> bytes | None:
        """The JPEG of an entry, or None (unknown entry, or indexed without one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT owner_id FROM chunks WHERE entry_id = ? AND thumbnail = 1", (entry,)
            ).fetchone()
        if row is None:
            return None
        path = self._thumbnail_file(row[0], entry)
        return path.read_bytes() if path.is_file() else None

    # --- names --------------------------------------------------------------------------------------
    def _owner_dir(self, owner_id: str) -> Path:
        # Hashed: stream ids are client-chosen and may not be safe file names.
        return self.root / "thumbnails" / hashlib.sha256(owner_id.encode()).hexdigest()[:32]

    def _thumbnail_file(self, owner_id: str, entry: str) -> Path:
        return self._owner_dir(owner_id) / f"{entry}.jpg"


def _hit(row: Sequence[object], score: float) -> Hit:
    entry, owner_id, live, source, chunk_idx, start_s, end_s, start_time, end_time, caption, thumb = row
    return Hit(
        str(entry),
        str(owner_id),
        bool(live),
        str(source),
        int(chunk_idx),  # type: ignore[call-overload]
        float(start_s),  # type: ignore[arg-type]
        float(end_s),  # type: ignore[arg-type]
        str(start_time),
        str(end_time),
        None if caption is None else str(caption),
        bool(thumb),
        score,
    )


def unit_vector(vector: npt.NDArray[np.float32], dim: int) -> npt.NDArray[np.float32]:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"a {v.shape[0]}-d vector for a {dim}-d index")
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v
