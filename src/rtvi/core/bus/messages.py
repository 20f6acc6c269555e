"""What goes on the message bus: the nv.VisionLLM envelope of a chunk (spec §6.3) and the JSON error
(spec §6.5). Each service fills the envelope with its own result (vectors, captions).

Pure functions over small typed contexts, so file requests, live streams and tests build the same bytes.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf.message import Message

from rtvi.core.assets.registry import Asset
from rtvi.core.bus.schema import schema_pb2 as nv
from rtvi.core.credentials import shown_url
from rtvi.core.media.times import format_iso, unix_to_iso
from rtvi.core.models.info import ModelInfo
from rtvi.core.pipeline.results import ChunkResult

SensorType = Literal["Camera", "Video"]
ErrorType = Literal["functional", "critical"]
MESSAGE_TYPE_VISION_LLM = "vision_llm"
MESSAGE_TYPE_ERROR = "error"
MESSAGE_TYPE_INCIDENT = "incident"
# sensor.info keys the reference documents (path, assetDir, url, videoFps): always present, "" when they
# do not apply (a live stream has no asset directory), so a consumer indexing them never misses a key.
SENSOR_INFO_KEYS = ("path", "assetDir", "url", "videoFps")


@dataclass(frozen=True, slots=True)
class ChunkContext:
    """Everything one chunk's VisionLLM message says besides the vector.

    `start_ts` / `end_ts` are Unix seconds (UTC): for files the asset's creation time (else the request's
    arrival) plus the chunk's PTS; for live streams the wall-clock capture time.
    """

    request_id: str
    chunk_idx: int
    stream_id: str  # asset id (files) or stream id (live)
    sensor_type: SensorType
    start_ts: float
    end_ts: float
    model_id: str
    sensor_id: str = ""  # camera_id, else sensor name, else stream id (see `sensor_key`)
    sensor_name: str = ""
    camera_id: str = ""
    description: str = ""
    requested_model: str = ""
    frame_count: int = 0
    decode_latency_s: float = 0.0
    inference_latency_s: float = 0.0
    chunk_latency_s: float = 0.0
    queue_time_s: float = 0.0
    sensor_info: Mapping[str, str] = field(default_factory=dict)  # path, assetDir, url, videoFps, ...
    # Unix seconds of each sampled frame (one nv.Frame each); `frame_times_planned`: they are the
    # sampler's targets, not the decoded frames' own times (see `chunk_context`).
    frame_times: tuple[float, ...] = ()
    frame_times_planned: bool = False
    model_owned_by: str = ""
    model_api_type: str = "embedding"  # llm.info.modelApiType: "embedding" or "vlm"
    text: str | None = None  # set for messages about a text input (no sensor)

    @property
    def sensor_key(self) -> str:
        return self.camera_id or self.sensor_id or self.sensor_name or self.stream_id

    @property
    def key(self) -> bytes:
        return f"{self.request_id}:{self.chunk_idx}".encode()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


# A service's result -> its complete bus message (the envelope filled with the result).
ResultMessage = Callable[[ChunkContext, Any], nv.VisionLLM]
# A service's result and its built nv.VisionLLM -> the nv.Incident it raises, or None (spec §6.4).
IncidentMessage = Callable[[ChunkContext, Any, nv.VisionLLM], Message | None]


def vision_llm_envelope(ctx: ChunkContext) -> tuple[nv.VisionLLM, nv.Query]:
    """Everything of one chunk's nv.VisionLLM (spec §6.3) but the result: -> (message, its one query)."""
    msg = nv.VisionLLM(version=ctx.model_id or ctx.requested_model or "1.0")
    # Microseconds: a float of Unix seconds holds no more, and nanoseconds would show its rounding noise.
    msg.timestamp.FromMicroseconds(round(ctx.start_ts * 1e6))
    msg.end.FromMicroseconds(round(ctx.end_ts * 1e6))
    _add_frames(msg, ctx)
    # The first and last frame's ids, as the reference; without frames, its fallback ids.
    msg.startFrameId = msg.frames[0].id if msg.frames else f"{ctx.chunk_idx}:start"
    msg.endFrameId = msg.frames[-1].id if msg.frames else f"{ctx.chunk_idx}:end"
    if ctx.text is None:
        sensor = msg.sensor
        sensor.id = ctx.sensor_key
        sensor.type = ctx.sensor_type
        sensor.description = ctx.description
        sensor.info.update(dict.fromkeys(SENSOR_INFO_KEYS, ""))
        sensor.info.update({k: v for k, v in ctx.sensor_info.items() if v})
        if ctx.camera_id:
            sensor.info["cameraId"] = ctx.camera_id
        if ctx.sensor_name:
            sensor.info["sensorName"] = ctx.sensor_name
    llm = msg.llm
    llm.info.update(
        {"modelId": ctx.model_id, "modelApiType": ctx.model_api_type, "requestedModel": ctx.requested_model}
    )
    if ctx.model_owned_by:
        llm.info["modelOwnedBy"] = ctx.model_owned_by
    query = llm.queries.add(id=f"{ctx.request_id}:{ctx.chunk_idx}", response="")
    query.params.update(
        {
            "chunkIdx": str(ctx.chunk_idx),
            "streamId": ctx.stream_id,
            "requestId": ctx.request_id,
            "sensorId": ctx.sensor_key,
            # The chunk's wall-clock range in the API's ISO form (spec §4.2), as the reference's params.
            "startNtp": unix_to_iso(ctx.start_ts),
            "endNtp": unix_to_iso(ctx.end_ts),
        }
    )
    if ctx.camera_id:
        query.params["cameraId"] = ctx.camera_id
    if ctx.sensor_name:
        query.params["sensorName"] = ctx.sensor_name
    if ctx.text is not None:
        query.prompts["text"] = ctx.text
    msg.info.update(
        {
            "chunkIdx": str(ctx.chunk_idx),
            "requestId": ctx.request_id,
            "streamId": ctx.stream_id,
            "sensorId": ctx.sensor_key,
            "frameCount": str(ctx.frame_count),
            "decodeLatencyMs": _ms(ctx.decode_latency_s),
            # The reference calls the model-call latency vlmLatencyMs, whatever the model.
            "vlmLatencyMs": _ms(ctx.inference_latency_s),
            "chunkLatencyMs": _ms(ctx.chunk_latency_s),
            "queueTimeS": f"{ctx.queue_time_s:.6f}",
            "processingLatencyS": f"{ctx.chunk_latency_s:.6f}",
        }
    )
    if ctx.camera_id:
        msg.info["cameraId"] = ctx.camera_id
    return msg, query


