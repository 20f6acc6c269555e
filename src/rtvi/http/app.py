"""create_app(service): the FastAPI application of one service, wired to its state."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from rtvi import __version__
from rtvi.api import config, embeddings, files, health, streams
from rtvi.api.embeddings import live_results_sink
from rtvi.api.state import ServiceState
from rtvi.api.streams import resume_auto_started
from rtvi.assets.store import AssetStore
from rtvi.engine.batcher import InferenceBatcher
from rtvi.errors import ApiError, install_error_handlers, json_error_response
from rtvi.models.base import Embedder
from rtvi.settings import Service, Settings
from rtvi.sinks.publisher import MessagePublisher
from rtvi.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

TITLES = {"embed": "RTVI Embed Microservice API", "vlm": "RTVI API"}
# Shutdown waits this long for queued Kafka / Redis messages (the rest is counted as failed and logged).
BUS_FLUSH_TIMEOUT_S = 10.0
# Probes and docs stay open when an API key is configured, so orchestrators need no secret.
PUBLIC_PATHS = {
    "/v1/ready",
    "/v1/live",
    "/v1/startup",
    "/v1/metadata",
    "/v1/version",
    "/docs",
    "/openapi.json",
}


async def _load_model(state: ServiceState, loader: Callable[[Settings], Embedder]) -> None:
    try:
        start = time.perf_counter()
        embedder = await asyncio.to_thread(loader, state.settings)
    except Exception as exc:
        log.exception("model failed to load")
        state.model_error = str(exc) or type(exc).__name__
        if state.publisher is not None:  # a pipeline that cannot start is a critical error (spec §6.5)
            state.publisher.publish_error("", f"Model failed to load: {state.model_error}", "critical")
        return
    state.embedder = embedder
    state.batcher = InferenceBatcher(embedder, state.settings.auto_batch_size)
    state.batcher.start()
    state.model_loaded_at = time.time()
    log.info("model %s (dim %d) loaded in %.1f s", embedder.id, embedder.dim, time.perf_counter() - start)
    if state.service == "embed":
        resume_auto_started(state)


def create_app(
    service: Service = "embed",
    settings: Settings | None = None,
    loader: Callable[[Settings], Embedder] | None = None,
) -> FastAPI:
    settings = settings or Settings()
    if loader is None:
        from rtvi.models.registry import load_embedder

        loader = load_embedder

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState(
            service=service, settings=settings, store=AssetStore(settings), metrics=app.state.metrics
        )
        app.state.rtvi = state
        publisher = state.publisher = MessagePublisher(service, settings, app.state.metrics).start()
        state.on_error = publisher.on_error
        if (sink := live_results_sink(state)) is not None:
            state.live.sinks.append(sink)
        # The model loads in the background: /v1/live answers at once, /v1/ready turns 200 when loaded.
        load_task = asyncio.create_task(_load_model(state, loader))
        try:
            yield
        finally:
            load_task.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
            await state.live.shutdown()
            if state.batcher is not None:
                await state.batcher.stop()
            state.decode_pool.shutdown(wait=False, cancel_futures=True)
            # After the producers above stopped: what they published gets BUS_FLUSH_TIMEOUT_S to leave.
            await asyncio.to_thread(publisher.close, BUS_FLUSH_TIMEOUT_S)
            state.store.close()

    app = FastAPI(title=TITLES[service], version=__version__, lifespan=lifespan)
    app.state.metrics = Metrics()
    install_error_handlers(app)

    if settings.api_key:
        expected = f"Bearer {settings.api_key}".encode()

        @app.middleware("http")
        async def require_bearer(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            if request.url.path not in PUBLIC_PATHS:
                got = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(got, expected):
                    return json_error_response(
                        ApiError(401, "Unauthorized", "Missing or invalid bearer token")
                    )
            return await call_next(request)

    app.include_router(health.router)
    app.include_router(files.router)
    app.include_router(streams.router)
    app.include_router(config.router)
    if service == "embed":
        app.include_router(embeddings.router)
    return app
