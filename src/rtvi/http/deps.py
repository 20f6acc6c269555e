"""FastAPI dependencies: the running service's core, for the routes."""

from __future__ import annotations

from fastapi import Request

from rtvi.core.service import ServiceCore


def get_core(request: Request) -> ServiceCore:
    core: ServiceCore = request.app.state.core
    return core
