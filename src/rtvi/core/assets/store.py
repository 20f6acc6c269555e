"""The asset store: registry + disk storage + ingest of uploads and server paths (spec §2)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from pathlib import Path

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request

from rtvi.api.schemas import FileUploadForm
from rtvi.assets.form import read_form
from rtvi.assets.registry import Asset, AssetRegistry
from rtvi.assets.storage import AssetStorage
from rtvi.errors import ApiError
from rtvi.media.probe import probe
from rtvi.media.types import MediaError, MediaInfo
from rtvi.settings import Settings

UPLOAD_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_. \-]{1,256}$")


def body_validation_error(exc: ValidationError) -> RequestValidationError:
    """Report a form validated by hand exactly like FastAPI reports a body: loc ('body', field)."""
    errors = []
    for e in exc.errors():
        d = dict(e)
        d["loc"] = ("body", *e["loc"])
        errors.append(d)
    return RequestValidationError(errors)


class AssetStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.storage = AssetStorage(settings.asset_storage_dir)
        self.registry = AssetRegistry(self.storage.db_path)
        self.storage.cleanup(self.registry.ids())

    def close(self) -> None:
        self.registry.close()

    # --- lookups (spec §0.1 codes) --------------------------------------------------------------
    def get_file(self, asset_id: str) -> Asset:
        asset = self.registry.get(asset_id)
        if asset is None or asset.is_live:
            raise ApiError.no_such_resource(asset_id)
        return asset

    def get_any(self, asset_id: str) -> Asset:
        asset = self.registry.get(asset_id)
        if asset is None:
            raise ApiError.no_such_resource(asset_id)
        return asset

    # --- ingest ---------------------------------------------------------------------------------
    async def add_from_form(self, request: Request) -> Asset:
        """POST /v1/files: an upload (streamed to disk) or the registration of a server path."""
        tmp = self.storage.new_tmp_dir()
        try:
            max_bytes = int(self.settings.max_upload_size_gb * 2**30)
            parsed = await read_form(request, tmp, max_bytes)
            try:
                form = FileUploadForm.model_validate(parsed.fields)
            except ValidationError as exc:
                raise body_validation_error(exc) from exc
            if (parsed.file is None) == (not form.filename):
                raise ApiError(
                    422, "InvalidParameters", "Exactly one of 'file' or 'filename' must be provided"
                )
            asset_id = str(form.id or uuid.uuid4())
            with self.registry.reserve(asset_id):
                if parsed.file is not None:
                    name = parsed.file.filename
                    if not UPLOAD_NAME_PATTERN.match(name) or name in (".", ".."):
                        raise ApiError.bad_parameters(
                            f"Invalid filename '{name[:100]}': use letters, digits, '_', '.', '-' and space"
                        )
                    final_tmp_path = tmp / name
                    os.rename(parsed.file.path, final_tmp_path)
                    info = await self._verify(final_tmp_path, form.media_type)
                    final_dir = self.storage.commit(tmp, asset_id)
                    asset = Asset(
                        id=asset_id,
                        kind="file",
                        media_type=form.media_type,
                        filename=name,
                        path=str(final_dir / name),
                        owns_dir=True,
                        bytes=parsed.file.size,
                        creation_time=form.creation_time,
                        sensor_name=form.sensor_name,
                        meta=_media_meta(info),
                    )
                else:
                    path = self._allowed_server_path(form.filename)
                    info = await self._verify(path, form.media_type)
                    asset = Asset(
                        id=asset_id,
                        kind="file",
                        media_type=form.media_type,
                        filename=form.filename,
                        path=str(path),
                        owns_dir=False,
                        bytes=path.stat().st_size,
                        creation_time=form.creation_time,
                        sensor_name=form.sensor_name,
                        meta=_media_meta(info),
                    )
                try:
                    self.registry.add(asset)
                except Exception:
                    if asset.owns_dir:
                        self.storage.remove_asset_dir(asset_id)
                    raise
            return asset
        finally:
            self.storage.discard(tmp)  # a no-op once committed (renamed away)

    def _allowed_server_path(self, filename: str) -> Path:
        allowed = self.settings.allowed_local_dirs
        if not allowed:
            raise ApiError(
                403,
                "Forbidden",
                "Registering server paths is disabled: set FILE_URL_ALLOWED_DIRS to allow it",
            )
        path = Path(os.path.realpath(filename))
        if not any(path.is_relative_to(d) for d in allowed):
            raise ApiError(403, "Forbidden", f"Path '{filename}' is outside FILE_URL_ALLOWED_DIRS")
        if not path.is_file():
            raise ApiError(400, "FileNotFound", f"File '{filename}' not found")
        return path

    async def _verify(self, path: Path, media_type: str) -> MediaInfo | None:
        if self.settings.skip_media_verification:
            return None
        try:
            info = await asyncio.to_thread(probe, path)
        except MediaError as exc:
            raise ApiError.invalid_file() from exc
        if info.kind != media_type:
            raise ApiError.invalid_file(
                f"File does not seem to be a valid {media_type} file (it looks like a {info.kind})"
            )
        return info

    # --- delete ---------------------------------------------------------------------------------
    def delete_file(self, asset_id: str) -> None:
        asset = self.registry.get(asset_id)
        if asset is None or asset.is_live:
            raise ApiError(400, "BadParameter", f"No such file {asset_id}")
        self.registry.remove(asset_id)  # 409 ResourceInUse while a request uses it
        if asset.owns_dir:
            self.storage.remove_asset_dir(asset_id)


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
