"""The objects one running service shares between its routes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import Request

from rtvi.assets.store import AssetStore
from rtvi.engine.batcher import InferenceBatcher
from rtvi.engine.live import LiveManager
from rtvi.errors import ApiError
from rtvi.models.base import Embedder
from rtvi.settings import Service, Settings
from rtvi.sinks.publisher import MessagePublisher
from rtvi.telemetry.metrics import Metrics

log = logging.getLogger(__name__)


def log_error(stream_id: str, message: str) -> None:
    """The error bus until a message bus is configured (spec §6.5): a log line."""
    log.error("error event (stream %r): %s", stream_id, message)


@dataclass
class ServiceState:
    service: Service
    settings: Settings
    store: AssetStore
    metrics: Metrics = field(default_factory=Metrics)
    # Failures the spec publishes on the error bus (spec §6.5): (stream or asset id, message).
    on_error: Callable[[str, str], None] = log_error
    decode_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="decode"
        )
    )
    started_at: float = field(default_factory=time.time)
    embedder: Embedder | None = None
    batcher: InferenceBatcher | None = None
    model_error: str | None = None
    model_loaded_at: float | None = None
    # Results and errors on Kafka / Redis (spec §6); set up in the app's lifespan.
    publisher: MessagePublisher | None = None
    live: LiveManager = field(init=False)

    def __post_init__(self) -> None:
        # The manager reports through self.report_error, so a bus plugged in later (on_error) is used.
        self.live = LiveManager(self.settings, self.metrics, self.report_error)

    def report_error(self, stream_id: str, message: str) -> None:
        try:
            self.on_error(stream_id, message)
        except Exception:  # reporting must never break the request that failed
            log.exception("error reporting failed")

    def require_batcher(self, requested_model: str | None = None) -> InferenceBatcher:
        if self.batcher is None:
            if self.model_error:
                raise ApiError(503, "ServiceUnavailable", f"Model failed to load: {self.model_error}")
            raise ApiError(503, "ServiceUnavailable", "The model is still loading; retry shortly")
        if requested_model is not None and requested_model != self.batcher.embedder.id:
            raise ApiError.bad_parameters(f"No such model '{requested_model}'")
        return self.batcher


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.rtvi
    return state
