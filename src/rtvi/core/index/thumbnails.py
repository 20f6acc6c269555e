"""Where the index's thumbnails live (docs/search.md): files on this machine, or objects in the asset
store's S3 bucket (RTVI_ASSET_STORE=s3://...), which every replica reads. One layout for both:

    <owner digest>/<first two hex digits of the entry id>/<entry id>.jpg

under `<index folder>/thumbnails/` (files) or `s3://bucket/prefix/_thumbnails/` (objects). One folder per
owner (a file or a stream), so removing an owner is one folder or one prefix; within it, 256 folders by
the entry id (a hash), so a stream that runs for a year (~3 M chunks at 10 s) puts ~12 k files in each,
never millions in one. A thumbnail is named by its key (`thumbnail_key`); the SQLite index derives it, a
Milvus entry holds it as its reference.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rtvi.core.assets.s3blobs import THUMBNAILS, S3Location, s3_client
from rtvi.core.assets.storage import atomic_write
from rtvi.core.index.base import owner_key

log = logging.getLogger(__name__)

# Keys are built here from hex digests only; one read back from an index entry is checked against this
# before it names a file or an object.
_KEY = re.compile(r"^[0-9a-f]{32}/[0-9a-f]{2}/[0-9a-f]{32}\.jpg$")
_LAYOUT = "LAYOUT"  # in the folder: the layout's version (2: fanned out by entry id)


def thumbnail_key(owner_id: str, entry: str) -> str:
    return key_of_digest(owner_key(owner_id), entry)


def key_of_digest(owner_digest: str, entry: str) -> str:
    """The key from the owner's digest (what a Milvus entry holds as `owner_key`) and the entry id."""
    return f"{owner_digest}/{entry[:2]}/{entry}.jpg"


def _checked(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a thumbnail key: {key[:100]!r}")
    return key


class ThumbnailStore(Protocol):
    """Thumbnails by key. Thread-safe; blocking (the index calls it on its own threads)."""

    where: str  # for logs: the folder or the s3:// prefix

    def put(self, key: str, jpeg: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The JPEG, or None when there is none."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove these thumbnails (missing ones are no error)."""
        ...

    def delete_owner(self, owner_id: str) -> None:
        """Remove every thumbnail of a file or stream."""
        ...


class LocalThumbnails:
    """Files under `root` (the index's folder's thumbnails/). A folder written by an earlier release (one
    folder per owner, no fan-out) is moved into this layout on open, once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / _LAYOUT).is_file():
            self._fan_out()
            atomic_write(root / _LAYOUT, b"2\n")

    def _fan_out(self) -> None:
        moved = 0
        for owner_dir in self.root.iterdir():
            if not owner_dir.is_dir():
                continue
            for f in owner_dir.iterdir():
                if f.is_file() and f.suffix == ".jpg":
                    (owner_dir / f.name[:2]).mkdir(exist_ok=True)
                    os.replace(f, owner_dir / f.name[:2] / f.name)
                    moved += 1
        if moved:
            log.info("search index: %d thumbnail(s) moved into per-entry folders under %s", moved, self.root)

    def path(self, key: str) -> Path:
        return self.root / _checked(key)

    def put(self, key: str, jpeg: bytes) -> None:
        atomic_write(self.path(key), jpeg)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, key: str) -> int:
        path = self.path(key)
        return path.stat().st_size if path.is_file() else 0

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.path(key).unlink(missing_ok=True)

    def delete_owner(self, owner_id: str) -> None:
        shutil.rmtree(self.root / owner_key(owner_id), ignore_errors=True)


class S3Thumbnails:
    """Objects under s3://bucket/prefix/_thumbnails/ (the asset store's bucket and prefix), so any replica
    serves any thumbnail. A thumbnail is small: one PUT each."""

    _DELETE_BATCH = 1000  # DeleteObjects' limit

    def __init__(self, asset_store: str, endpoint_url: str) -> None:
        location = S3Location.parse(asset_store)
        self.bucket = location.bucket
        self.prefix = f"{location.prefix}{THUMBNAILS}/"
        self.where = location.url(self.prefix)
        self._s3: Any = s3_client(endpoint_url)

    def put(self, key: str, jpeg: bytes) -> None:
        self._s3.put_object(
            Bucket=self.bucket, Key=self.prefix + _checked(key), Body=jpeg, ContentType="image/jpeg"
        )

    def get(self, key: str) -> bytes | None:
        try:
            found = self._s3.get_object(Bucket=self.bucket, Key=self.prefix + _checked(key))
        except self._s3.exceptions.NoSuchKey:
            return None
        return bytes(found["Body"].read())

    def delete(self, keys: Sequence[str]) -> None:
        self._delete([self.prefix + _checked(k) for k in keys])

    def delete_owner(self, owner_id: str) -> None:
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}{owner_key(owner_id)}/"
        )
        for page in pages:  # a page holds at most 1000 keys: one DeleteObjects each
            self._delete([obj["Key"] for obj in page.get("Contents", [])])

    def _delete(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), self._DELETE_BATCH):
            batch = [{"Key": k} for k in keys[i : i + self._DELETE_BATCH]]
            answer = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if errors := answer.get("Errors"):
                raise RuntimeError(f"S3 kept {len(errors)} thumbnail(s): {errors[0].get('Message', '')}")


def thumbnail_store(asset_store: str, s3_endpoint_url: str, root: Path) -> ThumbnailStore:
    """Thumbnails in the asset store's S3 bucket when there is one (every replica serves them), else on
    this machine's disk under `root`."""
    if asset_store:
        return S3Thumbnails(asset_store, s3_endpoint_url)
    return LocalThumbnails(root)
