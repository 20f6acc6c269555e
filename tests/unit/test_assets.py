"""The asset store and registry without HTTP: ingest is atomic (a refused file leaves no row and no
file), ids are claimed once, assets in use cannot be deleted, and registrations survive a reopen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rtvi.core.assets.registry import Asset, AssetRegistry
from rtvi.core.assets.store import AssetStore, NewFile
from rtvi.errors import Conflict, Forbidden, InUse, InvalidMedia, InvalidParameters, NoSuchResource
from rtvi.settings import Settings
from tests.media_factory import make_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3, fps=10, width=96, height=64)


def _store(root: Path, **env: str) -> AssetStore:
    return AssetStore(Settings(ASSET_STORAGE_DIR=str(root), **env))  # type: ignore[call-arg]


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


def test_registry_reserve_and_live_lookup(tmp_path: Path) -> None:
    registry = AssetRegistry(tmp_path / "r.sqlite3")
    with registry.reserve("cam-1", duplicate_code="DuplicateStreamId"):
        with pytest.raises(Conflict) as err, registry.reserve("cam-1", duplicate_code="DuplicateStreamId"):
            pass
        assert err.value.code == "DuplicateStreamId" and "Stream" in err.value.message
        registry.add(
            Asset(
                id="cam-1", kind="live", media_type="video", filename="c", path="rtsp://h/s", owns_dir=False
            )
        )
    assert [a.id for a in registry.list_assets("live")] == ["cam-1"]
    registry.close()
