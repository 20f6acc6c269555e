"""A small typed HTTP client for a running rtvi service (RTVI v1 API), used by the `rtvi` client commands.

Every failure a user can cause or meet (a 4xx/5xx answer, a service that is not there, a generation
that fails midway) is a `ClientError` whose text is one line fit for a terminal, so callers never show
a traceback for them. The API key is only ever put in the Authorization header, never in an error text.
"""

from __future__ import annotations

import io
import json
import mimetypes
import re
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Literal, TypedDict, cast
from urllib.parse import quote, urlsplit

import httpx

from rtvi.naming import UPLOAD_NAME_CHARS

Json = dict[str, Any]
Events = Generator[Json, None, None]  # a generate request's SSE events; close() hangs up
MediaType = Literal["video", "image"]
EMBED_PATH = "/v1/generate_video_embeddings"
CAPTION_PATH = "/v1/generate_captions"
DONE = "[DONE]"
_UNSAFE_NAME = re.compile(rf"[^{UPLOAD_NAME_CHARS}]")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class FileRecord(TypedDict):
    id: str
    filename: str
    bytes: int
    media_type: MediaType
    purpose: str
    creation_time: str | None
    sensor_name: str


class SearchHit(TypedDict):
    asset_id: str
    stream_id: str | None
    source: str
    chunk_idx: int
    start_time: str
    end_time: str
    score: float
    thumbnail_url: str | None
    caption: str | None


class StreamRecord(TypedDict, total=False):
    id: str
    liveStreamUrl: str
    description: str
    chunk_duration: float
    chunk_overlap_duration: float


class ClientError(Exception):
    """Anything expected that went wrong; str() is the one-line message for the user."""


class ApiError(ClientError):
    """The service answered 4xx/5xx with its error body `{"code", "message"}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(ClientError):
    """No HTTP answer at all: nothing listening, a bad address, a timeout, a dropped connection."""


class GenerationFailed(ClientError):
    """A streamed generation ended with the service's failure event instead of its chunks."""


def media_type_of(name: str) -> MediaType:
    """Guess video or image from a file name or URL path (mimetypes first, then common suffixes);
    anything unknown is sent as a video, which the service then probes."""
    path = urlsplit(name).path if "://" in name else name
    guessed, _ = mimetypes.guess_type(path, strict=False)
    if guessed is not None and guessed.startswith("image/"):
        return "image"
    if guessed is None and Path(path).suffix.lower() in _IMAGE_SUFFIXES:
        return "image"
    return "video"


def safe_filename(name: str) -> str:
    """The name the service will accept for an upload: other characters become `_`."""
    return _UNSAFE_NAME.sub("_", name) or "upload"


class _ProgressFile(io.BufferedReader):
    """A file that reports its position after every read. It keeps fileno(), so httpx still learns
    the size and sends a Content-Length (not a chunked body); a rewind before a retry rewinds the bar."""

    def __init__(self, path: Path, on_progress: Callable[[int], None]) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._on_progress = on_progress

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self._on_progress(self.tell())
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        self._on_progress(position)
        return position


