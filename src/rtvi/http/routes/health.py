"""Health, info and metrics routes (spec §7)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rtvi import __version__
from rtvi.api.schemas import ModelCard, ModelList
from rtvi.api.state import ServiceState, get_state
from rtvi.errors import ApiError

router = APIRouter(tags=["Health and info"])
API_VERSION = "3.1.0"


def _checks(state: ServiceState) -> dict[str, dict[str, Any]]:
    model: dict[str, Any] = {"healthy": state.batcher is not None}
    if state.batcher is not None:
        model.update(id=state.batcher.embedder.id, dimension=state.batcher.embedder.dim)
    elif state.model_error:
        model["error"] = state.model_error
    else:
        model["status"] = "loading"
    storage_dir = state.store.storage.root
    storage = {"healthy": storage_dir.is_dir(), "path": str(storage_dir)}
    live = {
        "healthy": True,  # a camera outage is the stream's failure, reported per request, not the service's
        "streams": len(state.store.registry.list_assets("live")),
        "active_jobs": len(state.live.jobs()),
        "decoders": len(state.live.decoders()),
    }
    return {"model": model, "storage": storage, "live": live}


async def _bus_checks(state: ServiceState) -> dict[str, dict[str, Any]]:
    """Kafka / Redis connectivity. Shown, but never a reason to be unready: results and errors wait in
    their queues while a broker is away, and taking the service out of rotation would not bring it back."""
    if state.publisher is None:
        return {}
    return await asyncio.to_thread(state.publisher.checks)


def _health(
    state: ServiceState,
    detailed: bool,
    ready: bool,
    informational: dict[str, dict[str, Any]] | None = None,
) -> Response:
    checks = _checks(state)
    healthy = all(c["healthy"] for c in checks.values()) if ready else checks["storage"]["healthy"]
    checks.update(informational or {})
    status = 200 if healthy else 503
    if detailed:
        return JSONResponse(
            {
                "healthy": healthy,
                "timestamp": time.time(),
                "uptime_seconds": round(time.time() - state.started_at, 3),
                "checks": checks,
            },
            status_code=status,
        )
    return PlainTextResponse(
        "Service is healthy" if healthy else "Service is not healthy", status_code=status
    )


@router.get("/v1/ready")
async def ready(detailed: bool = Query(False), state: ServiceState = Depends(get_state)) -> Response:
    """200 once the model is loaded and storage is usable; 503 before."""
    bus = await _bus_checks(state) if detailed else None
    return _health(state, detailed, ready=True, informational=bus)


@router.get("/v1/live")
async def live(detailed: bool = Query(False), state: ServiceState = Depends(get_state)) -> Response:
    """200 while the process serves requests, even during model loading."""
    return _health(state, detailed, ready=False)


@router.get("/v1/startup")
async def startup() -> PlainTextResponse:
    return PlainTextResponse("Service is ready to serve requests.")


@router.get("/v1/metadata")
async def metadata() -> dict[str, str]:
    return {"version": __version__}


@router.get("/v1/version")
async def version() -> dict[str, str]:
    return {"release": __version__, "api": API_VERSION}


@router.get("/v1/manifest")
async def manifest(state: ServiceState = Depends(get_state)) -> dict[str, str | None]:
    return {"version": __version__, "model": state.embedder.id if state.embedder else None}


@router.get("/v1/models", response_model=ModelList)
async def models(state: ServiceState = Depends(get_state)) -> ModelList:
    if state.embedder is None:
        raise ApiError(503, "ServiceUnavailable", state.model_error or "The model is still loading")
    e = state.embedder
    created = int(state.model_loaded_at or state.started_at)
    card = ModelCard(id=e.id, created=created, owned_by=e.owned_by, api_type="embedding", dimension=e.dim)
    return ModelList(data=[card], audio_support=False)


@router.get("/v1/metrics")
async def metrics(request: Request, state: ServiceState = Depends(get_state)) -> Response:
    m = request.app.state.metrics
    m.uptime.set(time.time() - state.started_at)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/assets/stats")
async def asset_stats(state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    assets = state.store.registry.list_assets()
    now = time.time()
    oldest = max((now - a.created_at for a in assets), default=0.0)
    s = state.settings
    return {
        "asset_count": len(assets),
        "asset_count_with_storage": sum(a.owns_dir for a in assets),
        "aged_out_count": 0,
        "oldest_asset_age_hours": round(oldest / 3600, 3),
        "max_storage_usage_gb": s.max_asset_storage_size_gb,
        "max_asset_age_hours": s.asset_max_age_hours or None,
    }
