"""The chunk index in SQLite (one machine; the default): exact search over an in-memory matrix.

Rows live in SQLite next to the asset registry (metadata, the vector, whether there is a thumbnail:
its file is named by the owner and entry, thumbnails.py), so the index survives a restart; the vectors
of the open collection are also held in memory as one float32 matrix, and a search is exact: one BLAS
matrix-vector product and a partial sort (bench/search_bench.py measures it against numpy on a bare
matrix). Filters select row ids in SQLite and only those rows are scored. Vectors are unit-normalised on
the way in, so the inner product is the cosine.

A collection is one model id and dimension: vectors of two models never mix, and a new MODEL_PATH starts
an empty collection (`rtvi reindex` fills it again). Why SQLite and not Milvus Lite on one machine:
docs/search.md. With MILVUS_URI the same interface (`base.ChunkIndex`) is served by a Milvus server that
every replica shares (milvus.py).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rtvi.core.index.ann import (
    AnnIndex,
    AnnPolicy,
    build_from_sqlite,
    latest_snapshot,
    read_vectors,
    stored_batches,
    write_snapshot,
)
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
    unit_vector,
)
from rtvi.core.index.thumbnails import LocalThumbnails, thumbnail_key

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
    vector BLOB NOT NULL,
    thumbnail_bytes INTEGER NOT NULL DEFAULT 0  -- the JPEG file's size: the footprint without a walk
);
-- An owner's chunks in time order: timelines, deletes, an owner's own retention.
CREATE INDEX IF NOT EXISTS chunks_owner_age ON chunks (collection, owner_id, start_s);
DROP INDEX IF EXISTS chunks_owner;  -- the prefix of chunks_owner_age (an index from before it)
-- Running totals kept by every write (a SUM over millions of rows would read them all at each start).
CREATE TABLE IF NOT EXISTS index_totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Rows removed since a collection's ANN snapshot (ann.py): the snapshot still holds them.
CREATE TABLE IF NOT EXISTS ann_removed (
    collection TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;
"""
# After _SCHEMA (an index made before thumbnail_bytes existed gets the column first).
_AGE_INDEX = "CREATE INDEX IF NOT EXISTS chunks_live_age ON chunks (collection, live, start_s)"
# A search "since" a wall-clock time reads only the chunks that end after it, not the whole collection.
_WINDOW_INDEX = "CREATE INDEX IF NOT EXISTS chunks_abs_end ON chunks (collection, abs_end)"
# Live chunks that still have a thumbnail, oldest first: dropping old thumbnails never walks the entries
# whose thumbnails are already gone.
_THUMBNAIL_AGE_INDEX = (
    "CREATE INDEX IF NOT EXISTS chunks_thumbnail_age ON chunks (collection, start_s)"
    " WHERE live = 1 AND thumbnail = 1"
)


log = logging.getLogger(__name__)
ReadVectors = Callable[[Sequence[int]], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]
# A filter that keeps at most this many entries of a large collection is scored exactly: reading their
# vectors from SQLite (~8 us each) costs less than scanning the ANN index for them.
_EXACT_SELECTION = 2_000

# The collections present, one index seek each (SQLite has no loose index scan: DISTINCT would read every
# entry of the index).
_COLLECTIONS = """WITH RECURSIVE present(name) AS (
    SELECT MIN(collection) FROM chunks
    UNION ALL SELECT (SELECT MIN(collection) FROM chunks WHERE collection > name) FROM present
    WHERE name IS NOT NULL
) SELECT name FROM present WHERE name IS NOT NULL"""

_WINDOW_GUARD = {"wall_clock_known": "abs_start IS NOT NULL", "files": "live = 0"}
# The hit's fields, by their names in base.HIT_FIELDS.
_HIT_COLUMNS = (
    "entry_id, owner_id, live, source, chunk_idx, start_s, end_s, start_time, end_time, caption,"
    " thumbnail AS has_thumbnail"
)


