"""Request and response models of the RTVI v1 API (spec §2, §4, §7). Bodies reject unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$"
# Upload form fields require exactly 24 chars, which makes the milliseconds mandatory.
CreationTime = Annotated[str, StringConstraints(min_length=24, max_length=24, pattern=TIMESTAMP_PATTERN)]
ChunkTime = Annotated[str, StringConstraints(max_length=50, pattern=r"^[0-9.\-TZ:]*$")]


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
    id: UUID
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


# --- embeddings ---------------------------------------------------------------------------------
class MediaInfoOffset(Strict):
    type: Literal["offset"] = "offset"
    start_offset: int = Field(0, ge=0, le=4_000_000_000)
    end_offset: int = Field(4_000_000_000, ge=0, le=4_000_000_000)


class MediaInfoTimestamp(BaseModel):
    type: Literal["timestamp"] = "timestamp"
    start_timestamp: str
    end_timestamp: str


class StreamOptions(Strict):
    include_usage: bool = False


IdList = Annotated[list[UUID], Field(min_length=1, max_length=50)]


class VideoEmbeddingsQuery(Strict):
    id: UUID | IdList
    url: Annotated[str, StringConstraints(max_length=4 * 2**30)] | None = None
    media_type: Literal["video", "image"] = "video"
    creation_time: CreationTime | None = None
    url_headers: dict[str, str] | None = None
    model: Annotated[str, StringConstraints(max_length=256)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    chunk_duration: int = Field(0, ge=0, le=3600)
    chunk_overlap_duration: int = Field(0, ge=-3600, le=3600)
    media_info: MediaInfoOffset | None = None

    @property
    def ids(self) -> list[UUID]:
        return self.id if isinstance(self.id, list) else [self.id]


class ChunkResponse(BaseModel):
    start_time: ChunkTime
    end_time: ChunkTime
    embeddings: list[float] = Field(max_length=10000)
    decode_latency_ms: float | None = None
    inference_latency_ms: float | None = None
    chunk_latency_ms: float | None = None
    queue_time_s: float | None = None
    processing_latency_s: float | None = None
    frame_count: int | None = None


class EmbeddingsUsage(BaseModel):
    query_processing_time: int
    total_chunks_processed: int


class VideoEmbeddingsCompletionResponse(BaseModel):
    id: UUID
    created: int
    model: str
    media_info: MediaInfoOffset | MediaInfoTimestamp | None = None
    usage: EmbeddingsUsage | None = None
    chunk_responses: list[ChunkResponse] = Field(default_factory=list, max_length=10000)


TextItem = Annotated[str, StringConstraints(max_length=1000)]


class TextEmbeddingsQuery(Strict):
    text_input: TextItem | Annotated[list[TextItem], Field(max_length=100)]
    model: Annotated[str, StringConstraints(max_length=256)]

    @property
    def texts(self) -> list[str]:
        return self.text_input if isinstance(self.text_input, list) else [self.text_input]


class TextEmbedding(BaseModel):
    text_input: str
    embeddings: list[float]


class TextEmbeddingsCompletionResponse(BaseModel):
    id: UUID
    created: int
    model: str
    data: list[TextEmbedding]


# --- OpenAI / NIM-style /v1/embeddings -----------------------------------------------------------
class EmbeddingsRequest(BaseModel):
    # Not extra="forbid": OpenAI clients send fields such as `user` or `dimensions` we can ignore.
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    model: str
    request_type: Literal["query", "passage", "bulk_text", "bulk_video", "video", "image"] | None = None
    encoding_format: Literal["float", "base64"] = "float"


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsageOpenAI(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsageOpenAI = Field(default_factory=EmbeddingsUsageOpenAI)


# --- info ---------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str
    api_type: str
    dimension: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
    audio_support: bool = False
