"""Disk layout of the asset store.

    <root>/registry.sqlite3   the registry (see registry.py)
    <root>/files/<id>/<name>  uploaded media, one directory per asset
    <root>/tmp/               uploads in flight; renamed into files/ only once complete and verified
    <root>/index/             the search index and its thumbnails (core/index)

Everything under tmp/ at start-up, and any files/<id> without a registry row, is debris of a crash and
is removed, so an interrupted upload never leaves half a file behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` via a temp file + rename in its directory: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AssetStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.files_dir = self.root / "files"
        self.tmp_dir = self.root / "tmp"
        self.db_path = self.root / "registry.sqlite3"
        # Uploads, the registry and the key file: the service's user only. A directory the operator made
        # keeps its mode (it may be shared, like /tmp); what we create is 0700.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.files_dir, self.tmp_dir):
            d.mkdir(mode=0o700, exist_ok=True)

    def new_tmp_dir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.tmp_dir))

    def commit(self, tmp_dir: Path, asset_id: str) -> Path:
        """Atomically move a finished ingest directory into place (same filesystem: a rename)."""
        final = self.asset_dir(asset_id)
        os.rename(tmp_dir, final)
        return final

    def asset_dir(self, asset_id: str) -> Path:
        d = (self.files_dir / asset_id).resolve()
        if d.parent != self.files_dir:  # ids are validated upstream; this is the last line of defence
            raise ValueError(f"asset id {asset_id!r} escapes the storage directory")
        return d

    def remove_asset_dir(self, asset_id: str) -> None:
        shutil.rmtree(self.asset_dir(asset_id), ignore_errors=True)

    def discard(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def cleanup(self, known_ids: set[str]) -> None:
        for p in self.tmp_dir.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        for p in self.files_dir.iterdir():
            if p.name not in known_ids:
                log.warning("removing orphaned asset directory %s", p)
                shutil.rmtree(p, ignore_errors=True)
