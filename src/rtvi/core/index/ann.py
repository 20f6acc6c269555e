"""Approximate nearest neighbours for a large collection (issue 25): the candidates an exact re-rank scores.

Beyond `AnnPolicy.from_entries` chunks, the SQLite index (sqlite.py) stops holding every vector in
memory and searches this instead: faiss's inverted file (IVF, `nlist` k-means cells chosen from the
collection's size when it is built) over product-quantised codes (one byte per four dimensions: 96 bytes
for a 384-d vector instead of 1,536). A search scans the `nprobe` cells nearest the query, takes the
`candidates` best codes, and the caller re-ranks them exactly with their full vectors read from SQLite,
so scores are exact cosines and only the candidate list is approximate. docs/search.md says why this
and not HNSW, 4-bit scalar codes or faiss's 4-bit "fast scan" PQ (whose lists break when an entry is
removed and another added: retention does that all day).

The index is derived data: SQLite holds every vector. It is kept on disk as a snapshot named after the
highest row id it covers (`ann/<collection digest>-<row id>.faiss`), written atomically; on open the
newest snapshot is read (no vector is re-read) and brought up to date from SQLite: rows written after it
are added, rows removed since (the `ann_removed` table, written in the same transaction as the removal)
are removed. A crash at any point loses nothing committed to SQLite.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from rtvi.core.index.base import owner_key

# Row ids are read from SQLite this many at a time (SQLite's bound on a statement's parameters is higher;
# this keeps each statement small).
_ID_BATCH = 900
_TRAINING_SAMPLE = 65_536
_BUILD_BATCH = 50_000
_MIN_NLIST, _MAX_NLIST = 16, 4096
_POINTS_PER_LIST = 64  # nlist is the power of two nearest below size / 64 when the index is built


@dataclass(frozen=True, slots=True)
class AnnPolicy:
    """When a collection moves from exact search to this index, and how this index is searched."""

    from_entries: int = 200_000  # 0: always exact
    nprobe: int = 32  # cells scanned per search (more when a filter selects few entries)
    candidates: int = 300  # codes re-ranked exactly per search (at least 4x top_k)
    snapshot_every: int = 50_000  # changes (adds + removals) between two snapshots

    def applies(self, dim: int, entries: int) -> bool:
        # A code byte stands for four dimensions: other dimensions stay exact.
        return self.from_entries > 0 and dim % 4 == 0 and entries >= self.from_entries


def nlist_for(entries: int) -> int:
    n = max(_MIN_NLIST, min(_MAX_NLIST, entries // _POINTS_PER_LIST))
    return 1 << (n.bit_length() - 1)


class AnnIndex:
    """faiss IVF + PQ codes over unit vectors, by SQLite row id. Not thread-safe: the
    SQLite index calls it under its lock."""

    def __init__(self, index: faiss.Index) -> None:
        self._index = index  # owns the memory: the IVF view below does not
        self._ivf = faiss.extract_index_ivf(index)

    @classmethod
    def train(cls, sample: npt.NDArray[np.float32], entries: int) -> AnnIndex:
        """Cells and codebooks learnt from `sample` for a collection of about `entries` vectors."""
        dim = sample.shape[1]
        nlist = min(nlist_for(entries), max(_MIN_NLIST, len(sample) // 8))
        # "np": no polysemous training (it took 25x as long to train, and the search does not use it).
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{dim // 4}np", faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return cls(index)

    @classmethod
    def load(cls, path: Path) -> AnnIndex:
        return cls(faiss.read_index(str(path)))

    def save(self, path: Path) -> None:
        """Atomically: a reader (or a crash) sees the old snapshot or the new one."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist)

    @property
    def nbytes(self) -> int:
        """Codes and ids in memory, plus the cells' centroids."""
        per_entry = self._ivf.code_size + 8
        return int(self._ivf.ntotal * per_entry + self._ivf.nlist * self._ivf.d * 4)

    def add(self, ids: Sequence[int] | npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids):
            self._index.add_with_ids(
                np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64)
            )

    def remove(self, ids: Sequence[int]) -> None:
        if ids:
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

    def candidates(
        self, query: npt.NDArray[np.float32], n: int, nprobe: int, among: Sequence[int] | None = None
    ) -> npt.NDArray[np.int64]:
        """Up to `n` row ids whose codes score best against `query`, among the given ids when given (then
        more cells are scanned, in proportion to how few entries the filter keeps)."""
        if among is not None:
            share = max(len(among), 1) / max(len(self), 1)
            nprobe = int(np.ceil(nprobe / share))
        params = faiss.SearchParametersIVF()
        params.nprobe = min(self.nlist, max(1, nprobe))
        if among is not None:
            # A bitmap over row ids: one bit test per scanned entry (a hash lookup per entry, as
            # IDSelectorBatch does, cost 430 ms per search at 10M entries).
            ids = np.asarray(among, dtype=np.int64)
            bits = np.zeros(int(ids.max()) + 1, dtype=bool)
            bits[ids] = True
            bitmap = np.packbits(bits, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # bitmap: alive below
        _, ids = self._index.search(query.reshape(1, -1), n, params=params)
        found: npt.NDArray[np.int64] = ids[0][ids[0] >= 0]
        return found


# --- snapshots on disk ------------------------------------------------------------------------------


def _snapshot_prefix(collection: str) -> str:
    return owner_key(collection)  # collections are model ids: not safe file names


def latest_snapshot(folder: Path, collection: str) -> tuple[Path, int] | None:
    """The newest snapshot of `collection` and the highest row id it covers; None when there is none."""
    pattern = re.compile(re.escape(_snapshot_prefix(collection)) + r"-(\d+)\.faiss")
    found = [
        (int(m.group(1)), path)
        for path in (folder.iterdir() if folder.is_dir() else ())
        if (m := pattern.fullmatch(path.name))
    ]
    if not found:
        return None
    mark, path = max(found)
    return path, mark


def write_snapshot(folder: Path, collection: str, ann: AnnIndex, mark: int) -> Path:
    """Save `ann` as covering row ids up to `mark`, then drop the older snapshots and any half-written
    file a crash left."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_snapshot_prefix(collection)}-{mark}.faiss"
    ann.save(path)
    prefix = _snapshot_prefix(collection) + "-"
    for old in folder.iterdir():
        if (old != path and old.name.startswith(prefix)) or old.suffix == ".tmp":
            old.unlink(missing_ok=True)
    return path


# --- reading vectors from SQLite --------------------------------------------------------------------


def read_vectors(
    db: sqlite3.Connection, collection: str, ids: Sequence[int], dim: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The stored vectors of these row ids (those of the collection that still exist), as (ids, matrix)."""
    found_ids: list[int] = []
    blobs: list[bytes] = []
    for i in range(0, len(ids), _ID_BATCH):
        part = [int(x) for x in ids[i : i + _ID_BATCH]]
        for row_id, blob in db.execute(
            f"SELECT id, vector FROM chunks WHERE +collection = ? AND id IN ({','.join('?' * len(part))})",
            [collection, *part],
        ):
            found_ids.append(row_id)
            blobs.append(blob)
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
    return np.asarray(found_ids, dtype=np.int64), matrix


def stored_batches(
    db: sqlite3.Connection, collection: str, dim: int, after: int, upto: int | None = None
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """The collection's rows with after < id <= upto, as (ids, matrix) batches in id order."""
    last = after
    bound = "" if upto is None else " AND id <= ?"
    while True:
        rows = db.execute(
            f"SELECT id, vector FROM chunks WHERE +collection = ? AND id > ?{bound} ORDER BY id LIMIT ?",
            [collection, last, *([] if upto is None else [upto]), _BUILD_BATCH],
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        yield np.asarray([r[0] for r in rows], dtype=np.int64), matrix


def training_sample(
    db: sqlite3.Connection, collection: str, dim: int, upto: int, size: int = _TRAINING_SAMPLE
) -> npt.NDArray[np.float32]:
    """About `size` of the collection's vectors, read at random row ids between its oldest row and `upto`
    (no full scan; under retention the live rows are the last ones)."""
    # By the rowid (the first row is usually the collection's): the collection indexes would scan.
    first = db.execute(
        "SELECT id FROM chunks WHERE +collection = ? ORDER BY id LIMIT 1", (collection,)
    ).fetchone()
    low = first[0] if first else 1
    rng = np.random.default_rng(upto)
    ids = np.unique(rng.integers(low, upto + 1, size=min(size, upto - low + 1)))
    got_ids, matrix = read_vectors(db, collection, ids.tolist(), dim)
    if len(got_ids) >= min(size, 4096):
        return matrix
    parts: list[npt.NDArray[np.float32]] = []  # sparse ids (other collections, removals): in id order
    for _, part in stored_batches(db, collection, dim, after=0, upto=upto):
        parts.append(part)
        if sum(len(p) for p in parts) >= size:
            break
    return np.concatenate(parts)[:size] if parts else matrix


def build_from_sqlite(db: sqlite3.Connection, collection: str, dim: int, upto: int, entries: int) -> AnnIndex:
    """An index of the collection's rows up to row id `upto`, streamed from SQLite in batches: only the
    training sample and one batch of full vectors are in memory at a time."""
    ann = AnnIndex.train(training_sample(db, collection, dim, upto), entries)
    for ids, matrix in stored_batches(db, collection, dim, after=0, upto=upto):
        ann.add(ids, matrix)
    return ann