def _add_frames(msg: nv.VisionLLM, ctx: ChunkContext) -> None:
    """One nv.Frame per sampled frame: id `<chunkIdx>:<k>` (k-th frame of the chunk, so the ids of a
    request's messages never collide), its time, the sensor."""
    source = "planned" if ctx.frame_times_planned else "decoded"
    for k, ts in enumerate(ctx.frame_times):
        frame = msg.frames.add(id=f"{ctx.chunk_idx}:{k}", sensorId=ctx.sensor_key if ctx.text is None else "")
        frame.timestamp.FromMicroseconds(round(ts * 1e6))
        frame.info.update({"chunkIdx": str(ctx.chunk_idx), "frameIdx": str(k), "timeSource": source})


def chunk_result_of(msg: nv.VisionLLM, output: Any) -> ChunkResult[Any]:
    """A chunk read back from its nv.VisionLLM (the inverse of `vision_llm_envelope` and
    `chunk_context`, for live chunks: their times are Unix seconds), with the service's `output`."""
    info = msg.info

    def seconds(field: str, scale: float = 1e-3) -> float:
        return float(info.get(field) or 0) * scale

    return ChunkResult(
        index=int(info["chunkIdx"]),
        start_s=msg.timestamp.ToMicroseconds() / 1e6,
        end_s=msg.end.ToMicroseconds() / 1e6,
        output=output,
        frame_count=int(info.get("frameCount") or 0),
        decode_latency_s=seconds("decodeLatencyMs"),
        inference_latency_s=seconds("vlmLatencyMs"),
        queue_time_s=seconds("queueTimeS", 1.0),
        chunk_latency_s=seconds("chunkLatencyMs"),
    )


