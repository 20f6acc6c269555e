"""The asset registry: two tables in SQLite (default, one machine: `<storage>/registry.sqlite3`) or in
PostgreSQL (RTVI_DATABASE_URL=postgresql://..., shared by replicas), through one SQLAlchemy Core code
path; the schema is versioned by Alembic migrations (`migrations/`), applied at start-up.

Files (uploads and registered server paths) and live streams are both assets; live streams keep their
connection details in `meta`. Use counts (an asset being processed cannot be deleted) and id
reservations (ids are claimed before any slow ingest) live in memory: they describe this replica's
running work. Two replicas claiming one id meet at the primary key: the second insert is a Conflict.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from rtvi.core.assets.migrations import upgrade
from rtvi.core.assets.secrets import SecretBox
from rtvi.errors import Conflict, InUse, Unavailable

AssetKind = Literal["file", "live"]

# The newest schema (migrations/versions make it); the queries below are written against these.
_metadata = sa.MetaData()
_assets = sa.Table(
    "assets",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("media_type", sa.Text, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("owns_dir", sa.Boolean, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("creation_time", sa.Text),
    sa.Column("sensor_name", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
)
# Ids removed by the storage policy, so a later request hears why its asset is gone (spec §2.4).
_evicted = sa.Table(
    "evicted",
    _metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("evicted_at", sa.Double, nullable=False),
)


def database_url(configured: str, sqlite_path: Path) -> str:
    """RTVI_DATABASE_URL, with postgresql:// meaning psycopg 3; empty -> the SQLite file."""
    if not configured:
        return f"sqlite:///{sqlite_path}"
    url = make_url(configured)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"RTVI_DATABASE_URL: use sqlite:/// or postgresql://, not {url.drivername}://")
    return url.render_as_string(hide_password=False)


def _sqlite_file(url: sa.URL) -> None:
    """The registry holds camera URLs and (sealed) credentials: its file is the service user's only."""
    if url.database and url.database != ":memory:":
        path = Path(url.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)


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
    def __init__(self, url: str, secrets: SecretBox | None = None) -> None:
        self._secrets = secrets
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        if self.backend == "sqlite":
            _sqlite_file(parsed)
        # pool_pre_ping: a PostgreSQL restart or failover costs one failed checkout, not failed requests.
        self._engine = sa.create_engine(parsed, pool_pre_ping=self.backend != "sqlite")
        if self.backend == "sqlite":
            # WAL keeps readers cheap next to the rare, tiny writes.
            sa.event.listen(self._engine, "connect", lambda conn, _: conn.execute("PRAGMA journal_mode=WAL"))
        with self._engine.connect() as conn:
            upgrade(conn)
        self._lock = threading.RLock()
        self._reserved: dict[str, str] = {}  # id -> the Conflict code a duplicate gets
        self._in_use: Counter[str] = Counter()

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> sa.Engine:
        """The database, for the other tables its migrations make (the alert rules: core/alerts)."""
        return self._engine

    @property
    def secrets(self) -> SecretBox | None:
        return self._secrets

    def _read(self, query: sa.Executable) -> list[sa.Row[Any]]:
        with self._engine.connect() as conn:
            return list(conn.execute(query))

    # --- reads ----------------------------------------------------------------------------------
    def get(self, asset_id: str) -> Asset | None:
        rows = self._read(sa.select(_assets).where(_assets.c.id == asset_id))
        return self._row_to_asset(rows[0]) if rows else None

    def list_assets(self, kind: AssetKind | None = None) -> list[Asset]:
        query = sa.select(_assets).order_by(_assets.c.created_at)
        if kind is not None:
            query = query.where(_assets.c.kind == kind)
        return [self._row_to_asset(r) for r in self._read(query)]

    def stored_bytes(self) -> int:
        """What the assets with their own directory (uploads, downloads) hold in the store."""
        total = sa.func.coalesce(sa.func.sum(_assets.c.bytes), 0)
        return int(self._read(sa.select(total).where(_assets.c.owns_dir))[0][0])

    def evictable(self) -> list[Asset]:
        """Assets the storage policy may remove, oldest first: those with their own directory (never
        path registrations or live streams) that no request here is using."""
        rows = self._read(sa.select(_assets).where(_assets.c.owns_dir).order_by(_assets.c.created_at))
        with self._lock:
            return [a for a in map(self._row_to_asset, rows) if self._in_use[a.id] <= 0]

    def was_evicted(self, asset_id: str) -> bool:
        return bool(self._read(sa.select(_evicted.c.id).where(_evicted.c.id == asset_id)))

    def evicted_count(self) -> int:
        return int(self._read(sa.select(sa.func.count()).select_from(_evicted))[0][0])

    def evict(self, asset_id: str) -> None:
        """Remove a registration for the storage policy and remember why (InUse if a request holds it)."""
        with self._lock:
            if self._in_use[asset_id] > 0:
                raise InUse(asset_id)
            with self._engine.begin() as conn:
                conn.execute(sa.delete(_assets).where(_assets.c.id == asset_id))
                conn.execute(sa.delete(_evicted).where(_evicted.c.id == asset_id))
                conn.execute(sa.insert(_evicted).values(id=asset_id, evicted_at=time.time()))

    def ids(self) -> set[str]:
        return {r[0] for r in self._read(sa.select(_assets.c.id))}

    # --- writes ---------------------------------------------------------------------------------
    @contextmanager
    def reserve(self, asset_id: str, duplicate_code: str = "DuplicateAssetId") -> Iterator[None]:
        """Claim an id for the duration of an ingest; a concurrent or existing claim is a Conflict."""
        with self._lock:
            if asset_id in self._reserved or self.get(asset_id) is not None:
                raise _duplicate(asset_id, duplicate_code)
            self._reserved[asset_id] = duplicate_code
        try:
            yield
        finally:
            with self._lock:
                self._reserved.pop(asset_id, None)

    def add(self, asset: Asset) -> None:
        row = asdict(asset)
        row["meta"] = self._dump_meta(asset.meta)
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.insert(_assets).values(**row))
        except sa.exc.IntegrityError:  # another replica took the id while this one ingested
            with self._lock:
                code = self._reserved.get(asset.id, "DuplicateAssetId")
            raise _duplicate(asset.id, code) from None

    def update_meta(self, asset_id: str, meta: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                sa.update(_assets).where(_assets.c.id == asset_id).values(meta=self._dump_meta(meta))
            )

    def remove(self, asset_id: str) -> bool:
        """-> whether the asset was there (a concurrent delete may have removed it first)."""
        with self._lock:
            if self._in_use[asset_id] > 0:
                raise InUse(asset_id)
            with self._engine.begin() as conn:
                return conn.execute(sa.delete(_assets).where(_assets.c.id == asset_id)).rowcount > 0

    def _row_to_asset(self, row: sa.Row[Any]) -> Asset:
        m = row._mapping
        return Asset(
            id=m["id"],
            kind=m["kind"],
            media_type=m["media_type"],
            filename=m["filename"],
            path=m["path"],
            owns_dir=bool(m["owns_dir"]),
            bytes=m["bytes"],
            creation_time=m["creation_time"],
            sensor_name=m["sensor_name"],
            created_at=m["created_at"],
            meta=self._load_meta(m["meta"]),
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


def _duplicate(asset_id: str, code: str) -> Conflict:
    noun = "Stream" if code == "DuplicateStreamId" else "Asset"
    return Conflict(f"{noun} with id '{asset_id}' already exists", code)


def _map_secrets(meta: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    return {k: fn(v) if k in SECRET_META_KEYS and isinstance(v, str) else v for k, v in meta.items()}
