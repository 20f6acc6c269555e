"""Live stream routes (spec §3): /v1/streams/* and the CV / VIOS-compatible /v1/stream/*.

A stream is an asset of kind "live": its URL without credentials in `path`, everything else (credentials,
description, place, probe results, auto-start settings) in `meta`. Registrations persist in the
registry; a stream whose inference was auto-started (CV metadata.model) resumes after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from rtvi.api.schemas import (
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
    LiveStreamInfo,
    StreamAddResponse,
    StreamMetadata,
    StreamRemoveResponse,
    ViosStreamRequest,
)
from rtvi.api.state import ServiceState, get_state
from rtvi.assets.registry import Asset
from rtvi.assets.store import body_validation_error
from rtvi.engine.live import LiveParams, rtsp_options
from rtvi.errors import ApiError
from rtvi.media.live import probe_rtsp, split_credentials, with_credentials
from rtvi.media.types import MediaError

log = logging.getLogger(__name__)
router = APIRouter(tags=["Live Stream"])

MAX_LISTED = 1024
PROBE_FAILED = "Could not connect to the RTSP URL or there is no video stream from the RTSP URL"
CV_DEFAULT_CHUNK_S = 10  # spec §3.4: missing chunk_duration defaults to 10
ADD_CHANGES = {"camera_add", "add", "camera_streaming"}
REMOVE_CHANGES = {"camera_remove", "remove"}


# --- shared helpers -------------------------------------------------------------------------------
def get_live(state: ServiceState, stream_id: str) -> Asset:
    asset = state.store.registry.get(stream_id)
    if asset is None:
        raise ApiError.no_such_resource(stream_id)
    if not asset.is_live:
        raise ApiError(400, "InvalidParameter", f"No such live-stream {stream_id}")
    return asset


def resolve_credentials(url: str, username: str, password: str) -> tuple[str, str, str]:
    """-> (URL without credentials, username, password); 422 for an ambiguous or half combination."""
    clean, url_user, url_password = split_credentials(url)
    if (url_user or url_password) and (username or password):
        raise ApiError(
            422, "InvalidParameters", "Credentials were given both in the URL and in username/password"
        )
    if url_user or url_password:
        username, password = url_user, url_password
    if bool(username) != bool(password):
        raise ApiError(422, "InvalidParameters", "Provide both username and password, or neither")
    return clean, username, password


async def probe_stream(state: ServiceState, url: str) -> dict[str, Any]:
    """Connect to the camera once (bounded by the open timeout). -> probe results for `meta`."""
    if state.settings.skip_media_verification:
        return {}
    opts = rtsp_options(state.settings)
    try:
        # The probe thread cannot be interrupted; the wait is bounded so the request never hangs on it.
        info = await asyncio.wait_for(
            asyncio.to_thread(probe_rtsp, url, opts), opts.open_timeout_s + opts.read_timeout_s + 1
        )
    except (MediaError, TimeoutError) as exc:
        log.info("RTSP probe failed: %s", exc)
        raise ApiError.invalid_file(PROBE_FAILED) from exc
    return {"codec": info.codec, "width": info.width, "height": info.height, "fps": info.fps}


async def register_stream(
    state: ServiceState,
    stream_id: str,
    url: str,
    username: str,
    password: str,
    duplicate_code: str,
    *,
    sensor_name: str = "",
    meta: dict[str, Any],
) -> Asset:
    """Reserve the id, probe the camera, persist the registration."""
    with state.store.registry.reserve(stream_id, duplicate_code=duplicate_code):
        probed = await probe_stream(state, with_credentials(url, username, password))
        asset = Asset(
            id=stream_id,
            kind="live",
            media_type="video",
            filename=meta.get("description", "") or stream_id,
            path=url,
            owns_dir=False,
            sensor_name=sensor_name,
            meta={**meta, "username": username, "password": password, **probed},
        )
        state.store.registry.add(asset)
    log.info("live stream %s registered: %s", stream_id, url)
    return asset


async def delete_stream(state: ServiceState, stream_id: str, drain_timeout_s: float) -> None:
    """Stop every job on the stream (readers get [DONE]), then remove the registration."""
    start = time.perf_counter()
    asset = get_live(state, stream_id)
    await state.live.stop(asset.id, drain_timeout_s)
    state.store.registry.remove(asset.id)
    state.metrics.stream_delete_latency.observe(time.perf_counter() - start)
    log.info("live stream %s deleted", stream_id)


def auto_start(state: ServiceState, asset: Asset) -> bool:
    """Start the embedding a CV registration asked for (meta.auto_start), if its model is the loaded one."""
    spec = asset.meta.get("auto_start")
    if not spec or state.service != "embed" or state.batcher is None:
        return False
    if spec.get("model") != state.batcher.embedder.id:
        log.info(
            "stream %s: metadata.model %r is not the loaded model; not started", asset.id, spec.get("model")
        )
        return False
    params = LiveParams(float(spec["chunk_duration"]), float(spec.get("chunk_overlap_duration", 0)))
    if params.chunk_duration <= 0 or params.chunk_overlap_duration >= params.chunk_duration:
        log.warning("stream %s: invalid auto-start chunking %s; not started", asset.id, params)
        return False
    try:
        state.live.start_embedding(asset, params, state.batcher, persistent=True)
    except Exception as exc:  # spec §3.4: a failure to start inference does not fail the request
        log.exception("stream %s: auto-start failed", asset.id)
        state.report_error(asset.id, f"Failed to start inference: {exc}")
        return False
    return True


def resume_auto_started(state: ServiceState) -> None:
    """After the model loads: resume the inference of every stream that had it auto-started."""
    for asset in state.store.registry.list_assets("live"):
        if asset.meta.get("auto_start") and auto_start(state, asset):
            log.info("stream %s: auto-started inference resumed", asset.id)


def _error_item(exc: Exception) -> tuple[str, str, int]:
    if isinstance(exc, ApiError):
        return exc.message, exc.code, exc.status
    log.error("stream operation failed: %s", exc, exc_info=exc)
    return str(exc) or type(exc).__name__, "InternalError", 500


# --- /v1/streams ----------------------------------------------------------------------------------
@router.post("/v1/streams/add", response_model=AddLiveStreamsResponse)
async def add_streams(
    body: AddLiveStreamsRequest, state: ServiceState = Depends(get_state)
) -> AddLiveStreamsResponse:
    """Register 1-256 RTSP streams. Always 200: per-item `results` and `errors` (in input order)."""

    async def one(item: AddLiveStream) -> Asset:
        url, username, password = resolve_credentials(item.liveStreamUrl, item.username, item.password)
        meta: dict[str, Any] = {"description": item.description}
        meta.update({f: getattr(item, f) for f in PLACE_FIELDS})
        return await register_stream(
            state,
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
        safe_url = split_credentials(item.liveStreamUrl)[0]
        errors.append(
            AddStreamError(index=index, url=safe_url, error=message, error_code=code, status_code=status)
        )
        state.report_error(item.id or "", f"Failed to add live stream {safe_url}: {message}")
    return AddLiveStreamsResponse(results=results, errors=errors)


@router.get("/v1/streams/get-stream-info", response_model=list[LiveStreamInfo])
async def get_stream_info(state: ServiceState = Depends(get_state)) -> list[LiveStreamInfo]:
    infos = []
    for asset in state.store.registry.list_assets("live")[:MAX_LISTED]:
        job = state.live.job(asset.id)
        infos.append(
            LiveStreamInfo(
                id=asset.id,
                liveStreamUrl=asset.path,
                description=asset.meta.get("description", ""),
                chunk_duration=job.params.chunk_duration if job else 0,
                chunk_overlap_duration=job.params.chunk_overlap_duration if job else 0,
                **{f: asset.meta.get(f) for f in PLACE_FIELDS if asset.meta.get(f) is not None},
            )
        )
    return infos


@router.delete("/v1/streams/delete/{stream_id}")
async def delete_one(stream_id: str, state: ServiceState = Depends(get_state)) -> Response:
    try:
        await delete_stream(state, stream_id, state.settings.stream_delete_drain_timeout_s)
    except ApiError as exc:
        state.report_error(stream_id, f"Failed to delete live stream: {exc.message}")
        raise
    return Response(status_code=200)


@router.delete("/v1/streams/delete-batch", response_model=DeleteStreamsResponse)
async def delete_batch(
    body: DeleteStreamsRequest, state: ServiceState = Depends(get_state)
) -> DeleteStreamsResponse:
    """Delete streams in parallel. Always 200: `deleted` and `errors`, each in input order. `blocking`
    only picks the longer default drain timeout: the response always follows the deletions."""
    s = state.settings
    timeout = body.drain_timeout_seconds
    if timeout is None:
        timeout = s.stream_delete_blocking_timeout_s if body.blocking else s.stream_delete_drain_timeout_s
    outcomes = await asyncio.gather(
        *(delete_stream(state, sid, timeout) for sid in body.stream_ids), return_exceptions=True
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
        state.report_error(sid, f"Failed to delete live stream: {message}")
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
    metadata: StreamMetadata | None
    source: str | None


def _validate(model: type[BaseModel], data: object, loc: tuple[str, ...] = ()) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = body_validation_error(exc)
        raise type(err)([{**e, "loc": (e["loc"][0], *loc, *e["loc"][1:])} for e in err.errors()]) from exc


def parse_cv(body: dict[str, Any]) -> CvRequest:
    if "alert_type" in body or "event" in body:
        vios: ViosStreamRequest = _validate(ViosStreamRequest, body)
        if vios.alert_type != "camera_status_change":
            raise ApiError(400, "BadRequest", f"Unsupported alert_type '{vios.alert_type[:64]}'")
        ev = vios.event
        metadata = None
        if ev.metadata is not None:
            known = {k: v for k, v in ev.metadata.items() if k in StreamMetadata.model_fields}
            metadata = _validate(StreamMetadata, known, ("event", "metadata"))
        return CvRequest(
            True,
            ev.camera_id,
            ev.camera_name or "",
            ev.camera_url or "",
            ev.camera_type,
            ev.change,
            metadata,
            vios.source,
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
        v.metadata,
        cv.headers.source if cv.headers else None,
    )


@router.post("/v1/stream/add", response_model=StreamAddResponse)
async def cv_add(
    body: dict[str, Any] = Body(...), state: ServiceState = Depends(get_state)
) -> StreamAddResponse:
    """Add a camera (direct CV shape or VIOS event). The camera_id is the stream id. With
    metadata.model equal to the loaded model, embedding starts at once and survives restarts."""
    req = parse_cv(body)
    if req.change not in ADD_CHANGES:
        raise ApiError(400, "BadRequest", f"Unsupported change '{req.change[:64]}' for stream add")
    if not req.camera_url:
        if req.vios and req.change == "camera_add":
            return StreamAddResponse(camera_id=req.camera_id, asset_id="", status="added", inference=False)
        raise ApiError(400, "BadRequest", "camera_url is required for stream creation.")
    if req.camera_type == "file" or not req.camera_url.startswith("rtsp://"):
        raise ApiError(
            501, "NotImplemented", "File sensors (file, http and https URLs) are not supported yet"
        )
    url, username, password = resolve_credentials(req.camera_url, "", "")
    meta: dict[str, Any] = {
        "description": req.camera_name,
        "camera_id": req.camera_id,
        "camera_name": req.camera_name,
    }
    if req.source:
        meta["source_id"] = req.source
    md = req.metadata
    if md is not None and md.model is not None:
        meta["auto_start"] = {
            "model": md.model,
            "chunk_duration": md.chunk_duration if md.chunk_duration is not None else CV_DEFAULT_CHUNK_S,
            "chunk_overlap_duration": md.chunk_overlap_duration or 0,
        }
    try:
        asset = await register_stream(
            state,
            req.camera_id,
            url,
            username,
            password,
            "DuplicateCameraId",
            sensor_name=req.camera_name,
            meta=meta,
        )
    except ApiError as exc:
        state.report_error(req.camera_id, f"Failed to add camera {url}: {exc.message}")
        raise
    started = auto_start(state, asset)
    return StreamAddResponse(
        camera_id=req.camera_id,
        asset_id=asset.id,
        status="processing" if started else "added",
        inference=started,
    )


@router.post("/v1/stream/remove", response_model=StreamRemoveResponse)
async def cv_remove(
    body: dict[str, Any] = Body(...), state: ServiceState = Depends(get_state)
) -> StreamRemoveResponse:
    req = parse_cv(body)
    if req.change not in REMOVE_CHANGES:
        raise ApiError(400, "BadRequest", f"Unsupported change '{req.change[:64]}' for stream remove")
    asset = state.store.registry.get(req.camera_id)
    if asset is None:
        if req.vios:  # idempotent for VIOS
            return StreamRemoveResponse(camera_id=req.camera_id, asset_id="")
        raise ApiError(404, "NotFound", f"No camera with camera_id '{req.camera_id}'")
    if asset.is_live:
        await delete_stream(state, asset.id, state.settings.stream_delete_drain_timeout_s)
    else:
        state.store.delete_file(asset.id)
    return StreamRemoveResponse(camera_id=req.camera_id, asset_id=asset.id)


@router.get("/v1/stream/get-stream-info", response_model=CvStreamList)
async def cv_stream_info(state: ServiceState = Depends(get_state)) -> CvStreamList:
    items = []
    for asset in state.store.registry.list_assets("live")[:MAX_LISTED]:
        job = state.live.job(asset.id)
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
                chunk_overlap_duration=job.params.chunk_overlap_duration if job else 0,
            )
        )
    return CvStreamList(stream_count=len(items), stream_list=items)
