"""What a finished chunk tells the rest of the service: one event, from a request on a file and from a
live job alike, and the typed interface of whoever takes it (the results bus, the search index).

The listeners are fixed when the core is built (ServiceCore): a job calls each with every chunk; no
object appends itself to another's list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rtvi.core.assets.registry import Asset
from rtvi.core.media.times import MediaClock
from rtvi.core.media.types import Frame
from rtvi.core.pipeline.results import ChunkResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """A finished chunk of `asset`, with what its messages and index entry need."""

    asset: Asset
    request_id: str
    result: ChunkResult[Any]
    clock: MediaClock  # how its times read; live chunk times are Unix seconds
    received_at: float  # when its request (or live job) began: the message clock of undated media
    requested_model: str | None = None  # None: the served model's id (a live job outlives requests)
    # A file request's ids: its publish is traced as a span with them (live chunks are not traced).
    span_attributes: Mapping[str, str] | None = None
    indexable: bool = True  # False for a temporary asset (a chat's media url), gone after the request
    # A live chunk's sampled frames, for a listener that needs more than the result (an alert rule's
    # VLM check). Not kept by the event's producer: whoever holds them keeps them alive.
    frames: tuple[Frame, ...] = ()

    @property
    def live(self) -> bool:
        return self.clock.live

    @property
    def message_origin_ts(self) -> float:
        """Bus messages carry absolute times: the media's wall-clock origin, else the request's arrival."""
        origin = self.clock.origin_ts
        return origin if origin is not None else self.received_at


class ChunkListener(Protocol):
    def chunk_done(self, event: ChunkDone) -> None:
        """Called on the event loop with every finished chunk; must not block (queue the work)."""
        ...

    def keeps_live_jobs(self, stream_id: str) -> bool:
        """Whether it takes `stream_id`'s live chunks now, so that a live job whose last reader left keeps
        running for it (the results bus, switchable at run time by POST /v1/config, does; the index does
        not; an alert rule watching the stream does)."""
        ...


def notify(listeners: Iterable[ChunkListener], event: ChunkDone) -> None:
    """Every listener gets the chunk; one failing is logged and keeps it from none of the others."""
    for listener in listeners:
        try:
            listener.chunk_done(event)
        except Exception:
            log.exception("asset %s: a chunk listener (%s) failed", event.asset.id, type(listener).__name__)
