"""Health, info and metrics routes (spec §7), and the license (NIM's /v1/license)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.metadata
import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rtvi import REFERENCE_RELEASE, __version__
from rtvi.core.models.info import ModelInfo
from rtvi.core.service import ServiceCore
from rtvi.errors import Unavailable
from rtvi.http.deps import get_core
from rtvi.http.protocol import LicenseInfo, ModelCard, ModelList
from rtvi.settings import replica_name

router = APIRouter(tags=["Health and info"])
API_VERSION = "3.1.0"


def _checks(core: ServiceCore) -> dict[str, dict[str, Any]]:
    model: dict[str, Any] = {"healthy": core.stage is not None}
    if core.stage is not None:
        model.update(id=core.stage.model.id, **core.stage.model.details)
    elif core.model_error:
        model["error"] = core.model_error
    else:
        model["status"] = "loading"
    storage_dir = core.store.storage.root
    storage = {"healthy": storage_dir.is_dir(), "path": str(storage_dir)}
    live = {
        "healthy": True,  # a camera outage is the stream's failure, reported per request, not the service's
        "streams": len(core.streams.list()),
        "active_jobs": len(core.live.jobs()),
        "decoders": len(core.live.decoders()),
    }
    checks = {"model": model, "storage": storage, "live": live}
    ownership = core.streams.ownership
    if ownership is not None:  # which cameras this replica decodes (docs/scale-out.md)
        checks["cluster"] = {
            "healthy": True,  # a lost broker shows in the bus checks; the cameras here keep running
            "replica": replica_name(core.settings),
            "members": ownership.members(),  # the replicas this one shares the cameras with, itself too
            "streams": sorted(ownership.owned()),
            # SSE readers here of cluster-run streams, served from the results topic
            "feed_readers": core.cluster.readers(),
        }
    return checks


async def _informational_checks(core: ServiceCore) -> dict[str, dict[str, Any]]:
    """Kafka / Redis connectivity and the search index. Shown, but never a reason to be unready: results
    and errors wait in their queues while a broker is away, taking the service out of rotation would not
    bring it back, and generate requests do not need the index."""
    checks = await asyncio.to_thread(core.publisher.checks) if core.publisher is not None else {}
    if (indexer := core.indexing.indexer) is not None:
        check: dict[str, Any] = {
            "healthy": indexer.error is None,
            "backend": "milvus" if core.settings.milvus_uri else "sqlite",
        }
        try:  # on Milvus, a request to the server
            check["chunks"] = await asyncio.to_thread(len, indexer.index)
        except Exception as exc:
            check.update(healthy=False, error=f"{type(exc).__name__}: {exc}")
        if indexer.error is not None:
            check["error"] = indexer.error
        checks["search_index"] = check
    return checks


def _is_healthy(checks: dict[str, dict[str, Any]], ready: bool) -> bool:
    """Ready: every check passes (the model is loaded). Live: the process can use its storage."""
    return all(c["healthy"] for c in checks.values()) if ready else bool(checks["storage"]["healthy"])


def _health(
    core: ServiceCore,
    detailed: bool,
    ready: bool,
    informational: dict[str, dict[str, Any]] | None = None,
) -> Response:
    checks = _checks(core)
    healthy = _is_healthy(checks, ready)
    checks.update(informational or {})
    status = 200 if healthy else 503
    if detailed:
        return JSONResponse(
            {
                "healthy": healthy,
                "timestamp": time.time(),
                "uptime_seconds": round(time.time() - core.started_at, 3),
                "checks": checks,
            },
            status_code=status,
        )
    return PlainTextResponse(
        "Service is healthy" if healthy else "Service is not healthy", status_code=status
    )


@router.get("/v1/ready")
async def ready(detailed: bool = Query(False), core: ServiceCore = Depends(get_core)) -> Response:
    """200 once the model is loaded and storage is usable; 503 before."""
    shown = await _informational_checks(core) if detailed else None
    return _health(core, detailed, ready=True, informational=shown)


@router.get("/v1/live")
async def live(detailed: bool = Query(False), core: ServiceCore = Depends(get_core)) -> Response:
    """200 while the process serves requests, even during model loading."""
    return _health(core, detailed, ready=False)


def _nim_health(core: ServiceCore, ready: bool) -> JSONResponse:
    ok = _is_healthy(_checks(core), ready)
    if ready:
        message = "Service is ready." if ok else "Service is not ready."
    else:
        message = "Service is healthy" if ok else "Service is unhealthy"
    return JSONResponse({"object": "health.response", "message": message}, status_code=200 if ok else 503)


@router.get("/v1/health/live")
async def nim_live(detailed: bool = Query(False), core: ServiceCore = Depends(get_core)) -> Response:
    """The NIM-style liveness alias (spec §1.2); `detailed` gives /v1/live's detailed JSON."""
    return _health(core, True, ready=False) if detailed else _nim_health(core, ready=False)


