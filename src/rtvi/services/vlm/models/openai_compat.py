"""Any OpenAI-compatible chat endpoint (vLLM, NIM, Ollama, OpenAI) through the official `openai` client.

Frames go as JPEG data: URLs in image_url parts (in time order, after the text). response_format is
passed through: json_object and json_schema natively; `choice` as vLLM's guided choice (extra_body),
with top_k, min_tokens and ignore_eos, which only vLLM-style servers read. The client retries 429 and
5xx answers with exponential backoff (VIA_VLM_ENDPOINT_MAX_RETRIES) and gives up after the timeout;
the endpoint's errors surface as the spec's errors.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import openai

from rtvi.core.media.types import Frame
from rtvi.core.models.common import frame_data_url
from rtvi.core.pipeline.early import FrameWork
from rtvi.errors import InvalidParameters, ModelLoadError, RtviError, Unavailable
from rtvi.services.vlm.models.base import Generation, TokenCounts, estimate_tokens

log = logging.getLogger(__name__)


async def _encode_jpegs(frames: Sequence[Frame]) -> tuple[list[str], float]:
    start = time.perf_counter()
    urls = await asyncio.to_thread(lambda: [frame_data_url(f) for f in frames])
    return urls, time.perf_counter() - start


def endpoint_error(exc: openai.OpenAIError) -> RtviError:
    """The endpoint's failure as one of ours: its 4xx are the request's fault, the rest the endpoint's."""
    if isinstance(exc, openai.APIStatusError):
        message = f"VLM endpoint answered {exc.status_code}: {_detail(exc)}"
        if 400 <= exc.status_code < 500 and exc.status_code != 429:
            return InvalidParameters(message, "RequestError")
        return Unavailable(message)
    if isinstance(exc, openai.APITimeoutError):
        return Unavailable("VLM endpoint timed out")
    return Unavailable(f"VLM endpoint unreachable: {type(exc).__name__}")


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(exc.message)[:300]


class OpenAICompatVLM:
    is_language_model = True
    # choice / json_schema formats are constrained by the endpoint (vLLM's guided decoding): chat's
    # guided_choice / guided_json are honoured through it (services/vlm/chat.py)
    guided_decoding = True
    accepts_audio = True  # as an input_audio part (OpenAI's chat format; vLLM's audio models take it)

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "",
        timeout_s: float = 300,
        max_retries: int = 3,
        concurrency: int = 16,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            base_url=base_url.rstrip("/"),
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self._model = model
        # Calls at once, enforced after preparing the input, so preparing overlaps the running calls.
        self._concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None  # made on first use, on the service's loop
        # Each frame's JPEG, encoded off the event loop; a live frame's as soon as it is sampled.
        self._jpegs: FrameWork[str] = FrameWork(_encode_jpegs)
        self.early: Callable[[Frame], None] | None = self._jpegs.start

    @classmethod
    def connect(cls, base_url: str, **kwargs: Any) -> OpenAICompatVLM:
        """The backend, with its model name asked of the endpoint's /models when none is configured
        (blocking: the service loads its model in a thread)."""
        vlm = cls(base_url, **kwargs)
        if not vlm._model:
            try:
                with openai.OpenAI(
                    base_url=base_url.rstrip("/"), api_key=kwargs.get("api_key") or "not-needed", timeout=30
                ) as client:
                    models = client.models.list()
            except openai.OpenAIError as exc:
                raise ModelLoadError(
                    f"cannot list the models of {base_url}: {endpoint_error(exc).message}"
                ) from exc
            if not models.data:
                raise ModelLoadError(f"{base_url} serves no model")
            vlm._model = models.data[0].id
        return vlm

    @property
    def id(self) -> str:
        return self._model

    @property
    def owned_by(self) -> str:
        return "openai-compat"

    async def close(self) -> None:
        await self._client.close()

    @staticmethod
    def _messages(g: Generation, images: Sequence[str]) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if g.system_prompt:
            messages.append({"role": "system", "content": g.system_prompt})
        messages.extend({"role": t.role, "content": t.text} for t in g.history)
        content: list[dict[str, Any]] = [{"type": "text", "text": g.prompt}]
        content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
        if g.audio is not None:
            data = base64.b64encode(g.audio).decode()
            content.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        messages.append({"role": "user", "content": content})
        return messages

    def _options(self, g: Generation) -> dict[str, Any]:
        s = g.sampling
        options: dict[str, Any] = {
            k: v
            for k, v in {
                "max_tokens": s.max_tokens,
                "temperature": s.temperature,
                "top_p": s.top_p,
                "seed": s.seed,
                "stop": list(s.stop) or None,
            }.items()
            if v is not None
        }
        extra: dict[str, Any] = {
            k: v
            for k, v in {"top_k": s.top_k, "min_tokens": s.min_tokens, "ignore_eos": s.ignore_eos}.items()
            if v
        }
        fmt = g.output_format
        if fmt.type == "json_object":
            options["response_format"] = {"type": "json_object"}
        elif fmt.type == "json_schema":
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": fmt.schema_name, "schema": fmt.json_schema or {}, "strict": True},
            }
        elif fmt.type == "choice":
            extra["guided_choice"] = list(fmt.choices)
        if extra:
            options["extra_body"] = extra
        return options

    async def stream(self, generation: Generation) -> AsyncIterator[str | TokenCounts]:
        g = generation
        # Encoded before taking a slot: the encoding overlaps the calls in flight.
        images, _ = await self._jpegs.collect(g.frames)
        messages = self._messages(g, images)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        async with self._slots:
            async for item in self._call(g, messages):
                yield item

    async def _call(self, g: Generation, messages: list[dict[str, Any]]) -> AsyncIterator[str | TokenCounts]:
        counts: TokenCounts | None = None
        produced: list[str] = []
        try:
            chunks = await self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self._model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **self._options(g),
            )
            async for chunk in chunks:
                if chunk.usage is not None:
                    counts = TokenCounts(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    text = choice.delta.content if choice.delta else None
                    if text:
                        produced.append(text)
                        yield text
        except openai.OpenAIError as exc:
            raise endpoint_error(exc) from exc
        if counts is None:  # an endpoint that does not report usage
            prompt = " ".join([g.system_prompt, g.prompt, *(t.text for t in g.history)])
            counts = TokenCounts(estimate_tokens(prompt), estimate_tokens("".join(produced)))
        yield counts