def filter_clause(where: SearchFilter) -> tuple[str, list[object]]:
    """SQL conditions (to AND with the collection) and their parameters."""
    parts: list[str] = []
    params: list[object] = []
    owners: list[str] = []
    for live, ids in where.owners():
        # "+live": not an index term, so the owner index is used (the age index would scan every live row).
        owners.append(f"(+live = {int(live)} AND owner_id IN ({','.join('?' * len(ids))}))")
        params += ids
    if owners:
        parts.append("(" + " OR ".join(owners) + ")")
    for window in where.windows():  # a chunk matches when it overlaps the window
        parts.append(_WINDOW_GUARD[window.among])
        if window.lo is not None:
            parts.append(f"{window.end} > ?")
            params.append(window.lo)
        if window.hi is not None:
            parts.append(f"{window.start} < ?")
            params.append(window.hi)
    return " AND ".join(parts), params


def expiry_query(
    collection: str,
    before: float | None,
    limit: int,
    owners: Sequence[str] | None,
    excluding: Sequence[str],
    since: float | None = None,
) -> tuple[str, list[object]]:
    """The oldest live chunks `expire_live` removes, that started at `since` or later: (id, owner_id,
    entry_id, thumbnail_bytes, start_s) rows."""
    where: list[str] = ["collection = ?"]
    params: list[object] = [collection]
    if owners is not None:  # through the owners' index, already in time order
        where.append(f"owner_id IN ({','.join('?' * len(owners))}) AND +live = 1")
        params += owners
    else:  # through the age index
        where.append("live = 1")
    if excluding:
        where.append(f"owner_id NOT IN ({','.join('?' * len(excluding))})")
        params += excluding
    if since is not None:
        where.append("start_s >= ?")
        params.append(since)
    if before is not None:
        where.append("start_s < ?")
        params.append(before)
    sql = f"SELECT id, owner_id, entry_id, thumbnail_bytes, start_s FROM chunks WHERE {' AND '.join(where)}"
    return f"{sql} ORDER BY start_s LIMIT ?", [*params, limit]


def old_thumbnails_query(collection: str, before: float, limit: int) -> tuple[str, list[object]]:
    """The oldest live chunks that still have a thumbnail, started before `before` (as expiry_query)."""
    return (
        # Without statistics SQLite would pick the age index, and walk the entries already without one.
        "SELECT id, owner_id, entry_id, thumbnail_bytes FROM chunks INDEXED BY chunks_thumbnail_age"
        " WHERE collection = ? AND live = 1 AND thumbnail = 1 AND start_s < ? ORDER BY start_s LIMIT ?",
        [collection, before, limit],
    )


class _Vectors:
    """Unit vectors by row id, as one growing float32 matrix. Removal moves the last vector into the gap,
    so the first `len` rows are always the live ones."""

    def __init__(self, dim: int) -> None:
        self._matrix = np.empty((1024, dim), dtype=np.float32)
        self._ids = np.empty(1024, dtype=np.int64)
        self._position: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._position)

    @property
    def nbytes(self) -> int:
        """Allocated, not used: the matrix keeps its capacity (a steady state under retention)."""
        return int(self._matrix.nbytes + self._ids.nbytes)

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
        return exact_top(ids, matrix, query, k)


def exact_top(
    ids: npt.NDArray[np.int64], matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int
) -> list[tuple[int, float]]:
    """The k (id, cosine) pairs of `matrix`'s rows closest to `query`, best first."""
    if len(ids) == 0:
        return []
    scores = matrix @ query
    k = min(k, len(ids))
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(ids[i]), float(scores[i])) for i in best]


