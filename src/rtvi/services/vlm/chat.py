"""OpenAI-compatible chat over the VLM (spec §4.8).

- Media comes from `id` (files, images or a live stream), else the first video_url (else image_url) of
  the user messages, fetched like any remote input (http(s) under the SSRF rules, data:, file: under
  FILE_URL_ALLOWED_DIRS) into a temporary asset removed when the answer ends. With media, the chat runs as
  a caption request over the media's chunks (one chunk: the whole file, unless chunk_duration says
  otherwise); the answer joins the chunks' answers.
- With no media, the conversation goes to the model as it is (text-only chat), token by token.
- vLLM's guided_choice / guided_json become the `choice` / `json_schema` output format, for the backends
  that can constrain their answer (an OpenAI-compatible endpoint; the offline model); the transformers
  backend cannot, so they are refused there (400), never ignored.
- The last system message is the system prompt; earlier user / assistant turns are the history, the last
  user message is the prompt.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from rtvi.core.pipeline.generation import (
    Chunking,
    GenerationJob,
    GenerationPlan,
    GenerationTarget,
    MediaInput,
    Tally,
    open_generation,
)
from rtvi.errors import InvalidParameters, MalformedRequest, RtviError
from rtvi.services.vlm.answers import split_reasoning
from rtvi.services.vlm.messages import Caption
from rtvi.services.vlm.models.base import Generation, TokenCounts, Turn, generate
from rtvi.services.vlm.protocol import ChatCompletionRequest, JsonSchemaFormat, ResponseFormat
from rtvi.services.vlm.serving import CAPTIONS_FAILED, VlmServing, output_format

log = logging.getLogger(__name__)
LIVE_CHUNK_S = 60  # a chat on a live stream with no chunk_duration (spec §4.8)
TEXT_TIMEOUT_S = 300.0  # non-streaming text-only chat (spec §9.2)
TEXT_STREAM_TIMEOUT_S = 600.0
DEFAULT_MAX_TOKENS = 512  # what the context budget reserves when max_tokens is not given


MediaType = Literal["video", "image"]
MediaRef = tuple[str, MediaType]  # (url, media type)


@dataclass(frozen=True, slots=True)
class Conversation:
    prompt: str
    system_prompt: str | None
    history: tuple[Turn, ...]
    warning: str = ""  # older turns were dropped to fit the context


def conversation(body: ChatCompletionRequest) -> Conversation:
    system = None
    turns: list[Turn] = []
    for m in body.messages:
        if m.role == "system":
            system = m.text
        else:
            turns.append(Turn(m.role, m.text))
    if not any(t.role == "user" for t in turns):
        raise InvalidParameters("At least one user message is required")
    last_user = max(i for i, t in enumerate(turns) if t.role == "user")
    return Conversation(turns[last_user].text, system, tuple(turns[:last_user]))


def fit_context(conv: Conversation, max_model_len: int, max_tokens: int | None) -> Conversation:
    """Drop the oldest turns while the estimate (characters / 4 + 4 per message) exceeds the context
    minus the answer's budget minus 100 (spec §4.8)."""
    budget = max_model_len - (max_tokens or DEFAULT_MAX_TOKENS) - 100

    def size(texts: list[str]) -> int:
        return sum(len(t) // 4 + 4 for t in texts)

    history = list(conv.history)
    fixed = [conv.prompt, conv.system_prompt or ""]
    dropped = 0
    while history and size(fixed + [t.text for t in history]) > budget:
        history.pop(0)
        dropped += 1
    if not dropped:
        return conv
    warning = f"{dropped} older message(s) were dropped to fit the model's context ({max_model_len} tokens)"
    return Conversation(conv.prompt, conv.system_prompt, tuple(history), warning)


def chat_format(body: ChatCompletionRequest) -> ResponseFormat:
    """guided_choice / guided_json (vLLM's fields) as our choice / json_schema formats; of response_format
    only {"type": "json_object"} is recognised, anything else means text (spec §4.8)."""
    if body.guided_choice is not None:
        return ResponseFormat(type="choice", choices=list(body.guided_choice))
    if body.guided_json is not None:
        schema = JsonSchemaFormat.model_validate({"name": "guided_json", "schema": body.guided_json})
        return ResponseFormat(type="json_schema", json_schema=schema)
    if isinstance(body.response_format, dict) and body.response_format.get("type") == "json_object":
        return ResponseFormat(type="json_object")
    return ResponseFormat()


def check_guided(serving: VlmServing, body: ChatCompletionRequest) -> None:
    """Refuse guided decoding a backend cannot honour (400); a guided_json that is no schema is a 422."""
    field = "guided_choice" if body.guided_choice is not None else "guided_json"
    if body.guided_choice is None and body.guided_json is None:
        return
    if not serving.vlm.guided_decoding:
        raise InvalidParameters(
            f"{field}: the {serving.vlm.owned_by} backend cannot constrain its output; guided decoding "
            "needs an OpenAI-compatible endpoint that applies it (vLLM: VIA_VLM_ENDPOINT)"
        )
    output_format(chat_format(body))


def media_of(body: ChatCompletionRequest) -> MediaRef | None:
    """The first video_url, else the first image_url, of the user messages."""
    for kind in ("video_url", "image_url"):
        for m in body.messages:
            if m.role != "user" or not isinstance(m.content, list):
                continue
            for part in m.content:
                ref = part.video_url if kind == "video_url" else part.image_url
                if part.type == kind and ref is not None:
                    return ref.url, "video" if kind == "video_url" else "image"
    return None


class ChatTurn:
    """One accepted chat request: media chunks through the pipeline, or a text-only generation."""

    def __init__(self, serving: VlmServing, body: ChatCompletionRequest) -> None:
        self.serving = serving
        self.body = body
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_id = serving.vlm.id
        self.max_tokens = body.max_completion_tokens or body.max_tokens
        self.request: GenerationJob[Caption] | None = None
        self.conv = conversation(body)

    @classmethod
    async def open(cls, serving: VlmServing, body: ChatCompletionRequest) -> ChatTurn:
        serving.check_model(body.model)
        turn = cls(serving, body)
        serving.check_prompts(turn.conv.prompt, turn.conv.system_prompt)
        serving.check_options(body, body.max_completion_tokens)
        if body.response_format is not None and not isinstance(body.response_format, dict):
            raise MalformedRequest("response_format must be an object")
        check_guided(serving, body)
        media = media_of(body)
        if body.id is None and media is None:
            turn.conv = fit_context(turn.conv, serving.settings.vlm_max_model_len, turn.max_tokens)
        else:
            turn.request = await turn._open_media(media)
        serving.metrics.requests.labels("chat_completions").inc()  # accepted: counted once it started
        return turn

    async def _open_media(self, media: MediaRef | None) -> GenerationJob[Caption]:
        body, serving = self.body, self.serving
        url: str | None = None
        media_type: MediaType = "video"
        if body.id is None and media is not None:
            url, media_type = media
        ids = body.ids or [str(uuid.uuid4())]
        chunk = body.chunk_duration
        if body.id is not None and chunk == 0:
            first = serving.core.store.registry.get(ids[0])
            if first is not None and first.is_live:
                chunk = LIVE_CHUNK_S
        # A chat's media URL is temporary: the chat response has no field to name an asset.
        plan = GenerationPlan(
            media=MediaInput(tuple(ids), url, media_type=media_type),
            chunking=Chunking(chunk, body.chunk_overlap_duration),
            requested_model=body.model,
            streaming=body.stream,
            failure_message=CAPTIONS_FAILED,
            temporary=True,
        )
        conv = self.conv

        def make(req: GenerationTarget) -> Any:
            return serving.processor(
                body,
                asset=req.asset,
                chunk_length_s=chunk,
                prompt=conv.prompt,
                system_prompt=conv.system_prompt,
                response_format=chat_format(body),
                key=f"vlm:chat:{req.request_id}",
                keep_going=req.is_live,
                history=conv.history,
                max_tokens=self.max_tokens,
                stop=_stops(body),
            )

        return await open_generation(serving.core, plan, make)

    def text_generation(self) -> Generation:
        b, conv = self.body, self.conv
        return self.serving.generation(
            b, conv.prompt, conv.system_prompt, chat_format(b), conv.history, self.max_tokens, _stops(b)
        )

    # --- answers ------------------------------------------------------------------------------
    async def complete(self) -> dict[str, Any]:
        """The whole answer (non-streaming)."""
        if self.request is None:
            try:
                out = await asyncio.wait_for(
                    generate(self.serving.vlm, self.text_generation()), TEXT_TIMEOUT_S
                )
            except TimeoutError:
                raise RtviError(f"The model did not answer within {TEXT_TIMEOUT_S:g} s", "Timeout") from None
            content, reasoning = split_reasoning(out.text)
            return self._completion(content, reasoning, out.input_tokens, out.output_tokens)
        # results() removes a temporary asset when it ends; the route does when it never started.
        contents, reasonings, tally = [], [], Tally()
        async for r in self.request.results():
            a = r.output.answer
            contents.append(a.content)
            if a.reasoning:
                reasonings.append(a.reasoning)
            tally.add(self.serving.rendering.tokens(r))
        return self._completion(
            "\n".join(contents), "\n".join(reasonings), tally.input_tokens, tally.output_tokens
        )

    def _completion(self, content: str, reasoning: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if reasoning and self.body.enable_reasoning:
            message["reasoning_description"] = reasoning
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model_id,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": _usage(tokens_in, tokens_out),
        }

    def _event(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model_id,
            **extra,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """chat.completion.chunk events: tokens (text-only) or one per media chunk; then the final event
        (with usage when stream_options.include_usage); errors as {error: {code, message}}."""
        tally = Tally()
        try:
            if self.request is None:
                async for event in self._text_events(tally):
                    yield event
            else:
                async for event in self._media_events(tally):
                    yield event
        except RtviError as exc:
            yield {"error": {"code": exc.code, "message": exc.message}}
            return
        except Exception:
            log.exception("chat %s failed", self.id)
            yield {"error": {"code": "InternalServerError", "message": "An internal server error occurred"}}
            return
        final = self._event({}, "stop")
        if self.body.stream_options and self.body.stream_options.include_usage:
            final["usage"] = _usage(tally.input_tokens, tally.output_tokens)
        yield final

    async def _text_events(self, tally: Tally) -> AsyncIterator[dict[str, Any]]:
        if self.conv.warning:
            yield self._event({"role": "assistant", "content": ""}, warning=self.conv.warning)
        deadline = time.monotonic() + TEXT_STREAM_TIMEOUT_S
        async for item in self.serving.vlm.stream(self.text_generation()):
            if isinstance(item, TokenCounts):
                tally.add((item.input_tokens, item.output_tokens))
            elif item:
                yield self._event({"content": item})
            if time.monotonic() > deadline:
                raise RtviError(f"The answer took longer than {TEXT_STREAM_TIMEOUT_S:g} s", "Timeout")

    async def _media_events(self, tally: Tally) -> AsyncIterator[dict[str, Any]]:
        req = self.request
        assert req is not None
        async for r in req.results():
            a = r.output.answer
            tally.add(self.serving.rendering.tokens(r))
            delta: dict[str, Any] = {"content": a.content}
            if a.reasoning and self.body.enable_reasoning:
                delta["content"] = f"<think>\n{a.reasoning}\n</think>{a.content}"
                delta["reasoning_description"] = a.reasoning
            yield self._event(delta, chunk_id=r.index, media_info=req.clock.media_info(r.start_s, r.end_s))


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def _stops(body: ChatCompletionRequest) -> tuple[str, ...]:
    if body.stop is None:
        return ()
    return (body.stop,) if isinstance(body.stop, str) else tuple(body.stop)
