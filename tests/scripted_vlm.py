"""A scripted OpenAI-compatible chat server: the stand-in for a hosted VLM endpoint (vLLM, NIM, OpenAI),
which cannot run here. It speaks the real protocol over a real socket (FastAPI + uvicorn, streaming SSE
chunks and usage like vLLM), so the openai-compat backend is tested through the official client.

The answers are scripted by the prompt, so tests control them:
- "SAY:<text>" in the last user message: the answer is <text> (\\n for a newline);
- "FAIL_ONCE:<status>": the first request with that prompt fails with <status>, the next succeed;
- anything else: "I saw N image(s)." (N = the image parts received).
Every request is appended to the JSON-lines log (prompt, system prompt, image count, sampling and format
fields) for the tests to read. SCRIPTED_DELAY_S makes each answer take that long (benchmarks).

    python -m tests.scripted_vlm --port PORT --log requests.jsonl [--delay 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from tests.kafka_redis import ChildServer

MODEL = "scripted-vlm"


def build_app(log_path: Path, delay_s: float = 0.0) -> Any:
    app = FastAPI()
    failures_done: set[str] = set()

    def answer_for(prompt: str, images: int) -> str:
        said = re.search(r"SAY:(.*)", prompt, re.DOTALL)
        if said:
            return said.group(1).strip().replace("\\n", "\n")
        return f"I saw {images} image(s)."

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        messages = body.get("messages", [])
        user = [m for m in messages if m.get("role") == "user"][-1]
        content = user.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        prompt = "\n".join(p.get("text", "") for p in parts if p.get("type") == "text")
        images = sum(1 for p in parts if p.get("type") == "image_url")
        system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
        record = {
            "prompt": prompt,
            "system": system,
            "images": images,
            "turns": len(messages),
            **{k: body.get(k) for k in ("max_tokens", "temperature", "seed", "top_k", "response_format")},
            "guided_choice": body.get("guided_choice"),
            "audio": [p["input_audio"]["data"] for p in parts if p.get("type") == "input_audio"],
            "stream": bool(body.get("stream")),
            "authorization": request.headers.get("authorization"),
        }
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        fail = re.search(r"FAIL_ONCE:(\d{3})", prompt)
        if fail and prompt not in failures_done:
            failures_done.add(prompt)
            status = int(fail.group(1))
            return JSONResponse({"error": {"message": f"scripted failure {status}"}}, status_code=status)
        if delay_s:
            await asyncio.sleep(delay_s)
        text = answer_for(prompt, images)
        usage = {
            "prompt_tokens": len(prompt.split()) + 10 * images,
            "completion_tokens": len(text.split()),
            "total_tokens": len(prompt.split()) + 10 * images + len(text.split()),
        }
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.get("stream"):
            return {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": MODEL,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": usage,
            }

        async def events() -> AsyncIterator[dict[str, str]]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, str]:
                data = {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": MODEL,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return {"data": json.dumps(data)}

            yield chunk({"role": "assistant", "content": ""})
            for word in re.findall(r"\S+\s*|\s+", text):
                yield chunk({"content": word})
            yield chunk({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": MODEL}
                yield {"data": json.dumps({**data, "choices": [], "usage": usage})}
            yield {"data": "[DONE]"}

        return EventSourceResponse(events())

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--delay", type=float, default=0.0)
    a = p.parse_args()
    uvicorn.run(build_app(Path(a.log), a.delay), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()


class ScriptedVlmServer(ChildServer):
    """The scripted server as a child process; `requests()` reads what it was asked."""

    def __init__(self, log_dir: Path, delay_s: float = 0.0) -> None:
        super().__init__(log_dir / "scripted-vlm.log")
        self.requests_path = log_dir / "scripted-vlm-requests.jsonl"
        self.delay_s = delay_s

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "tests.scripted_vlm", "--port", str(self.port),
            "--log", str(self.requests_path), "--delay", str(self.delay_s),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[dict[str, Any]]:
        if not self.requests_path.exists():
            return []
        return [json.loads(line) for line in self.requests_path.read_text().splitlines() if line]
