"""Server-Sent Events in the reference's shape (spec §4.4): `data: <json>` events, pings, `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

DONE = "[DONE]"


def sse_response(
    events: AsyncIterator[dict[str, Any]], on_close: Callable[[], None] | None = None
) -> EventSourceResponse:
    """`on_close` runs once the response has ended, however it ended (done, client gone, never read)."""

    async def encoded() -> AsyncIterator[dict[str, str]]:
        async for event in events:
            yield {"data": json.dumps(event, separators=(",", ":"))}
        yield {"data": DONE}

    # Ping every second and give up on a client that does not read for 5 s, as the reference does.
    background = BackgroundTask(on_close) if on_close is not None else None
    return EventSourceResponse(encoded(), ping=1, send_timeout=5, background=background)
