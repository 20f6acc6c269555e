"""The asset registry: one SQLite table under the storage directory, so registrations survive a restart.

Files (uploads and registered server paths) and live streams are both assets; live streams keep their
connection details in `meta`. Use counts (an asset being processed cannot be deleted) and id
reservations (ids are claimed before any slow ingest) live in memory: they describe running work.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rtvi.core.assets.secrets import SecretBox
from rtvi.errors import Conflict, InUse, Unavailable

AssetKind = Literal["file", "live"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    media_type TEXT NOT NULL,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    owns_dir INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    creation_time TEXT,
    sensor_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    meta TEXT NOT NULL
);
"""


# Ids removed by the storage policy, so a later request hears why its asset is gone (spec §2.4).
_EVICTED_SCHEMA = "CREATE TABLE IF NOT EXISTS evicted (id TEXT PRIMARY KEY, evicted_at REAL NOT NULL)"


@dataclass(slots=True)
class Asset:
    id: str
    kind: AssetKind
    media_type: Literal["video", "image"]
    filename: str
    path: str  # the media on disk (files) or the URL without credentials (live)
    owns_dir: bool  # True when the asset has its own directory that deleting it removes
    bytes: int = 0
    creation_time: str | None = None
    sensor_name: str = ""
    created_at: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)  # probe results (fps, duration), stream details

    @property
    def is_live(self) -> bool:
        return self.kind == "live"


# Meta keys whose values are stored sealed by the SecretBox (camera credentials).
SECRET_META_KEYS = ("username", "password")


class AssetRegistry:
    def __init__(self, db_path: Path, secrets: SecretBox | None = None) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._secrets = secrets
        # The registry holds camera URLs and (sealed) credentials: readable by the service's user only.
        db_path.touch(mode=0o600, exist_ok=True)
        db_path.chmod(0o600)
        # One connection guarded by a lock: writes are rare and tiny; WAL keeps readers cheap.
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_EVICTED_SCHEMA)
        self._lock = threading.RLock()
        self._reserved: set[str] = set()
        self._in_use: Counter[str] = Counter()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads ----------------------------------------------------------------------------------
    def get(self, asset_id: str) -> Asset | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone()
        return self._row_to_asset(row) if row else None

    def list_assets(self, kind: AssetKind | None = None) -> list[Asset]:
        with self._lock:
            if kind is None:
                rows = self._db.execute("SELECT * FROM assets ORDER BY created_at").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM assets WHERE kind = ? ORDER BY created_at", (kind,)
                ).fetchall()
        return [self._row_to_asset(r) for r in rows]

    def stored_bytes(self) -> int:
        """What the assets with their own directory (uploads, downloads) hold on disk."""
        with self._lock:
            return int(
                self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM assets WHERE owns_dir").fetchone()[0]
            )

    def evictable(self) -> list[Asset]:
        """Assets the storage policy may remove, oldest first: those with their own directory (never
        path registrations or live streams) that no request is using."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM assets WHERE owns_dir ORDER BY created_at").fetchall()
            return [a for a in map(self._row_to_asset, rows) if self._in_use[a.id] <= 0]

    def was_evicted(self, asset_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM evicted WHERE id = ?", (asset_id,)).fetchone() is not None

    def evicted_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM evicted").fetchone()[0])

    def evict(self, asset_id: str) -> None:
        """Remove a registration for the storage policy and remember why (InUse if a request holds it)."""
        with self._lock:
            if self._in_use[asset_id] > 0:
                raise InUse(asset_id)
            self._db.execute("DELETE FROM assets WHERE id = ?", (asset_id,))
            self._db.execute("INSERT OR REPLACE INTO evicted VALUES (?, ?)", (asset_id, time.time()))

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM assets")}

    # --- writes ---------------------------------------------------------------------------------
    @contextmanager
    def reserve(self, asset_id: str, duplicate_code: str = "DuplicateAssetId") -> Iterator[None]:
        """Claim an id for the duration of an ingest; a concurrent or existing claim is a Conflict."""
        with self._lock:
            if asset_id in self._reserved or self.get(asset_id) is not None:
                noun = "Stream" if duplicate_code == "DuplicateStreamId" else "Asset"
                raise Conflict(f"{noun} with id '{asset_id}' already exists", duplicate_code)
            self._reserved.add(asset_id)
        try:
            yield
        finally:
            with self._lock:
                self._reserved.discard(asset_id)

    def add(self, asset: Asset) -> None:
        d = asdict(asset)
        d["owns_dir"] = int(asset.owns_dir)
        d["meta"] = self._dump_meta(asset.meta)
        with self._lock:
            self._db.execute(
                "INSERT INTO assets VALUES (:id, :kind, :media_type, :filename, :path, :owns_dir, :bytes,"
                " :creation_time, :sensor_name, :created_at, :meta)",
                d,
            )

    def update_meta(self, asset_id: str, meta: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE assets SET meta = ? WHERE id = ?", (self._dump_meta(meta), asset_id))

    def remove(self, asset_id: str) -> None:
        with self._lock:
            if self._in_use[asset_id] > 0:
                raise InUse(asset_id)
            self._db.execute("DELETE FROM assets WHERE id = ?", (asset_id,))

    def _row_to_asset(self, row: tuple[Any, ...]) -> Asset:
        (id_, kind, media_type, filename, path, owns_dir, nbytes, ctime, sensor, created_at, meta) = row
        return Asset(
            id=id_,
            kind=kind,
            media_type=media_type,
            filename=filename,
            path=path,
            owns_dir=bool(owns_dir),
            bytes=nbytes,
            creation_time=ctime,
            sensor_name=sensor,
            created_at=created_at,
            meta=self._load_meta(meta),
        )

    def _dump_meta(self, meta: dict[str, Any]) -> str:
        if self._secrets is not None:
            meta = _map_secrets(meta, self._secrets.seal)
        return json.dumps(meta)

    def _load_meta(self, raw: str) -> dict[str, Any]:
        meta: dict[str, Any] = json.loads(raw)
        return _map_secrets(meta, self._secrets.open) if self._secrets is not None else meta

    # --- use counts -----------------------------------------------------------------------------
    @contextmanager
    def using(self, asset_ids: list[str]) -> Iterator[None]:
        """Mark assets in use while a request processes them, so they cannot be deleted under it."""
        with self._lock:
            missing = [a for a in asset_ids if self.get(a) is None]
            if missing:
                raise Unavailable(
                    f"Asset {missing[0]} was removed before it could be used", "DependencyError"
                )
            self._in_use.update(asset_ids)
        try:
            yield
        finally:
            with self._lock:
                self._in_use.subtract(asset_ids)
                for a in asset_ids:
                    if self._in_use[a] <= 0:
                        del self._in_use[a]

    def in_use(self, asset_id: str) -> bool:
        with self._lock:
            return self._in_use[asset_id] > 0


def _map_secrets(meta: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    return {k: fn(v) if k in SECRET_META_KEYS and isinstance(v, str) else v for k, v in meta.items()}
