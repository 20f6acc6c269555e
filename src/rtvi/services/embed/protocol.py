"""Request and response models of the embedding routes (spec §4.1-4.6) and of the OpenAI / Cosmos-Embed1
NIM style /v1/embeddings."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from rtvi.http.protocol import (
    REMOTE_URL_SCHEMES,
    ChunkTime,
    ChunkTimings,
    CreationTime,
    CvStreamMetadata,
    MediaInfoOffset,
    MediaInfoTimestamp,
    StreamId,
    StreamOptions,
    Strict,
)

IdList = Annotated[list[UUID], Field(min_length=1, max_length=50)]


class VideoEmbeddingsQuery(Strict):
    # A UUID, a list of UUIDs (images), or a live stream's id, which may be any stream-id string (CV
    # cameras); a non-UUID string that names no live stream is rejected like an invalid UUID (422).
    id: UUID | IdList | StreamId
    url: Annotated[str, StringConstraints(max_length=4 * 2**30, pattern=REMOTE_URL_SCHEMES)] | None = None
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
    def ids(self) -> list[str]:
        return [str(i) for i in (self.id if isinstance(self.id, list) else [self.id])]


class ChunkResponse(ChunkTimings):
    start_time: ChunkTime
    end_time: ChunkTime
    embeddings: list[float] = Field(max_length=10000)
    inference_latency_ms: float | None = None


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


MAX_TEXTS = 100  # per request, on every route that takes text (spec §9.2)
MAX_TEXT_CHARS = 1000
TextItem = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]


class TextEmbeddingsQuery(Strict):
    text_input: TextItem | Annotated[list[TextItem], Field(max_length=MAX_TEXTS)]
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


# --- CV registrations (spec §3.4) -------------------------------------------------------------------
class EmbedStreamMetadata(CvStreamMetadata):
    """The metadata of a CV registration as this service takes it: the contract's fields, of which
    `model` starts embedding (when it is the loaded model's id: EmbedServing.live_processor)."""

    def requests_inference(self) -> bool:
        return self.model is not None
