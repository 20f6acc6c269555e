"""Request and response models of the VLM routes: generate_captions (spec §4.7), the OpenAI-compatible
chat and text completions (§4.8, §1.2).

Limits that an environment variable can raise (prompt lengths, generated tokens) are checked by the
serving layer against the settings, so the error can name the variable; the schema holds hard caps.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

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

HARD_PROMPT_CAP = 1_000_000  # characters; VLM_PROMPT_MAX_LENGTH (10240) is the working limit
HARD_TOKEN_CAP = 1_000_000  # VLM_MAX_GENERATION_TOKENS (16384) is the working limit
Tokens = Annotated[int, Field(ge=1, le=HARD_TOKEN_CAP)]


class JsonSchemaFormat(Strict):
    name: Annotated[str, StringConstraints(max_length=256)] = "response"
    description: Annotated[str, StringConstraints(max_length=2048)] | None = None
    # `schema` shadows a BaseModel attribute: stored as schema_, named schema on the wire.
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool = True

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Choice = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


def check_choices(choices: list[str], field: str = "choices") -> None:
    """A set of answers to choose from (response_format.choices, guided_choice): none blank, no repeats."""
    if any(not c.strip() for c in choices):
        raise ValueError(f"{field} must not be blank")
    if len(set(choices)) != len(choices):
        raise ValueError(f"{field} must be unique")


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema", "choice"] = "text"
    json_schema: JsonSchemaFormat | None = None
    choices: Annotated[list[Choice], Field(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ResponseFormat:
        if self.choices is not None and self.type != "choice":
            raise ValueError(f"response_format.choices goes with type choice only, not {self.type}")
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format type json_schema needs json_schema")
        if self.type == "choice":
            if not self.choices:
                raise ValueError("response_format type choice needs choices")
            check_choices(self.choices)
        return self


class VideoIo(Strict):
    fps: Annotated[float, Field(gt=0, le=240)] | None = None
    num_frames: Annotated[int, Field(ge=-1, le=512)] | None = None

    @model_validator(mode="after")
    def _one(self) -> VideoIo:
        if self.fps is not None and self.num_frames is not None:
            raise ValueError("media_io_kwargs.video takes fps or num_frames, not both")
        if self.num_frames == 0:
            raise ValueError("media_io_kwargs.video.num_frames must be > 0 or -1")
        return self


class MediaIoKwargs(Strict):
    video: VideoIo | None = None


class FrameOptions(Strict):
    """The frame-selection and generation fields VlmQuery, chat and CV metadata share."""

    max_tokens: Tokens | None = None
    min_tokens: Tokens | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1, le=1000)] | None = None
    ignore_eos: bool | None = None
    seed: Annotated[int, Field(ge=1, le=2**32 - 1)] | None = None
    num_frames_per_second_or_fixed_frames_chunk: Annotated[float, Field(ge=-1, le=512)] = 0
    use_fps_for_chunking: bool = False
    vlm_input_width: Annotated[int, Field(ge=0, le=4096)] = 0
    vlm_input_height: Annotated[int, Field(ge=0, le=4096)] = 0
    enable_reasoning: bool = False
    enable_audio: bool = False
    mm_processor_kwargs: dict[str, Any] | None = None
    media_io_kwargs: MediaIoKwargs | None = None


class AlertGate(Strict):
    """Ours (docs/alerts.md): call the VLM only on chunks whose embedding stands out for a query on this
    stream, calibrated as alert rules are. Name an alert rule (its query, sensitivity and min_score) or
    give a query here."""

    rule_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    query: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
    sensitivity: float = Field(0.5, ge=0, le=1)
    min_score: float | None = Field(None, ge=-1, le=1)

    @model_validator(mode="after")
    def _one_source(self) -> AlertGate:
        if (self.rule_id is None) == (self.query is None):
            raise ValueError("alert_gate takes a rule_id or a query (one of them)")
        return self


class VlmQuery(FrameOptions):
    # A UUID, a list of UUIDs (images), or a live stream's id (CV cameras use any stream-id string).
    id: UUID | Annotated[list[UUID], Field(min_length=1, max_length=50)] | StreamId | None = None
    url: Annotated[str, StringConstraints(max_length=2048, pattern=REMOTE_URL_SCHEMES)] | None = None
    url_headers: dict[str, str] | None = None
    media_type: Literal["video", "image"] = "video"
    creation_time: CreationTime | None = None
    prompt: Annotated[str, StringConstraints(max_length=HARD_PROMPT_CAP)]
    system_prompt: Annotated[str, StringConstraints(max_length=HARD_PROMPT_CAP)] | None = None
    model: Annotated[str, StringConstraints(max_length=256)]
    api_type: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z]*$")] = ""
    response_format: ResponseFormat = Field(default_factory=ResponseFormat)
    stream: bool = False
    stream_options: StreamOptions | None = None
    chunk_duration: int = Field(0, ge=0, le=3600)
    chunk_overlap_duration: int = Field(0, ge=-3600, le=3600)
    media_info: MediaInfoOffset | None = None
    alert_category: Annotated[str, StringConstraints(max_length=500)] | None = None
    alert_gate: AlertGate | None = None

    @model_validator(mode="after")
    def _cross_fields(self) -> VlmQuery:
        if self.id is None and self.url is None:
            raise ValueError("id or url is required")
        if self.url is not None and self.url.lower().startswith("rtsp"):
            raise ValueError("rtsp URLs are not accepted here: use /v1/streams/add")
        if self.response_format.type != "text" and (self.ignore_eos or self.min_tokens is not None):
            raise ValueError("structured output cannot be combined with ignore_eos or min_tokens")
        return self

    # A `url` request with no id (the seed's url example) names its temporary asset with a fresh UUID.
    _url_asset_id: str = PrivateAttr(default_factory=lambda: str(uuid.uuid4()))

    @property
    def ids(self) -> list[str]:
        if self.id is None:
            return [self._url_asset_id]
        return [str(i) for i in (self.id if isinstance(self.id, list) else [self.id])]


class CaptionChunk(ChunkTimings):
    chunk_id: int
    start_time: ChunkTime
    end_time: ChunkTime
    content: str = Field(max_length=100_000)
    embeddings: list[float] = Field(default_factory=list)
    reasoning_description: str = ""
    audio_transcript: str | None = None
    response_format_error: str | None = None  # ours: why the answer breaks response_format
    incident_detected: bool | None = None  # ours: the alert decision of spec §6.4
    vlm_latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # ours, with alert_gate: whether the chunk went to the VLM, its score and the calibrated threshold
    alert_gate: dict[str, Any] | None = None


class CaptionsUsage(BaseModel):
    query_processing_time: int
    total_chunks_processed: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    vlm_calls_saved: int | None = None  # ours, with alert_gate: chunks the gate kept from the VLM


class VlmCaptionsCompletionResponse(BaseModel):
    id: UUID
    created: int
    model: str
    media_info: MediaInfoOffset | MediaInfoTimestamp | None = None
    usage: CaptionsUsage | None = None
    chunk_responses: list[CaptionChunk] = Field(default_factory=list, max_length=10000)


# --- OpenAI-compatible chat (spec §4.8) ------------------------------------------------------------
class ImageUrl(BaseModel):
    url: Annotated[str, StringConstraints(max_length=10_000_000)]
    detail: str | None = None


class VideoUrl(BaseModel):
    url: Annotated[str, StringConstraints(max_length=100_000_000)]


class ContentPart(BaseModel):
    type: Literal["text", "image_url", "video_url"]
    text: str | None = None
    image_url: ImageUrl | None = None
    video_url: VideoUrl | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


# Fields clients send that no backend here applies: a 422 that names them and what to use instead
# (unknown fields are refused, spec §0), never silently ignored. Hidden from the OpenAPI schema.
REFUSED_CHAT_FIELDS: dict[str, str] = {
    "repetition_penalty": "no backend of this service applies it",
    "guided_regex": "regular-expression guided decoding is not available; use guided_choice, guided_json "
    "or response_format",
    "frames_per_chunk": "not a field of this API; use num_frames_per_second_or_fixed_frames_chunk (or "
    "media_io_kwargs.video.num_frames)",
}


def _refuse(value: Any, info: ValidationInfo) -> Any:
    why = REFUSED_CHAT_FIELDS.get(info.field_name or "", "")
    raise PydanticCustomError("extra_forbidden", "Extra inputs are not permitted: {why}", {"why": why})


Refused = SkipJsonSchema[Annotated[Any, BeforeValidator(_refuse)]]


class ChatCompletionRequest(FrameOptions):
    """OpenAI's chat request with the RTVI extras (spec §4.8); unknown fields are a 422 (FrameOptions is
    Strict). Accepted and not applied, as in the reference: frequency_penalty, presence_penalty,
    logit_bias, logprobs, top_logprobs. vLLM's guided_choice / guided_json are honoured where the backend
    can constrain its output (chat.ChatTurn), refused where it cannot."""

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=100)]
    model: Annotated[str, StringConstraints(max_length=256)]
    max_completion_tokens: Tokens | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    id: UUID | Annotated[list[UUID], Field(min_length=1, max_length=100)] | StreamId | None = None
    chunk_duration: int = Field(0, ge=0, le=3600)
    chunk_overlap_duration: int = Field(0, ge=-3600, le=3600)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    guided_choice: Annotated[list[Choice], Field(min_length=1, max_length=256)] | None = None
    guided_json: dict[str, Any] | None = None  # a JSON schema (vLLM also takes it as a JSON string)
    repetition_penalty: Refused = Field(None, exclude=True)
    guided_regex: Refused = Field(None, exclude=True)
    frames_per_chunk: Refused = Field(None, exclude=True)

    @field_validator("guided_json", mode="before")
    @classmethod
    def _schema_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("guided_json must be a JSON schema (an object, or its JSON text)") from None
        return value

    @model_validator(mode="after")
    def _guided(self) -> ChatCompletionRequest:
        if self.guided_choice is not None:
            check_choices(self.guided_choice, "guided_choice: choices")
            if self.guided_json is not None:
                raise ValueError("guided_choice and guided_json cannot be combined")
        guided = self.guided_choice is not None or self.guided_json is not None
        fmt = self.response_format.get("type", "text") if isinstance(self.response_format, dict) else "text"
        if guided and fmt != "text":
            raise ValueError(f"guided_choice / guided_json cannot be combined with response_format {fmt}")
        return self

    @property
    def ids(self) -> list[str]:
        if self.id is None:
            return []
        return [str(i) for i in (self.id if isinstance(self.id, list) else [self.id])]


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_description: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"] = "stop"


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class CompletionRequest(BaseModel):
    """/v1/completions: validated, then always refused (spec §1.2): text-only chat is /v1/chat/completions."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, StringConstraints(max_length=256)]
    prompt: str | list[str] | None = None


# --- CV registrations (spec §3.4) -------------------------------------------------------------------
class VlmStreamMetadata(CvStreamMetadata):
    """The metadata of a CV registration as this service takes it: the contract's fields, of which
    `prompt` starts captioning; the others shape it (VlmServing.live_processor)."""

    def requests_inference(self) -> bool:
        return self.prompt is not None

    def frame_options(self) -> FrameOptions:
        """Its frame-selection and generation settings (FrameOptions' own bounds apply: a ValueError)."""
        shared = self.model_dump(include=set(FrameOptions.model_fields), exclude_none=True)
        return FrameOptions.model_validate(shared)
