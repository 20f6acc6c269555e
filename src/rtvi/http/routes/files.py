"""/v1/files: upload, register, list, info, content, delete (spec §2.1, §2.2)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from rtvi.api.schemas import AddFileInfoResponse, DeletedFile, FileInfo, FileList, FileListItem
from rtvi.api.state import ServiceState, get_state
from rtvi.assets.registry import Asset

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
async def add_file(request: Request, state: ServiceState = Depends(get_state)) -> AddFileInfoResponse:
    """Upload a file (streamed to disk, committed atomically), or register one by server path."""
    asset = await state.store.add_from_form(request)
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
    state: ServiceState = Depends(get_state),
) -> FileList:
    if purpose != "vision":
        return FileList(data=[])
    items = [
        FileListItem.model_validate({**_info(a), "media_type": a.media_type})
        for a in state.store.registry.list_assets("file")
    ]
    return FileList(data=items)


@router.get("/{file_id}", response_model=FileInfo)
async def file_info(file_id: UUID, state: ServiceState = Depends(get_state)) -> FileInfo:
    return FileInfo.model_validate(_info(state.store.get_file(str(file_id))))


@router.get("/{file_id}/content", response_class=FileResponse)
async def file_content(file_id: UUID, state: ServiceState = Depends(get_state)) -> FileResponse:
    asset = state.store.get_file(str(file_id))
    return FileResponse(asset.path, filename=asset.filename, media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=DeletedFile)
async def delete_file(file_id: UUID, state: ServiceState = Depends(get_state)) -> DeletedFile:
    state.store.delete_file(str(file_id))
    return DeletedFile(id=file_id)
