"""Asset blobs in S3 (RTVI_ASSET_STORE=s3://bucket/prefix), so every replica reads the same files.

    s3://bucket/prefix/<asset id>/<name>   one object per asset, written once, never modified
    s3://bucket/prefix/_thumbnails/...     the search index's thumbnails (Milvus; core/index/thumbnails.py)
    <storage>/cache/<asset id>/<name>      a local copy for the decoder, least recently used out first

Objects are streamed from and to disk by boto3's transfer manager (multipart for large files), never
held in memory. An object becomes an asset only when its registry row lands, after the upload
completed: a crash in between leaves an object without a row, which `sweep` deletes once it is older
than the grace period (another replica may be between its upload and its row right now). An upload cut
short leaves no object at all (uploads are always multipart, and S3 shows one only once it is
completed); its parts are aborted by `sweep` after the same grace period.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# The search index's thumbnails, next to the assets (core/index/thumbnails.py). No asset id starts with "_"
# (they are UUIDs or stream ids, which start with a letter or digit), so this is never an asset's folder.
THUMBNAILS = "_thumbnails"


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client (thread-safe; credentials from the environment), at S3_ENDPOINT_URL if set."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None)


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b/" (always ending in "/")

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"RTVI_ASSET_STORE must be s3://bucket[/prefix], not {url[:100]!r}")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def key(self, asset_id: str, name: str = "") -> str:
        return f"{self.prefix}{asset_id}/{name}"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


class S3Blobs:
    def __init__(
        self,
        location: str,
        endpoint_url: str,
        cache_dir: Path,
        cache_cap_bytes: int,
        in_use: Callable[[str], bool],
    ) -> None:
        self.where = S3Location.parse(location)
        self._s3 = s3_client(endpoint_url)  # one client for every thread
        self.cache_dir = cache_dir
        self.cache_cap_bytes = cache_cap_bytes
        self._in_use = in_use
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def check(self) -> None:
        """At start-up: the bucket answers with these credentials (else the service does not start)."""
        try:
            self._s3.head_bucket(Bucket=self.where.bucket)
        except Exception as exc:
            raise RuntimeError(
                f"RTVI_ASSET_STORE: cannot reach bucket {self.where.bucket!r}: {exc}"
            ) from None

    # --- write ----------------------------------------------------------------------------------
    def put(self, asset_id: str, file: Path) -> str:
        """Upload a verified file as the asset's one object, then keep the file as this replica's cached
        copy (a request that follows the upload reads it without downloading it back). -> its s3:// URL
        (the registry's path)."""
        from boto3.s3.transfer import TransferConfig

        key = self.where.key(asset_id, file.name)
        # Always multipart, even for one part: the object exists only once CompleteMultipartUpload is
        # sent, after every part was acknowledged. A single PUT whose bytes are already in the kernel's
        # buffers could still complete after this process died, leaving an object without a row.
        always_multipart = TransferConfig(multipart_threshold=1)
        self._s3.upload_file(str(file), self.where.bucket, key, Config=always_multipart)
        entry = self._cache_entry(asset_id)
        entry.mkdir(mode=0o700, exist_ok=True)
        shutil.move(file, entry / file.name)  # a rename: the staging directory is on the same disk
        self.trim(keep=asset_id)
        return self.where.url(key)

    def delete(self, asset_id: str) -> None:
        prefix = self.where.key(asset_id)
        listed = self._s3.list_objects_v2(Bucket=self.where.bucket, Prefix=prefix)
        for obj in listed.get("Contents", []):
            self._s3.delete_object(Bucket=self.where.bucket, Key=obj["Key"])
        shutil.rmtree(self._cache_entry(asset_id), ignore_errors=True)

    # --- read -----------------------------------------------------------------------------------
    def local(self, asset_id: str, url: str) -> Path:
        """The asset's file on local disk, downloaded on first use (blocking: call it off the event
        loop). A use refreshes its place in the cache; the cache is then trimmed to its cap."""
        key = urlsplit(url).path.lstrip("/")
        entry = self._cache_entry(asset_id)
        path = entry / Path(key).name
        if path.is_file():
            os.utime(entry)
            return path
        entry.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry, suffix=".part")
        os.close(fd)
        try:
            self._s3.download_file(self.where.bucket, key, tmp)
            os.replace(tmp, path)  # readers never see a partial file
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.trim(keep=asset_id)
        return path

    def trim(self, keep: str = "") -> None:
        """Drop the least recently used copies until the cache fits its cap; copies in use stay."""
        entries = [(p.stat().st_mtime, p) for p in self.cache_dir.iterdir() if p.is_dir()]
        sizes = {p: sum(f.stat().st_size for f in p.iterdir() if f.is_file()) for _, p in entries}
        total = sum(sizes.values())
        for _, entry in sorted(entries):
            if total <= self.cache_cap_bytes:
                break
            if entry.name == keep or self._in_use(entry.name):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]

    def _cache_entry(self, asset_id: str) -> Path:
        entry = (self.cache_dir / asset_id).resolve()
        if entry.parent != self.cache_dir.resolve():  # ids are validated upstream; the last line of defence
            raise ValueError(f"asset id {asset_id!r} escapes the cache directory")
        return entry

    # --- crash debris ---------------------------------------------------------------------------
    def sweep(self, known_ids: set[str], grace_s: float, now: float | None = None) -> int:
        """Delete objects of no registered asset and abort multipart uploads, both older than `grace_s`;
        drop cached copies of unknown assets. The index's thumbnails are not assets: left alone. -> objects
        deleted."""
        now = time.time() if now is None else now
        bucket, prefix = self.where.bucket, self.where.prefix
        deleted = 0
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                asset_id = obj["Key"][len(prefix) :].split("/", 1)[0]
                orphan = asset_id != THUMBNAILS and asset_id not in known_ids
                if orphan and now - obj["LastModified"].timestamp() >= grace_s:
                    log.warning("removing the orphaned object s3://%s/%s", bucket, obj["Key"])
                    self._s3.delete_object(Bucket=bucket, Key=obj["Key"])
                    deleted += 1
        uploads = self._s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
        for up in uploads:
            if now - up["Initiated"].timestamp() >= grace_s:
                self._s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        for entry in self.cache_dir.iterdir():
            if entry.name not in known_ids:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        return deleted
