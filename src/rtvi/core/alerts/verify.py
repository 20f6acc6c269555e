"""A rule's `verify`: a candidate chunk's frames and the rule's prompt go to a VLM (any OpenAI-compatible
endpoint: vLLM, NIM, OpenAI, or a running rtvi VLM service's /v1), which must answer with a structured
decision. Only {"decision": "yes"} raises the incident: free text containing "yes" does not (the
reference raises an incident whenever a caption contains it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai

from rtvi.core.media.types import Frame
from rtvi.core.models.common import frame_data_url, json_answer
from rtvi.settings import AlertSettings

log = logging.getLogger(__name__)

Decision = Literal["yes", "no", "error"]
# Verifications in flight at once (each holds its chunk's frames).
MAX_CONCURRENT = 4
SYSTEM_PROMPT = (
    "You check a security camera alert. Look at the frames (in time order) and answer the user's "
    'question with JSON only: {"decision": "yes" or "no", "reason": "<one short sentence>"}.'
)
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "alert_decision",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "decision": {"type": "string", "enum": ["yes", "no"]},
                "reason": {"type": "string"},
            },
            "required": ["decision"],
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    answer: str  # what the VLM said (or why there is no answer)
    seconds: float

    def public(self, prompt: str) -> dict[str, Any]:
        return {
            "prompt": prompt,
            "decision": self.decision,
            "answer": self.answer[:2000],
            "seconds": self.seconds,
        }


def read_decision(content: str) -> Decision:
    """ "yes" / "no" from a structured answer; anything else (free text, other JSON) is not a decision."""
    value = json_answer(content)
    decision = value.get("decision") if isinstance(value, dict) else None
    if isinstance(decision, str) and decision.strip().lower() in ("yes", "no"):
        return "yes" if decision.strip().lower() == "yes" else "no"
    return "error"


class Verifier:
    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
        self._client: openai.AsyncOpenAI | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.alert_vlm_url)

    def _ready(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        if self._client is None or self._slots is None:
            s = self.settings
            self._client = openai.AsyncOpenAI(
                base_url=s.alert_vlm_url,
                api_key=s.alert_vlm_api_key or "not-needed",
                timeout=s.alert_vlm_timeout_s,
                max_retries=2,
            )
            self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        return self._client, self._slots

    async def verify(self, prompt: str, frames: Sequence[Frame]) -> Verdict:
        client, slots = self._ready()
        start = time.perf_counter()
        async with slots:
            images = await asyncio.to_thread(lambda: [frame_data_url(f) for f in frames])
            content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
            content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
            messages: list[Any] = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": content},
            ]
            response_format: Any = RESPONSE_FORMAT
            try:
                response = await client.chat.completions.create(
                    model=self.settings.alert_vlm_model or "default",
                    messages=messages,
                    response_format=response_format,
                    max_tokens=200,
                    temperature=0,
                )
            except openai.OpenAIError as exc:
                log.warning("alert verification failed: %s", type(exc).__name__)
                return Verdict(
                    "error", f"the VLM call failed: {type(exc).__name__}", time.perf_counter() - start
                )
        answer = response.choices[0].message.content or "" if response.choices else ""
        return Verdict(read_decision(answer), answer, time.perf_counter() - start)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
