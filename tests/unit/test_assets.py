"""The asset store and registry without HTTP: ingest is atomic (a refused file leaves no row and no
file), ids are claimed once, assets in use cannot be deleted, and registrations survive a reopen.

Every test runs twice: on SQLite (the default) and on a real PostgreSQL (RTVI_DATABASE_URL), a fresh
database per test."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from rtvi.core.assets.registry import Asset, AssetRegistry, database_url
from rtvi.core.assets.secrets import SecretBox
from rtvi.core.assets.store import AssetStore, NewFile
from rtvi.errors import (
    Conflict,
    Forbidden,
    InsufficientStorage,
    InUse,
    InvalidMedia,
    InvalidParameters,
    NoSuchResource,
)
from rtvi.settings import Settings
from tests.media_factory import make_clip


@pytest.fixture(autouse=True, params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """RTVI_DATABASE_URL for the test ("" = SQLite in the storage directory)."""
    if request.param == "sqlite":
        monkeypatch.delenv("RTVI_DATABASE_URL", raising=False)
        return ""
    url: str = request.getfixturevalue("postgres").create_database(f"t{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("RTVI_DATABASE_URL", url)
    return url


def _registry(database: str, tmp_path: Path, secrets: SecretBox | None = None) -> AssetRegistry:
    return AssetRegistry(database_url(database, tmp_path / "registry.sqlite3"), secrets)


def _camera(asset_id: str, **meta: str) -> Asset:
    return Asset(
        id=asset_id,
        kind="live",
        media_type="video",
        filename="c",
        path="rtsp://h/s",
        owns_dir=False,
        meta=dict(meta),
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3, fps=10, width=96, height=64)


def _store(root: Path, **env: str) -> AssetStore:
    settings = Settings(ASSET_STORAGE_DIR=str(root), **env)  # type: ignore[call-arg]
    return AssetStore(settings.storage, settings.ingest)


def _upload(store: AssetStore, source: Path, name: str, new: NewFile) -> Asset:
    async def run() -> Asset:
        with store.staging() as tmp:
            staged = tmp / "upload.bin"
            staged.write_bytes(source.read_bytes())
            return await store.add_upload(staged, name, staged.stat().st_size, new)

    return asyncio.run(run())


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "tmp").rglob("*")) + sorted(
        str(p.relative_to(root)) for p in (root / "files").rglob("*")
    )


def test_upload_commits_file_and_row_together(tmp_path: Path, clip: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    asset = _upload(store, clip, "cam 1.mp4", NewFile("video", sensor_name="dock"))
    assert Path(asset.path).read_bytes() == clip.read_bytes()
    assert asset.meta["duration_s"] == pytest.approx(3, abs=0.2) and asset.meta["fps"] == pytest.approx(10)
    assert store.get_file(asset.id).sensor_name == "dock"
    store.close()
    reopened = _store(root)  # a restart keeps the registration and the file
    assert reopened.get_file(asset.id).path == asset.path and Path(asset.path).is_file()
    reopened.delete_file(asset.id)
    assert not Path(asset.path).exists()
    with pytest.raises(NoSuchResource):
        reopened.get_file(asset.id)


def test_refused_uploads_leave_nothing(tmp_path: Path, clip: Path) -> None:
    root = tmp_path / "store"
    store = _store(root)
    text = tmp_path / "notes.mp4"
    text.write_bytes(b"not a video\n" * 50)
    with pytest.raises(InvalidMedia):
        _upload(store, text, "notes.mp4", NewFile("video"))
    with pytest.raises(InvalidMedia, match="image"):
        _upload(store, clip, "clip.mp4", NewFile("image"))  # a video declared as an image
    with pytest.raises(InvalidParameters, match="Invalid filename"):
        _upload(store, clip, "../escape.mp4", NewFile("video"))
    assert store.registry.list_assets() == []
    assert _leftovers(root) == []


def test_ids_are_claimed_once_and_in_use_assets_stay(tmp_path: Path, clip: Path) -> None:
    store = _store(tmp_path / "store")
    asset = _upload(store, clip, "a.mp4", NewFile("video", id="5f0c3c1e-8f7e-4a53-9a3e-9d1f0f6a1b2c"))
    with pytest.raises(Conflict) as dup:
        _upload(store, clip, "b.mp4", NewFile("video", id=asset.id))
    assert dup.value.code == "DuplicateAssetId"
    with store.registry.using([asset.id]), pytest.raises(InUse):
        store.delete_file(asset.id)
    store.delete_file(asset.id)
    assert store.registry.list_assets() == []


def test_server_paths_only_under_the_allowlist(tmp_path: Path, clip: Path) -> None:
    closed = _store(tmp_path / "closed")
    with pytest.raises(Forbidden, match="disabled"):
        asyncio.run(closed.register_path(str(clip), NewFile("video")))
    store = _store(tmp_path / "open", FILE_URL_ALLOWED_DIRS=str(clip.parent))
    asset = asyncio.run(store.register_path(str(clip), NewFile("video")))
    assert asset.path == str(clip.resolve()) and not asset.owns_dir
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(clip.read_bytes())
    with pytest.raises(Forbidden, match="outside"):
        asyncio.run(
            store.register_path(
                str(clip.parent / ".." / outside.parent.name / outside.name), NewFile("video")
            )
        )
    store.delete_file(asset.id)
    assert clip.is_file(), "deleting a registration never deletes the server's file"


def test_registry_reserve_and_live_lookup(tmp_path: Path, database: str) -> None:
    registry = _registry(database, tmp_path)
    with registry.reserve("cam-1", duplicate_code="DuplicateStreamId"):
        with pytest.raises(Conflict) as err, registry.reserve("cam-1", duplicate_code="DuplicateStreamId"):
            pass
        assert err.value.code == "DuplicateStreamId" and "Stream" in err.value.message
        registry.add(_camera("cam-1"))
    assert [a.id for a in registry.list_assets("live")] == ["cam-1"]
    registry.close()


def test_two_replicas_claiming_one_id_meet_at_the_database(tmp_path: Path, database: str) -> None:
    """Reservations are per replica; the shared table decides: the second insert is a Conflict with the
    code the caller asked for, and the first registration is intact."""
    a, b = _registry(database, tmp_path), _registry(database, tmp_path)
    with a.reserve("cam-1", "DuplicateStreamId"), b.reserve("cam-1", "DuplicateStreamId"):
        a.add(_camera("cam-1", description="first"))
        with pytest.raises(Conflict) as err:
            b.add(_camera("cam-1", description="second"))
    assert err.value.code == "DuplicateStreamId"
    with pytest.raises(Conflict):  # now the row exists: b refuses at once
        b.reserve("cam-1").__enter__()
    got = b.get("cam-1")
    assert got is not None and got.meta["description"] == "first"
    a.close(), b.close()


def test_credentials_are_sealed_at_rest_and_the_schema_is_versioned(tmp_path: Path, database: str) -> None:
    box = SecretBox(Fernet.generate_key())
    registry = _registry(database, tmp_path, box)
    registry.add(_camera("cam-1", username="admin", password="hunter2-pw"))
    engine = sa.create_engine(database_url(database, tmp_path / "registry.sqlite3"))
    with engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT meta FROM assets")).scalar_one()
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    assert "hunter2-pw" not in raw and "admin" not in raw
    got = registry.get("cam-1")
    assert got is not None and got.meta["password"] == "hunter2-pw"
    assert version == "0003"  # the newest migration (0003: the alert calibration)
    registry.close()
    again = _registry(database, tmp_path, box)  # a second start migrates nothing and keeps the row
    assert [a.id for a in again.list_assets()] == ["cam-1"]
    again.close()


def test_replicas_starting_together_migrate_once(tmp_path: Path, database: str) -> None:
    if not database:
        pytest.skip("one SQLite file is one machine's: replicas share PostgreSQL")
    made: list[AssetRegistry] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            made.append(_registry(database, tmp_path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(made) == 4
    made[0].add(_camera("cam-1"))
    assert all(r.ids() == {"cam-1"} for r in made)
    [r.close() for r in made]


def test_a_registry_from_before_migrations_is_upgraded_in_place(tmp_path: Path, database: str) -> None:
    if database:
        pytest.skip("only SQLite registries predate the migrations")
    path = tmp_path / "registry.sqlite3"
    with sqlite3.connect(path) as old:  # the schema the registry created before Alembic
        old.execute(
            "CREATE TABLE assets (id TEXT PRIMARY KEY, kind TEXT NOT NULL, media_type TEXT NOT NULL,"
            " filename TEXT NOT NULL, path TEXT NOT NULL, owns_dir INTEGER NOT NULL, bytes INTEGER NOT NULL,"
            " creation_time TEXT, sensor_name TEXT NOT NULL, created_at REAL NOT NULL, meta TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO assets VALUES ('a1', 'file', 'video', 'x.mp4', '/x', 1, 5, NULL, '', 1.0, '{}')"
        )
    registry = _registry(database, tmp_path)
    got = registry.get("a1")
    assert got is not None and got.owns_dir and got.bytes == 5 and registry.stored_bytes() == 5
    assert registry.evicted_count() == 0  # the missing table was made
    registry.close()


def _capped(root: Path, clip: Path, uploads: float, **env: str) -> AssetStore:
    gb = clip.stat().st_size * uploads / 2**30
    return _store(root, MAX_ASSET_STORAGE_SIZE_GB=repr(gb), **env)


def test_the_cap_evicts_the_oldest_first(tmp_path: Path, clip: Path) -> None:
    store = _capped(tmp_path / "store", clip, 2.5)  # room for two
    a, b, c = (_upload(store, clip, f"{n}.mp4", NewFile("video")) for n in "abc")
    with pytest.raises(NoSuchResource, match="already deleted because of age out policy"):
        store.get_file(a.id)
    with pytest.raises(NoSuchResource, match="already deleted"):
        store.delete_file(a.id)
    assert not Path(a.path).exists() and Path(b.path).is_file() and Path(c.path).is_file()
    stats = store.stats()
    assert stats["aged_out_count"] == 1 and stats["asset_count_with_storage"] == 2
    assert stats["storage_usage_bytes"] == 2 * clip.stat().st_size


def test_assets_in_use_are_never_evicted(tmp_path: Path, clip: Path) -> None:
    root = tmp_path / "store"
    store = _capped(root, clip, 2.5)
    a = _upload(store, clip, "a.mp4", NewFile("video"))
    b = _upload(store, clip, "b.mp4", NewFile("video"))
    with store.registry.using([a.id]):
        c = _upload(store, clip, "c.mp4", NewFile("video"))  # b goes: a is in use
        assert {x.id for x in store.registry.list_assets()} == {a.id, c.id}
        with store.registry.using([c.id]), pytest.raises(InsufficientStorage):
            _upload(store, clip, "d.mp4", NewFile("video"))
    assert store.registry.was_evicted(b.id) and not store.registry.was_evicted(a.id)
    assert len(store.registry.list_assets()) == 2 and list((root / "tmp").iterdir()) == []


def test_assets_past_their_age_are_evicted(tmp_path: Path, clip: Path) -> None:
    store = _store(tmp_path / "store", ASSET_MAX_AGE_HOURS="1", FILE_URL_ALLOWED_DIRS=str(clip.parent))
    old = _upload(store, clip, "old.mp4", NewFile("video"))
    registered = asyncio.run(store.register_path(str(clip), NewFile("video")))
    assert store.evict_expired() == 0
    assert store.evict_expired(now=time.time() + 3601) == 1
    assert store.registry.was_evicted(old.id) and store.get_file(registered.id).path == str(clip.resolve())
