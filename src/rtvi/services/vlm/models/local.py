"""A local image-text-to-text checkpoint through transformers (AutoModelForImageTextToText +
AutoProcessor): SmolVLM, Qwen2-VL / Qwen2.5-VL, LLaVA, Cosmos-Reason class models; CPU or GPU.

The chunk's frames go in as images (in time order) in the user turn, through the checkpoint's own chat
template; tokens stream from a generation thread (TextIteratorStreamer). One generation at a time: a
local model already uses the whole device.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rtvi.core.models.common import to_pil
from rtvi.core.models.device import resolve_device
from rtvi.errors import ModelLoadError
from rtvi.services.vlm.models.base import Generation, TokenCounts

log = logging.getLogger(__name__)
DEFAULT_MAX_NEW_TOKENS = 512


class TransformersVLM:
    is_language_model = True
    guided_decoding = False  # generates freely: a choice or schema is checked after, not enforced
    accepts_audio = False
    early = None  # nothing per frame worth starting before the chunk is complete

    def __init__(
        self, path: Path, *, model_id: str, device: str = "auto", trust_remote_code: bool = False
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._id = model_id
        self._device = resolve_device(device)
        dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        try:
            self.processor: Any = AutoProcessor.from_pretrained(
                path, local_files_only=True, trust_remote_code=trust_remote_code
            )
            model: Any = AutoModelForImageTextToText.from_pretrained(
                path, local_files_only=True, trust_remote_code=trust_remote_code, dtype=dtype
            )
        except Exception as exc:
            raise ModelLoadError(f"cannot load an image-text-to-text model from {path}: {exc}") from exc
        self.model: Any = model.to(self._device).eval()
        self.tokenizer: Any = getattr(self.processor, "tokenizer", self.processor)
        self._one_at_a_time = asyncio.Lock()
        self._takes_token_types = "token_type_ids" in inspect.signature(self.model.forward).parameters

    @property
    def id(self) -> str:
        return self._id

    @property
    def owned_by(self) -> str:
        return "transformers"

    async def close(self) -> None:
        return None

    def _inputs(self, g: Generation) -> Any:
        messages: list[dict[str, Any]] = []
        if g.system_prompt:
            messages.append({"role": "system", "content": [{"type": "text", "text": g.system_prompt}]})
        messages += [{"role": t.role, "content": [{"type": "text", "text": t.text}]} for t in g.history]
        content = [{"type": "image"} for _ in g.frames] + [{"type": "text", "text": g.prompt}]
        messages.append({"role": "user", "content": content})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        images = [to_pil(f) for f in g.frames] or None
        inputs = self.processor(text=[text], images=images, return_tensors="pt")
        if not self._takes_token_types:  # BERT-style tokenizers add them; most VLMs take none
            inputs.pop("token_type_ids", None)
        return inputs.to(self._device)

    def _generate_kwargs(self, g: Generation) -> dict[str, Any]:
        s = g.sampling
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens or DEFAULT_MAX_NEW_TOKENS}
        if s.min_tokens:
            kwargs["min_new_tokens"] = s.min_tokens
        if s.temperature:
            kwargs.update(do_sample=True, temperature=s.temperature)
            if s.top_p is not None:
                kwargs["top_p"] = s.top_p
            if s.top_k is not None:
                kwargs["top_k"] = s.top_k
        else:
            kwargs["do_sample"] = False
        if s.ignore_eos:
            kwargs["eos_token_id"] = None
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        return kwargs

    async def stream(self, generation: Generation) -> AsyncIterator[str | TokenCounts]:
        async with self._one_at_a_time:
            async for item in self._generate(generation):
                yield item

    async def _generate(self, g: Generation) -> AsyncIterator[str | TokenCounts]:
        import torch
        from transformers import TextIteratorStreamer

        inputs = await asyncio.to_thread(self._inputs, g)
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        output: dict[str, Any] = {}

        def run() -> None:
            try:
                if g.sampling.seed is not None:
                    torch.manual_seed(g.sampling.seed)
                with torch.inference_mode():
                    output["ids"] = self.model.generate(
                        **inputs, streamer=streamer, **self._generate_kwargs(g)
                    )
            except BaseException as exc:  # handed to the caller, and the streamer is ended
                output["error"] = exc
                streamer.end()

        thread = threading.Thread(target=run, name="vlm-generate", daemon=True)
        thread.start()
        done = object()
        while True:
            piece = await asyncio.to_thread(next, streamer, done)
            if piece is done:
                break
            if piece:
                yield str(piece)
        await asyncio.to_thread(thread.join)
        if "error" in output:
            raise output["error"]
        prompt_len = int(inputs["input_ids"].shape[1])
        yield TokenCounts(prompt_len, int(output["ids"].shape[1]) - prompt_len)
