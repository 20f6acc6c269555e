"""The asset store: registry + disk storage + ingest of uploads and server paths (spec §2)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from rtvi.core.assets.registry import Asset, AssetRegistry, database_url
from rtvi.core.assets.remote import DownloadObserver, RemoteFetcher
from rtvi.core.assets.s3blobs import S3Blobs
from rtvi.core.assets.secrets import SecretBox
from rtvi.core.assets.storage import AssetStorage
from rtvi.core.credentials import shown_url
from rtvi.core.media.probe import probe
from rtvi.core.media.types import MediaError, MediaInfo, MediaKind
from rtvi.errors import (
    Forbidden,
    InsufficientStorage,
    InUse,
    InvalidMedia,
    InvalidParameters,
    MalformedRequest,
    NoSuchResource,
)
from rtvi.naming import UPLOAD_NAME_CHARS
from rtvi.settings import IngestSettings, StorageSettings

log = logging.getLogger(__name__)
AGED_OUT = "{} already deleted because of age out policy"  # spec §2.4, for an evicted id
UPLOAD_NAME_PATTERN = re.compile(rf"^[{UPLOAD_NAME_CHARS}]{{1,256}}$")


@dataclass(frozen=True, slots=True)
class NewFile:
    """What a client says about a file it adds (already schema-validated by the caller)."""

    media_type: MediaKind
    id: str | None = None
    creation_time: str | None = None
    sensor_name: str = ""
    source_url: str = ""  # the URL it was fetched from, credentials redacted (kept in meta)


class IndexSpace(Protocol):
    """The search index's share of the storage cap: its bytes on this machine's disk, and how it gives
    some back (its oldest live chunks) when an upload needs room."""

    def disk_bytes(self) -> int: ...

    def free_disk(self, nbytes: int) -> int:
        """-> bytes freed."""
        ...


class AssetStore:
    def __init__(
        self,
        settings: StorageSettings,
        ingest: IngestSettings,
        on_download: DownloadObserver | None = None,
        on_removed: Callable[[str], None] | None = None,
        index: IndexSpace | None = None,
    ) -> None:
        self.settings = settings
        # Called with an asset's id once it is deleted or evicted (the search index forgets it).
        self.on_removed = on_removed
        self.index = index  # counted in MAX_ASSET_STORAGE_SIZE_GB (docs/search.md)
        self.ingest = ingest  # server paths and media verification here; downloads in the fetcher
        self.storage = AssetStorage(settings.asset_storage_dir)
        secrets = SecretBox.from_settings(settings.secret_key, self.storage.root / "secret.key")
        self.registry = AssetRegistry(database_url(settings.database_url, self.storage.db_path), secrets)
        if self.registry.backend != "sqlite" and not settings.secret_key:
            log.warning(
                "RTVI_DATABASE_URL is a shared database but RTVI_SECRET_KEY is not set: camera credentials"
                " sealed here cannot be opened by other replicas; give every replica the same key"
            )
        self.fetcher = RemoteFetcher(ingest, on_download)
        known = self.registry.ids()
        self.storage.cleanup(known)
        self.blobs: S3Blobs | None = None
        if settings.asset_store:
            self.blobs = S3Blobs(
                settings.asset_store,
                settings.s3_endpoint_url,
                self.storage.root / "cache",
                int(settings.asset_cache_gb * 2**30),
                self.registry.in_use,
            )
            self.blobs.check()
            self.blobs.sweep(known, settings.asset_orphan_grace_s)

    def close(self) -> None:
        self.registry.close()

    # --- lookups (spec §0.1 codes) --------------------------------------------------------------
    def _missing(
        self,
        asset_id: str,
        message: str | None = None,
        evicted: str = "{} already deleted because of age out policy",
    ) -> NoSuchResource:
        """An unknown id; one the storage policy removed says so (spec §2.4)."""
        if self.registry.was_evicted(asset_id):
            return NoSuchResource(asset_id, evicted.format(asset_id))
        return NoSuchResource(asset_id, message)

    def get_file(self, asset_id: str) -> Asset:
        asset = self.registry.get(asset_id)
        if asset is None or asset.is_live:
            raise self._missing(asset_id)
        return asset

    def get_any(self, asset_id: str) -> Asset:
        asset = self.registry.get(asset_id)
        if asset is None:
            raise self._missing(asset_id)
        return asset

    def get_live(self, stream_id: str) -> Asset:
        asset = self.registry.get(stream_id)
        if asset is None:
            raise NoSuchResource(stream_id)
        if not asset.is_live:
            raise InvalidParameters(f"No such live-stream {stream_id}", "InvalidParameter")
        return asset

    def media_path(self, asset: Asset) -> Path:
        """The file to open for a file asset. A path registration is checked against the allowlist
        again at every open: the file may have been swapped for a symlink since it was registered. An
        asset in S3 is downloaded into the cache first: this blocks, so async code uses local_media."""
        if (blobs := self._s3_of(asset)) is not None:
            return blobs.local(asset.id, asset.path)
        if asset.owns_dir:
            return Path(asset.path)
        return self._allowed_server_path(asset.path)

    async def local_media(self, asset: Asset) -> Path:
        """media_path off the event loop (an S3 asset may need its download)."""
        return await asyncio.to_thread(self.media_path, asset)

    # --- ingest ---------------------------------------------------------------------------------
    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A directory for an ingest in flight, on the store's filesystem; removed on exit unless its
        content was committed (renamed into place)."""
        tmp = self.storage.new_tmp_dir()
        try:
            yield tmp
        finally:
            self.storage.discard(tmp)  # a no-op once committed

    async def add_upload(self, staged: Path, name: str, size: int, new: NewFile) -> Asset:
        """Commit an upload written to `staged` (a file in a staging() directory) as `name`: verify
        it, move its directory into place, then register it. A failure leaves no file and no row."""
        if not UPLOAD_NAME_PATTERN.match(name) or name in (".", ".."):
            raise InvalidParameters(
                f"Invalid filename '{name[:100]}': use letters, digits, '_', '.', '-' and space"
            )
        asset_id = new.id or str(uuid.uuid4())
        with self.registry.reserve(asset_id):
            final_tmp_path = staged.parent / name
            os.rename(staged, final_tmp_path)
            info = await self._verify(final_tmp_path, new.media_type)
            index = await asyncio.to_thread(self.index_gives_way, size)  # a valid file only
            if self.blobs is not None:
                # The object first, then the row: a crash in between leaves an object that sweep removes.
                # The staged file becomes the cached copy (its staging directory is then discarded).
                url = await asyncio.to_thread(self.blobs.put, asset_id, final_tmp_path)
                asset = self._asset(asset_id, new, name, url, size, info, owns_dir=True)
                try:
                    self.make_room(size, index)
                    self.registry.add(asset)
                except BaseException:
                    await asyncio.to_thread(self.blobs.delete, asset_id)
                    raise
                return asset
            # No await from here to the registry row: the room made is not taken by a concurrent upload.
            self.make_room(size, index)
            final_dir = self.storage.commit(staged.parent, asset_id)
            asset = self._asset(asset_id, new, name, str(final_dir / name), size, info, owns_dir=True)
            try:
                self.registry.add(asset)
            except Exception:
                self.storage.remove_asset_dir(asset_id)
                raise
        return asset

    async def add_from_url(self, url: str, new: NewFile, headers: Mapping[str, str] | None = None) -> Asset:
        """Ingest a remote input (spec §2.3): http(s), s3 and data: are downloaded into the store like an
        upload (atomically); file:// registers the server path (allowlist) without copying it."""
        if url[:7].lower() == "file://":
            path = unquote(urlsplit(url).path)
            if not path:
                raise MalformedRequest("A file:// URL needs an absolute path")
            return await self.register_path(path, new)
        with self.staging() as tmp:
            fetched = await self.fetcher.fetch(url, tmp, headers)
            # Where it came from, for the messages' sensor.info.url: redacted before it is stored (no
            # credentials at rest), "" for a data: URI.
            return await self.add_upload(
                fetched.path, fetched.name, fetched.size, replace(new, source_url=shown_url(url))
            )

    async def add_request_asset(
        self, url: str, ids: list[str], new: NewFile, headers: Mapping[str, str] | None = None
    ) -> Asset:
        """The asset of a generate (or chat) request that brings its input as `url`: exactly one id,
        not yet taken, names it (spec §4.1). The caller removes it (discard) when the request ends."""
        if len(ids) != 1:
            raise InvalidParameters("A request with a url takes exactly one id: the id of the new asset")
        try:
            asset_id = str(uuid.UUID(ids[0]))
        except ValueError:
            raise MalformedRequest.not_a_uuid(ids[0]) from None
        if self.registry.get(asset_id) is not None:
            raise InvalidParameters(f"Asset with id '{asset_id}' already exists", "AssetAlreadyExists")
        return await self.add_from_url(url, replace(new, id=asset_id), headers)

    def discard(self, asset_id: str) -> None:
        """Remove a request's own asset when the request ends (never raises: the request is over)."""
        try:
            self.delete_file(asset_id)
        except Exception:
            log.exception("could not remove the temporary asset %s", asset_id)

    async def register_path(self, filename: str, new: NewFile) -> Asset:
        """Register a file already on the server (under FILE_URL_ALLOWED_DIRS) without copying it."""
        asset_id = new.id or str(uuid.uuid4())
        with self.registry.reserve(asset_id):
            path = self._allowed_server_path(filename)
            info = await self._verify(path, new.media_type)
            asset = self._asset(asset_id, new, filename, str(path), path.stat().st_size, info, owns_dir=False)
            self.registry.add(asset)
        return asset

    @staticmethod
    def _asset(
        asset_id: str, new: NewFile, name: str, path: str, size: int, info: MediaInfo | None, owns_dir: bool
    ) -> Asset:
        return Asset(
            id=asset_id,
            kind="file",
            media_type=new.media_type,
            filename=name,
            path=path,
            owns_dir=owns_dir,
            bytes=size,
            creation_time=new.creation_time,
            sensor_name=new.sensor_name,
            meta={**_media_meta(info), **({"source_url": new.source_url} if new.source_url else {})},
        )

    def _allowed_server_path(self, filename: str) -> Path:
        allowed = self.ingest.allowed_local_dirs
        if not allowed:
            raise Forbidden(
                "Server paths and file:// URLs are disabled: set FILE_URL_ALLOWED_DIRS to allow them"
            )
        path = Path(os.path.realpath(filename))
        if not any(path.is_relative_to(d) for d in allowed):
            raise Forbidden(f"Path '{filename}' is outside FILE_URL_ALLOWED_DIRS")
        if not path.is_file():
            raise InvalidParameters(f"File '{filename}' not found", "FileNotFound")
        return path

    async def _verify(self, path: Path, media_type: str) -> MediaInfo | None:
        if self.ingest.skip_media_verification:
            return None
        try:
            info = await asyncio.to_thread(probe, path)
        except MediaError as exc:
            raise InvalidMedia() from exc
        if info.kind != media_type:
            raise InvalidMedia(
                f"File does not seem to be a valid {media_type} file (it looks like a {info.kind})"
            )
        return info

    # --- storage policy (spec §2.4) --------------------------------------------------------------
    @property
    def cap_bytes(self) -> int | None:
        cap = self.settings.max_asset_storage_size_gb
        return None if cap is None or cap <= 0 else int(cap * 2**30)

    def room_for_index(self) -> int | None:
        """What MAX_ASSET_STORAGE_SIZE_GB leaves the search index beside the assets (None: no cap)."""
        cap = self.cap_bytes
        return None if cap is None else max(0, cap - self.registry.stored_bytes())

    def index_gives_way(self, incoming: int) -> int:
        """Blocking (async code runs it in a thread, once the file is verified, before make_room): the
        search index's oldest live chunks give up what `incoming` bytes need under the cap, unless the
        assets in use leave no room anyway (the upload fails: nothing is taken). -> the index's bytes."""
        cap = self.cap_bytes
        index = self.index.disk_bytes() if self.index is not None else 0
        if cap is None or self.index is None:
            return index
        stored = self.registry.stored_bytes()
        excess = stored + index + incoming - cap
        if excess <= 0:  # the usual case: no list of assets read
            return index
        in_use = stored - sum(a.bytes for a in self.registry.evictable())
        if in_use + incoming > cap:
            return index
        return index - self.index.free_disk(excess)

    def make_room(self, incoming: int, index: int = 0) -> None:
        """Before `incoming` bytes join the store: if they would push it (the assets and the search
        index's `index` bytes, as index_gives_way left them) over MAX_ASSET_STORAGE_SIZE_GB, evict the
        oldest evictable assets first; InsufficientStorage if even that cannot make room. Calls no index:
        it runs on the event loop."""
        cap = self.cap_bytes
        if cap is None:
            return
        used = self.registry.stored_bytes() + index
        if used + incoming <= cap:
            return
        victims: list[Asset] = []
        for asset in self.registry.evictable():
            if used + incoming <= cap:
                break
            victims.append(asset)
            used -= asset.bytes
        if used + incoming > cap:
            raise InsufficientStorage(
                f"Storing {incoming} bytes would exceed MAX_ASSET_STORAGE_SIZE_GB ({cap} bytes) even after "
                "removing every asset that is not in use"
                + (f" (the search index holds {index} bytes of it)" if index else "")
            )
        for asset in victims:
            self._evict(asset, "storage cap")

    def evict_expired(self, now: float | None = None) -> int:
        """ASSET_MAX_AGE_HOURS: remove evictable assets older than it. -> how many were removed."""
        ttl_h = self.settings.asset_max_age_hours
        if ttl_h <= 0:
            return 0
        limit = (now if now is not None else time.time()) - ttl_h * 3600
        expired = [a for a in self.registry.evictable() if a.created_at < limit]
        for asset in expired:
            self._evict(asset, "age")
        return len(expired)

    def _evict(self, asset: Asset, why: str) -> None:
        try:
            self.registry.evict(asset.id)
        except InUse:
            return  # taken by a request since it was listed: it stays
        self._remove_blob(asset)
        self.removed(asset.id)
        log.info("asset %s (%d bytes) evicted: %s", asset.id, asset.bytes, why)

    def stats(self) -> dict[str, object]:
        """/v1/assets/stats (spec §2.5), with the real usage."""
        assets = self.registry.list_assets()
        now = time.time()
        s = self.settings
        return {
            "asset_count": len(assets),
            "asset_count_with_storage": sum(a.owns_dir for a in assets),
            "aged_out_count": self.registry.evicted_count(),
            "oldest_asset_age_hours": round(max((now - a.created_at for a in assets), default=0.0) / 3600, 3),
            "storage_usage_bytes": self.registry.stored_bytes(),
            # rtvi: the search index's bytes on this disk, which the cap counts too (docs/search.md).
            "index_storage_usage_bytes": self.index.disk_bytes() if self.index is not None else 0,
            "max_storage_usage_gb": s.max_asset_storage_size_gb,
            "max_asset_age_hours": s.asset_max_age_hours or None,
        }

    # --- delete ---------------------------------------------------------------------------------
    def delete_file(self, asset_id: str) -> None:
        """Blocks on the registry, S3 and the search index: async code uses remove_file."""
        asset = self.registry.get(asset_id)
        # remove() raises InUse while a request uses the file; False: a concurrent delete came first.
        if asset is None or asset.is_live or not self.registry.remove(asset_id):
            raise self._missing(asset_id, f"No such file {asset_id}", evicted="File {} already deleted")
        if asset.owns_dir:
            self._remove_blob(asset)
        self.removed(asset_id)

    async def remove_file(self, asset_id: str) -> None:
        """delete_file off the event loop: its database, S3 and index calls must not stall every other
        request (SSE streams, probes) for as long as they take."""
        await asyncio.to_thread(self.delete_file, asset_id)

    def _s3_of(self, asset: Asset) -> S3Blobs | None:
        """The S3 store that holds the asset's blob; None for one on local disk."""
        return self.blobs if self.blobs is not None and asset.path.startswith("s3://") else None

    def _remove_blob(self, asset: Asset) -> None:
        if (blobs := self._s3_of(asset)) is not None:
            blobs.delete(asset.id)
        else:
            self.storage.remove_asset_dir(asset.id)

    def removed(self, asset_id: str) -> None:
        """Tell `on_removed`; its failure does not fail the removal."""
        if self.on_removed is None:
            return
        try:
            self.on_removed(asset_id)
        except Exception:
            log.exception("the removal hook failed on %s", asset_id)


def _media_meta(info: MediaInfo | None) -> dict[str, object]:
    if info is None:
        return {}
    return {
        "container": info.container,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "duration_s": info.duration_s,
        "fps": info.fps,
    }
