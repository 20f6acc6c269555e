"""FastAPI dependencies: the running service's core, for the routes."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request

from rtvi.core.service import ServiceCore

Stage = TypeVar("Stage")


def get_core(request: Request) -> ServiceCore:
    core: ServiceCore = request.app.state.core
    return core


def stage_of(core: ServiceCore, kind: type[Stage]) -> Stage:
    """The loaded model stage, which a service's routes know the type of (503 while it loads)."""
    stage = core.require_stage()
    if not isinstance(stage, kind):
        raise TypeError(f"these routes need the {kind.__name__} stage, not {type(stage).__name__}")
    return stage
