"""Request and response models of the routes every service shares (spec §2, §3, §7), and the pieces
the services' own protocols reuse (media_info, stream_options, chunk times). Bodies reject unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from rtvi.core.media.times import parse_iso
from rtvi.core.streams import StreamMetadata
from rtvi.naming import STREAM_TEXT_CHARS

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$"


def _real_instant(value: str) -> str:
    """The pattern admits 2024-13-45T25:61:61.000Z; a timestamp must also be a date and time."""
    try:
        parse_iso(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid date and time") from None
    return value


# Upload form fields require exactly 24 chars, which makes the milliseconds mandatory.
CreationTime = Annotated[
    str,
    StringConstraints(min_length=24, max_length=24, pattern=TIMESTAMP_PATTERN),
    AfterValidator(_real_instant),
]
ChunkTime = Annotated[str, StringConstraints(max_length=50, pattern=r"^[0-9.\-TZ:]*$")]


# What the server can fetch (spec §2.3); other schemes are a 422.
REMOTE_URL_SCHEMES = r"^(?i:https?|s3|file|data):"
RemoteUrl = Annotated[str, StringConstraints(max_length=2048, pattern=REMOTE_URL_SCHEMES)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceError(BaseModel):
    code: str = Field(max_length=128)
    message: str = Field(max_length=1024)


# --- files --------------------------------------------------------------------------------------
class FileUploadForm(Strict):
    purpose: Literal["vision"]
    media_type: Literal["video", "image"]
    filename: Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z0-9_.\-/ ]*$")] = ""
    # Fetched by the server (spec §2.3): http(s), s3, file (FILE_URL_ALLOWED_DIRS) or data.
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^(?i:https?|s3|file|data):")] | None = (
        None
    )
    creation_time: CreationTime | None = None
    id: UUID | None = None
    sensor_name: Annotated[str, StringConstraints(max_length=256)] = ""


class AddFileInfoResponse(BaseModel):
    id: UUID
    bytes: int = Field(ge=0, le=100_000_000_000)
    filename: str
    media_type: Literal["video", "image"]
    purpose: Literal["vision"] = "vision"
    creation_time: str | None = None
    sensor_name: str = ""


class FileInfo(BaseModel):
    id: str  # a UUID, or a CV file sensor's camera_id (spec §3.4)
    bytes: int
    filename: str
    purpose: Literal["vision"] = "vision"
    creation_time: str | None = None
    sensor_name: str = ""


class FileListItem(FileInfo):
    media_type: Literal["video", "image"]


class FileList(BaseModel):
    data: list[FileListItem]
    object: Literal["list"] = "list"


class DeletedFile(BaseModel):
    id: UUID
    object: Literal["file"] = "file"
    deleted: bool = True


# --- pieces of the generate requests and responses ----------------------------------------------
class MediaInfoOffset(Strict):
    type: Literal["offset"] = "offset"
    start_offset: int = Field(0, ge=0, le=4_000_000_000)
    end_offset: int = Field(4_000_000_000, ge=0, le=4_000_000_000)


class MediaInfoTimestamp(BaseModel):
    type: Literal["timestamp"] = "timestamp"
    start_timestamp: str
    end_timestamp: str


class ChunkTimings(BaseModel):
    """The per-chunk latencies and frame count both services report (spec §4.1, §4.7)."""

    decode_latency_ms: float | None = None
    chunk_latency_ms: float | None = None
    queue_time_s: float | None = None
    processing_latency_s: float | None = None
    frame_count: int | None = None


class StreamOptions(Strict):
    include_usage: bool = False


# --- info ---------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str
    api_type: str
    # Nothing more (spec §7): a client generated from the reference's OpenAPI reads this. The model's
    # dimension / language_model are in /v1/metadata.model.


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    audio_support: bool = False


class LicenseInfo(BaseModel):
    """GET /v1/license, in NIM's shape."""

    name: str  # the SPDX identifier (pyproject.toml's license)
    path: str  # the license file in the installed distribution ("" when it carries none)
    sha: str  # SHA-1 of content
    size: int  # characters of content
    url: str  # where the license text is published
    type: Literal["file"] = "file"
    content: str


