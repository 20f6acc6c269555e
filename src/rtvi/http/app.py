"""build_app(spec): the FastAPI application of one service: the shared routes plus the service's own,
wired to a ServiceCore whose model stage loads in the background."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from rtvi import __version__
from rtvi.core.service import ModelStage, ServiceCore
from rtvi.core.telemetry.metrics import Metrics
from rtvi.core.telemetry.tracing import Tracing
from rtvi.http.auth import DOCS_ASSETS, declare_bearer_scheme, require_bearer_token
from rtvi.http.errors import ERROR_RESPONSES, install_error_handlers
from rtvi.http.limits import BodyLimit
from rtvi.http.routes import config, files, health, streams
from rtvi.http.spec import ServiceSpec
from rtvi.http.tracing import instrument_app
from rtvi.http.ui import ui
from rtvi.settings import Settings

SHARED_ROUTERS = (health.router, files.router, streams.router, config.router)


def build_app(
    spec: ServiceSpec,
    settings: Settings | None = None,
    load_stage: Callable[[ServiceCore], ModelStage] | None = None,
) -> FastAPI:
    """`load_stage` replaces the spec's loader (tests, benchmarks)."""
    settings = settings or Settings()
    loader = load_stage or spec.load_stage
    metrics = Metrics()
    tracing = Tracing(f"rtvi-{spec.core.name}", settings.enable_otel_monitoring)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        core = app.state.core = ServiceCore(spec.core, settings, metrics, tracing.tracer)
        core.start()
        # The model loads in the background: /v1/live answers at once, /v1/ready turns 200 when loaded.
        load_task = asyncio.create_task(core.load(loader))
        try:
            yield
        finally:
            load_task.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
            await core.close()
            tracing.shutdown()

    # Swagger UI from the fastapi-offline package, not a CDN: /docs works offline. No /redoc: ReDoc's
    # bundle fetches its logo from a CDN whatever it is told.
    app = FastAPIOffline(
        title=spec.title,
        version=__version__,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
        static_url=DOCS_ASSETS,
        redoc_url=None,
    )
    install_error_handlers(app)
    instrument_app(app, tracing)
    app.add_middleware(BodyLimit, max_bytes=int(settings.max_request_body_mb * 2**20))
    declare_bearer_scheme(app)
    if settings.api_key:
        require_bearer_token(app, settings.api_key)
    for router in (*SHARED_ROUTERS, *spec.routers):
        app.include_router(router)
    ui.mount(app, spec.name)
    return app
