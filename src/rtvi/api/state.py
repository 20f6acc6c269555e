"""The objects one running service shares between its routes."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import Request

from rtvi.assets.store import AssetStore
from rtvi.engine.batcher import InferenceBatcher
from rtvi.errors import ApiError
from rtvi.models.base import Embedder
from rtvi.settings import Service, Settings


@dataclass
class ServiceState:
    service: Service
    settings: Settings
    store: AssetStore
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