def error_json(stream_id: str, event: str, type_: ErrorType, source: str, now: float | None = None) -> bytes:
    """The §6.5 error message: {streamId, timestamp (UTC ms Z), type, source, event}."""
    ts = format_iso(datetime.fromtimestamp(time.time() if now is None else now, tz=UTC))
    body = {"streamId": stream_id, "timestamp": ts, "type": type_, "source": source, "event": event}
    return json.dumps(body, separators=(",", ":")).encode()


def chunk_context(
    asset: Asset,
    request_id: str,
    model: ModelInfo,
    requested_model: str,
    r: ChunkResult[Any],
    base_ts: float,
) -> ChunkContext:
    """What the results bus needs of one chunk (spec §6.3), for files (base_ts + PTS) and live streams
    (chunk times are already Unix seconds: base_ts 0)."""
    fps = asset.meta.get("fps")
    frame_times, planned = _frame_times(r, base_ts)
    return ChunkContext(
        request_id=request_id,
        chunk_idx=r.index,
        stream_id=asset.id,
        sensor_type="Camera" if asset.is_live else "Video",
        start_ts=base_ts + r.start_s,
        end_ts=base_ts + r.end_s,
        model_id=model.id,
        model_owned_by=model.owned_by,
        model_api_type=model.api_type,
        requested_model=requested_model,
        sensor_name=asset.sensor_name,
        camera_id=str(asset.meta.get("camera_id") or ""),
        description=str(asset.meta.get("description") or ""),
        frame_count=r.frame_count,
        decode_latency_s=r.decode_latency_s,
        inference_latency_s=r.inference_latency_s,
        chunk_latency_s=r.chunk_latency_s,
        queue_time_s=r.queue_time_s,
        sensor_info=_sensor_info(asset, fps),
        frame_times=frame_times,
        frame_times_planned=planned,
    )


def _sensor_info(asset: Asset, fps: Any) -> dict[str, str]:
    """sensor.info's path, assetDir, url and videoFps. A live stream's path and url are its camera URL,
    never with credentials; a file's assetDir is the directory that holds it (its own directory in the
    store for uploads and downloads, s3://bucket/prefix/<id> in an S3 store) and its url the URL it was
    made from, when the asset records one (`source_url` in its meta)."""
    video_fps = f"{fps:.2f}" if fps else ""
    if asset.is_live:
        url = shown_url(asset.path)
        return {"path": url, "assetDir": "", "url": url, "videoFps": video_fps}
    return {
        "path": asset.path,
        "assetDir": posixpath.dirname(asset.path),
        # The store keeps it redacted; redacted again here for assets registered another way.
        "url": shown_url(str(asset.meta.get("source_url") or "")),
        "videoFps": video_fps,
    }


def _frame_times(r: ChunkResult[Any], base_ts: float) -> tuple[tuple[float, ...], bool]:
    """The Unix times of a chunk's sampled frames -> (times, planned). A result that carries its frames'
    PTS (`frame_pts_s`) gives them exactly; otherwise they are the sampler's documented targets, the
    centres of `frame_count` equal parts of the chunk (media/sampler.py, media/windows.py); the
    frame picked for a target lies in its part. `frame_pts_s`, when present, is on `start_s`'s clock."""
    if r.frame_pts_s:
        return tuple(base_ts + t for t in r.frame_pts_s), False
    n, span = r.frame_count, r.end_s - r.start_s
    return tuple(base_ts + r.start_s + (k + 0.5) * span / n for k in range(n)), True
