"""Live stream routes (spec §3): /v1/streams/* and the CV / VIOS-compatible /v1/stream/* (with the hidden
/v1/camera/* and /api/v1/camera/* aliases).

The registrations themselves (probe, persist, delete, auto-start) are rtvi.core.streams; these routes
translate the three request shapes to it and render per-item results.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from rtvi.core.assets.registry import Asset
from rtvi.core.assets.store import NewFile
from rtvi.core.credentials import public_url, redact, resolve_credentials
from rtvi.core.media.times import normalize_iso
from rtvi.core.service import ServiceCore
from rtvi.core.streams import StreamMetadata
from rtvi.errors import Conflict, InvalidParameters, NotFound, RtviError
from rtvi.http.deps import get_core
from rtvi.http.errors import body_validation_error, http_status
from rtvi.http.protocol import (
    PLACE_FIELDS,
    AddedStream,
    AddLiveStream,
    AddLiveStreamsRequest,
    AddLiveStreamsResponse,
    AddStreamError,
    CvStreamInfo,
    CvStreamList,
    CvStreamRequest,
    DeleteStreamError,
    DeleteStreamsRequest,
    DeleteStreamsResponse,
    FlatCvStream,
    LiveStreamInfo,
    StreamAddResponse,
    StreamRemoveResponse,
    ViosStreamRequest,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["Live Stream"])

MAX_LISTED = 1024
ADD_CHANGES = {"camera_add", "add", "camera_streaming"}
REMOVE_CHANGES = {"camera_remove", "remove"}


def _error_item(exc: Exception) -> tuple[str, str, int]:
    if isinstance(exc, RtviError):
        return exc.message, exc.code, http_status(exc)
    log.error("stream operation failed: %s", redact(str(exc)), exc_info=exc)
    return redact(str(exc)) or type(exc).__name__, "InternalError", 500


# --- /v1/streams ----------------------------------------------------------------------------------
@router.post("/v1/streams/add", response_model=AddLiveStreamsResponse)
async def add_streams(
    body: AddLiveStreamsRequest, core: ServiceCore = Depends(get_core)
) -> AddLiveStreamsResponse:
    """Register 1-256 RTSP streams. Always 200: per-item `results` and `errors` (in input order)."""

    async def one(item: AddLiveStream) -> Asset:
        url, username, password = resolve_credentials(item.liveStreamUrl, item.username, item.password)
        meta: dict[str, Any] = {"description": item.description}
        meta.update({f: getattr(item, f) for f in PLACE_FIELDS})
        return await core.streams.register(
            item.id or str(uuid.uuid4()),
            url,
            username,
            password,
            "DuplicateStreamId",
            sensor_name=item.sensor_name,
            meta=meta,
        )

    outcomes = await asyncio.gather(*(one(item) for item in body.streams), return_exceptions=True)
    results: list[AddedStream] = []
    errors: list[AddStreamError] = []
    for index, (item, outcome) in enumerate(zip(body.streams, outcomes, strict=True)):
        if isinstance(outcome, Asset):
            results.append(AddedStream(id=outcome.id))
            continue
        if not isinstance(outcome, Exception):
            raise outcome  # CancelledError and friends: not a per-item failure
        message, code, status = _error_item(outcome)
        safe_url = public_url(item.liveStreamUrl)
        errors.append(
            AddStreamError(index=index, url=safe_url, error=message, error_code=code, status_code=status)
        )
        core.report_error(item.id or "", f"Failed to add live stream {safe_url}: {message}")
    return AddLiveStreamsResponse(results=results, errors=errors)


@router.get("/v1/streams/get-stream-info", response_model=list[LiveStreamInfo])
async def get_stream_info(core: ServiceCore = Depends(get_core)) -> list[LiveStreamInfo]:
    infos = []
    for asset in core.streams.list()[:MAX_LISTED]:
        job = core.live.job(asset.id)
        infos.append(
            LiveStreamInfo(
                id=asset.id,
                liveStreamUrl=asset.path,
                description=asset.meta.get("description", ""),
                chunk_duration=job.params.chunk_duration if job else 0,
                chunk_overlap_duration=job.params.overlap if job else 0,
                **{f: asset.meta.get(f) for f in PLACE_FIELDS if asset.meta.get(f) is not None},
            )
        )
    return infos


@router.delete("/v1/streams/delete/{stream_id}")
async def delete_one(stream_id: str, core: ServiceCore = Depends(get_core)) -> Response:
    try:
        await core.streams.delete(stream_id, core.settings.stream_delete_drain_timeout_s)
    except RtviError as exc:
        core.report_error(stream_id, f"Failed to delete live stream: {exc.message}")
        raise
    return Response(status_code=200)


@router.delete("/v1/streams/delete-batch", response_model=DeleteStreamsResponse)
async def delete_batch(
    body: DeleteStreamsRequest, core: ServiceCore = Depends(get_core)
) -> DeleteStreamsResponse:
    """Delete streams in parallel. Always 200: `deleted` and `errors`, each in input order. `blocking`
    only picks the longer default drain timeout: the response always follows the deletions."""
    s = core.settings
    timeout = body.drain_timeout_seconds
    if timeout is None:
        timeout = s.stream_delete_blocking_timeout_s if body.blocking else s.stream_delete_drain_timeout_s
    outcomes = await asyncio.gather(
        *(core.streams.delete(sid, timeout) for sid in body.stream_ids), return_exceptions=True
    )
    deleted: list[str] = []
    errors: list[DeleteStreamError] = []
    for sid, outcome in zip(body.stream_ids, outcomes, strict=True):
        if outcome is None:
            deleted.append(sid)
            continue
        if not isinstance(outcome, Exception):
            raise outcome
        message, code, status = _error_item(outcome)
        errors.append(DeleteStreamError(stream_id=sid, error=message, error_code=code, status_code=status))
        core.report_error(sid, f"Failed to delete live stream: {message}")
    return DeleteStreamsResponse(deleted=deleted, errors=errors)


# --- CV / VIOS-compatible /v1/stream ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CvRequest:
    """The direct CV shape and the VIOS event, reduced to what the routes use."""

    vios: bool
    camera_id: str
    camera_name: str
    camera_url: str
    camera_type: str | None
    change: str
    metadata: StreamMetadata | None  # the service's own model of it (CoreConfig.stream_metadata)
    source: str | None
    creation_time: str | None = None  # file sensors: when the recording started
    url_headers: dict[str, str] | None = None  # file sensors fetched over https

    @property
    def file_url(self) -> str | None:
        """The URL of a file sensor (spec §3.4 step 4; an absolute path becomes file://), else None."""
        url = self.camera_url
        if url.startswith("/"):
            return "file://" + url
        if self.camera_type == "file" or url.startswith("file://"):
            return url
        if url.startswith(("http://", "https://")) and self.camera_type != "rtsp":
            return url
        return None


def _validate(model: type[BaseModel], data: object, loc: tuple[str, ...] = ()) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise body_validation_error(exc, loc) from exc


def _metadata(
    model: type[StreamMetadata], data: dict[str, object] | None, loc: tuple[str, ...], *, known_only: bool
) -> StreamMetadata | None:
    """A registration's metadata as the service's model; `known_only`: keys the model lacks are dropped
    (the VIOS event), else refused."""
    if data is None:
        return None
    if known_only:
        data = {k: v for k, v in data.items() if k in model.model_fields}
    result: StreamMetadata = _validate(model, data, loc)
    return result


def parse_cv(body: dict[str, Any], implied_change: str, metadata: type[StreamMetadata]) -> CvRequest:
    """The three shapes of spec §3.4 and the seed: VIOS event, direct CV {key, value}, flat CV.
    `metadata`: the service's model of their metadata."""
    if "camera_id" in body and "value" not in body:
        flat: FlatCvStream = _validate(FlatCvStream, body)
        return CvRequest(
            False,
            flat.camera_id,
            flat.camera_name or "",
            flat.url or "",
            flat.camera_type,
            implied_change,
            _metadata(metadata, flat.metadata, ("metadata",), known_only=False),
            None,
            creation_time=flat.creation_time,
        )
    if "alert_type" in body or "event" in body:
        vios: ViosStreamRequest = _validate(ViosStreamRequest, body)
        if vios.alert_type != "camera_status_change":
            raise InvalidParameters(f"Unsupported alert_type '{vios.alert_type[:64]}'", "BadRequest")
        ev = vios.event
        start = (ev.metadata or {}).get("file_start_time")
        return CvRequest(
            True,
            ev.camera_id,
            ev.camera_name or "",
            ev.camera_url or "",
            ev.camera_type,
            ev.change,
            _metadata(metadata, ev.metadata, ("event", "metadata"), known_only=True),
            vios.source,
            creation_time=str(start) if start else vios.created_at,
            url_headers=ev.headers.url_headers if ev.headers else None,
        )
    cv: CvStreamRequest = _validate(CvStreamRequest, body)
    v = cv.value
    return CvRequest(
        False,
        v.camera_id,
        v.camera_name or "",
        v.camera_url or "",
        v.camera_type,
        v.change,
        _metadata(metadata, v.metadata, ("value", "metadata"), known_only=False),
        cv.headers.source if cv.headers else None,
        creation_time=v.creation_time or (cv.headers.created_at if cv.headers else None),
        url_headers=cv.headers.url_headers if cv.headers else None,
    )


# The reference's hidden compatibility aliases (spec §1.1, §1.3): the same handlers, left out of OpenAPI.
@router.post("/v1/stream/add", response_model=StreamAddResponse)
@router.post("/v1/camera/add", response_model=StreamAddResponse, include_in_schema=False)
@router.put("/v1/camera/streaming", response_model=StreamAddResponse, include_in_schema=False)
@router.post("/api/v1/camera/add", response_model=StreamAddResponse, include_in_schema=False)
@router.put("/api/v1/camera/streaming", response_model=StreamAddResponse, include_in_schema=False)
async def cv_add(
    body: dict[str, Any] = Body(...), core: ServiceCore = Depends(get_core)
) -> StreamAddResponse:
    """Add a camera (direct CV shape, flat CV shape or VIOS event). The camera_id is the stream id. When
    the metadata asks for inference (the service's model of it says which fields do: rt-embed
    metadata.model, the loaded model; rt-vlm metadata.prompt), it starts at once and survives restarts."""
    req = parse_cv(body, "camera_add", core.config.stream_metadata)
    if req.change not in ADD_CHANGES:
        raise InvalidParameters(f"Unsupported change '{req.change[:64]}' for stream add", "BadRequest")
    if not req.camera_url:
        if req.vios and req.change == "camera_add":
            return StreamAddResponse(camera_id=req.camera_id, asset_id="", status="added", inference=False)
        raise InvalidParameters("camera_url is required for stream creation.", "BadRequest")
    if req.file_url is not None:
        return await _add_file_sensor(core, req, req.file_url)
    url, username, password = resolve_credentials(req.camera_url, "", "")
    meta: dict[str, Any] = {
        "description": req.camera_name,
        "camera_id": req.camera_id,
        "camera_name": req.camera_name,
    }
    if req.source:
        meta["source_id"] = req.source
    try:
        asset = await core.streams.register(
            req.camera_id,
            url,
            username,
            password,
            "DuplicateCameraId",
            sensor_name=req.camera_name,
            meta=meta,
            metadata=req.metadata,
        )
    except RtviError as exc:
        core.report_error(req.camera_id, f"Failed to add camera {url}: {exc.message}")
        raise
    started = await core.streams.auto_start(asset)
    return StreamAddResponse(
        camera_id=req.camera_id,
        asset_id=asset.id,
        status="processing" if started else "added",
        inference=started,
    )


async def _add_file_sensor(core: ServiceCore, req: CvRequest, url: str) -> StreamAddResponse:
    """A file sensor is a file asset whose id is the camera_id (fetched or, for file://, registered)."""
    creation_time = None
    if req.creation_time:
        try:
            creation_time = normalize_iso(req.creation_time)
        except ValueError:
            raise InvalidParameters(
                f"Invalid creation time {req.creation_time[:64]!r}", "BadRequest"
            ) from None
    new = NewFile("video", id=req.camera_id, creation_time=creation_time, sensor_name=req.camera_name)
    try:
        asset = await core.store.add_from_url(url, new, req.url_headers)
    except Conflict as exc:
        raise Conflict(
            f"Camera with camera_id '{req.camera_id}' already exists", "DuplicateCameraId"
        ) from exc
    except RtviError as exc:
        core.report_error(req.camera_id, f"Failed to add file sensor {public_url(url)}: {exc.message}")
        raise
    return StreamAddResponse(camera_id=req.camera_id, asset_id=asset.id, status="added", inference=False)


@router.post("/v1/stream/remove", response_model=StreamRemoveResponse)
@router.api_route(
    "/v1/camera/remove",
    methods=["POST", "DELETE"],
    response_model=StreamRemoveResponse,
    include_in_schema=False,
)
@router.api_route(
    "/api/v1/camera/remove",
    methods=["POST", "DELETE"],
    response_model=StreamRemoveResponse,
    include_in_schema=False,
)
async def cv_remove(
    body: dict[str, Any] = Body(...), core: ServiceCore = Depends(get_core)
) -> StreamRemoveResponse:
    req = parse_cv(body, "camera_remove", core.config.stream_metadata)
    if req.change not in REMOVE_CHANGES:
        raise InvalidParameters(f"Unsupported change '{req.change[:64]}' for stream remove", "BadRequest")
    asset = core.store.registry.get(req.camera_id)
    if asset is None:
        if req.vios:  # idempotent for VIOS
            return StreamRemoveResponse(camera_id=req.camera_id, asset_id="")
        raise NotFound(f"No camera with camera_id '{req.camera_id}'")
    if asset.is_live:
        await core.streams.delete(asset.id, core.settings.stream_delete_drain_timeout_s)
    else:
        await core.store.remove_file(asset.id)
    return StreamRemoveResponse(camera_id=req.camera_id, asset_id=asset.id)


@router.get("/v1/stream/get-stream-info", response_model=CvStreamList)
async def cv_stream_info(core: ServiceCore = Depends(get_core)) -> CvStreamList:
    items = []
    for asset in core.streams.list()[:MAX_LISTED]:
        job = core.live.job(asset.id)
        items.append(
            CvStreamInfo(
                camera_id=asset.meta.get("camera_id") or asset.id,
                camera_name=asset.meta.get("camera_name") or asset.meta.get("description", ""),
                camera_url=asset.path,
                asset_id=asset.id,
                source_id=asset.meta.get("source_id"),
                sensor_id=asset.sensor_name or None,
                inference_active=job is not None,
                chunk_duration=job.params.chunk_duration if job else 0,
                chunk_overlap_duration=job.params.overlap if job else 0,
            )
        )
    return CvStreamList(stream_count=len(items), stream_list=items)
