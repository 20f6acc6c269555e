"""Bounds on what one request may cost: a cap on request bodies, and work that stops when its client
goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rtvi.http.errors import error_body, status_code_name

T = TypeVar("T")


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length at once or while a chunked body
    arrives, so a JSON body never grows memory beyond the cap. Multipart uploads have their own, larger
    limit (the upload parser streams them to disk) and pass through."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"Request body is larger than {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # Outside the app's exception handlers here: answer directly, without reading the body.
            response = JSONResponse(error_body(status_code_name(413), self.message), status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self.message)  # inside the app: its handlers render it
            return message

        await self.app(scope, limited, send)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run `work` while the client is connected. -> (True, result), or (False, None) once the client has
    gone: the work is cancelled then (decoders closed, assets released, queued model calls dropped).

    For routes whose body is already read: the disconnect is the next message on the request's receive
    channel, so a task waits for it (as vLLM's `with_cancellation` does) and the work stops the moment the
    client leaves, with no polling."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return True, task.result()
        return False, None
    finally:
        for t in (task, gone):
            if not t.done():
                t.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has disconnected (any other message of a read body is ignored)."""
    while (await receive())["type"] != "http.disconnect":
        pass
