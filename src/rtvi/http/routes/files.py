"""/v1/files: upload, register, list, info, content, delete (spec §2.1, §2.2)."""

from __future__ import annotations

import mimetypes
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import NewFile
from rtvi.core.service import ServiceCore
from rtvi.errors import MalformedRequest
from rtvi.http.deps import get_core
from rtvi.http.errors import body_validation_error
from rtvi.http.multipart import read_form
from rtvi.http.protocol import (
    AddFileInfoResponse,
    DeletedFile,
    FileInfo,
    FileList,
    FileListItem,
    FileUploadForm,
)

router = APIRouter(prefix="/v1/files", tags=["Files"])

_UPLOAD_FORM_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["purpose", "media_type"],
                    "properties": {
                        "purpose": {"type": "string", "enum": ["vision"]},
                        "media_type": {"type": "string", "enum": ["video", "image"]},
                        "file": {"type": "string", "format": "binary"},
                        "filename": {"type": "string", "maxLength": 256},
                        "url": {"type": "string", "maxLength": 2048},
                        "creation_time": {"type": "string", "example": "2024-06-09T18:32:11.123Z"},
                        "id": {"type": "string", "format": "uuid"},
                        "sensor_name": {"type": "string", "maxLength": 256},
                    },
                }
            }
        },
    }
}


@router.post("", response_model=AddFileInfoResponse, openapi_extra=_UPLOAD_FORM_DOC)
async def add_file(request: Request, core: ServiceCore = Depends(get_core)) -> AddFileInfoResponse:
    """Upload a file (streamed to disk, committed atomically), or register one by server path."""
    store = core.store
    with store.staging() as tmp:
        parsed = await read_form(request, tmp, int(core.settings.max_upload_size_gb * 2**30))
        try:
            form = FileUploadForm.model_validate(parsed.fields)
        except ValidationError as exc:
            raise body_validation_error(exc) from exc
        if [parsed.file is not None, bool(form.filename), form.url is not None].count(True) != 1:
            raise MalformedRequest("Exactly one of 'file' or 'filename' (or 'url') must be provided")
        new = NewFile(
            form.media_type, str(form.id) if form.id else None, form.creation_time, form.sensor_name
        )
        if parsed.file is not None:
            asset = await store.add_upload(parsed.file.path, parsed.file.filename, parsed.file.size, new)
        elif form.url is not None:
            asset = await store.add_from_url(form.url, new)
        else:
            asset = await store.register_path(form.filename, new)
    return AddFileInfoResponse(
        id=UUID(asset.id),
        bytes=asset.bytes,
        filename=asset.filename,
        media_type=asset.media_type,
        creation_time=asset.creation_time,
        sensor_name=asset.sensor_name,
    )


def _info(asset: Asset) -> dict[str, object]:
    return {
        "id": asset.id,
        "bytes": asset.bytes,
        "filename": asset.filename,
        "creation_time": asset.creation_time,
        "sensor_name": asset.sensor_name,
    }


@router.get("", response_model=FileList)
async def list_files(
    purpose: Annotated[str, Query(max_length=36, pattern=r"^[A-Za-z]*$")],
    core: ServiceCore = Depends(get_core),
) -> FileList:
    if purpose != "vision":
        return FileList(data=[])
    items = [
        FileListItem.model_validate({**_info(a), "media_type": a.media_type})
        for a in core.store.registry.list_assets("file")
    ]
    return FileList(data=items)


@router.get("/{file_id}", response_model=FileInfo)
async def file_info(file_id: UUID, core: ServiceCore = Depends(get_core)) -> FileInfo:
    return FileInfo.model_validate(_info(core.store.get_file(str(file_id))))


@router.get("/{file_id}/content", response_class=FileResponse)
async def file_content(file_id: UUID, core: ServiceCore = Depends(get_core)) -> FileResponse:
    asset = core.store.get_file(str(file_id))
    path = await core.store.local_media(asset)
    # A video or image type lets a browser's <video> play it; anything else stays opaque bytes. Always
    # an attachment, never sniffed: an uploaded page must not run as this origin's (the web page's) code.
    guessed = mimetypes.guess_type(asset.filename)[0] or ""
    playable = guessed.startswith(("video/", "image/")) and "svg" not in guessed  # SVG can hold scripts
    media_type = guessed if playable else "application/octet-stream"
    return FileResponse(
        path, filename=asset.filename, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"}
    )


@router.delete("/{file_id}", response_model=DeletedFile)
async def delete_file(file_id: UUID, core: ServiceCore = Depends(get_core)) -> DeletedFile:
    await core.store.remove_file(str(file_id))
    return DeletedFile(id=file_id)