@router.get("/v1/health/ready")
async def nim_ready(detailed: bool = Query(False), core: ServiceCore = Depends(get_core)) -> Response:
    """The NIM-style readiness alias (spec §1.2); `detailed` gives /v1/ready's detailed JSON."""
    if detailed:
        return _health(core, True, ready=True, informational=await _informational_checks(core))
    return _nim_health(core, ready=True)


@router.get("/v1/startup")
async def startup() -> PlainTextResponse:
    return PlainTextResponse("Service is ready to serve requests.")


def _owner(owned_by: str) -> str:
    """A short owner for /v1/models ("rtvi", "nvidia"): the backend's description up to its first space,
    parenthesis or semicolon."""
    found = re.match(r"[A-Za-z0-9_.\-]+", owned_by.strip())
    return found.group(0) if found else "rtvi"


@router.get("/v1/metadata")
async def metadata(core: ServiceCore = Depends(get_core)) -> dict[str, Any]:
    """`version` is the reference release whose API is served (reference clients read it); rtvi's own
    version and the loaded model's facts (dimension, language_model, ...) are extra keys."""
    out: dict[str, Any] = {"version": REFERENCE_RELEASE, "rtvi_version": __version__}
    if core.stage is not None:
        m: ModelInfo = core.stage.model
        out["model"] = {"id": m.id, "owned_by": _owner(m.owned_by), "api_type": m.api_type, **m.details}
    return out


@router.get("/v1/version")
async def version() -> dict[str, str]:
    return {"release": REFERENCE_RELEASE, "api": API_VERSION}


@router.get("/v1/manifest")
async def manifest(core: ServiceCore = Depends(get_core)) -> dict[str, str | None]:
    return {"version": REFERENCE_RELEASE, "model": core.stage.model.id if core.stage else None}


@router.get("/v1/license", response_model=LicenseInfo)
async def license_info() -> LicenseInfo:
    """The license rtvi is distributed under (pyproject.toml's `license`), in NIM's /v1/license shape."""
    return _license()


APACHE_NOTICE = """Licensed under the Apache License, Version 2.0 (the "License");
you may not use this software except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
"""


@functools.cache
def _license() -> LicenseInfo:
    """The installed distribution's license: its license file when the wheel carries one, else the
    standard notice of its SPDX identifier."""
    try:
        meta = importlib.metadata.metadata("rtvi")
        spdx = meta["License-Expression"] or meta["License"] or "unknown"
        files = importlib.metadata.files("rtvi") or []
    except importlib.metadata.PackageNotFoundError:
        spdx, files = "unknown", []
    url = (
        "https://www.apache.org/licenses/LICENSE-2.0"
        if spdx == "Apache-2.0"
        else f"https://spdx.org/licenses/{spdx}.html"
    )
    path, content = "", ""
    for f in files:
        if re.match(r"(LICEN[CS]E|COPYING)", f.name, re.IGNORECASE):
            try:
                # The path inside the distribution, not the server's file system (an open route).
                path, content = str(f), f.read_text() or ""
                break
            except OSError:
                continue
    if not content:
        content = f"rtvi is distributed under the {spdx} license ({url}).\n"
        if spdx == "Apache-2.0":
            content += "\n" + APACHE_NOTICE
    return LicenseInfo(
        name=spdx,
        path=path,
        sha=hashlib.sha1(content.encode()).hexdigest(),
        size=len(content),
        url=url,
        content=content,
    )


@router.get("/v1/models", response_model=ModelList)
async def models(core: ServiceCore = Depends(get_core)) -> ModelList:
    """Exactly the reference's shape (spec §7); the model's other facts are in /v1/metadata."""
    if core.stage is None:
        raise Unavailable(core.model_error or "The model is still loading")
    m = core.stage.model
    created = int(core.model_loaded_at or core.started_at)
    card = ModelCard(id=m.id, created=created, owned_by=_owner(m.owned_by), api_type=m.api_type)
    return ModelList(data=[card], audio_support=bool(m.details.get("audio_support", False)))


@router.get("/v1/metrics")
@router.get("/metrics", include_in_schema=False)  # where Prometheus scrapes by default
async def metrics(core: ServiceCore = Depends(get_core)) -> Response:
    m = core.metrics
    m.uptime.set(time.time() - core.started_at)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/assets/stats")
async def asset_stats(core: ServiceCore = Depends(get_core)) -> dict[str, Any]:
    return await asyncio.to_thread(core.store.stats)