# --- live streams (spec §3) ------------------------------------------------------------------------
STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$"
StreamId = Annotated[str, StringConstraints(pattern=STREAM_ID_PATTERN)]
StreamText = Annotated[str, StringConstraints(max_length=256, pattern=rf"^[{STREAM_TEXT_CHARS}]*$")]
Text256 = Annotated[str, StringConstraints(max_length=256)]
Coordinate = Annotated[float, Field(ge=-1e6, le=1e6)]


class AddLiveStream(Strict):
    liveStreamUrl: Annotated[str, StringConstraints(max_length=256, pattern=r"^rtsp://")]
    description: StreamText
    username: StreamText = ""
    password: StreamText = ""
    place_name: Text256 = ""
    place_type: Text256 = ""
    place_lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    place_lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    place_alt: Coordinate | None = None
    place_coordinate_x: Coordinate | None = None
    place_coordinate_y: Coordinate | None = None
    id: Annotated[str, StringConstraints(max_length=256, pattern=STREAM_ID_PATTERN)] | None = None
    sensor_name: Text256 = ""


class AddLiveStreamsRequest(Strict):
    streams: Annotated[list[AddLiveStream], Field(min_length=1, max_length=256)]


class AddedStream(BaseModel):
    id: str


class AddStreamError(BaseModel):
    index: int
    url: str
    error: str
    error_code: str
    status_code: int


class AddLiveStreamsResponse(BaseModel):
    results: list[AddedStream]
    errors: list[AddStreamError]


PLACE_FIELDS = (
    "place_name",
    "place_type",
    "place_lat",
    "place_lon",
    "place_alt",
    "place_coordinate_x",
    "place_coordinate_y",
)


class LiveStreamInfo(BaseModel):
    id: str
    liveStreamUrl: str
    description: str
    # Both 0 unless a request on the stream is processing. Live chunks follow the wall clock.
    chunk_duration: float = 0
    chunk_overlap_duration: float = 0
    place_name: str = ""
    place_type: str = ""
    place_lat: float | None = None
    place_lon: float | None = None
    place_alt: float | None = None
    place_coordinate_x: float | None = None
    place_coordinate_y: float | None = None


class DeleteStreamsRequest(Strict):
    stream_ids: Annotated[list[str], Field(min_length=1, max_length=256)]
    blocking: bool = False
    drain_timeout_seconds: Annotated[float, Field(ge=0, le=3600)] | None = None


class DeleteStreamError(BaseModel):
    stream_id: str
    error: str
    error_code: str
    status_code: int


class DeleteStreamsResponse(BaseModel):
    deleted: list[str]
    errors: list[DeleteStreamError]


# --- CV / VIOS-compatible stream API (spec §3.4) ---------------------------------------------------
Unit = Annotated[float, Field(ge=0, le=1)]


class CvStreamMetadata(StreamMetadata):
    """The metadata fields of the CV API's contract (spec §3.4), which both reference services take
    (rt-embed too, though it uses only `model`): the camera's facts, the model, and rt-vlm's generation
    settings, besides the core's chunking. Not validated as such: a service's own model
    (CoreConfig.stream_metadata) extends it, or the core's bare StreamMetadata, and says which fields
    start its inference."""

    resolution: Annotated[str, StringConstraints(pattern=r"^\d+x\d+$")] | None = None
    codec: str | None = None
    framerate: Annotated[float, Field(ge=0.1, le=240)] | None = None
    prompt: str | None = None
    system_prompt: str | None = None
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1, le=16384)] | None = None
    min_tokens: Annotated[int, Field(ge=1, le=16384)] | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=1, le=1000)] | None = None
    ignore_eos: bool | None = None
    seed: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    num_frames_per_second_or_fixed_frames_chunk: Annotated[float, Field(ge=0, le=256)] | None = None
    use_fps_for_chunking: bool | None = None
    vlm_input_width: Annotated[int, Field(ge=0, le=4096)] | None = None
    vlm_input_height: Annotated[int, Field(ge=0, le=4096)] | None = None
    enable_reasoning: bool | None = None
    enable_audio: bool | None = None
    alert_category: Annotated[str, StringConstraints(max_length=500)] | None = None
    mm_processor_kwargs: dict[str, object] | None = None
    response_format_type: Literal["text", "json_object"] | None = None
    stream: bool | None = None