class RtviClient:
    """One service at `base_url`. Use as a context manager (one connection pool)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Reads wait up to `timeout`: SSE responses ping every second, JSON answers come within it.
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=10)
        )

    def __enter__(self) -> RtviClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing --------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._request(method, path, **kw)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"{self.base_url}{path} did not answer JSON (is this an rtvi service?)"
            ) from None

    def _unreachable(self, exc: httpx.HTTPError) -> ClientError:
        if isinstance(exc, httpx.ConnectError):
            return Unreachable(f"cannot reach {self.base_url}: {exc} (is the service running? see --url)")
        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(f"{self.base_url} did not answer in time ({type(exc).__name__})")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return Unreachable(f"bad service URL {self.base_url!r}: {exc}")
        return Unreachable(f"connection to {self.base_url} failed: {exc}")

    # --- info and files --------------------------------------------------------------------------
    def models(self) -> list[Json]:
        return cast(list[Json], self._json("GET", "/v1/models")["data"])

    def default_model(self) -> str:
        """The service's loaded model (it serves exactly one)."""
        models = self.models()
        if not models:
            raise ClientError(f"{self.base_url} lists no model")
        return str(models[0]["id"])

    def upload(
        self,
        path: Path,
        media_type: MediaType | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> FileRecord:
        """POST /v1/files with the file's bytes (streamed from disk, never read whole into memory)."""
        fields = {"purpose": "vision", "media_type": media_type or media_type_of(path.name)}
        with _ProgressFile(path, on_progress or (lambda _: None)) as f:
            files = {"file": (safe_filename(path.name), f, "application/octet-stream")}
            return cast(FileRecord, self._json("POST", "/v1/files", data=fields, files=files))

    def register_url(self, url: str, media_type: MediaType | None = None) -> FileRecord:
        """POST /v1/files with `url`: the service fetches http(s):// or s3:// media itself."""
        fields = {"purpose": "vision", "media_type": media_type or media_type_of(url), "url": url}
        return cast(FileRecord, self._json("POST", "/v1/files", data=fields))

    def files(self) -> list[FileRecord]:
        return cast(list[FileRecord], self._json("GET", "/v1/files", params={"purpose": "vision"})["data"])

    # --- generation ------------------------------------------------------------------------------
    def generate(self, path: str, body: Json) -> Events:
        """POST a generate request with stream=true and yield its SSE events (dicts) until [DONE].

        Events are parsed as the SSE format says (data lines joined until a blank line; comments, such
        as sse_starlette's pings, skipped). The service reports a failure midway as an event with
        neither chunks nor usage: that raises GenerationFailed."""
        try:
            with self._http.stream("POST", path, json={**body, "stream": True}) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _api_error(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                        continue
                    if line or not data:
                        continue  # a comment, another field, or a blank line with no event
                    payload, data = "\n".join(data), []
                    if payload == DONE:
                        return
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        raise ClientError(f"{path}: an event that is not JSON: {payload[:100]!r}") from None
                    if "chunk_responses" not in event and event.get("usage") is None:
                        raise GenerationFailed(
                            f"GenerationFailed: the service could not finish request {event.get('id')}"
                            " (its log has the reason)"
                        )
                    yield event
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        raise Unreachable(f"{self.base_url} closed the event stream before [DONE]")

    def embed(self, asset_id: str, model: str, chunk_duration: int = 0) -> Events:
        """Video embeddings (a file, an image, or a live stream's id), one SSE event per chunk."""
        body = {"id": asset_id, "model": model, "chunk_duration": chunk_duration}
        return self.generate(EMBED_PATH, body)

    def caption(self, asset_id: str, model: str, prompt: str, chunk_duration: int = 0) -> Events:
        """VLM captions (VLM service), one SSE event per chunk."""
        body = {"id": asset_id, "model": model, "prompt": prompt, "chunk_duration": chunk_duration}
        return self.generate(CAPTION_PATH, body)

    def stop(self, path: str, stream_id: str) -> None:
        """Stop a live stream's generation (DELETE <generate path>/{id}); the stream stays registered."""
        self._request("DELETE", f"{path}/{quote(stream_id, safe='')}")

    # --- search ----------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        top_k: int = 5,
        asset_ids: list[str] | None = None,
        stream_ids: list[str] | None = None,
    ) -> list[SearchHit]:
        body: Json = {"query": query, "top_k": top_k}
        if asset_ids:
            body["asset_ids"] = asset_ids
        if stream_ids:
            body["stream_ids"] = stream_ids
        return cast(list[SearchHit], self._json("POST", "/v1/search", json=body)["data"])

    # --- live streams ----------------------------------------------------------------------------
    def add_stream(self, url: str, description: str) -> str:
        """Register one RTSP stream; -> its id. The per-item error of the 200 answer is raised."""
        body = {"streams": [{"liveStreamUrl": url, "description": description}]}
        answer = self._json("POST", "/v1/streams/add", json=body)
        if answer.get("errors"):
            e = answer["errors"][0]
            raise ApiError(int(e.get("status_code", 400)), str(e["error_code"]), str(e["error"]))
        return str(answer["results"][0]["id"])

    def streams(self) -> list[StreamRecord]:
        return cast(list[StreamRecord], self._json("GET", "/v1/streams/get-stream-info"))

    def remove_stream(self, stream_id: str) -> None:
        self._request("DELETE", f"/v1/streams/delete/{quote(stream_id, safe='')}")


def _api_error(response: httpx.Response) -> ApiError:
    """The service's `{"code", "message"}` body, or the status line when the body is something else."""
    try:
        body = response.json()
        return ApiError(response.status_code, str(body["code"]), str(body["message"]))
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, f"HTTP {response.status_code}", text)
