"""Server-Sent Events in the reference's shape (spec §4.4): `data: <json>` events, pings, `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse

DONE = "[DONE]"


def sse_response(events: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    async def encoded() -> AsyncIterator[dict[str, str]]:
        async for event in events:
            yield {"data": json.dumps(event, separators=(",", ":"))}
        yield {"data": DONE}

    # Ping every second and give up on a client that does not read for 5 s, as the reference does.
    return EventSourceResponse(encoded(), ping=1, send_timeout=5)