# A CV registration's metadata as it comes: the route validates it as the service's own model
# (CoreConfig.stream_metadata: unknown keys refused, except in the VIOS event, which drops them).
CvMetadataObject = dict[str, object]


class StreamHeaders(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source: str | None = None
    created_at: str | None = None
    url_headers: dict[str, str] | None = None


class StreamValue(Strict):
    """`value` of the direct CV shape; for removal only camera_id and change matter."""

    camera_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=STREAM_ID_PATTERN)]
    camera_name: str | None = None
    camera_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    camera_type: Literal["rtsp", "file"] | None = None
    camera_vod_url: str | None = None
    tags: object | None = None
    change: str
    creation_time: Annotated[str, StringConstraints(max_length=64)] | None = None
    metadata: CvMetadataObject | None = None


class CvStreamRequest(Strict):
    key: Annotated[str, StringConstraints(max_length=256)]
    value: StreamValue
    headers: StreamHeaders | None = None


class FlatCvStream(Strict):
    """The flat CV shape the VLM docs show: {"camera_id", "url", "metadata"} to add, {"camera_id"} to
    remove; the route implies the change."""

    camera_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=STREAM_ID_PATTERN)]
    url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    camera_name: str | None = None
    camera_type: Literal["rtsp", "file"] | None = None
    creation_time: Annotated[str, StringConstraints(max_length=64)] | None = None
    metadata: CvMetadataObject | None = None


class ViosEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    camera_id: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=STREAM_ID_PATTERN)]
    camera_name: str | None = None
    camera_type: str | None = None
    camera_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    camera_vod_url: str | None = None
    tags: object | None = None
    change: str
    # Only the keys the service's model of metadata knows are used; the rest are ignored.
    metadata: CvMetadataObject | None = None
    headers: StreamHeaders | None = None


class ViosStreamRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    alert_type: str
    created_at: str | None = None
    source: str | None = None
    event: ViosEvent


class StreamAddResponse(BaseModel):
    camera_id: str
    asset_id: str
    status: Literal["processing", "added"]
    inference: bool


class StreamRemoveResponse(BaseModel):
    camera_id: str
    asset_id: str
    status: Literal["removed"] = "removed"


class CvStreamInfo(BaseModel):
    camera_id: str
    camera_name: str
    camera_url: str
    asset_id: str
    source_id: str | None = None
    sensor_id: str | None = None
    inference_active: bool
    chunk_duration: float
    chunk_overlap_duration: float


class CvStreamList(BaseModel):
    status: Literal["ok"] = "ok"
    stream_count: int
    stream_list: list[CvStreamInfo]


# --- search (issue 12) ---------------------------------------------------------------------------------
class SearchRequest(Strict):
    query: str | None = Field(None, max_length=4096, description="Text to search for")
    image: str | None = Field(None, max_length=50_000_000, description="An image (or clip) as a data: URI")
    top_k: int = Field(10, ge=1, le=100)
    asset_ids: list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=1000)
    stream_ids: list[Annotated[str, Field(max_length=256)]] | None = Field(None, max_length=1000)
    start_time: str | float | None = Field(
        None,
        description="ISO-8601 (wall clock: live chunks, files with a creation time) or seconds into a file",
    )
    end_time: str | float | None = None


class SearchHit(BaseModel):
    asset_id: str
    stream_id: str | None = None
    source: str
    chunk_idx: int
    start_time: str
    end_time: str
    # Seconds into the file (files only; start_time is wall clock when the file has a creation_time):
    # where a player seeks to.
    start_offset: float | None = None
    end_offset: float | None = None
    score: float
    thumbnail_url: str | None = None
    caption: str | None = None


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]


class SearchIndexStats(BaseModel):
    """What the index holds and costs on this replica, and its retention (docs/search.md)."""

    backend: Literal["sqlite", "milvus"]
    entries: int  # of the open collection
    disk_bytes: int | None  # rows, vectors and thumbnails on this machine (None: a Milvus server's)
    memory_bytes: int  # vectors held in this process
    retention_hours: float  # RTVI_INDEX_RETENTION_HOURS (0: kept)
    max_gb: float  # RTVI_INDEX_MAX_GB (0: unlimited; SQLite only)
    expired: dict[str, int]  # live chunks removed so far, by reason (age, size)
