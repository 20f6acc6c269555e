"""The protocol every VLM backend implements; the service only talks to this.

One call is a `Generation`: frames (a chunk's, an image, or none for text-only chat), the prompts, the
sampling parameters and the output format. A backend streams text deltas and ends with the token counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rtvi.core.media.types import Frame

FormatType = Literal["text", "json_object", "json_schema", "choice"]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """response_format of spec §4.7: free text, any JSON object, JSON matching a schema, or one choice."""

    type: FormatType = "text"
    json_schema: dict[str, Any] | None = None  # the schema itself (json_schema.schema)
    schema_name: str = "response"
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int | None = None
    min_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    ignore_eos: bool | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class Generation:
    """One model call. `prompt` is the last user turn; `history` the earlier turns of a chat."""

    prompt: str
    system_prompt: str = ""
    frames: Sequence[Frame] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    output_format: OutputFormat = field(default_factory=OutputFormat)
    enable_reasoning: bool = False
    history: Sequence[Turn] = ()
    audio: bytes | None = None  # the chunk's 16 kHz mono WAV (enable_audio, a model that hears)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """The last item of a generation's stream."""

    input_tokens: int
    output_tokens: int


class VisionLanguageModel(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def owned_by(self) -> str: ...

    @property
    def is_language_model(self) -> bool:
        """False for the offline label model: /v1/models and the docs say so."""
        ...

    @property
    def guided_decoding(self) -> bool:
        """Whether the answer is made to be one of a request's choices / match its JSON schema (chat's
        guided_choice / guided_json are refused where it is not)."""
        ...

    @property
    def accepts_audio(self) -> bool:
        """Whether the backend can hand a chunk's sound to its model (whether that model hears it is
        what VLM_MODEL_SUPPORTS_AUDIO declares)."""
        ...

    @property
    def early(self) -> Callable[[Frame], None] | None:
        """Starts the per-frame input work (image encoding) of a live frame as soon as it is sampled;
        None when the backend has none worth starting early (see core/pipeline/early.py)."""
        ...

    def stream(self, generation: Generation) -> AsyncIterator[str | TokenCounts]:
        """Text deltas as they are generated, then exactly one TokenCounts."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    text: str
    input_tokens: int
    output_tokens: int


async def generate(model: VisionLanguageModel, generation: Generation) -> GenerationOutput:
    """The whole answer of one generation."""
    parts: list[str] = []
    counts = TokenCounts(0, 0)
    async for item in model.stream(generation):
        if isinstance(item, TokenCounts):
            counts = item
        else:
            parts.append(item)
    return GenerationOutput("".join(parts), counts.input_tokens, counts.output_tokens)


def estimate_tokens(text: str) -> int:
    """The reference's fallback count where no tokenizer is at hand: words x 1.3."""
    return round(len(text.split()) * 1.3)
