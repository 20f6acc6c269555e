"""An oracle VLM for bench/alerts_bench.py: an OpenAI-compatible chat server (the stand-in for a hosted VLM,
which cannot run here) that answers an alert check truthfully, by pixels: it matches each image it is
sent to the labelled scene photos the bench's clips are made of and says {"decision": "yes"} when at
least a quarter of the frames (SEEN_SHARE, as the bench's truth counts a chunk) show a scene of the
asked kind. Every call is appended to a JSON-lines log.

    python -m bench.oracle_vlm --port PORT --log calls.jsonl
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from PIL import Image
from tests.kafka_redis import ChildServer

PEOPLE = ("astronaut", "camera", "two people", "four people")
LOOKS = ("plain", "dim", "hazy", "warm")  # how the bench's cameras render a scene (alerts_bench --rare)
_SIZE = (64, 48)
# A scene is shown when at least this share of a chunk shows it: the oracle's answer, and the truth
# alerts_bench.py scores rules on (2 of the 8 frames the bundled model sees).
SEEN_SHARE = 0.25


def look(image: np.ndarray, name: str) -> np.ndarray:
    """A camera's own rendering of a scene: what makes one camera's raw scores unlike another's."""
    x = image.astype(np.float32)
    if name == "dim":
        x = x * 0.45
    elif name == "hazy":
        x = x * 0.6 + 128 * 0.4
    elif name == "warm":
        x = x * np.array([1.1, 0.95, 0.75], dtype=np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def scene_stills() -> dict[str, np.ndarray]:
    """The bench's scenes (tests/media_factory.scene_photos, plus an empty grey scene) in every camera
    look, downscaled: "<scene>|<look>" -> pixels."""
    from tests.media_factory import scene_photos

    photos = {**scene_photos(), "empty": np.full((240, 320, 3), 128, dtype=np.uint8)}
    scenes = {f"{name}|{style}": look(img, style) for name, img in photos.items() for style in LOOKS}
    return {
        name: np.asarray(Image.fromarray(img).resize(_SIZE), dtype=np.float32) for name, img in scenes.items()
    }


def nearest(image: Image.Image, stills: dict[str, np.ndarray]) -> str:
    """The scene the image shows, in whichever look."""
    small = np.asarray(image.convert("RGB").resize(_SIZE), dtype=np.float32)
    return min(stills, key=lambda n: float(np.abs(small - stills[n]).mean())).split("|")[0]


def build_app(log_path: Path) -> Any:
    app = FastAPI()
    stills = scene_stills()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        user = [m for m in body["messages"] if m["role"] == "user"][-1]
        parts = user["content"] if isinstance(user["content"], list) else []
        prompt = " ".join(p.get("text", "") for p in parts if p.get("type") == "text").lower()
        seen = []
        for p in parts:
            if p.get("type") == "image_url":
                data = base64.b64decode(p["image_url"]["url"].split(",", 1)[1])
                seen.append(nearest(Image.open(io.BytesIO(data)), stills))
        wanted = PEOPLE if "person" in prompt else ("cat",)
        hits = sum(s in wanted for s in seen)
        decision = "yes" if seen and hits >= SEEN_SHARE * len(seen) else "no"
        with open(log_path, "a") as f:
            f.write(
                json.dumps({"at": time.time(), "prompt": prompt, "seen": seen, "decision": decision}) + "\n"
            )
        text = json.dumps({"decision": decision, "reason": f"{hits} of {len(seen)} frames"})
        return {
            "id": "oracle",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "oracle",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


class OracleVlm(ChildServer):
    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_dir / "oracle-vlm.log")
        self.calls_path = log_dir / "oracle-calls.jsonl"

    def command(self) -> list[str]:
        import sys

        return [
            sys.executable,
            "-m",
            "bench.oracle_vlm",
            "--port",
            str(self.port),
            "--log",
            str(self.calls_path),
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines() if line]


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    uvicorn.run(build_app(Path(a.log)), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