class _AnnVectors:
    """A large collection's vectors: candidates from the ANN index (ann.py), re-ranked exactly with their
    vectors read from SQLite. A filter that keeps few entries is scored exactly, all of them."""

    def __init__(self, ann: AnnIndex, policy: AnnPolicy, read: ReadVectors) -> None:
        self.ann = ann
        self._policy = policy
        self._read = read

    def __len__(self) -> int:
        return len(self.ann)

    @property
    def nbytes(self) -> int:
        return self.ann.nbytes

    def add(self, ids: Sequence[int], vectors: npt.NDArray[np.float32]) -> None:
        self.ann.add(ids, vectors)

    def remove(self, ids: Sequence[int]) -> None:
        self.ann.remove(ids)

    def top(
        self, query: npt.NDArray[np.float32], k: int, among: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        if among is not None and len(among) <= _EXACT_SELECTION:
            candidates: Sequence[int] = among
        else:
            n = max(self._policy.candidates, 4 * k)
            candidates = self.ann.candidates(query, n, self._policy.nprobe, among).tolist()
        ids, matrix = self._read(candidates)
        return exact_top(ids, matrix, query, k)


class SqliteChunkIndex:
    """One collection (model id + dimension) of the index in SQLite under `root`. Thread-safe. The methods
    are `base.ChunkIndex`'s."""

    def __init__(self, root: Path, model_id: str, dim: int, ann: AnnPolicy | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.collection = collection_of(model_id, dim)
        self.dim = dim
        self._policy = ann if ann is not None else AnnPolicy()
        self._ann_dir = root / "ann"
        self.thumbnails = LocalThumbnails(root / "thumbnails")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(root / "index.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._add_thumbnail_sizes()
        self._db.execute(_AGE_INDEX)
        self._db.execute(_WINDOW_INDEX)
        self._db.execute(_THUMBNAIL_AGE_INDEX)
        # The thumbnails' bytes, all collections (they share the folder): kept up to date by every write.
        self._thumbnail_bytes = self._total_thumbnail_bytes()
        self._closed = False
        self._building: threading.Thread | None = None
        self._changes = 0  # adds and removals the ANN snapshot on disk does not have
        # New rows get ids above this (and above every row's): an id the ANN snapshot covers is never
        # given again, even when the row that had it was the last and is gone.
        self._id_floor = 1
        # A row's share of the database (its vector, its fields and index entries), roughly: what removing
        # it frees besides its thumbnail.
        self._row_bytes = 4 * dim + 256
        self._expired_below: dict[tuple[str, ...], float] = {}  # see expire_live
        self._trained = (0, 0)  # the ANN index's training: (highest row id, entries); see _start_build
        self._vectors: _Vectors | _AnnVectors = self._open_vectors()
        self._start_build()

    def _open_vectors(self) -> _Vectors | _AnnVectors:
        """The newest ANN snapshot brought up to date, or (none, or ANN switched off) every vector."""
        snapshot = latest_snapshot(self._ann_dir, self.collection) if self._policy.from_entries else None
        if snapshot is not None:
            path, mark = snapshot
            ann = AnnIndex.load(path)
            self._trained = self._training(mark, len(ann))
            return self._ann_vectors(ann, mark)
        self._db.execute("DELETE FROM ann_removed WHERE collection = ?", (self.collection,))
        vectors = _Vectors(self.dim)
        for ids, matrix in stored_batches(self._db, self.collection, self.dim, after=0):
            vectors.add(ids.tolist(), matrix)
        return vectors

    def _ann_vectors(self, ann: AnnIndex, mark: int) -> _AnnVectors:
        """`ann`, which covers row ids up to `mark`, with the rows removed and written since."""
        removed = [
            r[0]
            for r in self._db.execute("SELECT id FROM ann_removed WHERE collection = ?", (self.collection,))
        ]
        ann.remove(removed)
        self._changes = len(removed)
        for ids, matrix in stored_batches(self._db, self.collection, self.dim, after=mark):
            ann.add(ids, matrix)
            self._changes += len(ids)
        self._id_floor = max(self._id_floor, mark + 1)
        return _AnnVectors(ann, self._policy, self._read_vectors)

    def _training(self, snapshot_mark: int, entries: int) -> tuple[int, int]:
        """(the highest row id, the entries) the open ANN index was trained on; a snapshot written before
        they were kept counts as trained when it was written (and is recorded so, once)."""
        names = (f"ann_trained_mark:{self.collection}", f"ann_trained_on:{self.collection}")
        found = dict(
            self._db.execute("SELECT name, value FROM index_totals WHERE name IN (?, ?)", names).fetchall()
        )
        if len(found) < 2:
            self._keep_training(snapshot_mark, entries)
            return snapshot_mark, entries
        return int(found[names[0]]), int(found[names[1]])

    def _keep_training(self, mark: int, entries: int) -> None:
        self._trained = (mark, entries)
        self._db.executemany(
            "INSERT OR REPLACE INTO index_totals (name, value) VALUES (?, ?)",
            [(f"ann_trained_mark:{self.collection}", mark), (f"ann_trained_on:{self.collection}", entries)],
        )

    def _read_vectors(self, ids: Sequence[int]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        with self._lock:
            return read_vectors(self._db, self.collection, ids, self.dim)

    # --- the move to approximate search -------------------------------------------------------------
    @property
    def approximate(self) -> bool:
        """Whether searches go through the ANN index (the collection outgrew exact search)."""
        return isinstance(self._vectors, _AnnVectors)

    def _start_build(self) -> None:
        """Past the policy's size, build the ANN index in a thread from what SQLite holds now; exact
        search serves until it is ready, and rows written meanwhile are added when it is swapped in. An
        ANN index is built again, the same way, once as many rows were written since it was trained as
        it was trained on (the collection doubled, or retention replaced it): cells and codes learnt from
        what the cameras see now. The old one serves meanwhile (both in memory until the swap)."""
        with self._lock:
            if self._building is not None or self._closed:
                return
            if not self._policy.applies(self.dim, len(self._vectors)):
                return
            if self.approximate and not self._retrain_due():
                return
            mark = self._max_id()
            self._id_floor = max(self._id_floor, mark + 1)
            self._building = threading.Thread(
                target=self._build, args=(mark, len(self._vectors)), name="ann-build", daemon=True
            )
            self._building.start()

    def _build(self, mark: int, entries: int) -> None:
        try:
            reader = sqlite3.connect(self.root / "index.db", check_same_thread=False)
            try:
                ann = build_from_sqlite(reader, self.collection, self.dim, mark, entries)
            finally:
                reader.close()
            with self._lock:
                if self._closed:
                    return
                write_snapshot(self._ann_dir, self.collection, ann, mark)
                self._vectors = self._ann_vectors(ann, mark)
                self._keep_training(mark, entries)
            log.info(
                "search index %s: %d entries now searched approximately (%d cells)",
                self.collection,
                len(ann),
                ann.nlist,
            )
        except Exception:
            log.exception("search index %s: building the ANN index failed", self.collection)
            with self._lock:
                if self.approximate:  # the old index serves on; another try after as many rows again
                    self._trained = (mark, entries)
        finally:
            with self._lock:
                self._building = None

    def wait_for_build(self, timeout: float | None = None) -> bool:
        """Wait for an ANN build in progress (tests, benches). -> whether none is running."""
        thread = self._building
        if thread is not None:
            thread.join(timeout)
        return self._building is None

    def _max_id(self) -> int:
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM chunks").fetchone()[0])

    def _removed(self, ids: Sequence[int]) -> None:
        """Inside a write's transaction: rows an ANN snapshot (or one being built) may still hold."""
        if ids and (self.approximate or self._building is not None):
            self._db.executemany(
                "INSERT OR IGNORE INTO ann_removed (collection, id) VALUES (?, ?)",
                [(self.collection, i) for i in ids],
            )

    def _changed(self, count: int) -> None:
        """After a write: snapshot the ANN index when enough has changed since the last one (not while a
        new one is built: the removals it may have read stay recorded until it is swapped in); start the
        move to ANN once the collection is big enough, or a new training once it is due."""
        self._start_build()
        if not self.approximate:
            return
        self._changes += count
        if self._changes >= self._policy.snapshot_every and self._building is None:
            self._snapshot()

    def _retrain_due(self) -> bool:
        mark, entries = self._trained
        return self._max_id() - mark >= max(entries, self._policy.from_entries)

    def _snapshot(self) -> None:
        assert isinstance(self._vectors, _AnnVectors)
        mark = max(self._max_id(), self._id_floor - 1)
        write_snapshot(self._ann_dir, self.collection, self._vectors.ann, mark)
        self._db.execute("DELETE FROM ann_removed WHERE collection = ?", (self.collection,))
        self._id_floor = mark + 1
        self._changes = 0

    def _total_thumbnail_bytes(self) -> int:
        """The running total; summed from the rows once, for an index written before it was kept."""
        row = self._db.execute("SELECT value FROM index_totals WHERE name = 'thumbnail_bytes'").fetchone()
        if row is not None:
            return int(row[0])
        (total,) = self._db.execute("SELECT COALESCE(SUM(thumbnail_bytes), 0) FROM chunks").fetchone()
        self._db.execute("INSERT INTO index_totals (name, value) VALUES ('thumbnail_bytes', ?)", (total,))
        return int(total)

    def _add_to_thumbnail_bytes(self, change: int) -> None:
        """Inside a write's transaction."""
        if change:
            self._db.execute(
                "UPDATE index_totals SET value = value + ? WHERE name = 'thumbnail_bytes'", (change,)
            )

    def _add_thumbnail_sizes(self) -> None:
        """An index written before thumbnail sizes were kept: add the column, from the files (once)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(chunks)")}
        if "thumbnail_bytes" in columns:
            return
        self._db.execute("ALTER TABLE chunks ADD COLUMN thumbnail_bytes INTEGER NOT NULL DEFAULT 0")
        rows = self._db.execute("SELECT id, owner_id, entry_id FROM chunks WHERE thumbnail = 1").fetchall()
        sizes = []
        for row_id, owner, entry in rows:
            sizes.append((self.thumbnails.size(thumbnail_key(owner, entry)), row_id))
        self._db.executemany("UPDATE chunks SET thumbnail_bytes = ? WHERE id = ?", sizes)

    def close(self) -> None:
        with self._lock:
            if self.approximate and self._changes and not self._closed:
                self._snapshot()  # so the next start replays nothing
            self._closed = True
            self._db.close()

    def __len__(self) -> int:
        return len(self._vectors)

    # --- writes -------------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Add chunks, replacing an entry with the same owner and key. All or nothing."""
        if not chunks:
            return
        matrix = np.stack([chunk_vector(c, self.dim) for c in chunks])
        with self._lock:
            written: list[int] = []
            replaced: list[int] = []
            thumbnail_bytes = 0  # the change to the thumbnails' total
            with self._transaction():
                for c, vector in zip(chunks, matrix, strict=True):
                    entry = entry_id(self.collection, c.owner_id, c.key)
                    old = self._db.execute(
                        "SELECT id, thumbnail_bytes FROM chunks WHERE entry_id = ?", (entry,)
                    ).fetchone()
                    if old is not None:
                        replaced.append(old[0])
                        self._removed([old[0]])
                        thumbnail_bytes -= old[1]
                        self._db.execute("DELETE FROM chunks WHERE id = ?", (old[0],))
                    jpeg = c.thumbnail_jpeg
                    thumbnail_bytes += len(jpeg) if jpeg is not None else 0
                    cur = self._db.execute(
                        "INSERT INTO chunks (id, collection, entry_id, owner_id, live, source, chunk_idx,"
                        " start_s, end_s, abs_start, abs_end, start_time, end_time, caption, thumbnail,"
                        " vector, thumbnail_bytes)"
                        " VALUES (MAX(?, (SELECT COALESCE(MAX(id), 0) + 1 FROM chunks)),"
                        " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            self._id_floor,
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
                            int(jpeg is not None),
                            vector.tobytes(),
                            len(jpeg) if jpeg is not None else 0,
                        ),
                    )
                    assert cur.lastrowid is not None
                    written.append(cur.lastrowid)
                    if jpeg is not None:
                        self.thumbnails.put(thumbnail_key(c.owner_id, entry), jpeg)
                self._add_to_thumbnail_bytes(thumbnail_bytes)
            self._vectors.remove(replaced)
            self._vectors.add(written, matrix)
            self._thumbnail_bytes += thumbnail_bytes
            self._changed(len(replaced) + len(written))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def remove_owner(self, owner_id: str) -> int:
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM chunks WHERE owner_id = ? AND collection = ?", (owner_id, self.collection)
                )
            ]
            # Every collection's rows of the owner (the thumbnails folder is shared), each through the
            # owner index: "owner_id = ?" alone would scan the whole table.
            owned = f"collection IN ({_COLLECTIONS}) AND owner_id = ?"
            (freed,) = self._db.execute(
                f"SELECT COALESCE(SUM(thumbnail_bytes), 0) FROM chunks WHERE {owned}", (owner_id,)
            ).fetchone()
            with self._transaction():
                removed = self._db.execute(f"DELETE FROM chunks WHERE {owned}", (owner_id,)).rowcount
                self._removed(ids)
                self._add_to_thumbnail_bytes(-int(freed))
            self._vectors.remove(ids)
            self._thumbnail_bytes -= int(freed)
            self._changed(len(ids))
        self.thumbnails.delete_owner(owner_id)  # after the rows: a search never names a missing thumbnail
        return removed

    def expire_live(
        self,
        before: float | None,
        limit: int,
        owners: Sequence[str] | None = None,
        excluding: Sequence[str] = (),
        max_bytes: int | None = None,
    ) -> int:
        # All but some streams, by age: the rows of the streams left out stay behind, and the walk in
        # time order would read them again at every step; it starts where the last one ended instead
        # (everything else older is gone: live chunks are written in time order).
        floor_key = tuple(excluding) if owners is None and excluding and before is not None else None
        since = self._expired_below.get(floor_key) if floor_key is not None else None
        sql, params = expiry_query(self.collection, before, limit, owners, excluding, since)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
            if max_bytes is not None:
                rows = _first_reaching(rows, max_bytes, self._row_bytes)
            if floor_key is not None and before is not None:
                self._expired_below[floor_key] = rows[-1][4] if len(rows) == limit else before
            if not rows:
                return 0
            ids = [r[0] for r in rows]
            with self._transaction():
                self._db.execute(f"DELETE FROM chunks WHERE id IN ({','.join('?' * len(ids))})", ids)
                self._removed(ids)
                self._add_to_thumbnail_bytes(-sum(r[3] for r in rows))
            self._vectors.remove(ids)
            self._thumbnail_bytes -= sum(r[3] for r in rows)
            self._changed(len(ids))
        # After the rows: a search never names a missing thumbnail.
        self.thumbnails.delete([thumbnail_key(owner, entry) for _, owner, entry, size, _ in rows if size])
        return len(rows)

    def drop_thumbnails(self, before: float, limit: int) -> int:
        with self._lock:
            rows = self._db.execute(*old_thumbnails_query(self.collection, before, limit)).fetchall()
            if not rows:
                return 0
            freed = sum(r[3] for r in rows)
            with self._transaction():
                self._db.executemany(
                    "UPDATE chunks SET thumbnail = 0, thumbnail_bytes = 0 WHERE id = ?",
                    [(r[0],) for r in rows],
                )
                self._add_to_thumbnail_bytes(-freed)
            self._thumbnail_bytes -= freed
        # After the rows: a search never names a missing thumbnail.
        self.thumbnails.delete([thumbnail_key(owner, entry) for _, owner, entry, _ in rows])
        return len(rows)

    def footprint(self) -> Footprint:
        """Disk: the database's used pages (freed pages are reused, so they do not count), the thumbnail
        files and the ANN snapshots; memory: the open collection's matrix or ANN codes."""
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            snapshots = sum(f.stat().st_size for f in self._ann_dir.glob("*.faiss"))
            return Footprint(
                entries=len(self._vectors),
                disk_bytes=(pages - free) * page_size + self._thumbnail_bytes + snapshots,
                memory_bytes=self._vectors.nbytes,
            )

    # --- reads --------------------------------------------------------------------------------------
    def search(
        self, query: npt.NDArray[np.float32], top_k: int, where: SearchFilter | None = None
    ) -> list[Hit]:
        vector = unit_vector(query, self.dim)
        sql, args = filter_clause(where) if where is not None else ("", [])
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
                r[0]: _hit_row(r[1:])
                for r in self._db.execute(
                    f"SELECT id, {_HIT_COLUMNS} FROM chunks WHERE id IN ({','.join('?' * len(found))})",
                    [i for i, _ in found],
                )
            }
        return [hit_of(*rows[row_id], score) for row_id, score in found if row_id in rows]

    def latest(self, owner_id: str, limit: int) -> list[Hit]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_HIT_COLUMNS} FROM chunks WHERE collection = ? AND owner_id = ?"
                " ORDER BY start_s DESC, chunk_idx DESC LIMIT ?",
                (self.collection, owner_id, limit),
            ).fetchall()
        return [hit_of(*_hit_row(row), 0.0) for row in reversed(rows)]

    def thumbnail(self, entry: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT owner_id FROM chunks WHERE entry_id = ? AND thumbnail = 1", (entry,)
            ).fetchone()
        if row is None:
            return None
        return self.thumbnails.get(thumbnail_key(row[0], entry))


def _first_reaching(
    rows: list[tuple[int, str, str, int, float]], nbytes: int, row_bytes: int
) -> list[tuple[int, str, str, int, float]]:
    """The first of `rows` (expiry_query's) whose thumbnails and rows add up to `nbytes`."""
    total = 0
    for n, row in enumerate(rows):
        if total >= nbytes:
            return rows[:n]
        total += row[3] + row_bytes
    return rows


def _hit_row(row: Sequence[object]) -> tuple[str, dict[str, object]]:
    """A row of _HIT_COLUMNS -> (entry id, its HIT_FIELDS)."""
    return str(row[0]), dict(zip(HIT_FIELDS, row[1:], strict=True))
