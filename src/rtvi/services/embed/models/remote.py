"""The `remote` backend: an embedding service speaking the Cosmos-Embed1 NIM protocol (our own
`/v1/embeddings` speaks it too).

    POST <REMOTE_EMBED_ENDPOINT>/v1/embeddings      Authorization: Bearer <key> (when a key is set)
    {"input": [...], "request_type": "query" | "bulk_text" | "bulk_video",
     "encoding_format": "float", "model": <REMOTE_EMBED_ENDPOINT_MODEL_NAME>}
    -> {"object": "list", "data": [{"object": "embedding", "embedding": [...], "index": i}, ...],
        "model": ..., "usage": {...}}

Texts: one text -> "query" (the NIM's low-latency path), several -> "bulk_text".
Chunks: "bulk_video", one item per chunk in the NIM's frames form,
    data:video_frames/jpg;base64,{<jpeg0_b64>,<jpeg1_b64>,...,<jpeg7_b64>}
exactly 8 JPEG frames (short chunks repeat their last frame). The NIM accepts whole videos as base64
only in "query" mode (one input per request), so frames are the documented way to batch chunks, and
they skip an encode/decode round trip.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from typing import Any, Literal

import httpx
import numpy as np
from PIL import Image

from rtvi.core.media.types import Frame
from rtvi.core.models.common import (
    batched,
    check_clips,
    empty_vectors,
    fit_clip,
    l2_normalize,
    resize_frame,
    to_pil,
)
from rtvi.errors import ModelLoadError
from rtvi.services.embed.models.base import Vectors

log = logging.getLogger(__name__)

RequestType = Literal["query", "bulk_text", "bulk_video"]

# The NIM takes at most 64 inputs per bulk request and exactly 8 frames per video_frames item.
NIM_MAX_BATCH = 64
NIM_FRAMES = 8
FRAMES_PREFIX = "data:video_frames/jpg;base64,"
# Cosmos-Embed1's largest variant works at 448x448; sending more pixels only grows the request.
DEFAULT_FRAME_SIZE = (448, 448)
_JPEG_QUALITY = 90
_ERROR_BODY_CHARS = 300


class RemoteEmbedError(RuntimeError):
    """The remote endpoint failed or answered something that is not the embeddings protocol."""


def embeddings_url(endpoint: str) -> str:
    """<endpoint>/v1/embeddings, tolerating an endpoint given with /v1 or the full path already."""
    base = endpoint.strip().rstrip("/")
    if base.endswith("/v1/embeddings"):
        return base
    if base.endswith("/v1"):
        return f"{base}/embeddings"
    return f"{base}/v1/embeddings"


def encode_frames_item(frames: Sequence[Frame], size: tuple[int, int] | None = DEFAULT_FRAME_SIZE) -> str:
    """One chunk as the NIM's base64 video_frames input (8 JPEGs)."""
    parts = []
    for frame in fit_clip(frames, NIM_FRAMES):
        img = to_pil(resize_frame(frame, size) if size else frame)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=_JPEG_QUALITY)
        parts.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return FRAMES_PREFIX + "{" + ",".join(parts) + "}"


def is_frames_item(item: str) -> bool:
    return item.startswith("data:video_frames/")


def decode_frames_item(item: str, max_frames: int = NIM_MAX_BATCH) -> list[Frame]:
    """The server side of the frames form: data:video_frames/<jpg|png>;base64,{b64,b64,...} -> RGB frames.

    Raises ValueError (with a message fit for a 400) on anything else.
    """
    header, sep, body = item.partition(",")
    if not sep or not is_frames_item(header) or not header.endswith(";base64"):
        raise ValueError("expected data:video_frames/<type>;base64,{<frame>,<frame>,...}")
    body = body.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("video_frames data must be a {...} list of base64 images")
    parts = [p.strip() for p in body[1:-1].split(",") if p.strip()]
    if not 1 <= len(parts) <= max_frames:
        raise ValueError(f"video_frames needs 1..{max_frames} frames, got {len(parts)}")
    frames = []
    for i, part in enumerate(parts):
        try:
            with Image.open(io.BytesIO(base64.b64decode(part, validate=True))) as img:
                frames.append(np.asarray(img.convert("RGB"), dtype=np.uint8))
        except (ValueError, OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"video_frames frame {i} is not a base64 image: {exc}") from exc
    return frames


class RemoteEmbedder:
    """Embeds through a remote /v1/embeddings endpoint; the vector size is learnt by a probe at load."""

    def __init__(
        self,
        endpoint: str,
        *,
        model_name: str,
        api_key: str = "",
        timeout_s: float = 300.0,
        batch_size: int = NIM_MAX_BATCH,
        frame_size: tuple[int, int] | None = DEFAULT_FRAME_SIZE,
        client: httpx.Client | None = None,
    ) -> None:
        if not endpoint.strip():
            raise ModelLoadError("the remote backend needs REMOTE_EMBED_ENDPOINT")
        self._url = embeddings_url(endpoint)
        self._model_name = model_name
        self._batch_size = max(1, min(batch_size, NIM_MAX_BATCH))
        self._frame_size = frame_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=timeout_s, headers=headers)
        try:
            probe = self._request(["dimension probe"], "query")
        except RemoteEmbedError as exc:
            self._client.close()
            raise ModelLoadError(f"remote embedding endpoint {self._url} failed its probe: {exc}") from exc
        self._dim = int(probe.shape[1])
        log.info("remote embedder %s at %s (dim %d)", model_name, self._url, self._dim)

    @property
    def id(self) -> str:
        return self._model_name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def owned_by(self) -> str:
        owner, sep, _ = self._model_name.partition("/")
        return owner if sep and owner else "remote"

    @property
    def frames_per_chunk(self) -> int:
        return NIM_FRAMES

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._frame_size

    @property
    def match_floor(self) -> float | None:
        return None  # not measured: the rules fall back to calibration.ABSOLUTE_FLOOR

    def embed_frames(self, clips: Sequence[Sequence[Frame]]) -> Vectors:
        check_clips(clips)
        if not clips:
            return empty_vectors(self._dim)
        parts = [
            self._request([encode_frames_item(c, self._frame_size) for c in group], "bulk_video")
            for group in batched(clips, self._batch_size)
        ]
        return l2_normalize(np.concatenate(parts))

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(self._dim)
        parts = [
            self._request(list(group), "query" if len(group) == 1 else "bulk_text")
            for group in batched(list(texts), self._batch_size)
        ]
        return l2_normalize(np.concatenate(parts))

    def close(self) -> None:
        self._client.close()

    def _request(self, inputs: list[str], request_type: RequestType) -> np.ndarray:
        payload = {
            "input": inputs,
            "request_type": request_type,
            "encoding_format": "float",
            "model": self._model_name,
        }
        try:
            resp = self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            raise RemoteEmbedError(f"{self._url}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise RemoteEmbedError(
                f"{self._url} answered {resp.status_code}: {resp.text[:_ERROR_BODY_CHARS]}"
            )
        try:
            return _parse_embeddings(resp.json(), len(inputs))
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteEmbedError(f"{self._url} answered an unexpected body: {exc}") from exc


def _parse_embeddings(body: Any, expected: int) -> np.ndarray:
    items = sorted(body["data"], key=lambda item: int(item["index"]))
    if len(items) != expected:
        raise ValueError(f"{len(items)} embeddings for {expected} inputs")
    rows = [item["embedding"] for item in items]
    if isinstance(rows[0], str):
        raise ValueError("base64 embeddings, asked for float")
    arr = np.asarray(rows, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"embeddings of shape {arr.shape}")
    return arr
