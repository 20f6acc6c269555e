"""ServiceSpec: everything that makes a service itself; `rtvi serve NAME` picks one (rtvi.services)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import APIRouter

from rtvi.core.service import CoreConfig, ModelStage, ServiceCore


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    core: CoreConfig  # name, default topics, result -> bus message, failure wording
    title: str  # the OpenAPI title
    load_stage: Callable[[ServiceCore], ModelStage]  # runs in a thread at start-up
    routers: Sequence[APIRouter]  # the service's own routes, beside the shared ones

    @property
    def name(self) -> str:
        return self.core.name
